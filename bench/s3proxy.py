"""A counting reverse proxy for an S3 endpoint (moto, versitygw…).

Why: cargohold's own AWS requests are counted inside its process with
botocore's event hooks (``bench/aws_requests.py``), but another registry
(CNCF distribution with its ``s3`` driver) and the clients that follow
presigned redirects talk to S3 from elsewhere. Put this proxy between them
and the emulator and every S3 REST request is counted from the server's side
under the AWS operation name it bills as (``GetObject``, ``UploadPart``…),
so both registries are measured with the same yardstick.

Usage, in-process::

    with S3CountingProxy("http://127.0.0.1:5000") as proxy:
        ... point clients at proxy.url ...
        proxy.counts()   # Counter({"PutObject": 3, "HeadObject": 2, ...})
        proxy.reset()    # returns the counts so far and starts from zero

Only path-style addressing is understood (``/bucket/key``), which is what
boto3 and the AWS SDKs use against an IP endpoint or with forcepathstyle.
Bodies are streamed both ways in 1 MiB pieces, never held whole, so the
proxy does not change the memory profile of a multi-GiB push. Each request
opens its own upstream connection: simple, and on loopback the cost is far
below an emulator's own per-request work.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PIECE = 1024 * 1024
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding",
                        "upgrade", "expect", "proxy-connection"})

# Bucket subresources whose GET/PUT/DELETE names follow ``<Verb>Bucket<Name>``.
BUCKET_SUBRESOURCES = {
    "acl": "Acl", "cors": "Cors", "encryption": "Encryption", "lifecycle": "LifecycleConfiguration",
    "logging": "Logging", "notification": "NotificationConfiguration",
    "ownershipControls": "OwnershipControls", "policy": "Policy",
    "publicAccessBlock": "PublicAccessBlock", "replication": "Replication",
    "requestPayment": "RequestPayment", "tagging": "Tagging", "versioning": "Versioning",
    "website": "Website", "accelerate": "AccelerateConfiguration",
    "object-lock": "ObjectLockConfiguration",
}
OBJECT_SUBRESOURCES = {"acl": "Acl", "tagging": "Tagging", "retention": "Retention",
                       "legal-hold": "LegalHold", "attributes": "Attributes"}


def classify(method: str, target: str, headers: Any) -> str:
    """The AWS operation name of one path-style S3 REST request.

    ``headers`` is anything with a case-insensitive ``get`` (an
    ``http.client.HTTPMessage``, or a plain dict with lower-case keys).
    Requests of JSON-protocol services (DynamoDB…) sent to the same emulator
    are named by their ``X-Amz-Target``; anything unrecognised is ``Other``.
    """
    method = method.upper()
    amz_target = headers.get("x-amz-target") or headers.get("X-Amz-Target")
    if amz_target:
        return amz_target.rsplit(".", 1)[-1]
    split = urlsplit(target)
    query = parse_qs(split.query, keep_blank_values=True)
    path = unquote(split.path)
    if path.startswith("/moto-api"):
        return "MotoApi"
    bucket, _, key = path.lstrip("/").partition("/")
    copy_source = headers.get("x-amz-copy-source") or headers.get("X-Amz-Copy-Source")
    if not bucket:
        return "ListBuckets" if method == "GET" else "Other"
    if not key:
        return _bucket_operation(method, query)
    return _object_operation(method, query, bool(copy_source))


def _bucket_operation(method: str, query: dict[str, list[str]]) -> str:
    if method == "HEAD":
        return "HeadBucket"
    if method == "POST":
        return "DeleteObjects" if "delete" in query else "PostObject"
    if method == "GET":
        if "location" in query:
            return "GetBucketLocation"
        if "uploads" in query:
            return "ListMultipartUploads"
        if "versions" in query:
            return "ListObjectVersions"
        if "policyStatus" in query:
            return "GetBucketPolicyStatus"
    verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method)
    if verb is None:
        return "Other"
    for sub, name in BUCKET_SUBRESOURCES.items():
        if sub in query:
            return f"{verb}Bucket{name}"
    if method == "GET":
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    return "CreateBucket" if method == "PUT" else "DeleteBucket"


def _object_operation(method: str, query: dict[str, list[str]], copy_source: bool) -> str:
    upload = "uploadId" in query
    if method == "HEAD":
        return "HeadObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if upload:
            return "CompleteMultipartUpload"
        if "restore" in query:
            return "RestoreObject"
        if "select" in query:
            return "SelectObjectContent"
        return "Other"
    if method == "PUT" and upload and "partNumber" in query:
        return "UploadPartCopy" if copy_source else "UploadPart"
    if method == "GET" and upload:
        return "ListParts"
    if method == "DELETE" and upload:
        return "AbortMultipartUpload"
    verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}.get(method)
    if verb is None:
        return "Other"
    for sub, name in OBJECT_SUBRESOURCES.items():
        if sub in query:
            return f"{verb}Object{name}"
    if method == "PUT":
        return "CopyObject" if copy_source else "PutObject"
    return f"{verb}Object"


@dataclass(frozen=True)
class Seen:
    """One proxied request, for debugging a count."""

    operation: str
    method: str
    target: str
    status: int
    bytes_in: int
    bytes_out: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes: without this every answer
    # with a body waits ~40 ms for the client's delayed ACK
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
        """Quiet: the counts are the log."""

    def _proxy(self) -> None:
        operation = classify(self.command, self.path, self.headers)
        proxy = self.server.owner
        proxy.count(operation)
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port,
                                              timeout=proxy.timeout)
        status, sent = 502, 0
        recorded = False

        def finish(received: int) -> None:
            """Record the request; called before the last byte goes to the client,
            so a client that saw its answer and then reads ``seen()`` finds it."""
            nonlocal recorded
            if not recorded:
                recorded = True
                proxy.record(Seen(operation, self.command, self.path, status, sent, received))

        try:
            chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
            length = int(self.headers.get("Content-Length") or 0)
            upstream.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    upstream.putheader(name, value)
            if chunked:
                upstream.putheader("Transfer-Encoding", "chunked")
            upstream.endheaders()
            sent = self._relay_chunked(upstream) if chunked else self._relay(upstream, length)
            response = upstream.getresponse()
            status = response.status
            self._answer(response, finish)
        except (OSError, http.client.HTTPException) as exc:
            if status == 502 and not self.wfile.closed:
                finish(0)
                self._fail(exc)
            self.close_connection = True
        finally:
            upstream.close()
            finish(0)

    def _relay(self, upstream: http.client.HTTPConnection, length: int) -> int:
        left = length
        while left > 0:
            piece = self.rfile.read(min(PIECE, left))
            if not piece:
                raise ConnectionError("client closed mid-body")
            upstream.send(piece)
            left -= len(piece)
        return length

    def _relay_chunked(self, upstream: http.client.HTTPConnection) -> int:
        """Forward a chunked body chunk by chunk (aws-chunked framing inside is opaque)."""
        total = 0
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed mid-body")
            size = int(line.split(b";", 1)[0].strip(), 16)
            upstream.send(line)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = self.rfile.readline(65537)
                    upstream.send(trailer)
                    if trailer in (b"\r\n", b"\n", b""):
                        return total
            left = size + 2  # the chunk and its CRLF
            while left > 0:
                piece = self.rfile.read(min(PIECE, left))
                if not piece:
                    raise ConnectionError("client closed mid-body")
                upstream.send(piece)
                left -= len(piece)
            total += size

    def _answer(self, response: http.client.HTTPResponse,
                finish: Callable[[int], None]) -> None:
        """Stream the upstream answer; ``finish(bytes)`` runs just before the
        last write (each piece is held until the next one is read)."""
        self.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        bodiless = self.command == "HEAD" or response.status in (204, 304) or (
            100 <= response.status < 200) or length == "0"
        rechunk = not bodiless and length is None
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        if rechunk:
            self.send_header("Transfer-Encoding", "chunked")
        if bodiless:
            finish(0)
            self.end_headers()
            return
        self.end_headers()
        total = 0
        held = b""
        while True:
            piece = response.read(PIECE)
            if not piece:
                break
            if held:
                self._write(held, rechunk)
            held = piece
            total += len(piece)
        if length is not None and total != int(length):
            self.close_connection = True  # upstream cut the body short: so must we
        finish(total)
        if held:
            self._write(held, rechunk)
        if rechunk:
            self.wfile.write(b"0\r\n\r\n")

    def _write(self, piece: bytes, chunked: bool) -> None:
        if chunked:
            self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        else:
            self.wfile.write(piece)

    def _fail(self, exc: BaseException) -> None:
        body = f"s3proxy: upstream failed: {exc}\n".encode()
        try:
            self.send_response_only(502)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    # BaseHTTPRequestHandler dispatches on these names; every method is proxied.
    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = _proxy  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    owner: S3CountingProxy


class S3CountingProxy:
    """Counts S3 requests by AWS operation on their way to ``upstream``.

    Thread-safe; ``keep`` bounds how many per-request records are kept.
    """

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0,
                 timeout: float = 300, keep: int = 10_000) -> None:
        split = urlsplit(upstream)
        if split.scheme != "http" or not split.hostname:
            raise ValueError(f"upstream must be an http:// URL, not {upstream!r}")
        self.upstream_host = split.hostname
        self.upstream_port = split.port or 80
        self.timeout = timeout
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._seen: deque[Seen] = deque(maxlen=keep)
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self) -> S3CountingProxy:
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="s3proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> S3CountingProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def count(self, operation: str) -> None:
        with self._lock:
            self._counts[operation] += 1

    def record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def counts(self) -> Counter[str]:
        """Requests per operation since the start or the last ``reset``."""
        with self._lock:
            return Counter(self._counts)

    def seen(self) -> list[Seen]:
        """The last finished requests (at most ``keep``), oldest first."""
        with self._lock:
            return list(self._seen)

    def reset(self) -> Counter[str]:
        """Start counting from zero; returns what was counted until now.

        A request counts when its headers arrive, so call this only when no
        request is in flight, or the in-flight one lands on either side.
        """
        with self._lock:
            taken, self._counts = self._counts, Counter()
            self._seen.clear()
        return taken
