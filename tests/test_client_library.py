"""The client library (``chalicelib.client``) against the registry and peers.

One scenario runs over both sides of the transport seam (in-process
``AppTransport``, with and without 307 redirects to moto, and
``HttpTransport`` over a real socket), so the in-process tests really
stand for the wire. Upload strategies are checked from the registry's side
(a wrapper records what the app was asked), errors become the core's
error codes, and the 401 dance (Basic, Docker token flow) is driven by a
tiny fake registry front door. Every digest is computed here, never by the
client under test.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import pytest

from chalicelib.client import (
    AppTransport,
    AuthenticationError,
    DigestMismatchError,
    HttpTransport,
    RegistryClient,
    RegistryResponseError,
    TransportError,
)
from chalicelib.client.auth import Credentials, resolve_credentials
from chalicelib.config import Settings
from chalicelib.core import errors as codes
from chalicelib.core.http import Request, Response
from chalicelib.devserver import free_port, local_app
from chalicelib.server import serve_in_thread
from chalicelib.storage import clients

from .distribution import distribution  # noqa: F401 - a fixture
from .oci_layout import OCI_INDEX, OCI_MANIFEST, canonical_json, sha256

MIB = 1024 * 1024
PART = 5 * MIB
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
LOCAL_HOST = "registry.local"
SIZES = (0, 10, 3_000_000, 20 * MIB)


def data_of(size: int, seed: int = 7) -> bytes:
    return random.Random(seed * 1_000_003 + size).randbytes(size)


# -- a registry app that remembers what it was asked --------------------------
class _CountingBody:
    """The request body as the app reads it, counting the bytes actually read."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.read_bytes += len(data or b"")
        return data


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    body_bytes: int
    headers: dict[str, str]


@dataclass
class Recorder:
    """Wraps a registry app: records every request; ``tamper`` may replace a
    response (e.g. serve wrong bytes for a blob)."""

    app: Callable[[Request], Response]
    seen: list[Seen] = field(default_factory=list)
    tamper: Callable[[Request, Response], Response] | None = None

    def __call__(self, request: Request) -> Response:
        body = _CountingBody(request.body)
        request.body = body  # type: ignore[assignment]
        response = self.app(request)
        if self.tamper is not None:
            response = self.tamper(request, response)
        self.seen.append(Seen(request.method, request.path, request.query, response.status,
                              body.read_bytes, dict(request.headers.items())))
        return response

    def requests(self, method: str, path_part: str = "") -> list[Seen]:
        return [s for s in self.seen if s.method == method and path_part in s.path]


# -- fixtures -------------------------------------------------------------------
@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No credentials from the environment or ~/.docker leak into a test."""
    monkeypatch.delenv("CARGOHOLD_USERNAME", raising=False)
    monkeypatch.delenv("CARGOHOLD_PASSWORD", raising=False)
    config_dir = tmp_path / "docker-config"
    config_dir.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config_dir))
    return config_dir


@pytest.fixture
def parted(settings: Settings) -> Settings:
    """Small S3 parts, so a 20 MiB streamed upload spans several."""
    return replace(settings, part_size=PART)


Connect = Callable[..., RegistryClient]


@pytest.fixture
def serve_app() -> Iterator[Callable[[Callable[[Request], Response]], str]]:
    """``serve_app(app)`` serves an app on a free loopback port; ``host:port``."""
    running = []

    def _serve(app: Callable[[Request], Response]) -> str:
        httpd, thread = serve_in_thread(app)
        running.append((httpd, thread))
        host, port = httpd.server_address[:2]
        return f"{host}:{port}"

    yield _serve
    for httpd, thread in running:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def in_process(app: Callable[[Request], Response], **kwargs: Any) -> RegistryClient:
    transport = AppTransport(app, host=LOCAL_HOST, fallback=HttpTransport())
    return RegistryClient(f"http://{LOCAL_HOST}", transport=transport, **kwargs)


@dataclass
class Side:
    mode: str
    recorder: Recorder
    connect: Connect


@pytest.fixture(params=["app", "app-redirects", "http"])
def side(request: pytest.FixtureRequest, parted: Settings, serve_app) -> Side:
    """The same registry behind either side of the transport seam."""
    settings = replace(parted, blob_redirects=request.param == "app-redirects")
    recorder = Recorder(local_app(settings))
    if request.param == "http":
        hostport = serve_app(recorder)

        def connect(**kwargs: Any) -> RegistryClient:
            return RegistryClient(f"http://{hostport}", transport=HttpTransport(), **kwargs)
    else:
        def connect(**kwargs: Any) -> RegistryClient:
            return in_process(recorder, **kwargs)
    return Side(request.param, recorder, connect)


class RecordingHttp(HttpTransport):
    """HttpTransport that notes (method, path, status) of every exchange."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, int]] = []

    def send(self, method: str, url: str, headers: dict[str, str], body: Any = None,
             ) -> Any:
        reply = super().send(method, url, headers, body)
        self.seen.append((method, urlsplit(url).path, reply.status))
        return reply


# -- helpers ----------------------------------------------------------------------
def image_manifest(config: bytes, layers: list[bytes], **extra: Any) -> bytes:
    document: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": sha256(x), "size": len(x)} for x in layers],
        **extra,
    }
    return canonical_json(document)


def artifact(subject: bytes, artifact_type: str) -> bytes:
    """An OCI 1.1 artifact manifest (empty config) whose subject is ``subject``."""
    empty = {"mediaType": OCI_EMPTY, "digest": sha256(b"{}"), "size": 2}
    return canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
        "config": empty, "layers": [empty],
        "subject": {"mediaType": OCI_MANIFEST, "digest": sha256(subject),
                    "size": len(subject)},
    })


def upload_rows(settings: Settings) -> list[dict[str, Any]]:
    """Upload sessions left in DynamoDB, and multipart uploads left in S3."""
    ddb = clients.client("dynamodb", settings.region)
    items = [i for page in ddb.get_paginator("scan").paginate(TableName=settings.table)
             for i in page["Items"] if i["pk"]["S"].startswith("upload#")]
    s3 = clients.client("s3", settings.region)
    return items + s3.list_multipart_uploads(Bucket=settings.bucket).get("Uploads", [])


def wrong_bytes_for(digest: str) -> Callable[[Request, Response], Response]:
    """A tamper that serves other bytes (same length) for one blob."""

    def tamper(request: Request, response: Response) -> Response:
        if request.method == "GET" and request.path.endswith(f"/blobs/{digest}"):
            bad = b"X" * 10
            return Response(200, {"Content-Length": str(len(bad)),
                                  "Docker-Content-Digest": digest,
                                  "Content-Type": "application/octet-stream"}, bad)
        return response

    return tamper


# -- one scenario over both sides of the seam ---------------------------------------
def test_same_scenario_on_both_sides_of_the_seam(side: Side, parted: Settings) -> None:
    recorder = side.recorder
    client = side.connect()
    name = "lib/scenario"
    assert client.ping() == {"api_version": "registry/2.0"}

    # blobs of 0 B, 10 B, 3 MB and 20 MiB
    blobs = {size: data_of(size) for size in SIZES}
    for data in blobs.values():
        assert client.upload_blob(name, sha256(data), data) == sha256(data)
    for size, data in blobs.items():
        assert client.blob_size(name, sha256(data)) == size
        assert client.read_blob(name, sha256(data)) == data
    assert client.blob_size(name, sha256(b"never pushed")) is None
    # no body cap advertised: every blob went in one streamed request, not by
    # the direct-to-S3 extension (kept for registries that cap bodies)
    assert recorder.requests("POST", "/_cargohold/uploads/") == []
    assert recorder.requests("PATCH") == []
    redirects = [s for s in recorder.requests("GET", "/blobs/sha256:") if s.status == 307]
    assert len(redirects) == (len(SIZES) if side.mode == "app-redirects" else 0)

    big = blobs[3_000_000]
    ranged = b"".join(client.get_blob(name, sha256(big), byte_range=(1000, 1_001_999)))
    assert ranged == big[1000:1_002_000]

    # wrong bytes served under a digest: the client notices
    ten = blobs[10]
    recorder.tamper = wrong_bytes_for(sha256(ten))
    with pytest.raises(DigestMismatchError, match=sha256(ten)):
        client.read_blob(name, sha256(ten))
    recorder.tamper = None
    assert client.read_blob(name, sha256(ten)) == ten

    # cross-repository mount: hit, then miss (the fallback upload is cancelled)
    assert client.mount_blob("lib/other", sha256(ten), name) is True
    assert client.blob_size("lib/other", sha256(ten)) == 10
    assert client.mount_blob("lib/other", sha256(b"absent"), name) is False
    started = [s for s in recorder.requests("POST", "/lib/other/blobs/uploads")
               if s.query.get("mount") == [sha256(b"absent")]]
    assert [s.status for s in started] == [202]
    [cancel] = recorder.requests("DELETE", "/lib/other/blobs/uploads/")
    assert cancel.status == 204
    assert upload_rows(parted) == []

    # manifests: an image and an index, with media type negotiation
    config = b'{"architecture":"amd64","os":"linux"}'
    client.upload_blob(name, sha256(config), config)
    image = image_manifest(config, [ten, big])
    assert client.put_manifest(name, "v1", image, OCI_MANIFEST) == sha256(image)
    got = client.get_manifest(name, "v1")
    assert (got.body, got.media_type, got.digest) == (image, OCI_MANIFEST, sha256(image))
    assert client.get_manifest(name, sha256(image)).body == image
    assert client.manifest_digest(name, "v1") == sha256(image)
    assert client.manifest_digest(name, "v404") is None
    with pytest.raises(RegistryResponseError) as refused:
        client.get_manifest(name, "v1", accept=DOCKER_MANIFEST)
    assert (refused.value.status, refused.value.code) == (404, "MANIFEST_UNKNOWN")

    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": sha256(image), "size": len(image),
         "platform": {"os": "linux", "architecture": "amd64"}}]})
    assert client.put_manifest(name, "multi", index, OCI_INDEX) == sha256(index)
    got = client.get_manifest(name, "multi")
    assert (got.body, got.media_type) == (index, OCI_INDEX)
    assert client.get_manifest(name, "multi", accept=OCI_INDEX).digest == sha256(index)
    with pytest.raises(RegistryResponseError, match="MANIFEST_UNKNOWN"):
        client.get_manifest(name, "multi", accept=OCI_MANIFEST)

    # tags (7) and catalog (5 repositories), paginated through Link
    tags = sorted(["v1", "multi", "a", "b", "c", "d", "e"])
    for tag in ("a", "b", "c", "d", "e"):
        client.put_manifest(name, tag, image, OCI_MANIFEST)
    repos = sorted([name, "lib/other", "lib/r1", "lib/r2", "lib/r3"])
    for repo in ("lib/r1", "lib/r2", "lib/r3"):
        assert client.mount_blob(repo, sha256(ten), name) is True
    assert client.tags(name) == tags
    assert client.catalog() == repos
    for n in (1, 2, 3):
        before = len(recorder.requests("GET", "/tags/list"))
        assert client.tags(name, page_size=n) == tags
        assert len(recorder.requests("GET", "/tags/list")) - before == -(-len(tags) // n)
        before = len(recorder.requests("GET", "/_catalog"))
        assert client.catalog(page_size=n) == repos
        assert len(recorder.requests("GET", "/_catalog")) - before == -(-len(repos) // n)

    # referrers, with and without the artifactType filter
    client.upload_blob(name, sha256(b"{}"), b"{}")
    signature = artifact(image, "application/vnd.example.signature")
    sbom = artifact(image, "application/vnd.example.sbom")
    client.put_manifest(name, sha256(signature), signature, OCI_MANIFEST)
    client.put_manifest(name, sha256(sbom), sbom, OCI_MANIFEST)
    everything = client.referrers(name, sha256(image))
    assert everything["mediaType"] == OCI_INDEX
    assert sorted(d["digest"] for d in everything["manifests"]) == sorted(
        [sha256(signature), sha256(sbom)])
    only = client.referrers(name, sha256(image), "application/vnd.example.sbom")
    assert [(d["digest"], d["artifactType"]) for d in only["manifests"]] == [
        (sha256(sbom), "application/vnd.example.sbom")]
    assert client.referrers(name, sha256(index))["manifests"] == []

    # deletes
    client.delete_manifest(name, "e")
    assert client.manifest_digest(name, "e") is None
    assert client.manifest_digest(name, "d") == sha256(image)
    client.delete_manifest(name, sha256(sbom))
    with pytest.raises(RegistryResponseError, match="MANIFEST_UNKNOWN"):
        client.get_manifest(name, sha256(sbom))
    client.delete_blob("lib/other", sha256(ten))
    assert client.blob_size("lib/other", sha256(ten)) is None
    assert client.blob_size(name, sha256(ten)) == 10  # other links untouched


# -- upload strategies, seen from the registry's side -------------------------------
def test_function_limits_registry_gets_direct_parts(settings: Settings) -> None:
    """A 20 MiB blob to a registry that caps bodies: presigned parts straight to
    S3 (cargohold extension), no PATCH, and a bodiless completion."""
    recorder = Recorder(local_app(replace(settings, function_limits=True, part_size=PART)))
    client = in_process(recorder)
    data = data_of(20 * MIB, seed=3)
    client.upload_blob("lib/direct", sha256(data), data)
    [plan] = recorder.requests("POST", "/_cargohold/uploads/")
    assert plan.path.endswith("/parts") and plan.status == 200
    assert recorder.requests("PATCH") == []
    [complete] = recorder.requests("PUT", "/blobs/uploads/")
    assert (complete.status, complete.body_bytes) == (201, 0)
    assert complete.query["digest"] == [sha256(data)]
    assert all(s.body_bytes <= 4 * MIB for s in recorder.seen)
    assert client.read_blob("lib/direct", sha256(data)) == data


def test_function_limits_without_extensions_chunks_within_the_max(settings: Settings) -> None:
    recorder = Recorder(local_app(replace(settings, function_limits=True, part_size=PART)))
    client = in_process(recorder, use_extensions=False)
    data = data_of(20 * MIB, seed=4)
    client.upload_blob("lib/chunked", sha256(data), data)
    patches = recorder.requests("PATCH")
    assert [p.status for p in patches] == [202] * 5
    assert [p.body_bytes for p in patches] == [4 * MIB] * 5
    assert all(int(p.headers["Content-Length"]) <= 4 * MIB for p in patches)
    assert recorder.requests("POST", "/_cargohold/") == []
    [complete] = recorder.requests("PUT")
    assert (complete.status, complete.body_bytes) == (201, 0)
    assert client.read_blob("lib/chunked", sha256(data)) == data


def test_small_blob_to_function_limits_registry_is_one_put(settings: Settings) -> None:
    recorder = Recorder(local_app(replace(settings, function_limits=True, part_size=PART)))
    data = data_of(3_000_000, seed=5)
    in_process(recorder).upload_blob("lib/small", sha256(data), data)
    assert recorder.requests("PATCH") == []
    [complete] = recorder.requests("PUT")
    assert (complete.status, complete.body_bytes) == (201, len(data))


@pytest.mark.parametrize("size, extensions", [(20 * MIB, False), (20 * MIB, True)])
def test_plain_registry_gets_one_streamed_request(parted: Settings, serve_app, size: int,
                                                  extensions: bool) -> None:
    """No OCI-Chunk-Max-Length: the whole blob in one PUT (over a socket, so
    the body really is streamed from the source), even when the extension is
    offered: one verified stream beats parts that must be read back."""
    recorder = Recorder(local_app(parted))
    client = RegistryClient(f"http://{serve_app(recorder)}", use_extensions=extensions)
    data = data_of(size, seed=6)
    client.upload_blob("lib/plain", sha256(data), data)
    assert recorder.requests("PATCH") == []
    assert recorder.requests("POST", "/_cargohold/") == []
    [complete] = recorder.requests("PUT")
    assert (complete.status, complete.body_bytes) == (201, size)
    assert client.read_blob("lib/plain", sha256(data)) == data


def test_advertised_max_without_min_uses_the_largest_allowed_chunks(parted: Settings) -> None:
    """A registry that says only ``OCI-Chunk-Max-Length: 1 MiB`` gets 1 MiB
    chunks (not, say, 1-byte ones)."""

    patches = 0

    def advertise(request: Request, response: Response) -> Response:
        nonlocal patches
        if request.method == "PATCH":
            patches += 1
            if patches > 8:  # a runaway chunk loop fails fast instead of hanging
                return Response.json(400, {"errors": [{"code": "SIZE_INVALID",
                                                       "message": "too many chunks"}]})
        if request.method == "POST" and response.status == 202:
            response.headers.pop("OCI-Chunk-Min-Length", None)
            response.headers["OCI-Chunk-Max-Length"] = str(MIB)
        return response

    recorder = Recorder(local_app(parted), tamper=advertise)
    data = data_of(3_000_000, seed=8)
    in_process(recorder, use_extensions=False).upload_blob("lib/max", sha256(data), data)
    assert [p.body_bytes for p in recorder.requests("PATCH")] == [MIB, MIB, 3_000_000 - 2 * MIB]


def test_distribution_registry_without_the_extension(distribution: str) -> None:  # noqa: F811
    """The CNCF registry offers no extension and no chunk limits: the client
    falls back to one streamed request and everything else works too."""
    wire = RecordingHttp()
    client = RegistryClient(f"http://{distribution}", transport=wire)
    assert client.ping()["api_version"] == "registry/2.0"
    name = "peer/lib"
    blobs = [data_of(size, seed=9) for size in SIZES]
    for data in blobs:
        assert client.upload_blob(name, sha256(data), data) == sha256(data)
    # distribution caps no bodies: the 20 MiB blob (last) went in one PUT and
    # the extension was never asked for
    assert [(m, status) for m, _, status in wire.seen[-2:]] == [("POST", 202), ("PUT", 201)]
    assert [(m, st) for m, p, st in wire.seen if "_cargohold" in p] == []
    assert not [x for x in wire.seen if x[0] == "PATCH"]
    for data in blobs:
        assert client.blob_size(name, sha256(data)) == len(data)
        assert client.read_blob(name, sha256(data)) == data
    assert client.blob_size(name, sha256(b"absent")) is None
    config = b'{"architecture":"amd64","os":"linux"}'
    client.upload_blob(name, sha256(config), config)
    image = image_manifest(config, blobs[1:3])
    assert client.put_manifest(name, "v1", image, OCI_MANIFEST) == sha256(image)
    got = client.get_manifest(name, "v1")
    assert (got.body, got.media_type, got.digest) == (image, OCI_MANIFEST, sha256(image))
    assert client.manifest_digest(name, "v1") == sha256(image)
    for tag in ("v2", "v3"):
        client.put_manifest(name, tag, image, OCI_MANIFEST)
    assert client.tags(name, page_size=2) == ["v1", "v2", "v3"]
    assert client.mount_blob("peer/other", sha256(blobs[1]), name) is True
    assert client.mount_blob("peer/other", sha256(b"absent"), name) is False
    client.delete_manifest(name, sha256(image))
    with pytest.raises(RegistryResponseError) as gone:
        client.get_manifest(name, "v1")
    assert (gone.value.status, gone.value.code) == (404, "MANIFEST_UNKNOWN")


# -- errors -------------------------------------------------------------------------
def test_error_envelopes_become_registry_response_errors(app) -> None:
    client = in_process(app)
    with pytest.raises(RegistryResponseError) as unknown:
        client.get_manifest("lib/empty", "latest")
    error = unknown.value
    assert (error.status, error.code) == (404, "MANIFEST_UNKNOWN")
    assert error.errors[0][0] is codes.MANIFEST_UNKNOWN
    assert error.errors[0][2] == {"name": "lib/empty", "tag": "latest"}
    assert str(error) == ("GET http://registry.local/v2/lib/empty/manifests/latest: "
                          "404 MANIFEST_UNKNOWN: manifest unknown to registry")

    with pytest.raises(RegistryResponseError) as invalid:
        client.tags("Upper/Case")
    assert (invalid.value.status, invalid.value.code) == (400, "NAME_INVALID")
    assert invalid.value.errors[0][0] is codes.NAME_INVALID
    assert "400 NAME_INVALID" in str(invalid.value)

    config = b"{}"
    manifest = image_manifest(config, [])
    with pytest.raises(RegistryResponseError) as missing:
        client.put_manifest("lib/empty", "v1", manifest, OCI_MANIFEST)
    assert missing.value.code == "MANIFEST_BLOB_UNKNOWN"
    assert [e[0] for e in missing.value.errors] == [codes.MANIFEST_BLOB_UNKNOWN]


def test_unknown_codes_and_garbage_bodies() -> None:
    def odd(request: Request) -> Response:
        if request.path.endswith("/garbage"):
            return Response(500, {"Content-Type": "text/html"}, b"<html>proxy oops</html>")
        body = json.dumps({"errors": [{"code": "SOMETHING_NEW", "message": "new"}]}).encode()
        return Response(418, {"Content-Type": "application/json"}, body)

    client = in_process(odd)
    with pytest.raises(RegistryResponseError) as garbage:
        client.get_manifest("lib/x", "garbage")
    assert (garbage.value.status, garbage.value.code, garbage.value.errors) == (500, None, [])
    assert "500 <html>proxy oops</html>" in str(garbage.value)
    with pytest.raises(RegistryResponseError) as novel:
        client.get_manifest("lib/x", "novel")
    assert (novel.value.status, novel.value.code) == (418, "SOMETHING_NEW")
    assert novel.value.errors[0][0] is codes.UNKNOWN


def test_refused_connection_is_a_transport_error() -> None:
    client = RegistryClient(f"http://127.0.0.1:{free_port()}", transport=HttpTransport(
        timeout=5))
    with pytest.raises(TransportError, match=r"127\.0\.0\.1"):
        client.ping()


def test_app_transport_without_fallback_refuses_other_hosts(app) -> None:
    transport = AppTransport(app, host=LOCAL_HOST)
    with pytest.raises(TransportError, match=r"elsewhere\.example"):
        transport.send("GET", "http://elsewhere.example/x", {})


# -- auth: a fake front door ------------------------------------------------------
USER, PASSWORD = "alice", "s3cret-pa55"
REALM = f"http://{LOCAL_HOST}/token"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _unauthorized(challenge: str) -> Response:
    body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "authentication "
                                   "required", "detail": None}]}).encode()
    return Response(401, {"WWW-Authenticate": challenge, "Content-Type": "application/json",
                          "Content-Length": str(len(body))}, body)


def _scope_of(request: Request) -> str | None:
    """What a request needs, as a Docker token scope (None for /v2/)."""
    parts = request.path.removeprefix("/v2/").split("/")
    for marker in ("blobs", "manifests", "tags", "referrers"):
        if marker in parts:
            name = "/".join(parts[:parts.index(marker)])
            action = "pull" if request.method in ("GET", "HEAD") else "pull,push"
            return f"repository:{name}:{action}"
    return None


@dataclass
class Gate:
    """A registry that demands credentials: ``Basic``, or the Docker token flow
    (tokens are served at ``/token`` and are good for one scope only)."""

    inner: Callable[[Request], Response]
    scheme: str
    token_requests: list[dict[str, list[str]]] = field(default_factory=list)
    tokens: dict[str, str | None] = field(default_factory=dict)

    def __call__(self, request: Request) -> Response:
        if request.path == "/token":
            return self._token(request)
        given = request.headers.get("Authorization") or ""
        scope = _scope_of(request)
        if self.scheme == "basic":
            if given != basic(USER, PASSWORD):
                return _unauthorized('Basic realm="x"')
            return self.inner(request)
        granted = given.startswith("Bearer ") and given[7:] in self.tokens
        if not granted or (scope is not None and self.tokens[given[7:]] != scope):
            challenge = f'Bearer realm="{REALM}",service="svc"'
            if scope:
                challenge += f',scope="{scope}"'
            return _unauthorized(challenge)
        return self.inner(request)

    def _token(self, request: Request) -> Response:
        self.token_requests.append(request.query)
        if request.headers.get("Authorization") != basic(USER, PASSWORD):
            return Response(401, {"Content-Type": "application/json"},
                            b'{"details":"incorrect username or password"}')
        if request.arg("service") != "svc":
            return Response(400, {}, b"wrong service")
        token = f"token-{len(self.tokens)}"
        self.tokens[token] = request.arg("scope")
        return Response.json(200, {"token": token, "expires_in": 300})


def test_basic_challenge(app) -> None:
    gate = Gate(app, "basic")
    client = in_process(gate, username=USER, password=PASSWORD)
    assert client.ping()["api_version"] == "registry/2.0"
    data = data_of(3_000_000, seed=10)
    client.upload_blob("a", sha256(data), data)  # the streamed PUT needs no retry
    assert client.read_blob("a", sha256(data)) == data
    refused = in_process(gate, username=USER, password="wrong")
    with pytest.raises(AuthenticationError, match="credentials refused"):
        refused.ping()
    with pytest.raises(AuthenticationError, match="no usable credentials"):
        in_process(gate).ping()


def test_basic_credentials_are_sent_only_after_a_challenge(app) -> None:
    recorder = Recorder(Gate(app, "basic"))
    client = in_process(recorder, username=USER, password=PASSWORD)
    client.ping()
    client.blob_size("a", sha256(b"x"))
    client.blob_size("a", sha256(b"y"))
    assert [s.status for s in recorder.seen] == [401, 200, 404, 404]
    assert "Authorization" not in recorder.seen[0].headers


def test_bearer_token_flow(app) -> None:
    gate = Gate(app, "bearer")
    client = in_process(gate, username=USER, password=PASSWORD)
    assert client.ping()["api_version"] == "registry/2.0"
    assert client.blob_size("a", sha256(b"x")) is None
    assert client.blob_size("a", sha256(b"y")) is None
    # one token for /v2/, one for repository:a:pull, reused
    assert [q.get("scope") for q in gate.token_requests] == [None, ["repository:a:pull"]]
    assert all(q["service"] == ["svc"] for q in gate.token_requests)

    data = data_of(10, seed=11)
    client.upload_blob("a", sha256(data), data)
    assert client.read_blob("a", sha256(data)) == data
    assert client.blob_size("a", sha256(data)) == 10
    scopes = [q.get("scope", [None])[0] for q in gate.token_requests]
    assert scopes == [None, "repository:a:pull", "repository:a:pull,push"]


def test_bearer_wrong_or_missing_credentials(app) -> None:
    gate = Gate(app, "bearer")
    with pytest.raises(AuthenticationError, match="401"):
        in_process(gate, username=USER, password="wrong").blob_size("a", sha256(b"x"))
    with pytest.raises(AuthenticationError, match="no credentials"):
        in_process(gate).blob_size("a", sha256(b"x"))


def test_credentials_from_the_environment(app, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARGOHOLD_USERNAME", USER)
    monkeypatch.setenv("CARGOHOLD_PASSWORD", PASSWORD)
    assert in_process(Gate(app, "bearer")).blob_size("a", sha256(b"x")) is None
    # arguments win over the environment
    with pytest.raises(AuthenticationError):
        in_process(Gate(app, "basic"), username=USER, password="other").ping()


@pytest.mark.parametrize("entry", [
    {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()},
    {"username": USER, "password": PASSWORD},
])
@pytest.mark.parametrize("key", [LOCAL_HOST, f"https://{LOCAL_HOST}"])
def test_credentials_from_docker_config(app, no_ambient_credentials: Path,
                                        entry: dict[str, str], key: str) -> None:
    (no_ambient_credentials / "config.json").write_text(json.dumps({"auths": {
        "elsewhere.example": {"auth": base64.b64encode(b"mallory:nope").decode()},
        key: entry}}))
    assert resolve_credentials(LOCAL_HOST) == Credentials(USER, PASSWORD)
    assert in_process(Gate(app, "basic")).ping()["api_version"] == "registry/2.0"
    assert resolve_credentials("unknown.example") is None


def test_broken_docker_config_means_no_credentials(no_ambient_credentials: Path) -> None:
    (no_ambient_credentials / "config.json").write_text("{not json")
    assert resolve_credentials(LOCAL_HOST) is None
    (no_ambient_credentials / "config.json").write_text(json.dumps(
        {"auths": {LOCAL_HOST: {"auth": "!!!not-base64"}}}))
    assert resolve_credentials(LOCAL_HOST) is None


def test_repr_never_shows_the_password(app) -> None:
    credentials = Credentials(USER, PASSWORD)
    assert PASSWORD not in repr(credentials)
    assert USER in repr(credentials)
    assert PASSWORD not in str(credentials)
    client = in_process(Gate(app, "basic"), username=USER, password="wrong")
    with pytest.raises(AuthenticationError) as refused:
        client.ping()
    assert "wrong" not in str(refused.value)
    assert PASSWORD not in repr(client.auth.__dict__)

