"""What digest verification costs in cargohold, measured on this machine.

Run: ``python bench/verify.py [--size-mib 256] [--hash-mib 64] [--reps 5]``

Every figure is set against a baseline measured in the same run, because
the machine is shared and noisy: compare ratios between runs, not MB/s.

(a) ``ResumableSha256`` fed 4 MiB chunks with a save()/restore between
    every chunk, as the registry does across PATCH requests, against plain
    ``hashlib.sha256`` over the same bytes (median of interleaved runs).
(b) The pure-Python fallback engine on a small sample, against hashlib:
    why the engine of choice is OpenSSL's ``SHA256_*`` through ctypes.
(c) Read-back verification, for bytes that bypassed the registry (direct-
    to-S3 parts): ``BlobStore.hash_object`` over a ``--size-mib`` blob in
    moto, parallelism 1 against 8.
(d) Completion (``PUT ?digest=``) of streamed uploads of ``--size-mib``/4
    and ``--size-mib`` through the in-process registry, PATCHed in 4 MiB
    chunks: the state is carried, so completion hashes nothing and its
    time should not grow with the blob. botocore's call events split the
    wall time into moto's CompleteMultipartUpload and the rest.
(e) A table: the largest blob whose completion fits in 25 s here. For
    read-back that is 25 s × (c)'s MB/s (and 25 s × hashlib's, the ceiling
    however fast S3 is); streamed completion is bound by S3's part count.

moto runs in its own process and is the S3 here. It is one process on a
shared 2-core machine, and it copies the whole object for every ranged GET
and for CompleteMultipartUpload, so its figures are a floor for S3, not an
estimate of it. MB = 10^6 bytes. Exits 2 if any digest comes out wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.config import Settings  # noqa: E402
from chalicelib.core.http import Request, Response  # noqa: E402
from chalicelib.devserver import local_app, start_moto_process, stop_process, use_emulator  # noqa: E402
from chalicelib.registry.resumable_sha256 import ResumableSha256  # noqa: E402
from chalicelib.storage import clients  # noqa: E402
from chalicelib.storage.blobs import RANGE_SIZE, BlobStore  # noqa: E402
from chalicelib.storage.provision import create_bucket, provision  # noqa: E402

MIB = 1024 * 1024
MB = 1_000_000
CHUNK = 4 * MIB
BUDGET_S = 25.0
S3_MAX_PARTS = 10_000


class DigestMismatchError(Exception):
    """A digest the benchmark computed twice disagreed: its figures are void."""


def mbps(nbytes: int, seconds: float) -> float:
    return nbytes / MB / seconds


def check(label: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise DigestMismatchError(f"{label}: {actual} != {expected}")


def pseudo_random(rng: random.Random, size: int) -> bytes:
    """``size`` seeded bytes (``randbytes`` alone overflows past 256 MiB)."""
    piece = 16 * MIB
    return b"".join(rng.randbytes(min(piece, size - i)) for i in range(0, size, piece))


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


# -- (a) and (b): hashing in this process ------------------------------------
def hash_resumable(chunks: list[bytes]) -> str:
    """As the registry does across requests: restore, update, save, per chunk."""
    state: bytes | None = None
    for chunk in chunks:
        hasher = ResumableSha256(state)
        hasher.update(chunk)
        state = hasher.save()
    return ResumableSha256(state).hexdigest()


def hash_plain(chunks: list[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


def bench_resumable(data: bytes, reps: int) -> dict[str, float]:
    chunks = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    expected = hashlib.sha256(data).hexdigest()
    engine = ResumableSha256().engine
    resumable: list[float] = []
    plain: list[float] = []
    for _ in range(reps):  # interleaved, so drift in machine load hits both alike
        seconds, digest = timed(lambda: hash_resumable(chunks))
        check("resumable", digest, expected)
        resumable.append(mbps(len(data), seconds))
        seconds, digest = timed(lambda: hash_plain(chunks))
        check("hashlib", digest, expected)
        plain.append(mbps(len(data), seconds))
    # What the save/restore round trip itself costs, apart from hashing.
    mid = ResumableSha256()
    mid.update(data[:1000])  # a pending partial block, as between real chunks
    state = mid.save()
    rounds = 20_000
    seconds, _ = timed(lambda: [ResumableSha256(state).save() for _ in range(rounds)])
    return {"engine": engine, "resumable": statistics.median(resumable),
            "plain": statistics.median(plain), "chunks": len(chunks),
            "roundtrip_us": seconds / rounds * 1e6,
            "resumable_all": resumable, "plain_all": plain}


def bench_python_engine(sample: bytes, reps: int) -> dict[str, float]:
    expected = hashlib.sha256(sample).hexdigest()
    python: list[float] = []
    plain: list[float] = []
    inner = 200  # hashlib takes ~0.1 ms on the sample: time many to see it
    for _ in range(reps):
        hasher = ResumableSha256(engine="python")
        seconds, _ = timed(lambda h=hasher: h.update(sample))
        check("python engine", hasher.hexdigest(), expected)
        python.append(mbps(len(sample), seconds))
        seconds, _ = timed(lambda: [hashlib.sha256(sample).digest() for _ in range(inner)])
        plain.append(mbps(len(sample) * inner, seconds))
    return {"python": statistics.median(python), "plain": statistics.median(plain)}


# -- (c): read-back from S3 ---------------------------------------------------
def bench_readback(bucket: str, region: str, blob: bytes, reps: int) -> dict[str, Any]:
    from boto3.s3.transfer import TransferConfig

    s3 = clients.client("s3", region)
    key = f"bench/readback-{uuid.uuid4().hex}"
    config = TransferConfig(multipart_threshold=8 * MIB, multipart_chunksize=8 * MIB,
                            max_concurrency=4)
    upload_s, _ = timed(lambda: s3.upload_fileobj(io.BytesIO(blob), bucket, key, Config=config))
    size = len(blob)
    expected = hashlib.sha256(blob).hexdigest()
    store = BlobStore(bucket, region)
    runs: dict[int, list[float]] = {1: [], 8: []}
    for _ in range(reps):
        for parallelism in runs:
            hasher = hashlib.sha256()  # what a direct completion uses (digest.hasher())
            seconds, _ = timed(lambda h=hasher, p=parallelism: store.hash_object(
                key, size, h, parallelism=p))
            check(f"hash_object p={parallelism}", hasher.hexdigest(), expected)
            runs[parallelism].append(mbps(size, seconds))
    s3.delete_object(Bucket=bucket, Key=key)
    return {"upload": mbps(size, upload_s), "p1": statistics.median(runs[1]),
            "p8": statistics.median(runs[8]), "runs": runs}


# -- (d): streamed completion through the registry ---------------------------
class AwsTimer:
    """Wall time spent inside boto3 API calls, per operation, from botocore's
    ``before-call``/``after-call`` events: separates moto's share of a
    completion from the registry's own."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self.spent: dict[str, float] = {}
        self.calls = 0

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._before, unique_id="bench-timer-b")
        client.meta.events.register("after-call", self._after, unique_id="bench-timer-a")

    def reset(self) -> None:
        with self._lock:
            self.spent, self.calls = {}, 0

    def _before(self, **_: Any) -> None:
        self._local.started = time.perf_counter()

    def _after(self, model: Any, **_: Any) -> None:
        seconds = time.perf_counter() - getattr(self._local, "started", time.perf_counter())
        with self._lock:
            self.spent[model.name] = self.spent.get(model.name, 0.0) + seconds
            self.calls += 1


def call(app: Callable[[Request], Response], method: str, target: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> Response:
    """One request straight into the registry (as tests/conftest.py's ``call``)."""
    path, _, query = target.partition("?")
    response = app(Request.build(method, path, query, headers or {}, body))
    response.body = response.read_body()
    return response


def expect(response: Response, status: int, what: str) -> Response:
    if response.status != status:
        raise RuntimeError(f"{what}: {response.status} {response.body[:300]!r}")
    return response


def streamed_completion(app: Callable[[Request], Response], blob: bytes,
                        timer: AwsTimer) -> dict[str, float]:
    """PATCH ``blob`` in 4 MiB chunks, then time only the final ``PUT ?digest=``."""
    name = f"bench/streamed-{uuid.uuid4().hex[:8]}"
    location = expect(call(app, "POST", f"/v2/{name}/blobs/uploads/"), 202,
                      "POST").headers["Location"]
    started = time.perf_counter()
    for offset in range(0, len(blob), CHUNK):
        piece = blob[offset:offset + CHUNK]
        response = expect(call(app, "PATCH", location, piece, {
            "Content-Range": f"{offset}-{offset + len(piece) - 1}",
            "Content-Length": str(len(piece)), "Content-Type": "application/octet-stream"}),
            202, f"PATCH at {offset}")
        location = response.headers["Location"]
    patch_s = time.perf_counter() - started
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    timer.reset()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    expect(call(app, "PUT", f"{location}&digest={digest}", b"", {"Content-Length": "0"}),
           201, "PUT ?digest=")
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    aws = sum(timer.spent.values())
    assembly = timer.spent.get("CompleteMultipartUpload", 0.0)
    calls = timer.calls
    head = expect(call(app, "HEAD", f"/v2/{name}/blobs/{digest}"), 200, "HEAD")
    check("HEAD", head.headers.get("Docker-Content-Digest", ""), digest)
    if head.headers.get("Content-Length") != str(len(blob)):
        raise DigestMismatchError(f"HEAD size {head.headers.get('Content-Length')} != {len(blob)}")
    return {"size": len(blob), "patch_mbps": mbps(len(blob), patch_s), "wall": wall,
            "cpu": cpu, "aws": aws, "assembly": assembly, "calls": calls,
            "rest": wall - assembly, "per_call": dict(timer.spent)}


# -- report -------------------------------------------------------------------
def fmt_bytes(value: float) -> str:
    return f"{value / 1e9:.2f} GB" if value >= 1e9 else f"{value / MB:.0f} MB"


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    began = time.perf_counter()

    print(f"(a) ResumableSha256, 4 MiB chunks, save()/restore between every chunk, "
          f"vs hashlib.sha256 on the same {args.hash_mib} MiB; median of {args.reps} "
          f"interleaved runs each")
    data = pseudo_random(rng, args.hash_mib * MIB)
    a = bench_resumable(data, args.reps)
    print(f"    engine: {a['engine']}; {a['chunks']} chunks per run")
    print(f"    resumable: {a['resumable']:8.0f} MB/s   "
          f"(runs: {', '.join(f'{v:.0f}' for v in a['resumable_all'])})")
    print(f"    hashlib:   {a['plain']:8.0f} MB/s   "
          f"(runs: {', '.join(f'{v:.0f}' for v in a['plain_all'])})")
    print(f"    ratio resumable/hashlib: {a['resumable'] / a['plain']:.3f}")
    chunk_ms = CHUNK / MB / a["resumable"] * 1e3
    print(f"    one save()+restore: {a['roundtrip_us']:.1f} µs, against {chunk_ms:.1f} ms "
          f"to hash a 4 MiB chunk ({a['roundtrip_us'] / 1e3 / chunk_ms:.2%})")

    print(f"\n(b) pure-Python engine on a {args.sample_kib} KiB sample vs hashlib, "
          f"median of {max(3, args.reps // 2)}")
    b = bench_python_engine(data[: args.sample_kib * 1024], max(3, args.reps // 2))
    print(f"    python engine: {b['python']:8.2f} MB/s")
    print(f"    hashlib:       {b['plain']:8.0f} MB/s")
    print(f"    ratio python/hashlib: {b['python'] / b['plain']:.5f} "
          f"(hashlib is {b['plain'] / b['python']:.0f}x faster)")
    print(f"    with it, one 4 MiB PATCH would spend {CHUNK / MB / b['python']:.1f} s hashing, "
          f"and a 1 GB blob {1000 / b['python'] / 60:.0f} min of CPU")
    del data

    moto, moto_url = start_moto_process()
    try:
        use_emulator(moto_url)
        clients.reset()
        suffix = uuid.uuid4().hex[:10]
        base = Settings.from_env(blob_redirects_default=False)
        settings = replace(base, bucket=f"bench-{suffix}", table=f"bench-{suffix}")
        size = args.size_mib * MIB
        small = max(RANGE_SIZE, size // 8)

        print(f"\n(c) read-back: BlobStore.hash_object over a {args.size_mib} MiB object in moto "
              f"({RANGE_SIZE // MIB} MiB ranges), parallelism 1 vs 8, median of "
              f"{args.readback_reps} interleaved runs each; a {small // MIB} MiB object as a "
              f"second baseline")
        create_bucket(settings.bucket, settings.region)
        readback = {}
        for each in (small, size):
            blob = pseudo_random(rng, each)
            readback[each] = bench_readback(settings.bucket, settings.region, blob,
                                            args.readback_reps)
            del blob
        c = readback[size]
        for each, figures in readback.items():
            print(f"    {each // MIB:4d} MiB object (uploaded by upload_fileobj, 8 MiB parts, at "
                  f"{figures['upload']:.0f} MB/s)")
            for p in (1, 8):
                print(f"        parallelism {p}: {figures[f'p{p}']:6.0f} MB/s   "
                      f"(runs: {', '.join(f'{v:.0f}' for v in figures['runs'][p])})")
            print(f"        ratio parallelism 8/1: {figures['p8'] / figures['p1']:.2f}")
        print(f"    ratio {size // MIB} MiB/{small // MIB} MiB at parallelism 8: "
              f"{c['p8'] / readback[small]['p8']:.2f}: moto re-reads the whole object for "
              f"every ranged GET, so its rate falls as blobs grow and parallel ranges only "
              f"queue behind one moto process; S3 does neither")
        print(f"    hashing alone (a, hashlib): {a['plain']:.0f} MB/s: read-back can never beat "
              f"it, however fast S3 serves the ranges")

        print(f"\n(d) completion (PUT ?digest=) of a streamed upload through the in-process "
              f"registry, PATCHed in 4 MiB chunks (part size {settings.part_size // MIB} MiB)")
        provision(settings.bucket, settings.table, settings.region)
        timer = AwsTimer()
        timer.attach(clients.client("s3", settings.region))
        timer.attach(clients.client("dynamodb", settings.region))
        app = local_app(settings)
        streamed = []
        for each in sorted({max(CHUNK, size // 4), size}):
            d = streamed_completion(app, pseudo_random(rng, each), timer)
            streamed.append(d)
            print(f"    {each // MIB:5d} MiB: completion {d['wall'] * 1e3:5.0f} ms wall = "
                  f"{d['assembly'] * 1e3:4.0f} ms CompleteMultipartUpload in moto + "
                  f"{d['rest'] * 1e3:3.0f} ms the rest ({d['aws'] * 1e3 - d['assembly'] * 1e3:.0f}"
                  f" ms in {d['calls'] - 1} other AWS calls); registry-process CPU "
                  f"{d['cpu'] * 1e3:.0f} ms")
            print(f"    {'':9s} AWS calls: " + ", ".join(
                f"{op} {ms * 1e3:.0f} ms" for op, ms in sorted(d["per_call"].items())))
            print(f"    {'':9s} (PATCHes ran at {d['patch_mbps']:.0f} MB/s; a read-back of this "
                  f"blob at (c)'s parallelism-8 rate would add "
                  f"{d['size'] / MB / c['p8'] * 1e3:.0f} ms)")
        first, last = streamed[0], streamed[-1]
        grow = last["size"] / first["size"]
        if len(streamed) > 1:
            print(f"    blob x{grow:.0f} -> completion wall x{last['wall'] / first['wall']:.2f}; "
                  f"without moto's CompleteMultipartUpload x{last['rest'] / first['rest']:.2f}; "
                  f"registry CPU x{last['cpu'] / max(first['cpu'], 1e-9):.2f} "
                  f"(read-back grows x{grow:.0f})")
            print("    moto's CompleteMultipartUpload concatenates every part in Python; both "
                  "designs call it, read-back then also re-reads the blob")

        print(f"\n(e) largest blob whose completion fits in {BUDGET_S:.0f} s here")
        part_limit = S3_MAX_PARTS * settings.part_size
        header = ("design", "measured here", f"largest blob verified within {BUDGET_S:.0f} s")
        rows = [
            ("streamed (resumable state)",
             f"{first['wall'] * 1e3:.0f} ms at {first['size'] // MIB} MiB, "
             f"{last['wall'] * 1e3:.0f} ms at {last['size'] // MIB} MiB",
             f"not bound by time (no hashing); by S3's {S3_MAX_PARTS:,} parts x "
             f"{settings.part_size // MIB} MiB = {fmt_bytes(part_limit)}"),
        ]
        for label, rate in (("read-back, parallelism 8", c["p8"]),
                            ("read-back, parallelism 1", c["p1"]),
                            ("read-back ceiling: hashlib alone", a["plain"])):
            rows.append((label, f"{rate:.0f} MB/s",
                         f"{BUDGET_S:.0f} s x {rate:.0f} MB/s = {fmt_bytes(BUDGET_S * rate * MB)}"))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
        print("    " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        print("    " + "  ".join("-" * w for w in widths))
        for row in rows:
            print("    " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
        print("    (read-back rows: the hash only, without CompleteMultipartUpload and the other "
              "calls of a completion, at the rate of a\n    "
              f"{size // MIB} MiB object in moto, whose rate falls as objects grow (see c); "
              "the streamed row is whole completions)")
        print(f"\nsummary: resumable/hashlib {a['resumable'] / a['plain']:.3f}; "
              f"python/hashlib {b['python'] / b['plain']:.5f}; read-back p8/p1 "
              f"{c['p8'] / c['p1']:.2f}; streamed completion: blob x{grow:.0f} -> "
              f"wall x{last['wall'] / first['wall']:.2f}, registry's own x"
              f"{last['rest'] / first['rest']:.2f}; total run {time.perf_counter() - began:.0f} s")
        return 0
    except DigestMismatchError as exc:
        print(f"FAIL: digest mismatch: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_process(moto)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256,
                        help="blob for read-back and the larger streamed upload (default 256)")
    parser.add_argument("--hash-mib", type=int, default=64,
                        help="bytes hashed per run in (a) (default 64)")
    parser.add_argument("--sample-kib", type=int, default=128,
                        help="sample for the pure-Python engine in (b) (default 128)")
    parser.add_argument("--reps", type=int, default=5, help="runs per figure in (a) (default 5)")
    parser.add_argument("--readback-reps", type=int, default=3,
                        help="runs per parallelism in (c) (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the pseudo-random bytes")
    args = parser.parse_args(argv)
    if args.size_mib < 8 or args.hash_mib < 4 or args.sample_kib < 1 or args.reps < 1 \
            or args.readback_reps < 1:
        parser.error("need --size-mib >= 8, --hash-mib >= 4, and positive counts")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
