"""Warm CPU per request type: only our code (and botocore) on the clock.

Run: ``python bench/sec_cpu.py [--quick]``

The registry runs in-process over real botocore clients (us-east-1, dummy
credentials), built with the same
``Config`` as :mod:`chalicelib.storage.clients` and put in its client
cache. Every HTTP attempt is answered by a ``before-send`` handler that
returns a canned ``AWSResponse`` per operation (DynamoDB GetItem answers
by the key asked for). Why ``before-send`` and not ``botocore.stub.Stubber``:
the Stubber answers at ``before-call``, so it skips request signing
(SigV4 HMACs, the payload checksum of a 1 MiB PutObject) and response
parsing, which Lambda does pay on every call; and its strict queue of
expected calls would have to be refilled per request. ``before-send``
keeps serialisation, signing, checksums and parsing on the clock (the
hook reads a streamed body as sending would, which is when botocore
computes a PutObject's CRC32 trailer) and drops only the network, so the
figures are the CPU a warm Lambda spends per request, minus the TLS and
socket work urllib3 would do. The clients use AWS's own https endpoints,
as in Lambda (over plain http botocore would also SHA-256 every S3
payload for the signature); nothing is ever sent: the hook answers every
attempt, or raises before any connection is made.

Each request type runs as a fresh :class:`Request` (built off the clock)
through ``dispatch.handle`` — what every door calls — and its body is
read; two more rows run the same through the Lambda handler (``app.app``
with an API Gateway proxy event) to show Chalice's share. Types are
interleaved round by round, so machine noise hits all alike; the first
rounds are warm-up. CPU is ``time.process_time_ns`` (process CPU, all
threads; botocore starts none here), wall is ``time.perf_counter_ns``;
garbage collection stays on, as in Lambda. Baselines from the same run:
an empty dispatch (``GET /v2/``, no AWS call) and one bare stubbed
``get_item`` on the same client. The AWS calls each request made are
recorded and checked against what it must make.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.config import Settings  # noqa: E402
from chalicelib.core import manifests  # noqa: E402
from chalicelib.core.http import Request  # noqa: E402
from chalicelib.core.routes import url_for  # noqa: E402
from chalicelib.registry import tokens  # noqa: E402
from chalicelib.registry.dispatch import handle  # noqa: E402
from chalicelib.registry.resumable_sha256 import ResumableSha256  # noqa: E402
from chalicelib.registry.service import Registry  # noqa: E402
from chalicelib.storage import clients  # noqa: E402
from chalicelib.storage.metadata import UploadRecord  # noqa: E402

TITLE = "Warm CPU per request"
COMMAND = "python bench/sec_cpu.py"

REGION = "us-east-1"
BUCKET = TABLE = "bench-cpu"
HMAC_KEY = b"bench-cpu-hmac-key"
REPO = "bench/app"
UPLOAD_ID = "0b5e6d3c-1f2a-4c3b-9d8e-7f6a5b4c3d2e"
MIB = 1024 * 1024
PATCH_SIZE = MIB
PUT_SIZE = 4 * 1024
TAG_COUNT = 10
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
SEND_BLOCK = 16 * 1024  # urllib3's default blocksize for a streamed request body


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


_rng = random.Random(5)
PATCH_BODY = _rng.randbytes(PATCH_SIZE)
PUT_BODY = _rng.randbytes(PUT_SIZE)
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYERS = [_rng.randbytes(64) for _ in range(2)]
MANIFEST = json.dumps({
    "schemaVersion": 2, "mediaType": manifests.OCI_MANIFEST,
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": _digest(CONFIG), "size": len(CONFIG)},
    "layers": [{"mediaType": LAYER, "digest": _digest(layer), "size": 31_457_280}
               for layer in LAYERS],
}, indent=3).encode()
MANIFEST_DIGEST = _digest(MANIFEST)
BLOB_DIGEST = _digest(LAYERS[0])


def _wire(value: Any) -> Any:
    """A DynamoDB item as JSON on the wire (binary attributes base64)."""
    if isinstance(value, dict):
        return {k: (base64.b64encode(v).decode() if k == "B" else _wire(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


class _Raw:
    """The ``raw`` of an AWSResponse: what botocore reads a body from."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._read = False

    def stream(self, **_: Any):
        yield self._body

    def read(self, amt: int | None = None) -> bytes:
        if self._read:
            return b""
        self._read = True
        return self._body


class CannedAws:
    """``before-send`` answers for the calls the benchmarked requests make."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        now = int(time.time())
        self.upload_item = _wire(UploadRecord(
            upload_id=UPLOAD_ID, name=REPO, hash_state=ResumableSha256().save(),
            expires=now + 7 * 24 * 3600).to_item())

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-send", self.answer)

    def answer(self, request: Any, event_name: str, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        _, service, operation = event_name.split(".", 2)
        self.calls.append(f"{'ddb' if service == 'dynamodb' else service} {operation}")
        body = request.body
        if hasattr(body, "read"):
            # What sending would do: read the stream in urllib3's blocks, which
            # is when botocore computes an aws-chunked body's CRC32 trailer.
            while body.read(SEND_BLOCK):
                pass
        if service == "s3" and operation == "PutObject":
            return AWSResponse(request.url, 200, {
                "ETag": '"9b2cf535f27731c974343645a3985328"', "Content-Length": "0"}, _Raw(b""))
        if service == "dynamodb":
            reply = self._dynamodb(operation, json.loads(request.body or b"{}"))
            data = json.dumps(reply).encode()
            return AWSResponse(request.url, 200, {
                "Content-Type": "application/x-amz-json-1.0",
                "Content-Length": str(len(data))}, _Raw(data))
        raise AssertionError(f"no canned answer for {service} {operation}")

    def _dynamodb(self, operation: str, body: dict[str, Any]) -> dict[str, Any]:
        if operation in ("PutItem", "DeleteItem", "TransactWriteItems"):
            return {}
        if operation == "BatchWriteItem":
            return {"UnprocessedItems": {}}
        if operation == "BatchGetItem":  # every referenced blob is there
            return {"Responses": {t: [{"sk": k["sk"]} for k in spec["Keys"]]
                                  for t, spec in body["RequestItems"].items()},
                    "UnprocessedKeys": {}}
        if operation == "Query":
            pk = body["ExpressionAttributeValues"][":pk"]
            return {"Count": TAG_COUNT, "ScannedCount": TAG_COUNT, "Items": [
                {"pk": pk, "sk": {"S": f"tag#v{i:03d}"}, "digest": {"S": MANIFEST_DIGEST},
                 "media_type": {"S": manifests.OCI_MANIFEST}, "size": {"N": str(len(MANIFEST))}}
                for i in range(TAG_COUNT)]}
        if operation == "GetItem":
            pk, sk = body["Key"]["pk"]["S"], body["Key"]["sk"]["S"]
            if pk.startswith("upload#"):
                return {"Item": self.upload_item}
            if sk.startswith("blob#"):
                return {"Item": {"pk": {"S": pk}, "sk": {"S": sk}, "size": {"N": "31457280"},
                                 "key": {"S": "blobs/sha256/ab/" + "ab" * 32}}}
            if sk.startswith("tag#"):
                return {"Item": {"pk": {"S": pk}, "sk": {"S": sk},
                                 "digest": {"S": MANIFEST_DIGEST},
                                 "media_type": {"S": manifests.OCI_MANIFEST},
                                 "size": {"N": str(len(MANIFEST))}}}
            if sk.startswith("manifest#"):
                return {"Item": _wire({"pk": {"S": pk}, "sk": {"S": sk},
                                       "media_type": {"S": manifests.OCI_MANIFEST},
                                       "size": {"N": str(len(MANIFEST))},
                                       "body": {"B": MANIFEST}, "created": {"N": "1"}})}
        raise AssertionError(f"no canned answer for dynamodb {operation} {body}")


def _fake_clients(canned: CannedAws) -> dict[tuple[str, str], Any]:
    """Real botocore clients, configured like production, answered by ``canned``."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id="bench",
                                    aws_secret_access_key="bench",  # noqa: S106 - dummy
                                    region_name=REGION)
    made = {}
    for service in ("s3", "dynamodb"):
        config = Config(retries={"mode": "standard", "max_attempts": 4},
                        max_pool_connections=32, s3={"addressing_style": "path"},
                        signature_version="s3v4" if service == "s3" else None)
        # AWS's own https endpoints, as in Lambda: an http endpoint would make
        # botocore hash every S3 payload for the signature, which https skips.
        # Never contacted: the hook answers every attempt or raises first.
        client = session.client(service, region_name=REGION, config=config)
        canned.attach(client)
        made[(service, REGION)] = client
    return made


def _settings() -> Settings:
    """The Lambda door's settings (redirects, function limits), fixed here so
    the environment of whoever runs the bench cannot change the paths timed."""
    base = Settings.from_env(blob_redirects_default=True, function_limits_default=True)
    return dataclasses.replace(
        base, bucket=BUCKET, table=TABLE, region=REGION, hmac_key=HMAC_KEY,
        hmac_key_is_ephemeral=False, blob_redirects=True, redirect_ttl=300,
        upload_ttl=24 * 3600, delete_enabled=True, page_cap=1000, part_size=8 * MIB,
        chunk_min_length=5 * MIB, function_limits=True, max_body=4 * MIB, part_url_ttl=900)


@dataclass
class Case:
    """One request type: how to prepare a call, and what it must answer."""

    key: str
    label: str
    prepare: Callable[[], Callable[[], int]]
    status: int
    calls: list[str] = field(default_factory=list)
    cpu_ns: list[int] = field(default_factory=list)
    wall_ns: list[int] = field(default_factory=list)


def _cases(registry: Registry, ddb: Any, lambda_app: Any) -> list[Case]:
    from chalicelib.apigateway import RestApi, build_event

    state = tokens.pack(HMAC_KEY, tokens.UploadState(
        REPO, UPLOAD_ID, 0, int(time.time()) + 7 * 24 * 3600))

    def via_handle(method: str, target: str, headers: list[tuple[str, str]] | None = None,
                   body: bytes = b"") -> Callable[[], Callable[[], int]]:
        parts = urlsplit(target)

        def prepare() -> Callable[[], int]:
            request = Request.build(method, parts.path, parts.query, headers or [], body)

            def call() -> int:
                response = handle(registry, request)
                response.read_body()
                return response.status
            return call
        return prepare

    api = RestApi.from_chalice(lambda_app)

    def via_lambda(method: str, target: str) -> Callable[[], Callable[[], int]]:
        event = build_event(api, method, target, [("Host", "cargohold.example")], b"")
        assert event is not None

        def prepare() -> Callable[[], int]:
            fresh = copy.deepcopy(event)
            return lambda: lambda_app(fresh, None)["statusCode"]
        return prepare

    def bare_get_item() -> Callable[[], int]:
        key = {"pk": {"S": f"repo#{REPO}"}, "sk": {"S": f"blob#{BLOB_DIGEST}"}}

        def call() -> int:
            reply = ddb.get_item(TableName=TABLE, Key=key, ConsistentRead=True)
            return reply["ResponseMetadata"]["HTTPStatusCode"]
        return call

    blob = url_for("blob", name=REPO, digest=BLOB_DIGEST)
    upload = url_for("upload", name=REPO, session=UPLOAD_ID, query={"_state": state})
    complete = url_for("upload", name=REPO, session=UPLOAD_ID,
                       query={"_state": state, "digest": _digest(PUT_BODY)})
    accept = ", ".join([manifests.OCI_MANIFEST, manifests.OCI_INDEX,
                        manifests.DOCKER_MANIFEST, manifests.DOCKER_LIST])
    octets = "application/octet-stream"
    return [
        Case("empty", "empty dispatch `GET /v2/` (baseline)", via_handle("GET", "/v2/"), 200),
        Case("get_item", "bare stubbed `get_item` (baseline)", lambda: bare_get_item(), 200),
        Case("blob_head", "blob HEAD", via_handle("HEAD", blob), 200),
        Case("blob_get", "blob GET → 307 (presign)", via_handle("GET", blob), 307),
        Case("manifest_get", "manifest GET by tag",
             via_handle("GET", url_for("manifest", name=REPO, reference="v1"),
                        [("Accept", accept)]), 200),
        Case("manifest_put", "manifest PUT (OCI, config + 2 layers)",
             via_handle("PUT", url_for("manifest", name=REPO, reference="v1"),
                        [("Content-Type", manifests.OCI_MANIFEST),
                         ("Content-Length", str(len(MANIFEST)))], MANIFEST), 201),
        Case("tags", f"tags list ({TAG_COUNT} tags)",
             via_handle("GET", url_for("tags", name=REPO)), 200),
        Case("upload_post", "upload POST (start)",
             via_handle("POST", url_for("uploads", name=REPO),
                        [("Content-Length", "0")]), 202),
        Case("patch", "upload PATCH 1 MiB chunk",
             via_handle("PATCH", upload, [("Content-Type", octets),
                                          ("Content-Length", str(PATCH_SIZE)),
                                          ("Content-Range", f"0-{PATCH_SIZE - 1}")],
                        PATCH_BODY), 202),
        Case("put_complete", f"upload PUT ?digest= (complete, {PUT_SIZE // 1024} KiB body)",
             via_handle("PUT", complete, [("Content-Type", octets),
                                          ("Content-Length", str(PUT_SIZE))], PUT_BODY), 201),
        Case("lambda_empty", "Lambda handler: `GET /v2/` (Chalice door)",
             via_lambda("GET", "/v2/"), 200),
        Case("lambda_blob_head", "Lambda handler: blob HEAD (Chalice door)",
             via_lambda("HEAD", blob), 200),
    ]


def _p99(values: list[int]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)]


def run(quick: bool) -> dict[str, Any]:
    import app as lambda_module

    warmup, count = (5, 50) if quick else (50, 1000)
    canned = CannedAws()
    fakes = _fake_clients(canned)
    saved_clients = dict(clients._clients)
    saved_registry = lambda_module._registry
    registry = Registry(_settings())
    try:
        clients._clients.clear()
        clients._clients.update(fakes)
        lambda_module._registry = registry
        cases = _cases(registry, fakes[("dynamodb", REGION)], lambda_module.app)
        for round_number in range(warmup + count):
            for case in cases:
                call = case.prepare()
                canned.calls.clear()
                cpu0 = time.process_time_ns()
                wall0 = time.perf_counter_ns()
                status = call()
                wall1 = time.perf_counter_ns()
                cpu1 = time.process_time_ns()
                if status != case.status:
                    raise RuntimeError(f"{case.label}: status {status}, expected {case.status}")
                if round_number == 0:
                    case.calls = list(canned.calls)
                elif canned.calls != case.calls:
                    raise RuntimeError(f"{case.label}: AWS calls changed: {canned.calls}")
                if round_number >= warmup:
                    case.cpu_ns.append(cpu1 - cpu0)
                    case.wall_ns.append(wall1 - wall0)
    finally:
        clients._clients.clear()
        clients._clients.update(saved_clients)
        lambda_module._registry = saved_registry

    import botocore

    rows = []
    for case in cases:
        rows.append({
            "key": case.key, "label": case.label, "calls": case.calls,
            "cpu_median_us": statistics.median(case.cpu_ns) / 1000,
            "cpu_p99_us": _p99(case.cpu_ns) / 1000,
            "wall_median_us": statistics.median(case.wall_ns) / 1000,
            "wall_p99_us": _p99(case.wall_ns) / 1000,
        })
    return {"warmup": warmup, "count": count, "python": sys.version.split()[0],
            "botocore": botocore.__version__, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    rows = {row["key"]: row for row in result["rows"]}
    empty, get_item = rows["empty"]["cpu_median_us"], rows["get_item"]["cpu_median_us"]
    lines = [
        f"In-process, Python {result['python']}, botocore {result['botocore']}: "
        f"{result['count']} requests of each type after {result['warmup']} warm-up rounds, "
        "types interleaved. AWS answered by a `before-send` hook on real botocore clients "
        "(serialisation, SigV4 signing, checksums and parsing are timed; the network is "
        "not). CPU = process CPU time, wall = `perf_counter`; µs per request. Ratios are "
        "median CPU over the baselines' median CPU in this run.",
        "",
        "| request | AWS calls | CPU median | CPU p99 | wall median | wall p99 "
        "| ÷ empty dispatch | ÷ bare GetItem |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        calls = ", ".join(row["calls"]) or "none"
        lines.append(
            f"| {row['label']} | {calls} | {row['cpu_median_us']:.0f} µs "
            f"| {row['cpu_p99_us']:.0f} µs | {row['wall_median_us']:.0f} µs "
            f"| {row['wall_p99_us']:.0f} µs | {row['cpu_median_us'] / empty:.1f}× "
            f"| {row['cpu_median_us'] / get_item:.2f}× |")
    door = rows["lambda_blob_head"]["cpu_median_us"] - rows["blob_head"]["cpu_median_us"]
    patch = rows["patch"]["cpu_median_us"]
    lines += [
        "",
        f"- The Chalice door adds {door:.0f} µs of CPU to a blob HEAD "
        f"({rows['lambda_blob_head']['cpu_median_us'] / rows['blob_head']['cpu_median_us']:.2f}×"
        " the same request through `dispatch.handle`).",
        f"- A 1 MiB PATCH costs {patch / 1000:.2f} ms of CPU, "
        f"{patch / rows['put_complete']['cpu_median_us']:.1f}× the small PUT that completes "
        "an upload: the resumable SHA-256 of the chunk, botocore's CRC32 of the 1 MiB tail "
        "PutObject and the copies grow with the chunk; the rest is per call.",
        "- Not included: TLS and socket work for the real calls, Lambda's runtime loop "
        "and JSON (de)serialisation of the event outside the handler.",
    ]
    return "\n".join(lines) + "\n"


def plot_data(result: dict[str, Any]) -> dict[str, Any]:
    rows = [row for row in result["rows"] if not row["key"].startswith("lambda_")]
    return {"title": "Warm CPU per request (median, in-process, AWS stubbed)", "unit": "µs",
            "labels": [row["label"].split(" (")[0].replace("`", "") for row in rows],
            "series": {"cargohold": [row["cpu_median_us"] for row in rows]}}


if __name__ == "__main__":
    print(markdown(run(quick="--quick" in sys.argv)))
