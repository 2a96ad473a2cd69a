"""Push and pull throughput: the cargohold client next to s3transfer and crane.

Run: ``python bench/transfer.py [--size-mib 1024] [--concurrency 4]``

One run, one blob of ``--size-mib`` pseudo-random bytes written to a temp
file (never held in memory), one moto server in its own process (S3 and
DynamoDB, in moto's memory) and the registry in another (``python -m
chalicelib.devserver --storage external --port 0``). The same bytes then go:

* through the cargohold client library (``RegistryClient.upload_blob``):
  by default with the direct-to-S3 parts extension, and once more with
  ``use_extensions=False`` (one streamed ``PUT`` through the registry);
  pulled back with ``get_blob`` (which verifies the digest as it streams);
* through boto3's s3transfer (``upload_file``/``download_file`` with a
  ``TransferConfig`` of the same part size and concurrency) to the same S3
  endpoint: the floor for anything that goes through S3;
* through ``crane push`` of an OCI layout whose one layer is the blob, and
  ``crane blob`` to pull it back.

Every download is hashed afterwards (outside the timing) and compared with
the digest computed while writing the file. MB/s are 10^6 bytes per
second. Exits 2 if anything fails or does not verify.

Caveat: moto answers every *ranged* GET by reading and copying the whole
object, so on moto ranged reads cost O(size) each and O(size²) in all.
That penalises s3transfer's ``download_file`` and the registry's parallel
read-back after a direct-parts upload (the completion time is printed),
not single-stream GETs; on real S3 a range costs its own length.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.client import RegistryClient  # noqa: E402
from chalicelib.client import registry as client_registry  # noqa: E402
from chalicelib.client.registry import UploadSource  # noqa: E402
from chalicelib.devserver import (  # noqa: E402
    spawn_registry,
    start_moto_process,
    stop_process,
)

MIB = 1024 * 1024
MB = 1_000_000
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass
class Result:
    direction: str
    label: str
    seconds: float
    size: int

    @property
    def mb_per_s(self) -> float:
        return self.size / MB / self.seconds


def write_source(path: Path, size: int, seed: int) -> str:
    """``size`` pseudo-random bytes into ``path`` 1 MiB at a time; their digest."""
    rng = random.Random(seed)
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        written = 0
        while written < size:
            piece = rng.randbytes(min(MIB, size - written))
            hasher.update(piece)
            out.write(piece)
            written += len(piece)
    return "sha256:" + hasher.hexdigest()


def file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with path.open("rb") as stream:
        while piece := stream.read(4 * MIB):
            hasher.update(piece)
    return "sha256:" + hasher.hexdigest()


def timed(direction: str, label: str, size: int, action: Callable[[], object]) -> Result:
    print(f"  {direction} {label} ...", end="", flush=True)
    started = time.perf_counter()
    action()
    result = Result(direction, label, time.perf_counter() - started, size)
    print(f" {result.seconds:.1f} s", flush=True)
    return result


def check(path: Path, digest: str, what: str) -> None:
    actual = file_digest(path)
    if actual != digest:
        raise RuntimeError(f"{what}: downloaded bytes hash to {actual}, expected {digest}")
    path.unlink()


def write_layout(root: Path, source: Path, digest: str, size: int) -> None:
    """An OCI image layout whose only layer is the source file (hard-linked,
    so the bytes are not copied); the blob is an uncompressed 'tar' layer,
    its diff_id therefore its own digest."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    try:
        os.link(source, blobs / digest.split(":", 1)[1])
    except OSError:
        shutil.copyfile(source, blobs / digest.split(":", 1)[1])

    def put(document: dict[str, object]) -> dict[str, object]:
        data = json.dumps(document, separators=(",", ":")).encode()
        name = hashlib.sha256(data).hexdigest()
        (blobs / name).write_bytes(data)
        return {"digest": f"sha256:{name}", "size": len(data)}

    config = put({"architecture": "amd64", "os": "linux",
                  "rootfs": {"type": "layers", "diff_ids": [digest]}})
    manifest = put({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, **config},
                    "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": size}]})
    (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (root / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, **manifest}]}))


def find_crane() -> str | None:
    return shutil.which("crane", path=f"{ROOT / '.tools' / 'bin'}:{os.environ.get('PATH', '')}")


def run(args: argparse.Namespace) -> int:
    import boto3
    from boto3.s3.transfer import TransferConfig

    size = args.size_mib * MIB
    part = args.part_mib * MIB
    workdir = Path(tempfile.mkdtemp(prefix="cargohold-transfer-", dir=args.tmp))
    moto = registry = None
    results: list[Result] = []
    try:
        source = workdir / "blob.bin"
        print(f"writing {args.size_mib} MiB of pseudo-random bytes to {source} ...", flush=True)
        digest = write_source(source, size, args.seed)
        moto, moto_url = start_moto_process()
        suffix = uuid.uuid4().hex[:10]
        bucket = f"bench-{suffix}"
        env = dict(os.environ, AWS_ENDPOINT_URL=moto_url,
                   AWS_ACCESS_KEY_ID=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                   AWS_SECRET_ACCESS_KEY=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
                   AWS_DEFAULT_REGION=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                   CARGOHOLD_BUCKET=bucket, CARGOHOLD_TABLE=f"bench-{suffix}",
                   CARGOHOLD_HMAC_KEY=os.environ.get("CARGOHOLD_HMAC_KEY") or uuid.uuid4().hex,
                   CARGOHOLD_BLOB_REDIRECTS="true" if args.blob_redirects else "false",
                   PYTHONUNBUFFERED="1", LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"))
        registry, hostport = spawn_registry(env, workdir / "registry.log")
        print(f"blob {digest}, {size / MB:.0f} MB; moto at {moto_url}, registry at {hostport}; "
              f"{args.part_mib} MiB parts, concurrency {args.concurrency}, blob redirects "
              f"{'on' if args.blob_redirects else 'off'}", flush=True)

        # -- cargohold client library ------------------------------------------
        client_registry.PART_SIZE = part  # the client's direct-part size
        client = RegistryClient(f"http://{hostport}", concurrency=args.concurrency)
        streaming = RegistryClient(f"http://{hostport}", concurrency=args.concurrency,
                                   use_extensions=False)
        blob = UploadSource.from_path(source)
        completions: list[float] = []
        complete = client._complete

        def timed_complete(*a: object, **k: object) -> str:
            started = time.perf_counter()
            try:
                return complete(*a, **k)  # type: ignore[arg-type]
            finally:
                completions.append(time.perf_counter() - started)

        client._complete = timed_complete  # type: ignore[method-assign]
        results.append(timed("push", "cargohold client (direct-to-S3 parts)", size,
                             lambda: client.upload_blob("bench/direct", digest, blob)))
        client._complete = complete  # type: ignore[method-assign]
        print(f"    of which completion (registry verifies the assembled blob): "
              f"{sum(completions):.1f} s", flush=True)
        results.append(timed("push", "cargohold client (one streamed PUT)", size,
                             lambda: streaming.upload_blob("bench/streamed", digest, blob)))
        if client.blob_size("bench/direct", digest) != size:
            raise RuntimeError("registry does not report the pushed blob's size")
        pulled = workdir / "pulled-cargohold.bin"

        def cargohold_pull() -> None:
            with pulled.open("wb") as out:
                for chunk in client.get_blob("bench/direct", digest):  # verifies the digest
                    out.write(chunk)

        results.append(timed("pull", "cargohold client get_blob (digest verified)", size,
                             cargohold_pull))
        check(pulled, digest, "cargohold pull")

        # -- boto3 s3transfer, same endpoint -------------------------------------
        s3 = boto3.client("s3", endpoint_url=moto_url, region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])
        config = TransferConfig(multipart_threshold=part, multipart_chunksize=part,
                                max_concurrency=args.concurrency, use_threads=True)
        key = f"bench/s3transfer/{suffix}"
        results.append(timed("push", "s3transfer upload_file", size,
                             lambda: s3.upload_file(str(source), bucket, key, Config=config)))
        downloaded = workdir / "pulled-s3transfer.bin"
        results.append(timed("pull", "s3transfer download_file", size,
                             lambda: s3.download_file(bucket, key, str(downloaded),
                                                      Config=config)))
        check(downloaded, digest, "s3transfer download")
        s3.delete_object(Bucket=bucket, Key=key)  # moto keeps it in memory

        # -- crane ---------------------------------------------------------------
        crane = find_crane()
        if crane is None:
            print("  crane not found (run `make tools`): skipped", flush=True)
        else:
            layout = workdir / "layout"
            write_layout(layout, source, digest, size)
            crane_env = dict(os.environ, DOCKER_CONFIG=str(workdir / "docker-config"))
            reference = f"{hostport}/bench/crane:latest"

            crane_log = (workdir / "crane.log").open("ab")

            def crane_push() -> None:
                subprocess.run([crane, "push", str(layout), reference, "--insecure"],
                               check=True, env=crane_env, stdout=crane_log, stderr=crane_log)

            results.append(timed("push", "crane push (OCI layout)", size, crane_push))
            crane_pulled = workdir / "pulled-crane.bin"

            def crane_pull() -> None:
                with crane_pulled.open("wb") as out:
                    subprocess.run([crane, "blob", f"{hostport}/bench/crane@{digest}",
                                    "--insecure"], check=True, env=crane_env, stdout=out,
                                   stderr=crane_log)

            results.append(timed("pull", "crane blob", size, crane_pull))
            crane_log.close()
            check(crane_pulled, digest, "crane blob")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        if registry is not None:
            stop_process(registry)
        if moto is not None:
            stop_process(moto)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n{args.size_mib} MiB blob, all downloads verified against {digest[:19]}…")
    for r in results:
        print(f"  {r.direction}  {r.label:<46} {r.mb_per_s:8.1f} MB/s  ({r.seconds:6.1f} s)")
    by_label = {r.label: r.mb_per_s for r in results}

    def ratio(a: str, b: str) -> str:
        if a not in by_label or b not in by_label:
            return "n/a"
        return f"{by_label[a] / by_label[b]:.2f}"

    direct, streamed = ("cargohold client (direct-to-S3 parts)",
                        "cargohold client (one streamed PUT)")
    pull = "cargohold client get_blob (digest verified)"
    print("ratios (higher is better for cargohold):")
    print(f"  push cargohold/s3transfer: {ratio(direct, 's3transfer upload_file')} direct parts, "
          f"{ratio(streamed, 's3transfer upload_file')} streamed PUT")
    print(f"  push cargohold/crane:      {ratio(direct, 'crane push (OCI layout)')} direct parts, "
          f"{ratio(streamed, 'crane push (OCI layout)')} streamed PUT")
    print(f"  pull cargohold/s3transfer: {ratio(pull, 's3transfer download_file')}")
    print(f"  pull cargohold/crane:      {ratio(pull, 'crane blob')}")
    print("note: moto copies the whole object for every ranged GET, which slows "
          "s3transfer download_file\n      and the direct-parts completion (a ranged "
          "read-back) far more than real S3 would.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="blob size (default 1024)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="parallel parts, for cargohold and s3transfer alike (default 4)")
    parser.add_argument("--part-mib", type=int, default=16,
                        help="part size for direct parts and s3transfer (default 16)")
    parser.add_argument("--blob-redirects", action="store_true",
                        help="registry answers blob GETs with 307 to presigned S3 URLs")
    parser.add_argument("--seed", type=int, default=1, help="seed of the pseudo-random bytes")
    parser.add_argument("--tmp", default=None, help="directory for the temp files")
    args = parser.parse_args(argv)
    if args.size_mib <= 0 or args.concurrency <= 0 or args.part_mib < 5:
        parser.error("--size-mib and --concurrency must be positive, --part-mib at least 5")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
