"""The AWS bill of an upload: which S3 and DynamoDB requests each registry
operation makes, counted rather than estimated.

Run: ``python bench/aws_requests.py``

Starts moto in its own process and runs the registry in-process with the
Lambda door's settings (function limits on: 4 MiB bodies, 8 MiB parts; blob
redirects on). Every API call of the registry's boto3 clients is counted by
operation name through botocore's ``before-call`` event (``before-send``
counts HTTP attempts, to show whether any call was retried). Requests the
*client* makes straight to S3 with presigned URLs (direct parts, following
a blob redirect) are not the registry's, but they are billed to the bucket
owner too: they are made here with urllib and listed as separate rows.

Classes, as S3 and DynamoDB price them: S3 PUT-class = PutObject,
UploadPart, CreateMultipartUpload, CompleteMultipartUpload, CopyObject,
UploadPartCopy, ListParts, ListObjectsV2, ListMultipartUploads; GET-class
= GetObject, HeadObject; DeleteObject(s) and AbortMultipartUpload are free.
DynamoDB writes = PutItem, UpdateItem, DeleteItem, and the items of
BatchWriteItem and TransactWriteItems (a transactional item is billed as two
write units); reads = GetItem, Query, and the keys of BatchGetItem. Counts
are requests and items, not capacity units: an item over 1 KB (write) or
4 KB (read) costs more units. Exits 2 if a registry answer or a digest is
wrong.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sys
import threading
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from chalicelib.config import Settings  # noqa: E402
from chalicelib.core.http import Request, Response  # noqa: E402
from chalicelib.core.routes import url_for  # noqa: E402
from chalicelib.devserver import local_app, start_moto_process, stop_process, use_emulator  # noqa: E402
from chalicelib.storage import clients  # noqa: E402
from chalicelib.storage.provision import provision  # noqa: E402

MIB = 1024 * 1024
CHUNK = 4 * MIB
PART = 8 * MIB
BLOB_MIB = 64
DIRECT_PART = 8 * MIB

S3_PUT_CLASS = frozenset({"PutObject", "UploadPart", "CreateMultipartUpload",
                          "CompleteMultipartUpload", "CopyObject", "UploadPartCopy", "ListParts",
                          "ListObjectsV2", "ListMultipartUploads"})
S3_GET_CLASS = frozenset({"GetObject", "HeadObject"})
S3_FREE = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload"})
DDB_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem",
                        "TransactWriteItems"})
DDB_READS = frozenset({"GetItem", "Query", "BatchGetItem"})
SHORT = {"s3": "s3", "dynamodb": "ddb", "client-s3": "client→s3"}


class BenchError(Exception):
    """The registry answered something other than what the protocol requires."""


@dataclass
class Tally:
    """Calls and billed items per (service, operation) over some requests."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    items: Counter[tuple[str, str]] = field(default_factory=Counter)
    attempts: int = 0

    def add(self, other: Tally) -> Tally:
        return Tally(self.calls + other.calls, self.items + other.items,
                     self.attempts + other.attempts)

    def classes(self) -> dict[str, int]:
        """Requests and S3/DynamoDB billing classes (see the module docstring)."""
        out = dict.fromkeys(("requests", "s3_put", "s3_get", "s3_free", "s3_other",
                             "ddb_read", "ddb_write", "ddb_other"), 0)
        for (service, op), n in self.calls.items():
            out["requests"] += n
            units = self.items[(service, op)]
            if service in ("s3", "client-s3"):
                kind = ("s3_put" if op in S3_PUT_CLASS else "s3_get" if op in S3_GET_CLASS
                        else "s3_free" if op in S3_FREE else "s3_other")
                out[kind] += n
            else:
                kind = ("ddb_write" if op in DDB_WRITES else "ddb_read" if op in DDB_READS
                        else "ddb_other")
                out[kind] += units if kind != "ddb_other" else n
        return out

    def detail(self) -> str:
        """``s3: GetObject×1 PutObject×1; ddb: GetItem×1 PutItem×1`` (items in brackets)."""
        parts = []
        for service in ("s3", "dynamodb", "client-s3"):
            ops = sorted((op, n) for (s, op), n in self.calls.items() if s == service)
            if not ops:
                continue
            shown = []
            for op, n in ops:
                units = self.items[(service, op)]
                extra = f"[{units} items]" if units != n else ""
                shown.append(f"{op}×{n}{extra}")
            parts.append(f"{SHORT[service]}: {' '.join(shown)}")
        return "; ".join(parts) or "(none)"


class Meter:
    """Counts the boto3 API calls of the registry's clients (thread-safe:
    ``hash_object`` reads ranges from a thread pool)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tally = Tally()

    def attach(self, client: Any) -> None:
        client.meta.events.register("before-call", self._call, unique_id="bench-meter-call")
        client.meta.events.register("before-send", self._send, unique_id="bench-meter-send")

    def _call(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        service = model.service_model.service_name
        units = _items(model.name, params.get("body")) if service == "dynamodb" else 1
        with self._lock:
            self._tally.calls[(service, model.name)] += 1
            self._tally.items[(service, model.name)] += units

    def _send(self, **_: Any) -> None:
        with self._lock:
            self._tally.attempts += 1

    def record_client(self, op: str, n: int = 1) -> None:
        """A request the client made to S3 itself, with a presigned URL."""
        with self._lock:
            self._tally.calls[("client-s3", op)] += n
            self._tally.items[("client-s3", op)] += n
            self._tally.attempts += n

    def take(self) -> Tally:
        with self._lock:
            taken, self._tally = self._tally, Tally()
        return taken


def _items(op: str, body: Any) -> int:
    """Items a DynamoDB batch or transaction carries, from the serialised body."""
    if op not in ("BatchWriteItem", "TransactWriteItems", "BatchGetItem"):
        return 1
    data = json.loads(body)
    if op == "TransactWriteItems":
        return len(data["TransactItems"])
    if op == "BatchWriteItem":
        return sum(len(requests) for requests in data["RequestItems"].values())
    return sum(len(table["Keys"]) for table in data["RequestItems"].values())


# -- driving the registry ------------------------------------------------------
class Session:
    """The registry in-process, with every operation's AWS requests recorded."""

    def __init__(self, app: Callable[[Request], Response], meter: Meter) -> None:
        self.app = app
        self.meter = meter
        self.rows: list[tuple[str, str, Tally, int]] = []

    def call(self, method: str, target: str, body: bytes = b"",
             headers: dict[str, str] | None = None, status: int = 200) -> tuple[Response, Tally]:
        self.meter.take()  # nothing before this request counts
        path, _, query = target.partition("?")
        response = self.app(Request.build(method, path, query, headers or {}, body))
        response.body = response.read_body()
        tally = self.meter.take()
        if response.status != status:
            raise BenchError(f"{method} {path}: {response.status} (wanted {status}) "
                             f"{response.body[:300]!r}")
        return response, tally

    def row(self, label: str, tally: Tally, note: str = "", per: int = 1) -> None:
        """One table row; ``note`` goes with the request listing only, and the
        row's figures are divided by ``per`` (a mean over that many requests)."""
        self.rows.append((label, note, tally, per))


def patch(session: Session, location: str, offset: int, piece: bytes) -> tuple[str, Tally]:
    response, tally = session.call("PATCH", location, piece, {
        "Content-Range": f"{offset}-{offset + len(piece) - 1}",
        "Content-Length": str(len(piece)), "Content-Type": "application/octet-stream"}, 202)
    return response.headers["Location"], tally


def chunk_state(tally: Tally) -> str:
    """What a PATCH did to staging, read off the requests it made."""
    calls = {op: n for (service, op), n in tally.calls.items() if service == "s3"}
    did = []
    if calls.get("GetObject"):
        did.append("tail read")
    if calls.get("CreateMultipartUpload"):
        did.append("multipart upload created")
    if calls.get("UploadPart"):
        did.append(f"{calls['UploadPart']} part uploaded")
    if calls.get("PutObject"):
        did.append("new tail written")
    if calls.get("DeleteObject"):
        did.append("old tail deleted")
    return ", ".join(did) or "nothing staged"


def numbers_text(numbers: list[int]) -> str:
    """``#1,3,…,15`` for a long regular run, else every number."""
    steps = {b - a for a, b in itertools.pairwise(numbers)}
    if len(numbers) > 3 and len(steps) == 1:
        return f"#{numbers[0]},{numbers[1]},…,{numbers[-1]}"
    return "#" + ",".join(map(str, numbers))


def http_put(url: str, data: bytes) -> None:
    # An explicit type: urllib's default (form-urlencoded) makes moto parse the body as a form.
    request = urllib.request.Request(url, data=data, method="PUT",  # noqa: S310 - moto's URL
                                     headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
        if response.status != 200:
            raise BenchError(f"presigned UploadPart answered {response.status}")


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 - moto's URL
        return response.read()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def scenario(session: Session, rng: random.Random) -> dict[str, Any]:
    """Every measured operation, in the order a push and a pull make them."""
    name = "bench/app"
    uploads = f"/v2/{name}/blobs/uploads/"
    found: dict[str, Any] = {}

    # A 64 MiB blob, chunked as a function-limited client must: 4 MiB PATCHes.
    blob = rng.randbytes(BLOB_MIB * MIB)
    response, start = session.call("POST", uploads, status=202)
    session.row("POST start upload", start)
    location = response.headers["Location"]
    chunks: list[Tally] = []
    for offset in range(0, len(blob), CHUNK):
        location, tally = patch(session, location, offset, blob[offset:offset + CHUNK])
        chunks.append(tally)
    big_digest = digest_of(blob)
    _, complete = session.call("PUT", f"{location}&digest={big_digest}", b"",
                               {"Content-Length": "0"}, 201)
    found["chunks"], found["start"], found["complete"] = chunks, start, complete

    # States of a PATCH: every distinct one of the 64 MiB upload, in order.
    seen: dict[str, list[int]] = {}
    for number, tally in enumerate(chunks, 1):
        seen.setdefault(tally.detail(), []).append(number)
    for numbers in seen.values():
        tally = chunks[numbers[0] - 1]
        session.row(f"PATCH 4 MiB {numbers_text(numbers)}", tally, chunk_state(tally))

    # A chunk that straddles a part boundary: 1 MiB, 4 MiB, then 4 MiB on a
    # 5 MiB tail (tail read, one 8 MiB part uploaded, 1 MiB new tail).
    odd = rng.randbytes(9 * MIB)
    response, _ = session.call("POST", uploads, status=202)
    location, offset = response.headers["Location"], 0
    odd_tallies = []
    for size in (MIB, 4 * MIB, 4 * MIB):
        location, tally = patch(session, location, offset, odd[offset:offset + size])
        odd_tallies.append(tally)
        offset += size
    session.row("PATCH 4 MiB onto a 5 MiB tail", odd_tallies[-1],
                f"chunks of 1, 4, 4 MiB; the third: {chunk_state(odd_tallies[-1])}")
    average = Tally()
    for tally in chunks:
        average = average.add(tally)
    found["chunk_total"] = average
    session.row(f"PATCH 4 MiB, mean of {len(chunks)}", average,
                f"steady state: all {len(chunks)} chunks of the {BLOB_MIB} MiB upload, "
                f"totals", per=len(chunks))
    session.row(f"PUT ?digest= {BLOB_MIB} MiB chunked", complete,
                "completion, empty body: nothing hashed, state carried")
    _, odd_complete = session.call("PUT", f"{location}&digest={digest_of(odd)}", b"",
                                   {"Content-Length": "0"}, 201)
    session.row("PUT ?digest= 9 MiB, 1 MiB tail", odd_complete,
                "completion of the 1+4+4 MiB upload: the tail becomes the last part")

    # A small monolithic upload, one request.
    small = rng.randbytes(MIB)
    small_digest = digest_of(small)
    _, mono = session.call("POST", f"{uploads}?digest={small_digest}", small,
                           {"Content-Length": str(len(small)),
                            "Content-Type": "application/octet-stream"}, 201)
    session.row("POST ?digest= 1 MiB monolithic", mono, "one-request upload")

    # Direct-to-S3 parts (extension): the client PUTs parts to presigned URLs.
    direct = rng.randbytes(BLOB_MIB * MIB)
    count = len(direct) // DIRECT_PART
    response, direct_start = session.call("POST", uploads, status=202)
    session.row("direct: POST start upload", direct_start)
    location = response.headers["Location"]
    split = urlsplit(location)
    state = parse_qs(split.query)["_state"][0]
    upload_id = split.path.rstrip("/").rsplit("/", 1)[-1]
    parts_url = url_for("upload-parts", name=name, session=upload_id,
                        query={"_state": state, "first": "1", "count": str(count)})
    response, parts_tally = session.call("POST", parts_url, status=200)
    session.row(f"direct: POST parts ({count} URLs)", parts_tally,
                f"extension: {count} presigned UploadPart URLs (presigning itself is local)")
    answer = json.loads(response.body)
    for part in answer["parts"]:
        start_at = (part["partNumber"] - 1) * DIRECT_PART
        http_put(part["url"], direct[start_at:start_at + DIRECT_PART])
    session.meter.record_client("UploadPart", count)
    client_parts = session.meter.take()
    session.row(f"direct: client UploadPart x{count}", client_parts,
                f"the client PUTs {count} x {DIRECT_PART // MIB} MiB parts to S3 itself")
    direct_digest = digest_of(direct)
    _, direct_complete = session.call("PUT", f"{answer['location']}&digest={direct_digest}",
                                      b"", {"Content-Length": "0"}, 201)
    session.row(f"direct: PUT ?digest= {BLOB_MIB} MiB", direct_complete,
                "completion: parts assembled, then read back with ranged GETs and hashed")
    found["direct_gets"] = direct_complete.calls[("s3", "GetObject")]
    found["direct_complete"] = direct_complete
    found["direct_total"] = (direct_start.add(parts_tally).add(client_parts)
                             .add(direct_complete))

    # A manifest over what was pushed, then the reads of a pull.
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_digest = digest_of(config)
    session.call("POST", f"{uploads}?digest={config_digest}", config,
                 {"Content-Length": str(len(config))}, 201)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": d, "size": s}
                   for d, s in ((big_digest, len(blob)), (small_digest, len(small)),
                                (direct_digest, len(direct)))],
    }).encode()
    media = "application/vnd.oci.image.manifest.v1+json"
    _, put_manifest = session.call("PUT", f"/v2/{name}/manifests/v1", manifest,
                                   {"Content-Type": media,
                                    "Content-Length": str(len(manifest))}, 201)
    session.row("PUT manifest by tag", put_manifest,
                "an image manifest referencing 4 blobs (config and 3 layers)")
    _, head_manifest = session.call("HEAD", f"/v2/{name}/manifests/v1", b"",
                                    {"Accept": media}, 200)
    session.row("HEAD manifest by tag", head_manifest)
    response, get_manifest = session.call("GET", f"/v2/{name}/manifests/v1", b"",
                                          {"Accept": media}, 200)
    if response.body != manifest:
        raise BenchError("manifest GET returned other bytes than were PUT")
    session.row("GET manifest by tag", get_manifest)
    response, head_blob = session.call("HEAD", f"/v2/{name}/blobs/{small_digest}", status=200)
    if response.headers.get("Docker-Content-Digest") != small_digest:
        raise BenchError(f"blob HEAD: {response.headers}")
    session.row("HEAD blob", head_blob)
    response, get_blob = session.call("GET", f"/v2/{name}/blobs/{small_digest}", status=307)
    session.row("GET blob (307)", get_blob, "redirect to a presigned S3 URL")
    if digest_of(http_get(response.headers["Location"])) != small_digest:
        raise BenchError("the redirect's object has another digest")
    session.meter.record_client("GetObject")
    session.row("client: GET blob from S3", session.meter.take(),
                "the client follows the redirect")
    response, tags = session.call("GET", f"/v2/{name}/tags/list", status=200)
    if json.loads(response.body).get("tags") != ["v1"]:
        raise BenchError(f"tags list: {response.body[:200]!r}")
    session.row("GET tags/list", tags)
    return found


# -- report ---------------------------------------------------------------------
COLUMNS = (("requests", "AWS req"), ("s3_put", "S3 PUT"), ("s3_get", "S3 GET"),
           ("s3_free", "S3 free"), ("ddb_read", "DDB rd"), ("ddb_write", "DDB wr"))


def table(rows: Iterable[tuple[str, dict[str, float]]]) -> list[str]:
    rows = list(rows)
    width = max(len(label) for label, _ in rows)
    lines = ["  ".join([f"{'registry operation':{width}s}", *(f"{h:>7s}" for _, h in COLUMNS)]),
             "  ".join(["-" * width, *("-" * 7 for _ in COLUMNS)])]
    for label, figures in rows:
        cells = []
        for key, _ in COLUMNS:
            value = figures[key]
            cells.append(f"{value:7.0f}" if float(value).is_integer() else f"{value:7.2f}")
        lines.append("  ".join([f"{label:{width}s}", *cells]))
    return lines


def scaled(figures: dict[str, int], divisor: int) -> dict[str, float]:
    return {key: value / divisor for key, value in figures.items()}


def summary(title: str, tally: Tally, mib: int) -> None:
    figures = tally.classes()
    print(f"{title}: {figures['requests']} AWS requests = S3 {figures['s3_put']} PUT-class, "
          f"{figures['s3_get']} GET-class, {figures['s3_free']} free; DynamoDB "
          f"{figures['ddb_read']} reads, {figures['ddb_write']} writes "
          f"({figures['requests'] / mib:.2f} requests per MiB)")
    print(f"    {tally.detail()}")


def report(session: Session, found: dict[str, Any], settings: Settings) -> None:
    n_chunks = len(found["chunks"])
    print(f"AWS requests per registry operation (function limits on: bodies <= "
          f"{settings.max_body // MIB} MiB, part size {settings.part_size // MIB} MiB; "
          f"blob redirects on)\n")
    attempts = calls = 0
    rows = []
    for label, note, tally, per in session.rows:
        print(f"  {label}" + (f"  -- {note}" if note else ""))
        print(f"      {tally.detail()}")
        figures = tally.classes()
        if figures["s3_other"] or figures["ddb_other"]:
            print("      (some of these fall outside the classes of the table)")
        rows.append((label, scaled(figures, per)))
        attempts += tally.attempts
        calls += sum(tally.calls.values())
    print()
    for line in table(rows):
        print(line)
    print()
    summary(f"whole {BLOB_MIB} MiB chunked upload (POST + {n_chunks} PATCH + PUT)",
            found["start"].add(found["chunk_total"]).add(found["complete"]), BLOB_MIB)
    summary(f"whole {BLOB_MIB} MiB direct upload (POST + parts + client parts + PUT)",
            found["direct_total"], BLOB_MIB)
    streamed = found["complete"].classes()["requests"]
    streamed_gets = found["complete"].calls[("s3", "GetObject")]
    direct = found["direct_complete"].classes()["requests"]
    print(f"completion: streamed {streamed} requests, {streamed_gets} of them GetObject; "
          f"direct {direct}, {found['direct_gets']} of them ranged "
          f"GetObject reading the blob back (one per {BLOB_MIB // max(found['direct_gets'], 1)}"
          f" MiB, so it grows with the blob)")
    retried = attempts - calls
    print(f"HTTP attempts {attempts} for {calls} API calls: "
          + ("no retries" if retried == 0 else f"{retried} retried attempts (also billed)"))


def main() -> int:
    moto, moto_url = start_moto_process()
    try:
        use_emulator(moto_url)
        clients.reset()
        suffix = uuid.uuid4().hex[:10]
        base = Settings.from_env(blob_redirects_default=True, function_limits_default=True)
        settings = replace(base, bucket=f"bench-{suffix}", table=f"bench-{suffix}",
                           function_limits=True, part_size=PART, blob_redirects=True)
        provision(settings.bucket, settings.table, settings.region)
        meter = Meter()
        meter.attach(clients.client("s3", settings.region))
        meter.attach(clients.client("dynamodb", settings.region))
        session = Session(local_app(settings), meter)
        found = scenario(session, random.Random(1))
        report(session, found, settings)
        return 0
    except BenchError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_process(moto)


if __name__ == "__main__":
    sys.exit(main())
