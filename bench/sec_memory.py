"""Memory: the peak RSS of each registry's process while it receives one
large blob, cargohold next to distribution.

Run: ``python bench/sec_memory.py [--quick]``

The measurement of ``bench/rss_push.py`` (its sampler and push helpers are
imported, not copied), applied to both registries in one run on ONE moto
server in its own process (moto's memory is never counted): cargohold as
its own process (``python -m chalicelib.devserver --storage external
--no-provision --port 0``) and distribution v3.1.2 on its ``s3`` driver, one
after the other. Each gets the same push, the way docker, crane and skopeo
send a layer: POST, ONE PATCH with ``Transfer-Encoding: chunked`` and no
``Content-Length`` (1 GiB; quick: 32 MiB of pseudo-random bytes generated
and hashed as they are sent), then ``PUT ?digest=``; a HEAD checks the
stored size and digest. VmRSS is sampled every ~50 ms in each phase; VmHWM
(the kernel's high-water mark over the process's life) catches any spike
between samples. The baseline is the same process idle just before the
push, warmed by one 4 KiB push (so it includes the storage clients, which
cargohold loads on first use). Sizes in MB (10^6 bytes).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
for entry in (HERE, HERE.parent):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import rss_push  # noqa: E402
from sec_throughput import running_cargohold, running_moto  # noqa: E402

from tests.conftest import tool  # noqa: E402
from tests.distribution import running_distribution_s3  # noqa: E402

TITLE = "Memory of one large push (peak RSS)"
COMMAND = "python bench/sec_memory.py"

MIB = 1024 * 1024
MB = 1_000_000
REGISTRIES = ("cargohold", "distribution")
LIMIT_MB = 300  # what ``make bench-rss`` fails at
SEED = 7


class BenchError(RuntimeError):
    """A registry answered something other than the protocol says."""


def target_of(location: str) -> str:
    """Path and query of a Location (distribution's are absolute URLs)."""
    split = urlsplit(location)
    return split.path + (f"?{split.query}" if split.query else "")


def rss(pid: int) -> int:
    return rss_push.proc_status_kib(pid, "VmRSS") * 1024


def child_pid(argv: list[str]) -> int:
    """The pid of this process's child running exactly ``argv``
    (``running_distribution_s3`` does not hand out its process)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")[:-1]
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == me and [part.decode() for part in cmdline] == argv:
            return int(entry.name)
    raise RuntimeError(f"no child process runs {argv}")


def measure(hostport: str, pid: int, size: int) -> dict[str, Any]:
    """Idle RSS, then peak RSS during the streamed PATCH and the completion."""
    status, _, body = rss_push.send(hostport, "GET", "/v2/")
    if status != 200:
        raise BenchError(f"GET /v2/ answered {status}: {body[:200]!r}")
    # Warm: one small monolithic push, so the idle figure already includes the
    # storage clients (cargohold imports boto3 on first use) and the baseline is
    # a registry that has served traffic, not a fresh one.
    warm = os.urandom(4096)
    warm_digest = "sha256:" + hashlib.sha256(warm).hexdigest()
    status, headers, body = rss_push.send(hostport, "POST", "/v2/bench/warm/blobs/uploads/",
                                          b"", {"Content-Length": "0"})
    if status == 202:
        location = target_of(headers["Location"])
        status, _, body = rss_push.send(
            hostport, "PUT", f"{location}{'&' if '?' in location else '?'}digest={warm_digest}",
            warm, {"Content-Length": str(len(warm)), "Content-Type": "application/octet-stream"})
    if status != 201:
        raise BenchError(f"warm-up push answered {status}: {body[:200]!r}")
    time.sleep(0.5)  # let start-up settle before the idle figure
    idle_samples = []
    for _ in range(5):
        idle_samples.append(rss(pid))
        time.sleep(0.1)
    idle = int(statistics.median(idle_samples))

    sampler = rss_push.RssSampler(pid)
    sampler.start()
    try:
        name = f"bench/mem-{uuid.uuid4().hex[:8]}"
        status, headers, body = rss_push.send(hostport, "POST", f"/v2/{name}/blobs/uploads/",
                                              b"", {"Content-Length": "0"})
        if status != 202:
            raise BenchError(f"POST answered {status}: {body[:300]!r}")
        hasher = hashlib.sha256()
        sampler.enter("patch")
        began = time.monotonic()
        status, headers, body = rss_push.send(
            hostport, "PATCH", target_of(headers["Location"]),
            rss_push.blob_stream(size, SEED, hasher),
            {"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"},
            chunked=True)
        patch_s = time.monotonic() - began
        if status != 202 or headers.get("Range") != f"0-{size - 1}":
            raise BenchError(f"PATCH answered {status} {headers.get('Range')}: {body[:300]!r}")
        digest = "sha256:" + hasher.hexdigest()
        location = target_of(headers["Location"])
        sampler.enter("complete")
        began = time.monotonic()
        status, _, body = rss_push.send(
            hostport, "PUT", f"{location}{'&' if '?' in location else '?'}digest={digest}",
            b"", {"Content-Length": "0"})
        complete_s = time.monotonic() - began
        if status != 201:
            raise BenchError(f"PUT ?digest= answered {status}: {body[:300]!r}")
        sampler.enter("verify")
        status, headers, _ = rss_push.send(hostport, "HEAD", f"/v2/{name}/blobs/{digest}")
        if status != 200 or headers.get("Content-Length") != str(size) or (
                headers.get("Docker-Content-Digest") != digest):
            raise BenchError(f"HEAD answered {status} {headers}")
    finally:
        sampler.stop()
    hwm = rss_push.proc_status_kib(pid, "VmHWM") * 1024
    patch, complete = sampler.peaks.get("patch", 0), sampler.peaks.get("complete", 0)
    peak = max(patch, complete, hwm)
    return {"idle": idle, "patch_peak": patch, "complete_peak": complete, "hwm": hwm,
            "peak": peak, "growth": peak - idle, "peak_over_idle": peak / idle,
            "patch_s": patch_s, "complete_s": complete_s,
            "push_mbps": size / MB / (patch_s + complete_s), "samples": sampler.samples}


def ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


def run(quick: bool) -> dict:
    size_mib = 32 if quick else 1024
    size = size_mib * MIB
    work = Path(tempfile.mkdtemp(prefix="cargohold-mem-"))
    began = time.monotonic()
    measured: dict[str, dict[str, Any]] = {}
    try:
        with running_moto() as moto_url:
            with running_cargohold(work, moto_url, redirects=False) as (hostport, pid):
                measured["cargohold"] = measure(hostport, pid, size)
            dist_work = work / "distribution"
            dist_work.mkdir()
            # Redirects off for both (as in rss_push): the HEAD that checks the
            # push is then answered by the registry; a push is the same either way.
            with running_distribution_s3(dist_work, moto_url,
                                         f"distribution-{uuid.uuid4().hex[:10]}",
                                         redirect=False) as hostport:
                pid = child_pid([tool("registry"), "serve", str(dist_work / "distribution.yml")])
                measured["distribution"] = measure(hostport, pid, size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    c, d = measured["cargohold"], measured["distribution"]
    ratios = {key: ratio(c[key], d[key])
              for key in ("idle", "patch_peak", "complete_peak", "peak", "growth")}
    return {"quick": quick, "size_mib": size_mib, "registries": measured, "ratios": ratios,
            "limit_mb": LIMIT_MB, "seconds": time.monotonic() - began}


def _mb(value: float) -> str:
    return f"{value / MB:.0f} MB"


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}×"


def markdown(result: dict) -> str:
    size_mib = result["size_mib"]
    regs = result["registries"]
    ratios = result["ratios"]
    rows = [
        ("idle (baseline: warmed by a 4 KiB push, before the big one)", "idle"),
        (f"peak during the {size_mib} MiB PATCH", "patch_peak"),
        ("peak during completion (`PUT ?digest=`)", "complete_peak"),
        ("peak overall (incl. VmHWM)", "peak"),
        ("growth: peak − idle", "growth"),
    ]
    lines = [
        f"One {size_mib} MiB blob pushed as docker does it (POST, ONE chunked PATCH without "
        "Content-Length, `PUT ?digest=`) to each registry in its own process, both on one "
        "moto server in a third; the measurement of `bench/rss_push.py` (VmRSS sampled every "
        "~50 ms per phase, plus VmHWM). cargohold: `python -m chalicelib.devserver --storage "
        "external`, default 8 MiB parts; distribution v3.1.2: `s3` driver, default 10 MiB "
        "chunks. MB = 10^6 bytes; one push per registry (peak RSS varies little between "
        "runs); ratio = cargohold / distribution, same run.",
        "",
        "| RSS of the registry process | cargohold | distribution | cargohold / distribution |",
        "|---|---:|---:|---:|",
    ]
    for label, key in rows:
        lines.append(f"| {label} | {_mb(regs['cargohold'][key])} | "
                     f"{_mb(regs['distribution'][key])} | {_x(ratios[key])} |")
    lines.append("| peak / idle | " + " | ".join(
        f"{regs[name]['peak_over_idle']:.2f}×" for name in REGISTRIES) + " | |")
    lines.append("| push time (PATCH + completion) | " + " | ".join(
        f"{regs[name]['patch_s'] + regs[name]['complete_s']:.1f} s "
        f"({regs[name]['push_mbps']:.0f} MB/s)" for name in REGISTRIES) + " | |")
    cargo_peak = regs["cargohold"]["peak"]
    verdict = "under" if cargo_peak < result["limit_mb"] * MB else "AT OR OVER"
    lines += ["", f"cargohold's peak is {verdict} the {result['limit_mb']} MB that "
              f"`make bench-rss` allows. Whole section: {result['seconds']:.0f} s"
              f"{' (quick: 32 MiB)' if result['quick'] else ''}."]
    return "\n".join(lines) + "\n"


def plot_data(result: dict) -> dict | None:
    regs = result["registries"]
    keys = ("idle", "patch_peak", "complete_peak")
    return {"title": f"Registry RSS, {result['size_mib']} MiB streamed push (lower is better)",
            "unit": "MB", "labels": ["idle", "peak during PATCH", "peak during completion"],
            "series": {name: [round(regs[name][key] / MB, 1) for key in keys]
                       for name in REGISTRIES}}


if __name__ == "__main__":
    print(markdown(run(quick="--quick" in sys.argv)))
