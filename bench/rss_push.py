"""How much memory the registry needs to receive one large blob.

Run: ``python bench/rss_push.py [--size-mib 1024] [--pull]``

Starts moto in its own process (it keeps S3 in memory: that is moto's
memory, not ours) and the registry in another (``python -m
chalicelib.devserver --storage external``), then pushes a blob the way
docker, crane and skopeo do: POST, ONE PATCH with ``Transfer-Encoding:
chunked`` and no ``Content-Length``, then ``PUT ?digest=``. The blob is
pseudo-random bytes generated on the fly and hashed as they are sent, so
the benchmark itself never holds it either.

While the PATCH and the completion run, the registry's VmRSS is read from
``/proc/<pid>/status`` every ~50 ms; VmHWM (the kernel's high-water mark)
is read at the end and catches any spike between samples. Sizes are in MB
(10^6 bytes). Exits 1 if the registry's peak reaches ``--limit-mb``
(default 300), 2 if the push or the digest check fails.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import random
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.devserver import (  # noqa: E402
    spawn_registry,
    start_moto_process,
    stop_process,
)

MIB = 1024 * 1024
MB = 1_000_000
SEND_CHUNK = MIB


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (VmRSS, VmHWM), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/{pid}/status")


class RssSampler(threading.Thread):
    """Samples a process's RSS and keeps the peak per named phase."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid = pid
        self.interval = interval
        self.phase = "idle"
        self.peaks: dict[str, int] = {}
        self.samples = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                rss = proc_status_kib(self.pid, "VmRSS") * 1024
            except (OSError, RuntimeError):
                return  # the process is gone
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), rss)
            self.samples += 1
            self._halt.wait(self.interval)

    def enter(self, phase: str) -> None:
        self.phase = phase

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def blob_stream(size: int, seed: int, hasher: hashlib._Hash) -> Iterator[bytes]:
    """``size`` pseudo-random bytes in 1 MiB pieces, hashed as they go out."""
    rng = random.Random(seed)
    sent = 0
    while sent < size:
        piece = rng.randbytes(min(SEND_CHUNK, size - sent))
        hasher.update(piece)
        sent += len(piece)
        yield piece


def send(hostport: str, method: str, path: str, body: object = b"",
         headers: dict[str, str] | None = None,
         chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection(hostport, timeout=900)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        conn.close()


def pull(hostport: str, path: str) -> tuple[int, str, int]:
    """Stream a blob back, hashing it without keeping it."""
    conn = http.client.HTTPConnection(hostport, timeout=900)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        hasher = hashlib.sha256()
        received = 0
        while True:
            piece = response.read(SEND_CHUNK)
            if not piece:
                break
            hasher.update(piece)
            received += len(piece)
        return response.status, "sha256:" + hasher.hexdigest(), received
    finally:
        conn.close()


def mb(value: int) -> str:
    return f"{value / MB:.0f} MB"


def run(args: argparse.Namespace) -> int:
    size = args.size_mib * MIB
    moto, moto_url = start_moto_process()
    registry = None
    sampler = None
    workdir = Path(tempfile.mkdtemp(prefix="cargohold-bench-"))
    try:
        suffix = uuid.uuid4().hex[:10]
        env = dict(os.environ, AWS_ENDPOINT_URL=moto_url,
                   AWS_ACCESS_KEY_ID=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                   AWS_SECRET_ACCESS_KEY=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
                   AWS_DEFAULT_REGION=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                   CARGOHOLD_BUCKET=f"bench-{suffix}", CARGOHOLD_TABLE=f"bench-{suffix}",
                   CARGOHOLD_HMAC_KEY=os.environ.get("CARGOHOLD_HMAC_KEY") or uuid.uuid4().hex,
                   CARGOHOLD_BLOB_REDIRECTS="false", PYTHONUNBUFFERED="1",
                   LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"))
        registry, hostport = spawn_registry(env, workdir / "registry.log")
        status, _, _ = send(hostport, "GET", "/v2/")
        if status != 200:
            print(f"registry answered {status} on /v2/", file=sys.stderr)
            return 2
        time.sleep(0.5)  # settle after start-up before taking the idle figure
        idle = proc_status_kib(registry.pid, "VmRSS") * 1024
        sampler = RssSampler(registry.pid)
        sampler.start()

        name = "bench/blob"
        status, headers, body = send(hostport, "POST", f"/v2/{name}/blobs/uploads/")
        if status != 202:
            print(f"POST answered {status}: {body[:300]!r}", file=sys.stderr)
            return 2
        hasher = hashlib.sha256()
        sampler.enter("patch")
        started = time.monotonic()
        status, headers, body = send(
            hostport, "PATCH", headers["Location"], blob_stream(size, args.seed, hasher),
            {"Transfer-Encoding": "chunked", "Content-Type": "application/octet-stream"},
            chunked=True)
        patch_seconds = time.monotonic() - started
        if status != 202 or headers.get("Range") != f"0-{size - 1}":
            print(f"PATCH answered {status} {headers.get('Range')}: {body[:300]!r}",
                  file=sys.stderr)
            return 2
        digest = "sha256:" + hasher.hexdigest()

        sampler.enter("complete")
        started = time.monotonic()
        status, _, body = send(hostport, "PUT", f"{headers['Location']}&digest={digest}",
                               b"", {"Content-Length": "0"})
        complete_seconds = time.monotonic() - started
        if status != 201:
            print(f"PUT answered {status}: {body[:300]!r}", file=sys.stderr)
            return 2
        sampler.enter("verify")
        status, headers, _ = send(hostport, "HEAD", f"/v2/{name}/blobs/{digest}")
        if (status != 200 or headers.get("Docker-Content-Digest") != digest
                or headers.get("Content-Length") != str(size)):
            print(f"HEAD answered {status} {headers}", file=sys.stderr)
            return 2
        pull_line = ""
        if args.pull:
            sampler.enter("pull")
            started = time.monotonic()
            status, pulled_digest, received = pull(hostport, f"/v2/{name}/blobs/{digest}")
            pull_seconds = time.monotonic() - started
            if status != 200 or pulled_digest != digest or received != size:
                print(f"pull: {status} {pulled_digest} {received} bytes", file=sys.stderr)
                return 2
            pull_line = (f"registry peak RSS during pull (streamed GET): "
                         f"{mb(sampler.peaks.get('pull', 0))}, "
                         f"{size / MB / pull_seconds:.0f} MB/s, digest verified\n")
        sampler.stop()
        hwm = proc_status_kib(registry.pid, "VmHWM") * 1024
        patch_peak = sampler.peaks.get("patch", 0)
        complete_peak = sampler.peaks.get("complete", 0)
        print(f"registry peak RSS during {args.size_mib} MiB PATCH: {mb(patch_peak)} "
              f"(idle {mb(idle)})")
        print(f"registry peak RSS during completion (PUT ?digest=): {mb(complete_peak)}")
        print(f"PATCH throughput: {size / MB / patch_seconds:.0f} MB/s "
              f"({patch_seconds:.1f} s); completion took {complete_seconds:.1f} s")
        print(pull_line, end="")
        print(f"registry VmHWM (whole life): {mb(hwm)}; {sampler.samples} RSS samples")
        print(f"blob {digest} verified by HEAD (Docker-Content-Digest, Content-Length)")
        peak = max(patch_peak, complete_peak, sampler.peaks.get("pull", 0), hwm)
        if peak >= args.limit_mb * MB:
            print(f"FAIL: registry peak {mb(peak)} >= {args.limit_mb} MB", file=sys.stderr)
            return 1
        print(f"OK: registry peak {mb(peak)} < {args.limit_mb} MB")
        return 0
    finally:
        if sampler is not None:
            sampler.stop()
        if registry is not None:
            stop_process(registry)
            if registry.stdout is not None:
                registry.stdout.close()
        stop_process(moto)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="blob size (default 1024)")
    parser.add_argument("--limit-mb", type=int, default=300,
                        help="fail when the registry's peak RSS reaches this (default 300)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the pseudo-random bytes")
    parser.add_argument("--pull", action="store_true",
                        help="also stream the blob back and measure the GET")
    args = parser.parse_args(argv)
    if args.size_mib <= 0:
        parser.error("--size-mib must be positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
