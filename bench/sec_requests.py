"""Requests and cost per operation: cargohold next to distribution v3.1.2 on S3.

Run: ``python bench/sec_requests.py [--quick]``

Why: the bill of a registry on AWS is mostly requests, and the two designs
spend them differently: cargohold keeps metadata in DynamoDB and answers
from a function; distribution keeps everything (links, tags, upload state)
as S3 objects and needs an always-on server. Both are counted here with one
yardstick, from the storage's side.

Set-up (all on 127.0.0.1, started and stopped here): one moto server in its
own process; one counting proxy (``bench/s3proxy.py``) in front of its S3,
through which *both* registries and the client's presigned requests go, so
every S3 request is named by the operation it bills as. cargohold runs
in-process behind the local HTTP door with the Lambda stage's settings
(function limits and blob redirects on), its S3 endpoint pointed at the
proxy (``AWS_ENDPOINT_URL_S3``) and DynamoDB straight at moto, counted by
botocore hooks (which also time every call). distribution runs on its ``s3``
driver at the proxy, redirects on. Blob pulls follow the 307 to a presigned
URL on the proxy, so the client's own GET is counted as an S3 GET.

The same client (``RegistryClient``, extensions off) drives both with the
same image: one layer (1 MiB; 64 KiB with ``--quick``), a config and a
manifest, fresh random bytes for every push. Workloads: push monolithic
(per blob: HEAD, then POST + PUT with the body; then the manifest), push
chunked (the layer as POST, 3 PATCHes, empty PUT), pull by tag (manifest
HEAD + GET by tag, config and layer GETs through the redirect), blob HEAD
hit, blob HEAD miss, tag list, catalog page. Every HTTP request the client
sends is one row of the record, with the AWS requests made while it was
being answered. Exits 2 if a registry answers wrongly or a digest differs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import prices  # noqa: E402
from bench.s3proxy import S3CountingProxy, Seen, _Handler  # noqa: E402
from chalicelib.client import RegistryClient  # noqa: E402
from chalicelib.client.transport import Body, HttpTransport, RawResponse  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.core.routes import match  # noqa: E402
from chalicelib.devserver import local_app, start_moto_process, stop_process, use_emulator  # noqa: E402
from chalicelib.server import serve_in_thread  # noqa: E402
from chalicelib.storage import clients  # noqa: E402
from chalicelib.storage.provision import provision  # noqa: E402

TITLE = "Requests and cost per operation"
COMMAND = "python bench/sec_requests.py"

KIB = 1024
MIB = 1024 * KIB
REPO = "bench/app"
CHUNKS = 3
IMAGE_BLOBS = 2          # measured: config + 1 layer
TYPICAL_BLOBS = 6        # priced: config + 5 layers
TEAM = {"stored_gb": 50, "pulls_per_day": 10_000, "pushes_per_day": 500, "days": 30}
WORKLOADS = ("push monolithic", "push chunked", "pull by tag", "blob HEAD hit",
             "blob HEAD miss", "tag list", "catalog page")
REGISTRIES = ("cargohold", "distribution")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
CLIENT_S3 = "client → S3"


class BenchError(Exception):
    """A registry answered something other than what the protocol requires."""


# -- counting ------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    """One AWS request: service, operation, when, and DynamoDB units."""

    service: str
    operation: str
    start: float
    end: float
    client: bool = False  # a presigned request the registry's client made itself
    rru: float = 0
    wru: float = 0


class _NoDelayHandler(_Handler):
    # The proxy writes headers and body separately: with Nagle on, each answer
    # with a body waits for the peer's delayed ACK (~40 ms on Linux).
    disable_nagle_algorithm = True


class TimedProxy(S3CountingProxy):
    """The counting proxy, also timing each request: ``count`` runs when its
    headers arrive and ``record`` just before its last byte leaves, both on
    the handler thread that serves it."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream, keep=100_000)
        self._server.RequestHandlerClass = _NoDelayHandler
        self._starts: dict[int, float] = {}
        self._calls: list[Call] = []

    def count(self, operation: str) -> None:
        with self._lock:
            self._starts[threading.get_ident()] = time.perf_counter()
        super().count(operation)

    def record(self, seen: Seen) -> None:
        now = time.perf_counter()
        presigned = "X-Amz-Signature=" in seen.target
        with self._lock:
            start = self._starts.pop(threading.get_ident(), now)
            self._calls.append(Call("s3", seen.operation, start, now, presigned))
        super().record(seen)

    def take(self) -> list[Call]:
        with self._lock:
            taken, self._calls = self._calls, []
        return taken


def value_bytes(value: Mapping[str, Any]) -> int:
    """Approximate stored size of one typed DynamoDB attribute value, as AWS sizes it."""
    (kind, data), = value.items()
    if kind == "S":
        return len(data.encode())
    if kind == "N":
        digits = str(data).lstrip("-").replace(".", "").strip("0") or "0"
        return 1 + (len(digits) + 1) // 2
    if kind == "B":
        return len(data)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(value_bytes({kind[0]: item}) for item in data)
    if kind == "L":
        return 3 + sum(1 + value_bytes(item) for item in data)
    if kind == "M":
        return 3 + item_bytes(data) + len(data)
    return 0


def item_bytes(item: Mapping[str, Any]) -> int:
    """Attribute names plus values: the size DynamoDB bills an item by."""
    return sum(len(name.encode()) + value_bytes(value) for name, value in item.items())


def ddb_units(operation: str, params: Mapping[str, Any], parsed: Mapping[str, Any],
              ) -> tuple[float, float]:
    """(RRU, WRU) of one DynamoDB call, on-demand: every read here is strongly
    consistent (1 RRU per started 4 KB), a write 1 WRU per started KB, a
    transactional item twice. Sizes come from the request (writes) and the
    response (reads); a delete or update is taken as 1 KB; a key that is not
    found still costs 1 RRU; a projected BatchGetItem is sized by the
    projection, i.e. an underestimate for items over 4 KB."""
    if operation == "GetItem":
        return prices.ddb_read_units(item_bytes(parsed.get("Item") or {})), 0
    if operation == "Query":
        return prices.ddb_read_units(sum(item_bytes(i) for i in parsed.get("Items") or [])), 0
    if operation == "BatchGetItem":
        keys = sum(len(t.get("Keys", [])) for t in params.get("RequestItems", {}).values())
        found = [i for items in (parsed.get("Responses") or {}).values() for i in items]
        return sum(prices.ddb_read_units(item_bytes(i)) for i in found) + keys - len(found), 0
    if operation == "TransactGetItems":
        return sum(prices.ddb_read_units(item_bytes(r.get("Item") or {}), True)
                   for r in parsed.get("Responses") or []), 0
    if operation == "PutItem":
        return 0, prices.ddb_write_units(item_bytes(params.get("Item") or {}))
    if operation in ("UpdateItem", "DeleteItem"):
        return 0, prices.ddb_write_units(0)
    if operation == "BatchWriteItem":
        units = 0
        for requests in params.get("RequestItems", {}).values():
            for request in requests:
                put = request.get("PutRequest")
                units += prices.ddb_write_units(item_bytes(put["Item"]) if put else 0)
        return 0, units
    if operation == "TransactWriteItems":
        units = 0
        for entry in params.get("TransactItems", []):
            put = entry.get("Put")
            units += prices.ddb_write_units(item_bytes(put["Item"]) if put else 0, True)
        return 0, units
    return 0, 0


class DynamoHooks:
    """cargohold's DynamoDB calls, timed and sized through botocore's events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self.s3_calls: Counter[str] = Counter()  # cargohold's own view of its S3 calls

    def attach(self, client: Any) -> None:
        events = client.meta.events
        events.register("before-parameter-build", self._params, unique_id="sec-req-params")
        events.register("before-call", self._before, unique_id="sec-req-before")
        events.register("after-call", self._after, unique_id="sec-req-after")

    @staticmethod
    def _params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["sec_requests_params"] = params

    @staticmethod
    def _before(context: dict[str, Any], **_: Any) -> None:
        context["sec_requests_start"] = time.perf_counter()

    def _after(self, model: Any, parsed: dict[str, Any], context: dict[str, Any],
               **_: Any) -> None:
        end = time.perf_counter()
        service = model.service_model.service_name
        if service == "s3":  # counted and timed by the proxy; kept to cross-check
            with self._lock:
                self.s3_calls[model.name] += 1
            return
        rru, wru = ddb_units(model.name, context.get("sec_requests_params") or {}, parsed)
        call = Call("dynamodb", model.name, context.get("sec_requests_start", end), end,
                    rru=rru, wru=wru)
        with self._lock:
            self._calls.append(call)

    def take(self) -> list[Call]:
        with self._lock:
            taken, self._calls = self._calls, []
        return taken

    def take_s3(self) -> Counter[str]:
        with self._lock:
            taken, self.s3_calls = self.s3_calls, Counter()
        return taken


def sequential_chain(calls: list[Call]) -> int:
    """The longest chain of AWS calls each starting after the previous ended:
    the round trips a request waits for one after another (calls that
    overlap, like parallel ranged reads, count once)."""
    chain, last_end = 0, float("-inf")
    for call in sorted(calls, key=lambda c: c.end):
        if call.start >= last_end:
            chain += 1
            last_end = call.end
    return chain


# -- recording each HTTP request of the client ------------------------------------------
@dataclass
class Row:
    """One HTTP request of the client and the AWS requests it caused."""

    workload: str
    rep: int
    label: str
    method: str
    status: int = 0
    s3: Counter[str] = field(default_factory=Counter)         # the registry's S3 requests
    s3_client: Counter[str] = field(default_factory=Counter)  # presigned, by the client
    ddb: Counter[str] = field(default_factory=Counter)
    rru: float = 0
    wru: float = 0
    chain: int = 0
    to_registry: bool = True

    def aws_total(self) -> int:
        return sum(self.s3.values()) + sum(self.s3_client.values()) + sum(self.ddb.values())


def label_of(method: str, url: str, headers: Mapping[str, str], registry_host: str) -> str:
    """A request type: ``blob HEAD``, ``upload PATCH``, ``client → S3 GET``…"""
    split = urlsplit(url)
    if split.netloc != registry_host:
        return f"{CLIENT_S3} {method}"
    try:
        route = match(split.path)
    except Exception:  # noqa: BLE001 - any unmatched path is just "other"
        return f"{method} {split.path}"
    query = parse_qs(split.query)
    params = route.params
    kind = route.route.id
    if kind == "manifest":
        by = "digest" if params.get("reference", "").startswith("sha256:") else "tag"
        return f"manifest {method} by {by}"
    if kind == "uploads" and method == "POST":
        return "upload POST ?digest= (monolithic)" if "digest" in query else "upload POST (start)"
    if kind == "upload" and method == "PUT":
        length = {k.lower(): v for k, v in headers.items()}.get("content-length", "")
        return "upload PUT ?digest= (empty)" if length == "0" else "upload PUT ?digest= + body"
    if kind == "upload" and method == "PATCH":
        return "upload PATCH (chunk)"
    if kind in ("tags", "catalog"):
        return {"tags": "tag list", "catalog": "catalog page"}[kind]
    return f"{kind} {method}"


class Recorder:
    """Splits the AWS requests of a run into the client's HTTP requests.

    The client is sequential: every AWS request between the start of one of
    its HTTP requests and the start of the next belongs to the first (both
    registries finish their storage calls before they answer).
    """

    def __init__(self, proxy: TimedProxy, hooks: DynamoHooks | None, registry_host: str) -> None:
        self.proxy = proxy
        self.hooks = hooks
        self.registry_host = registry_host
        self.rows: list[Row] = []
        self.workload = ""
        self.rep = 0
        self._pending: Row | None = None
        self.warnings: list[str] = []

    def flush(self) -> None:
        """Close the pending row with every AWS request seen since it began."""
        s3 = self.proxy.take()
        ddb = self.hooks.take() if self.hooks else []
        own_s3 = self.hooks.take_s3() if self.hooks else None
        row, self._pending = self._pending, None
        if row is None:
            return  # set-up traffic between workloads: not measured
        for call in s3:
            (row.s3_client if call.client else row.s3)[call.operation] += 1
        for call in ddb:
            row.ddb[call.operation] += 1
            row.rru += call.rru
            row.wru += call.wru
        row.chain = sequential_chain([c for c in s3 if not c.client] + ddb)
        if own_s3 is not None and own_s3 != row.s3:
            self.warnings.append(f"{row.label}: proxy counted S3 {dict(row.s3)}, "
                                 f"cargohold's botocore {dict(own_s3)}")
        presigned = sum(row.s3_client.values())
        if presigned != (0 if row.to_registry else 1):
            self.warnings.append(f"{row.label}: {presigned} presigned S3 requests")
        self.rows.append(row)

    def begin(self, method: str, url: str, headers: Mapping[str, str]) -> Row:
        self.flush()
        row = Row(self.workload, self.rep, label_of(method, url, headers, self.registry_host),
                  method, to_registry=urlsplit(url).netloc == self.registry_host)
        self._pending = row
        return row

    @contextlib.contextmanager
    def measuring(self, workload: str, rep: int) -> Iterator[None]:
        self.flush()
        self.workload, self.rep = workload, rep
        try:
            yield
        finally:
            self.flush()
            self.workload = ""


class RecordingTransport:
    """The client's HTTP transport, telling the recorder where each request starts."""

    def __init__(self, inner: HttpTransport, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder

    def send(self, method: str, url: str, headers: dict[str, str], body: Body = None,
             ) -> RawResponse:
        row = self.recorder.begin(method, url, headers)
        reply = self.inner.send(method, url, headers, body)
        row.status = reply.status
        if row.label.startswith("blob HEAD"):
            # distribution answers a hit with 307 (the client then HEADs S3)
            row.label = {200: "blob HEAD hit", 307: "blob HEAD hit", 404: "blob HEAD miss"}.get(
                reply.status, f"blob HEAD ({reply.status})")
        elif row.label == "blob GET":
            row.label = "blob GET (307)" if reply.status == 307 else f"blob GET ({reply.status})"
        return reply


# -- the workloads ------------------------------------------------------------------------
def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    layer: bytes
    config: bytes
    manifest: bytes

    @classmethod
    def random(cls, rng: random.Random, layer_bytes: int) -> Image:
        layer = rng.randbytes(layer_bytes)
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
            "type": "layers", "diff_ids": [digest_of(layer)]},
            "config": {"Labels": {"bench": rng.randbytes(8).hex()}}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config),
                       "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer),
                        "size": len(layer)}]}).encode()
        return cls(layer, config, manifest)


def push(client: RegistryClient, image: Image, tag: str, chunked: bool) -> None:
    """Layer then config (HEAD first, as docker and crane do), then the manifest."""
    for blob, is_layer in ((image.layer, True), (image.config, False)):
        digest = digest_of(blob)
        if client.blob_size(REPO, digest) is not None:
            raise BenchError(f"fresh blob {digest} reported present")
        if chunked and is_layer:
            upload_chunked(client, blob, digest)
        else:
            client.upload_blob(REPO, digest, blob)
    stored = client.put_manifest(REPO, tag, image.manifest, OCI_MANIFEST)
    if stored != digest_of(image.manifest):
        raise BenchError(f"manifest stored as {stored}")


def upload_chunked(client: RegistryClient, blob: bytes, digest: str) -> None:
    """POST, then the blob in CHUNKS PATCHes with Content-Range, then an empty PUT."""
    reply = client.request("POST", f"/v2/{REPO}/blobs/uploads/", expect=(202,))
    reply.read()
    location = reply.headers.get("Location") or ""
    step = -(-len(blob) // CHUNKS)
    for offset in range(0, len(blob), step):
        piece = blob[offset:offset + step]
        reply = client.request("PATCH", location, body=piece, expect=(202,), headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(piece) - 1}",
            "Content-Length": str(len(piece))})
        reply.read()
        location = reply.headers.get("Location") or location
    separator = "&" if "?" in location else "?"
    reply = client.request("PUT", f"{location}{separator}digest={digest}", body=b"",
                           headers={"Content-Length": "0"}, expect=(201,))
    reply.read()


def pull(client: RegistryClient, image: Image, tag: str) -> None:
    """Manifest HEAD and GET by tag, then config and layer (digests verified)."""
    wanted = digest_of(image.manifest)
    if client.manifest_digest(REPO, tag) != wanted:
        raise BenchError(f"HEAD {tag}: wrong digest")
    manifest = client.get_manifest(REPO, tag)
    if manifest.body != image.manifest:
        raise BenchError(f"GET {tag}: other bytes than were pushed")
    if client.read_blob(REPO, digest_of(image.config)) != image.config:
        raise BenchError("config differs")
    if client.read_blob(REPO, digest_of(image.layer)) != image.layer:
        raise BenchError("layer differs")


def workloads(client: RegistryClient, rng: random.Random, mono: Image, chunky: Image,
              rep: int) -> list[tuple[str, Callable[[], None]]]:
    """The workloads of one repetition, in order (each pushes its own fresh image)."""
    return [
        ("push monolithic", lambda: push(client, mono, f"m{rep}", chunked=False)),
        ("push chunked", lambda: push(client, chunky, f"c{rep}", chunked=True)),
        ("pull by tag", lambda: pull(client, mono, f"m{rep}")),
        ("blob HEAD hit", lambda: check(
            client.blob_size(REPO, digest_of(chunky.layer)) == len(chunky.layer),
            "HEAD of a pushed layer")),
        ("blob HEAD miss", lambda: check(
            client.blob_size(REPO, digest_of(rng.randbytes(32))) is None,
            "HEAD of an absent blob")),
        ("tag list", lambda: check(
            {f"m{rep}", f"c{rep}"} <= set(client.tags(REPO)), "tag list")),
        ("catalog page", lambda: check(REPO in client.catalog(page_size=100), "catalog")),
    ]


def drive(client: RegistryClient, recorder: Recorder, reps: int, layer_bytes: int,
          seed: int) -> None:
    """Every workload, ``reps`` times, in the same order on either registry."""
    rng = random.Random(seed)
    for rep in range(reps):
        mono, chunky = (Image.random(rng, layer_bytes) for _ in range(2))
        for name, step in workloads(client, rng, mono, chunky, rep):
            with recorder.measuring(name, rep):
                step()


def check(ok: bool, what: str) -> None:
    if not ok:
        raise BenchError(f"{what}: wrong answer")


# -- running both registries ------------------------------------------------------------
ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "CARGOHOLD_HMAC_KEY")


@contextlib.contextmanager
def saved_environment() -> Iterator[None]:
    """Endpoints are process-wide: put them back so later sections see their own."""
    before = {key: os.environ.get(key) for key in ENV_KEYS}
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        clients.reset()


def run_cargohold(moto_url: str, proxy: TimedProxy, reps: int, layer_bytes: int,
                  ) -> tuple[list[Row], list[str]]:
    use_emulator(moto_url)
    os.environ["AWS_ENDPOINT_URL_S3"] = proxy.url  # S3 through the proxy, DynamoDB direct
    clients.reset()
    suffix = uuid.uuid4().hex[:10]
    base = Settings.from_env(blob_redirects_default=True, function_limits_default=True)
    settings = replace(base, bucket=f"bench-req-{suffix}", table=f"bench-req-{suffix}",
                       blob_redirects=True, function_limits=True)
    provision(settings.bucket, settings.table, settings.region)
    hooks = DynamoHooks()
    hooks.attach(clients.client("s3", settings.region))
    hooks.attach(clients.client("dynamodb", settings.region))
    server, thread = serve_in_thread(local_app(settings))
    try:
        host, port = server.server_address[:2]
        address = f"{host}:{port}"
        recorder = Recorder(proxy, hooks, address)
        transport = HttpTransport()
        client = RegistryClient(f"http://{address}", use_extensions=False,
                                transport=RecordingTransport(transport, recorder))
        try:
            drive(client, recorder, reps, layer_bytes, seed=7)
        finally:
            transport._pool.clear()  # keep-alive connections would hold server threads
        return recorder.rows, recorder.warnings
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def run_distribution(proxy: TimedProxy, reps: int, layer_bytes: int,
                     ) -> tuple[list[Row], list[str]]:
    if not (ROOT / ".tools" / "bin" / "registry").exists():
        raise BenchError("distribution is not installed: run `make tools`")
    from tests.distribution import running_distribution_s3

    bucket = f"dist-req-{uuid.uuid4().hex[:10]}"
    with tempfile.TemporaryDirectory(prefix="sec-requests-") as work, \
            running_distribution_s3(Path(work), proxy.url, bucket) as address:
        recorder = Recorder(proxy, None, address)
        recorder.flush()  # CreateBucket and start-up: not measured
        transport = HttpTransport()
        client = RegistryClient(f"http://{address}", use_extensions=False,
                                transport=RecordingTransport(transport, recorder))
        try:
            drive(client, recorder, reps, layer_bytes, seed=7)
        finally:
            transport._pool.clear()
        return recorder.rows, recorder.warnings


def measure(quick: bool) -> dict[str, Any]:
    reps = 1 if quick else 3
    layer_bytes = 64 * KIB if quick else MIB
    moto, moto_url = start_moto_process()
    try:
        with saved_environment(), TimedProxy(moto_url) as proxy:
            cargohold_rows, warnings = run_cargohold(moto_url, proxy, reps, layer_bytes)
            clients.reset()
            distribution_rows, more = run_distribution(proxy, reps, layer_bytes)
    finally:
        stop_process(moto)
    return {"reps": reps, "layer_bytes": layer_bytes,
            "warnings": warnings + [f"distribution {w}" for w in more],
            "rows": {"cargohold": cargohold_rows, "distribution": distribution_rows}}


# -- summarising -------------------------------------------------------------------------
def summarise(rows: list[Row]) -> dict[str, Any]:
    """Counts of a group of rows (a workload, a request type), JSON-ready."""
    s3: Counter[str] = Counter()
    s3_client: Counter[str] = Counter()
    ddb: Counter[str] = Counter()
    for row in rows:
        s3 += row.s3
        s3_client += row.s3_client
        ddb += row.ddb
    every_s3 = s3 + s3_client
    classes = prices.s3_classes(every_s3)
    http = sum(1 for row in rows if row.to_registry)
    return {
        "http": http, "client_s3_requests": sum(1 for row in rows if not row.to_registry),
        "s3": dict(sorted(s3.items())), "s3_client": dict(sorted(s3_client.items())),
        "ddb": dict(sorted(ddb.items())),
        "s3_put": classes["put"], "s3_get": classes["get"], "s3_free": classes["free"],
        "rru": sum(row.rru for row in rows), "wru": sum(row.wru for row in rows),
        "aws_total": sum(every_s3.values()) + sum(ddb.values()),
        "chain": sum(row.chain for row in rows),
    }


def cost(summary: Mapping[str, Any], registry: str) -> dict[str, float]:
    """Dollars for one occurrence of what ``summary`` counts (no fixed costs)."""
    out = {"s3_put": summary["s3_put"] * prices.S3_PUT_CLASS_PER_MILLION / prices.MILLION,
           "s3_get": summary["s3_get"] * prices.S3_GET_CLASS_PER_MILLION / prices.MILLION}
    if registry == "cargohold":
        out["rru"] = prices.ddb_cost(summary["rru"], 0)
        out["wru"] = prices.ddb_cost(0, summary["wru"])
        out["lambda"] = prices.lambda_cost(summary["http"])
        out["apigw"] = prices.apigw_cost(summary["http"])
    out["total"] = sum(out.values())
    return out


def median_rep(per_rep: list[dict[str, Any]]) -> dict[str, Any]:
    """The repetition whose AWS total is the median, plus the range over all."""
    ordered = sorted(per_rep, key=lambda s: s["aws_total"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["range"] = [ordered[0]["aws_total"], ordered[-1]["aws_total"]]
    return chosen


def by_workload(rows: list[Row], reps: int, registry: str) -> dict[str, Any]:
    out = {}
    for name in WORKLOADS:
        per_rep = [summarise([r for r in rows if r.workload == name and r.rep == rep])
                   for rep in range(reps)]
        chosen = median_rep(per_rep)
        chosen["cost"] = cost(chosen, registry)
        out[name] = chosen
    return out


def by_request_type(rows: list[Row]) -> dict[str, Any]:
    """Per request type: median AWS requests and sequential round trips."""
    labels = list(dict.fromkeys(row.label for row in rows))
    out = {}
    for label in labels:
        group = [row for row in rows if row.label == label]
        totals = [row.aws_total() for row in group]
        middle = sorted(group, key=lambda r: r.aws_total())[(len(group) - 1) // 2]
        out[label] = {
            "samples": len(group), "aws_median": statistics.median(totals),
            "aws_range": [min(totals), max(totals)],
            # a presigned request is itself the round trip: no registry chain
            "chain_median": (None if label.startswith(CLIENT_S3)
                             else statistics.median(row.chain for row in group)),
            "chain_range": [min(r.chain for r in group), max(r.chain for r in group)],
            "example": {"s3": dict(middle.s3), "s3_client": dict(middle.s3_client),
                        "ddb": dict(middle.ddb)},
        }
    return out


def scaled_image(rows: list[Row], workload: str, rep: int) -> dict[str, Any]:
    """A workload rescaled from the measured image (config + 1 layer) to a typical
    one (config + 5 layers): manifest requests once, blob requests × 3."""
    group = [r for r in rows if r.workload == workload and r.rep == rep]
    manifest = summarise([r for r in group if r.label.startswith("manifest")])
    blobs = summarise([r for r in group if not r.label.startswith("manifest")])
    factor = TYPICAL_BLOBS / IMAGE_BLOBS
    out: dict[str, Any] = {}
    for key in ("http", "s3_put", "s3_get", "s3_free", "rru", "wru", "aws_total"):
        out[key] = manifest[key] + blobs[key] * factor
    return out


def team_month(rows: Mapping[str, list[Row]], reps: int) -> dict[str, Any]:
    """A month of a team: 50 GB stored, 10,000 pulls and 500 pushes a day."""
    days = TEAM["days"]
    pulls, pushes = TEAM["pulls_per_day"] * days, TEAM["pushes_per_day"] * days
    gb = TEAM["stored_gb"]
    rep = (reps - 1) // 2
    out: dict[str, Any] = {"pulls": pulls, "pushes": pushes, "stored_gb": gb}
    for registry in REGISTRIES:
        pull = scaled_image(rows[registry], "pull by tag", rep)
        push_ = scaled_image(rows[registry], "push monolithic", rep)
        month = {key: pull[key] * pulls + push_[key] * pushes for key in pull}
        lines = {
            "S3 requests": (month["s3_put"] * prices.S3_PUT_CLASS_PER_MILLION
                            + month["s3_get"] * prices.S3_GET_CLASS_PER_MILLION)
            / prices.MILLION,
            "S3 storage": prices.s3_storage_cost(gb),
        }
        if registry == "cargohold":
            lines["DynamoDB requests"] = prices.ddb_cost(month["rru"], month["wru"])
            lines["DynamoDB storage"] = 0.0  # far below the 25 GB free tier
            lines["Lambda"] = prices.lambda_cost(month["http"])
            lines["API Gateway (REST)"] = prices.apigw_cost(month["http"])
            http_api = dict(lines)
            http_api["API Gateway (REST)"] = 0.0
            http_api["API Gateway (HTTP API)"] = prices.apigw_cost(month["http"], http_api=True)
            out["cargohold (HTTP API)"] = {"lines": http_api, "total": sum(http_api.values()),
                                           "counts": month, "per_pull": pull,
                                           "per_push": push_}
        else:
            lines["EC2 t4g.small, always on"] = prices.ec2_month()
        out[registry] = {"lines": lines, "total": sum(lines.values()), "counts": month,
                         "per_pull": pull, "per_push": push_}
    ecr = {"ECR storage": prices.ecr_storage_cost(gb), "ECR requests and in-region transfer": 0.0}
    out["ECR"] = {"lines": ecr, "total": sum(ecr.values())}
    return out


def run(quick: bool) -> dict[str, Any]:
    """Measure both registries; JSON-serialisable summary (raw rows included)."""
    started = time.monotonic()
    measured = measure(quick)
    reps = measured["reps"]
    rows: dict[str, list[Row]] = measured["rows"]
    result: dict[str, Any] = {
        "quick": quick, "reps": reps, "layer_bytes": measured["layer_bytes"],
        "chunks": CHUNKS, "warnings": measured["warnings"],
        "registries": {}, "team_month": team_month(rows, reps),
    }
    for registry in REGISTRIES:
        result["registries"][registry] = {
            "workloads": by_workload(rows[registry], reps, registry),
            "request_types": by_request_type(rows[registry]),
            "rows": [{"workload": r.workload, "rep": r.rep, "label": r.label,
                      "status": r.status, "s3": dict(r.s3), "s3_client": dict(r.s3_client),
                      "ddb": dict(r.ddb), "rru": r.rru, "wru": r.wru, "chain": r.chain}
                     for r in rows[registry]],
        }
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


# -- report -----------------------------------------------------------------------------
def _ops(counts: Mapping[str, int]) -> str:
    return " ".join(f"{op}×{n}" for op, n in counts.items()) or "—"


def _n(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}"


def _usd(value: float) -> str:
    if value == 0:
        return "$0"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def markdown(result: dict[str, Any]) -> str:
    cargo = result["registries"]["cargohold"]
    dist = result["registries"]["distribution"]
    size = result["layer_bytes"]
    size_text = f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"
    lines = [
        f"One moto S3 behind one counting proxy serves both registries; every S3 request "
        f"(the registry's and the client's presigned ones) is counted there by the operation "
        f"it bills as, cargohold's DynamoDB calls by botocore hooks. Image: one {size_text} "
        f"layer + config + manifest, fresh bytes per push; chunked push = {CHUNKS} PATCHes. "
        f"Redirects on for both (blob GETs → 307 → presigned S3 GET). Figures are the median "
        f"of {result['reps']} repetition(s) (range of AWS totals in brackets when they "
        f"differ). Prices: us-east-1 list prices from `bench/prices.py`.",
        "",
        "### AWS requests per workload",
        "",
        "| workload | cargohold HTTP req | cargohold S3 req | cargohold DynamoDB req "
        "| cargohold AWS req | distribution HTTP req | distribution S3 req "
        "| distribution / cargohold (AWS req) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in WORKLOADS:
        c, d = cargo["workloads"][name], dist["workloads"][name]
        c_s3 = sum(c["s3"].values()) + sum(c["s3_client"].values())
        d_s3 = sum(d["s3"].values()) + sum(d["s3_client"].values())
        ratio = f"{d['aws_total'] / c['aws_total']:.1f}×" if c["aws_total"] else "—"
        lines.append(f"| {name} | {c['http']} | {c_s3} | {sum(c['ddb'].values())} "
                     f"| {c['aws_total']}{_spread(c)} | {d['http']} | {d_s3}{_spread(d)} "
                     f"| {ratio} |")
    lines += ["", "HTTP req counts the client's requests to the registry; S3 req includes "
              "the client's presigned GET/HEAD after a redirect. A push HEADs each blob "
              "before uploading it (as docker and crane do); monolithic = POST + PUT with the "
              "body; the pull GETs the manifest by tag (skopeo, crane; containerd GETs it by "
              "digest after the HEAD). distribution answers a blob HEAD hit with a 307 too, "
              "which the client follows with a HEAD to S3. Tag list and catalog are one page "
              "of a tiny store here (one repository, a few tags): distribution lists S3 keys "
              "for them (up to 1,000 a LIST request), so they cost more LISTs as the store "
              "grows; cargohold's are one DynamoDB Query per page.", "",
              "### By operation name", ""]
    for name in WORKLOADS:
        c, d = cargo["workloads"][name], dist["workloads"][name]
        lines.append(f"- **{name}**: cargohold S3 {_ops(c['s3'])}"
                     + (f"; client→S3 {_ops(c['s3_client'])}" if c["s3_client"] else "")
                     + f"; DynamoDB {_ops(c['ddb'])} ({_n(c['rru'])} RRU, {_n(c['wru'])} WRU)."
                     f" distribution S3 {_ops(d['s3'])}"
                     + (f"; client→S3 {_ops(d['s3_client'])}" if d["s3_client"] else "") + ".")
    lines += [
        "", "### Price per 1,000 operations (us-east-1, requests only)", "",
        "| workload | cargohold S3 PUT-class | S3 GET-class | DynamoDB RRU | DynamoDB WRU "
        "| Lambda | API Gateway REST | cargohold total | distribution S3 PUT-class "
        "| S3 GET-class | distribution total | distribution / cargohold |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in WORKLOADS:
        c, d = cargo["workloads"][name]["cost"], dist["workloads"][name]["cost"]
        ratio = f"{d['total'] / c['total']:.2f}×" if c["total"] else "—"
        lines.append("| " + " | ".join([name] + [_usd(1000 * c[k]) for k in (
            "s3_put", "s3_get", "rru", "wru", "lambda", "apigw", "total")] + [
            _usd(1000 * d[k]) for k in ("s3_put", "s3_get", "total")] + [ratio]) + " |")
    lines += [
        "",
        f"DynamoDB units: 1 RRU per strongly consistent read of ≤4 KB (a miss still 1), "
        f"1 WRU per write of ≤1 KB, ×2 per transactional item, sized from the items "
        f"themselves. Lambda: ${prices.LAMBDA_PER_MILLION_REQUESTS:.2f} per million "
        f"invocations plus an *assumed* {prices.LAMBDA_ASSUMED_SECONDS * 1000:.0f} ms at "
        f"{prices.LAMBDA_ASSUMED_GB * 1024:.0f} MB each (not measured), one invocation and one "
        f"API Gateway request per client HTTP request to the registry (presigned S3 requests "
        f"bypass both). distribution's column is S3 only: it also needs an always-on server "
        f"(priced monthly below as one t4g.small on demand, "
        f"${prices.EC2_T4G_SMALL_HOUR}/h × {prices.HOURS_PER_MONTH} h = "
        f"{_usd(prices.ec2_month())}/month).",
        "", "### Sequential AWS round trips per request type", "",
        "The longest chain of AWS calls a request waits for one after another (timed at the "
        "proxy for S3, by botocore hooks for DynamoDB; overlapping calls count once): the "
        "storage latency a request adds. Median over all samples.", "",
        "| request type | cargohold AWS calls | cargohold sequential | distribution AWS calls "
        "| distribution sequential |",
        "|---|---:|---:|---:|---:|",
    ]
    types = list(dict.fromkeys([*cargo["request_types"], *dist["request_types"]]))
    for label in types:
        c, d = cargo["request_types"].get(label), dist["request_types"].get(label)
        lines.append(f"| {label} | {_n(c['aws_median']) if c else '—'} "
                     f"| {_chain(c)} | {_n(d['aws_median']) if d else '—'} | {_chain(d)} |")
    lines += _team_lines(result["team_month"])
    if result["warnings"]:
        lines += ["", "Warning, attribution check failed (retries, or a request counted "
                  "under the wrong HTTP request): " + "; ".join(result["warnings"][:5])]
    else:
        lines += ["", "Cross-checks: for every HTTP request, cargohold's botocore count of its "
                  "S3 calls equals the proxy's count, and each presigned S3 request was counted "
                  "during the client's own request to S3, none during a registry request."]
    lines.append(f"\nMeasured in {result['seconds']} s.")
    return "\n".join(lines)


def _chain(entry: Mapping[str, Any] | None) -> str:
    if entry is None:
        return "—"
    return "n/a" if entry["chain_median"] is None else _n(entry["chain_median"])


def _spread(summary: Mapping[str, Any]) -> str:
    low, high = summary["range"]
    return f" [{low}–{high}]" if low != high else ""


def _team_lines(team: Mapping[str, Any]) -> list[str]:
    lines = [
        "", f"### A month for a team: {team['stored_gb']} GB stored, "
        f"{team['pulls'] // 30:,} pulls and {team['pushes'] // 30:,} pushes a day (30 days)", "",
        "Assumptions: a typical image has 5 layers + config; a pull is the measured pull "
        "scaled to it (manifest HEAD + GET once, blob requests × 3, every blob fetched: a "
        "cold pull); a push is the measured monolithic push scaled the same way (all 6 blobs "
        "new: an upper bound, pushes that reuse base layers skip their uploads). Same-region "
        "transfer is free for S3 and ECR; egress, EBS, load balancers and free tiers are "
        "left out.", "",
        "| registry | AWS requests / month | line items | total / month |",
        "|---|---:|---|---:|",
    ]
    for name in ("cargohold", "cargohold (HTTP API)", "distribution", "ECR"):
        entry = team[name]
        counts = entry.get("counts")
        requests = f"{counts['aws_total']:,.0f}" if counts else "0 billed"
        items = "; ".join(f"{k} {_usd(v)}" for k, v in entry["lines"].items())
        lines.append(f"| {name} | {requests} | {items} | {_usd(entry['total'])} |")
    cargo, dist, ecr = team["cargohold"]["total"], team["distribution"]["total"], \
        team["ECR"]["total"]
    lines += ["", f"Ratios (same run): distribution / cargohold = {dist / cargo:.2f}×; "
              f"cargohold / ECR = {cargo / ecr:.2f}×; cargohold (HTTP API) / ECR = "
              f"{team['cargohold (HTTP API)']['total'] / ecr:.2f}×."]
    return lines


def plot_data(result: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": "AWS requests per workload (S3 + DynamoDB, incl. presigned)",
        "unit": "AWS requests",
        "labels": list(WORKLOADS),
        "series": {registry: [result["registries"][registry]["workloads"][w]["aws_total"]
                              for w in WORKLOADS] for registry in REGISTRIES},
    }


if __name__ == "__main__":
    try:
        print(markdown(run(quick="--quick" in sys.argv)))
    except BenchError as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        sys.exit(2)
