"""Throughput under load: zb's workloads, cargohold next to distribution.

Run: ``python bench/sec_throughput.py [--quick]``

zot's benchmark tool ``zb`` cannot be fetched here, so this is an in-repo
driver with its workloads and its meaning of "one request" (one whole image
push or pull):

* push-monolith: for the layer and the config, POST then ``PUT ?digest=``
  with the whole body; then PUT the manifest;
* push-chunk-streamed: for the layer and the config, POST, ONE PATCH that
  streams the whole blob (chunked transfer encoding, no Content-Length),
  then ``PUT ?digest=`` with an empty body; then PUT the manifest;
* pull: manifest HEAD and GET, config HEAD and GET, layer HEAD and GET,
  following redirects (both registries answer blob GETs with a 307 to a
  presigned S3 URL, so the bytes come from S3);
* mixed: 80 % pulls and 20 % chunk-streamed pushes, in one seeded order
  that both registries get.

Every push is a fresh image (a layer with its own random prefix, a config
with its own nonce), so nothing deduplicates; the blobs are made and hashed
before the clock starts. Pulls read images pushed beforehand (one per
worker, not timed). ``c`` worker threads share ``n`` requests; each worker
keeps one keep-alive connection per host. Every pulled byte is counted, and
after each pull workload every pulled image is fetched once more, untimed,
and its layer digest checked.

Setup: one moto server in its own process holds S3 (and cargohold's
DynamoDB table) for BOTH registries, each in its own bucket; no proxy in
front of either. cargohold runs as its own process (``python -m
chalicelib.devserver --storage external --no-provision --port 0``, blob
redirects on); distribution v3.1.2 runs its ``s3`` driver (redirects on).
Both use their default part sizes (cargohold 8 MiB, distribution 10 MiB).
Each workload runs ``ROUNDS`` rounds of ``n`` requests per registry (quick:
one); the registries take turns round by round and who goes first
alternates, so drift in the shared machine or in moto hits both alike.
Rates are medians over rounds; latency percentiles pool every request.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from chalicelib.devserver import (  # noqa: E402
    spawn_registry,
    start_moto_process,
    stop_process,
)
from tests.distribution import running_distribution_s3  # noqa: E402

TITLE = "Throughput under load (zb workloads)"
COMMAND = "python bench/sec_throughput.py"

MIB = 1024 * 1024
MB = 1_000_000
PIECE = MIB  # read buffer and streamed-PATCH chunk size
SEED = 5
MIXED_PUSH_SHARE = 0.2
ROUNDS = 3
PHASE_LIMIT_S = 180.0  # one workload on one registry must end within this
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
ACCEPT_MANIFEST = f"{OCI_MANIFEST}, application/vnd.docker.distribution.manifest.v2+json"
REGISTRIES = ("cargohold", "distribution")
REDIRECTS = frozenset({301, 302, 303, 307, 308})
STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class BenchError(RuntimeError):
    """A registry answered something other than the protocol says."""


# -- workloads ----------------------------------------------------------------
@dataclass(frozen=True)
class Workload:
    kind: str  # push-monolith | push-chunk-streamed | pull | mixed
    size_mib: int
    n: int
    c: int

    @property
    def name(self) -> str:
        return f"{self.kind} {self.size_mib} MiB"

    @property
    def slug(self) -> str:
        return f"{self.kind}-{self.size_mib}"


def plan(quick: bool) -> tuple[list[Workload], int]:
    """zb's workloads, bounded (n and c small; 100 MiB pushes fewer), and how
    many rounds of each: rates are medians over rounds."""
    if quick:
        return [Workload(kind, 1, 2, 1)
                for kind in ("push-monolith", "push-chunk-streamed", "pull", "mixed")], 1
    work: list[Workload] = []
    for kind in ("push-monolith", "push-chunk-streamed"):
        work += [Workload(kind, 1, 6, 2), Workload(kind, 10, 6, 2), Workload(kind, 100, 2, 2)]
    work += [Workload("pull", 1, 10, 2), Workload("pull", 10, 10, 2),
             Workload("pull", 100, 4, 2), Workload("mixed", 10, 10, 2)]
    return work, ROUNDS


def mixed_schedule(n: int) -> list[str]:
    """Which of the ``n`` mixed requests push (at least one): same for every registry."""
    pushes = max(1, round(n * MIXED_PUSH_SHARE))
    chosen = set(random.Random(SEED).sample(range(n), pushes))
    return ["push" if i in chosen else "pull" for i in range(n)]


# -- images -------------------------------------------------------------------
@dataclass
class Image:
    """One image to push: layer and config bytes with their digests."""

    layer: bytes
    layer_digest: str
    config: bytes
    config_digest: str
    manifest: bytes

    @property
    def size(self) -> int:
        return len(self.layer) + len(self.config)


@dataclass(frozen=True)
class Pushed:
    """An image already in a registry: what a pull asks for and checks."""

    repo: str
    tag: str
    layer_digest: str
    layer_size: int


def sha256(data: bytes | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ImageMaker:
    """Fresh images cheaply: one random base, each layer gets its own random
    16-byte prefix (so its digest is new) and is hashed once, untimed."""

    def __init__(self, max_size: int) -> None:
        self.base = os.urandom(max_size)

    def make(self, size: int) -> Image:
        layer = os.urandom(16) + self.base[16:size] if size > 16 else os.urandom(size)
        layer_digest = sha256(layer)
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
                             "config": {"Labels": {"nonce": uuid.uuid4().hex}}}).encode()
        config_digest = sha256(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": layer_digest, "size": len(layer)}],
        }).encode()
        return Image(layer, layer_digest, config, config_digest, manifest)


# -- HTTP with keep-alive -----------------------------------------------------
@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes
    received: int  # body bytes read (also when they were discarded)
    url: str  # the URL that answered (after redirects)


Body = bytes | Callable[[], Iterable[bytes]] | None


class Client:
    """One worker's HTTP/1.1 connections, one keep-alive connection per host."""

    def __init__(self, timeout: float = 300) -> None:
        self.timeout = timeout
        self._conns: dict[str, http.client.HTTPConnection] = {}
        self._buffer = bytearray(PIECE)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()
        self._conns.clear()

    def call(self, method: str, url: str, body: Body = None,
             headers: dict[str, str] | None = None, *, keep_body: bool = True,
             hasher: Any = None) -> Reply:
        """One request; ``body`` bytes go with Content-Length, a callable's
        pieces go chunked. The body is discarded (counted, optionally hashed)
        unless ``keep_body``. A reused connection the server had closed is
        retried once on a fresh one."""
        split = urlsplit(url)
        hostport = split.netloc
        target = split.path + (f"?{split.query}" if split.query else "")
        for attempt in (1, 2):
            reused = hostport in self._conns
            conn = self._conns.get(hostport) or http.client.HTTPConnection(
                hostport, timeout=self.timeout)
            self._conns[hostport] = conn
            try:
                return self._once(conn, method, url, target, body, dict(headers or {}),
                                  keep_body, hasher)
            except STALE:
                conn.close()
                del self._conns[hostport]
                if not reused or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _once(self, conn: http.client.HTTPConnection, method: str, url: str, target: str,
              body: Body, headers: dict[str, str], keep_body: bool, hasher: Any) -> Reply:
        if callable(body):
            headers["Transfer-Encoding"] = "chunked"
            conn.request(method, target, body=body(), headers=headers, encode_chunked=True)
        else:
            payload = body or b""
            if method in ("POST", "PUT", "PATCH"):
                headers.setdefault("Content-Length", str(len(payload)))
            conn.request(method, target, body=payload or None, headers=headers)
        response = conn.getresponse()
        if keep_body:
            data = response.read()
            received = len(data)
            if hasher is not None:
                hasher.update(data)
        else:
            data, received = b"", 0
            view = memoryview(self._buffer)
            while True:
                got = response.readinto(self._buffer)
                if not got:
                    break
                received += got
                if hasher is not None:
                    hasher.update(view[:got])
        if response.will_close:
            conn.close()
            self._conns.pop(urlsplit(url).netloc, None)
        return Reply(response.status, response.headers, data, received, url)

    def fetch(self, method: str, url: str, headers: dict[str, str] | None = None, *,
              keep_body: bool = True, hasher: Any = None) -> Reply:
        """GET or HEAD, following up to 5 redirects (to S3, for blobs)."""
        for _ in range(6):
            reply = self.call(method, url, None, headers, keep_body=keep_body, hasher=hasher)
            if reply.status not in REDIRECTS:
                return reply
            url = urljoin(url, reply.headers["Location"])
            headers = {}  # the presigned URL carries its own authority
        raise BenchError(f"{method} {url}: too many redirects")


def expect(reply: Reply, status: int, what: str) -> Reply:
    if reply.status != status:
        raise BenchError(f"{what}: {reply.status} from {reply.url}: {reply.body[:300]!r}")
    return reply


def with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


def stream(data: bytes) -> Callable[[], Iterator[memoryview]]:
    """The blob as 1 MiB pieces, restartable (a retry needs a new iterator)."""
    def pieces() -> Iterator[memoryview]:
        view = memoryview(data)
        for start in range(0, len(data), PIECE):
            yield view[start:start + PIECE]
    return pieces


# -- the operations (one "request" each, as zb counts them) ------------------
def push(client: Client, base: str, repo: str, tag: str, image: Image, streamed: bool) -> int:
    """Push one image; returns the blob bytes sent (layer + config)."""
    for data, digest in ((image.layer, image.layer_digest), (image.config, image.config_digest)):
        start = expect(client.call("POST", f"{base}/v2/{repo}/blobs/uploads/"), 202, "POST")
        location = urljoin(start.url, start.headers["Location"])
        if streamed:
            patched = expect(client.call("PATCH", location, stream(data),
                                         {"Content-Type": "application/octet-stream"}),
                             202, "PATCH")
            location = urljoin(patched.url, patched.headers["Location"])
            done = client.call("PUT", with_digest(location, digest), b"")
        else:
            done = client.call("PUT", with_digest(location, digest), data,
                               {"Content-Type": "application/octet-stream"})
        expect(done, 201, "PUT ?digest=")
        if done.headers.get("Docker-Content-Digest") not in (None, digest):
            raise BenchError(f"PUT ?digest= answered {done.headers['Docker-Content-Digest']}")
    expect(client.call("PUT", f"{base}/v2/{repo}/manifests/{tag}", image.manifest,
                       {"Content-Type": OCI_MANIFEST}), 201, "PUT manifest")
    return image.size


def pull(client: Client, base: str, image: Pushed, verify: bool = False) -> int:
    """Pull one image as zb does; returns the blob bytes received (layer + config)."""
    url = f"{base}/v2/{image.repo}/manifests/{image.tag}"
    accept = {"Accept": ACCEPT_MANIFEST}
    expect(client.fetch("HEAD", url, accept), 200, "HEAD manifest")
    manifest = json.loads(expect(client.fetch("GET", url, accept), 200, "GET manifest").body)
    config, layer = manifest["config"], manifest["layers"][0]
    moved = 0
    for descriptor, whole in ((config, True), (layer, False)):
        blob = f"{base}/v2/{image.repo}/blobs/{descriptor['digest']}"
        expect(client.fetch("HEAD", blob), 200, "HEAD blob")
        hasher = hashlib.sha256() if verify or whole else None
        got = expect(client.fetch("GET", blob, keep_body=whole, hasher=hasher), 200, "GET blob")
        if got.received != descriptor["size"]:
            raise BenchError(f"GET {blob}: {got.received} bytes, expected {descriptor['size']}")
        if hasher is not None and "sha256:" + hasher.hexdigest() != descriptor["digest"]:
            raise BenchError(f"GET {blob}: digest mismatch")
        moved += got.received
    if layer["digest"] != image.layer_digest or layer["size"] != image.layer_size:
        raise BenchError(f"{url}: manifest names another layer")
    return moved


# -- running one workload ----------------------------------------------------
Op = Callable[[Client], int]


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def drive(ops: list[Op], concurrency: int) -> dict[str, Any]:
    """Run ``ops`` on ``concurrency`` threads: wall time, bytes, per-request latencies."""
    lock = threading.Lock()
    queue = iter(range(len(ops)))
    latencies: list[float] = []
    moved: list[int] = []
    failures: list[BaseException] = []
    deadline = time.monotonic() + PHASE_LIMIT_S
    ready = threading.Barrier(concurrency + 1)

    def worker() -> None:
        client = Client()
        ready.wait()
        try:
            while True:
                with lock:
                    index = next(queue, None)
                    if index is None or failures:
                        return
                if time.monotonic() > deadline:
                    raise BenchError(f"workload exceeded {PHASE_LIMIT_S:.0f} s")
                began = time.perf_counter()
                count = ops[index](client)
                took = time.perf_counter() - began
                with lock:
                    latencies.append(took * 1000)
                    moved.append(count)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            with lock:
                failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"zb-{i}", daemon=True)
               for i in range(concurrency)]
    for thread in threads:
        thread.start()
    ready.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join(PHASE_LIMIT_S + 60)
    wall = time.perf_counter() - began
    if failures:
        raise failures[0]
    if any(thread.is_alive() for thread in threads) or len(latencies) != len(ops):
        raise BenchError("workload did not finish")
    return {"requests": len(ops), "wall_s": wall, "bytes": sum(moved),
            "rps": len(ops) / wall, "mbps": sum(moved) / MB / wall, "latencies_ms": latencies}


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds for the rates; percentiles over every request of every round."""
    ms = [value for one in rounds for value in one["latencies_ms"]]
    mbps = [one["mbps"] for one in rounds]
    return {"rounds": len(rounds), "requests": len(ms),
            "wall_s": sum(one["wall_s"] for one in rounds),
            "bytes": sum(one["bytes"] for one in rounds),
            "rps": statistics.median(one["rps"] for one in rounds),
            "mbps": statistics.median(mbps), "mbps_min": min(mbps), "mbps_max": max(mbps),
            "p50_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99)}


class Target:
    """One workload on one registry (``base`` = ``http://host:port``): its
    repository, and for pulls the images pushed before the clock starts."""

    def __init__(self, work: Workload, base: str, maker: ImageMaker) -> None:
        self.work, self.base, self.maker = work, base, maker
        self.size = work.size_mib * MIB
        self.repo = f"zb/{work.slug}-{uuid.uuid4().hex[:8]}"
        self.pulled: list[Pushed] = []
        if work.kind in ("pull", "mixed"):
            images = [maker.make(self.size) for _ in range(work.c)]
            drive([self._push_op(f"pull{i}", image, streamed=False)
                   for i, image in enumerate(images)], work.c)
            self.pulled = [Pushed(self.repo, f"pull{i}", image.layer_digest, len(image.layer))
                           for i, image in enumerate(images)]

    def _push_op(self, tag: str, image: Image, streamed: bool) -> Op:
        return lambda client: push(client, self.base, self.repo, tag, image, streamed)

    def _pull_op(self, image: Pushed) -> Op:
        return lambda client: pull(client, self.base, image)

    def ops(self, round_no: int) -> list[Op]:
        """One round's ``n`` requests; every push gets a fresh image, made now."""
        work = self.work
        kinds = (mixed_schedule(work.n) if work.kind == "mixed"
                 else ["push" if work.kind.startswith("push") else "pull"] * work.n)
        streamed = work.kind != "push-monolith"
        return [self._push_op(f"r{round_no}t{i}", self.maker.make(self.size), streamed)
                if kind == "push" else self._pull_op(self.pulled[i % len(self.pulled)])
                for i, kind in enumerate(kinds)]

    def verify(self) -> None:
        """Each pulled image once more, untimed, hashing the layer."""
        client = Client()
        try:
            for image in self.pulled:
                pull(client, self.base, image, verify=True)
        finally:
            client.close()


# -- the registries ----------------------------------------------------------
def storage_env(moto_url: str, bucket: str, table: str) -> dict[str, str]:
    return dict(os.environ, AWS_ENDPOINT_URL=moto_url,
                AWS_ACCESS_KEY_ID=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                AWS_SECRET_ACCESS_KEY=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
                AWS_DEFAULT_REGION="us-east-1", CARGOHOLD_BUCKET=bucket,
                CARGOHOLD_TABLE=table, PYTHONUNBUFFERED="1")


@contextmanager
def running_cargohold(work: Path, moto_url: str, *, redirects: bool = True,
                      extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """cargohold in its own process on a bucket and table provisioned first on
    ``moto_url``; yields (``host:port``, pid); stops it on exit."""
    suffix = uuid.uuid4().hex[:10]
    env = storage_env(moto_url, f"bench-{suffix}", f"bench-{suffix}")
    env.update(CARGOHOLD_HMAC_KEY=uuid.uuid4().hex, CARGOHOLD_BLOB_REDIRECTS=str(redirects),
               LOG_LEVEL="WARNING")
    env.update(extra_env or {})
    # Provisioned from a separate process so this one's boto3 state is left alone.
    subprocess.run([sys.executable, "-c",
                    "import os; from chalicelib.storage.provision import provision; "
                    "provision(os.environ['CARGOHOLD_BUCKET'], os.environ['CARGOHOLD_TABLE'], "
                    "'us-east-1')"], cwd=ROOT, env=env, check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    proc, hostport = spawn_registry(env, work / "cargohold.log", "--no-provision")
    try:
        yield hostport, proc.pid
    finally:
        stop_process(proc)


@contextmanager
def running_moto() -> Iterator[str]:
    proc, url = start_moto_process()
    try:
        yield url
    finally:
        stop_process(proc)


@contextmanager
def both_registries() -> Iterator[dict[str, str]]:
    """moto, then cargohold and distribution on it; yields base URLs by name."""
    work = Path(tempfile.mkdtemp(prefix="cargohold-zb-"))
    try:
        with ExitStack() as stack:
            moto_url = stack.enter_context(running_moto())
            cargohold, _ = stack.enter_context(running_cargohold(work, moto_url))
            (work / "distribution").mkdir()
            distribution = stack.enter_context(running_distribution_s3(
                work / "distribution", moto_url, f"distribution-{uuid.uuid4().hex[:10]}",
                redirect=True))
            yield {"cargohold": f"http://{cargohold}", "distribution": f"http://{distribution}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the section ---------------------------------------------------------------
def run(quick: bool) -> dict:
    work_list, rounds = plan(quick)
    maker = ImageMaker(max(w.size_mib for w in work_list) * MIB)
    rows = []
    began = time.monotonic()
    with both_registries() as bases:
        # Warm both (first connections, lazy imports) before anything is timed.
        for base in bases.values():
            warm = Target(Workload("push-monolith", 1, 1, 1), base, maker)
            drive(warm.ops(0), 1)
        for index, work in enumerate(work_list):
            targets = {name: Target(work, bases[name], maker) for name in REGISTRIES}
            measured: dict[str, list[dict[str, Any]]] = {name: [] for name in REGISTRIES}
            for round_no in range(rounds):
                # Who goes first alternates by workload and by round.
                order = REGISTRIES if (index + round_no) % 2 == 0 else REGISTRIES[::-1]
                for name in order:
                    measured[name].append(drive(targets[name].ops(round_no), work.c))
            for target in targets.values():
                target.verify()
            row: dict[str, Any] = {"workload": work.name, "kind": work.kind,
                                   "size_mib": work.size_mib, "n": work.n, "c": work.c}
            for name in REGISTRIES:
                row[name] = summarise(measured[name])
            row["ratio_rps"] = row["cargohold"]["rps"] / row["distribution"]["rps"]
            row["ratio_mbps"] = row["cargohold"]["mbps"] / row["distribution"]["mbps"]
            rows.append(row)
    return {"quick": quick, "rounds": rounds, "rows": rows,
            "seconds": time.monotonic() - began, "mixed_push_share": MIXED_PUSH_SHARE}


def markdown(result: dict) -> str:
    rounds = result["rounds"]
    push_share = result["mixed_push_share"] * 100
    lines = [
        "One request = one whole image push or pull, as zot's `zb` counts them "
        "(`zb` itself cannot be fetched here; `bench/sec_throughput.py` drives the same "
        "workloads). push-monolith: POST + `PUT ?digest=` with the whole body for layer and "
        "config, then the manifest; push-chunk-streamed: POST + ONE chunked PATCH (no "
        "Content-Length) + empty `PUT ?digest=`; pull: manifest, config and layer, each HEAD "
        "and GET, following 307s to presigned S3 URLs (distribution redirects blob HEADs "
        "too, cargohold answers them itself); mixed: "
        f"{100 - push_share:.0f} % pulls and {push_share:.0f} % chunk-streamed pushes in one "
        "seeded order. Every push is a fresh image (nothing deduplicates). Both registries "
        "run in their own processes on ONE moto server (a bucket each), blob redirects on, "
        "default part sizes; distribution v3.1.2 on its `s3` driver.",
        "",
        f"n requests per round on c threads, {rounds} round{'s' if rounds > 1 else ''} per "
        "registry, taking turns (who goes first alternates). requests/s and MB/s (10^6 "
        "bytes of blobs, layer + config, per second of wall time) are medians over rounds, "
        "with the range of MB/s over rounds; latency percentiles are over all requests of "
        f"all rounds ({rounds} × n). Ratio = cargohold / distribution, same run.",
        "",
        "| workload | n × rounds | c | registry | requests/s | MB/s (range) "
        "| p50 ms | p90 ms | p99 ms |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        for name in REGISTRIES:
            m = row[name]
            lines.append(
                f"| {row['workload']} | {row['n']} × {rounds} | {row['c']} | {name} | "
                f"{m['rps']:.2f} req/s | {m['mbps']:.1f} MB/s ({m['mbps_min']:.1f}–"
                f"{m['mbps_max']:.1f}) | {m['p50_ms']:.0f} ms | {m['p90_ms']:.0f} ms | "
                f"{m['p99_ms']:.0f} ms |")
    lines += ["", "Both registries move the same bytes per request (same sizes, same mixed "
              "order), so the two ratios agree; both are shown as computed.", "",
              "| workload | requests/s, cargohold / distribution | MB/s, cargohold / "
              "distribution |", "|---|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['workload']} | {row['ratio_rps']:.2f}× | "
                     f"{row['ratio_mbps']:.2f}× |")
    lines += ["", f"Whole section: {result['seconds']:.0f} s"
              f"{' (quick: 1 MiB only, n = 2, c = 1, 1 round)' if result['quick'] else ''}. "
              "Absolute figures are bounded by moto (one Python process serving S3 for both "
              "registries and every redirected pull) on a 2-core machine that also runs the "
              "driver and both registries; the ratios are the comparison."]
    return "\n".join(lines) + "\n"


def plot_data(result: dict) -> dict | None:
    rows = result["rows"]
    return {"title": "Throughput per zb workload (higher is better)", "unit": "MB/s",
            "labels": [row["workload"] for row in rows],
            "series": {name: [round(row[name]["mbps"], 2) for row in rows]
                       for name in REGISTRIES}}


if __name__ == "__main__":
    print(markdown(run(quick="--quick" in sys.argv)))
