"""Uploads through the Lambda door work as well as the platform allows.

app.py is served through the API Gateway stand-in (``chalicelib/apigateway.py``:
base64 events, 6 MB payloads, 29 s) with its own defaults: function limits
on (request bodies of at most 4 MiB, ``OCI-Chunk-Min-Length`` and
``OCI-Chunk-Max-Length`` both 4194304) and blob GETs redirected to presigned
S3 URLs. Real clients then prove what a user gets: regctl pushes tens of MiB
in 4 MiB chunks (raising a smaller configured chunk to the advertised
minimum), oras pushes a 3 MiB blob in one body, a body over the cap fails
with an OCI error that tells how to push, and every blob comes back by
digest through the 307. Every request is recorded at the gateway, so the
tests assert how the clients talked, not only that they succeeded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from .conftest import tool
from .oci_layout import (
    OCI_INDEX,
    OCI_MANIFEST,
    LayoutWriter,
    closure,
    random_layer,
    read_blob,
    resolve,
    sha256,
)
from .test_apigateway import Gateway, running_gateway

pytestmark = pytest.mark.clients

MIB = 1024 * 1024
LIMIT = 4 * MIB  # app.py's CARGOHOLD_MAX_BODY_BYTES default
OCTET = "application/octet-stream"


# -- the door, with every request recorded ---------------------------------------
@dataclass(frozen=True)
class Seen:
    """One request as the gateway saw it, and the status it answered."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    length: int | None  # body bytes; None when refused before reading it
    content_range: str | None
    reply_headers: dict[str, str]


@dataclass
class Door:
    gw: Gateway
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        return self.gw.host

    def mark(self) -> int:
        with self.lock:
            return len(self.seen)

    def since(self, mark: int) -> list[Seen]:
        with self.lock:
            return list(self.seen[mark:])


@pytest.fixture
def door(settings, monkeypatch) -> Iterator[Door]:
    """app.py behind the gateway with app.py's own defaults for this door."""
    for name in ("CARGOHOLD_MAX_BODY_BYTES", "CARGOHOLD_CHUNK_MIN_LENGTH",
                 "CARGOHOLD_PART_SIZE"):
        monkeypatch.delenv(name, raising=False)
    with running_gateway(settings, monkeypatch, CARGOHOLD_BLOB_REDIRECTS="true",
                         CARGOHOLD_FUNCTION_LIMITS="true") as gw:
        recorded = Door(gw)
        gateway = gw.gateway
        handle, too_large = gateway.handle, gateway.too_large

        def record(method: str, target: str, headers, length: int | None, reply) -> None:
            path, _, query = target.partition("?")
            lowered = {k.lower(): v for k, v in headers}
            with recorded.lock:
                recorded.seen.append(Seen(
                    method, path, parse_qs(query), reply.status, length,
                    lowered.get("content-range"), {k.lower(): v for k, v in reply.headers}))

        def recording_handle(method: str, target: str, headers, body: bytes, **kwargs: Any):
            reply = handle(method, target, headers, body, **kwargs)
            record(method, target, headers, len(body), reply)
            return reply

        def recording_too_large(method: str, target: str, headers, size):
            reply = too_large(method, target, headers, size)
            record(method, target, headers, None, reply)
            return reply

        monkeypatch.setattr(gateway, "handle", recording_handle)
        monkeypatch.setattr(gateway, "too_large", recording_too_large)
        yield recorded


# -- clients with private configuration -------------------------------------------
@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """No client reads or writes configuration outside tmp_path."""
    home = tmp_path / "home"
    dirs = {"HOME": home, "DOCKER_CONFIG": home / ".docker",
            "XDG_CONFIG_HOME": home / ".config", "XDG_CACHE_HOME": home / ".cache",
            "XDG_DATA_HOME": home / ".local" / "share", "TMPDIR": home / "tmp"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    result = {name: str(path) for name, path in dirs.items()}
    result.update({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                   "NO_COLOR": "1", "REGCTL_CONFIG": str(home / ".regctl" / "config.json")})
    return result


def client(env: dict[str, str], *args: str | Path, stdin: Path | None = None,
           cwd: Path | None = None, timeout: float = 120,
           ok: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run a client; ``ok`` says whether it must succeed or must fail."""
    argv = [str(a) for a in args]
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as source:
        proc = subprocess.run(argv, env=env, cwd=cwd, stdin=source, capture_output=True,
                              timeout=timeout, check=False)
    assert (proc.returncode == 0) == ok, (
        f"{' '.join(argv)} exited {proc.returncode}\nstdout: {proc.stdout[-3000:]!r}"
        f"\nstderr: {proc.stderr.decode(errors='replace')[-3000:]}")
    return proc


def oras_args(env: dict[str, str]) -> list[str | Path]:
    return ["--plain-http", "--registry-config", Path(env["DOCKER_CONFIG"]) / "config.json"]


# -- plain HTTP, independent of the clients under test ----------------------------
@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes
    url: str

    def error(self) -> dict[str, Any]:
        (error,) = json.loads(self.body)["errors"]
        return error


def fetch(url: str, method: str = "GET", data: bytes | None = None,
          headers: dict[str, str] | None = None, follow: bool = True) -> Fetched:
    """One request; redirects are followed unless ``follow`` is False."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if not follow:
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None
        handlers.append(NoRedirect())
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=60) as response:
            return Fetched(response.status, dict(response.headers), response.read(),
                           response.url)
    except urllib.error.HTTPError as error:
        return Fetched(error.code, dict(error.headers), error.read(), url)


def pull_by_digest(door: Door, repo: str, digest: str) -> bytes:
    """GET the blob: the door answers 307 to a presigned S3 URL, not with the bytes."""
    first = fetch(f"http://{door.host}/v2/{repo}/blobs/{digest}", follow=False)
    assert first.status == 307, (first.status, first.body[:300])
    assert first.headers["Docker-Content-Digest"] == digest
    location = urlsplit(first.headers["Location"])
    assert location.netloc != door.host and "X-Amz-Signature" in location.query
    followed = fetch(f"http://{door.host}/v2/{repo}/blobs/{digest}")
    assert followed.status == 200 and urlsplit(followed.url).netloc == location.netloc
    return followed.body


def s3_keys(snapshot_: dict[str, Any]) -> dict[str, str]:
    return snapshot_["objects"]


def non_upload_items(snapshot_: dict[str, Any]) -> list[dict[str, Any]]:
    """DynamoDB items other than upload sessions (which a client's POST creates)."""
    return [i for i in snapshot_["items"] if not i["pk"]["S"].startswith("upload#")]


def assert_contiguous(patches: list[Seen], total: int) -> None:
    offset = 0
    for seen in patches:
        assert seen.length and seen.content_range == f"{offset}-{offset + seen.length - 1}", (
            seen, offset)
        offset += seen.length
    assert offset == total


def chunked_upload(seen: list[Seen], digest: str) -> tuple[Seen, list[Seen]]:
    """The closing PUT of ``digest``'s upload and that upload's PATCHes, in order."""
    (finished,) = [s for s in seen if s.method == "PUT" and s.query.get("digest") == [digest]]
    patches = [s for s in seen if s.method == "PATCH" and s.path == finished.path]
    return finished, patches


# -- the tests ---------------------------------------------------------------------
def test_advertised_chunk_limits_are_app_defaults(door: Door) -> None:
    started = fetch(f"http://{door.host}/v2/lambda/limits/blobs/uploads/", "POST", b"")
    assert started.status == 202, started.body
    assert started.headers["OCI-Chunk-Min-Length"] == str(LIMIT)
    assert started.headers["OCI-Chunk-Max-Length"] == str(LIMIT)


def test_every_value_of_a_repeated_header_reaches_the_registry(
        door: Door, tmp_path: Path) -> None:
    """API Gateway keeps only a repeated header's last value in ``headers``;
    a client sending one Accept line per media type (the conformance suite
    does) must still be served the manifest whose type it listed first."""
    layout = LayoutWriter(tmp_path / "layout")
    image = layout.image([random_layer(random.Random(8), 1000)])
    manifest = json.loads(layout.blobs[image["digest"]])
    for descriptor in [manifest["config"], *manifest["layers"]]:
        data = layout.blobs[descriptor["digest"]]
        assert fetch(f"http://{door.host}/v2/lambda/accept/blobs/uploads/?digest="
                     f"{descriptor['digest']}", "POST", data,
                     {"Content-Type": OCTET}).status == 201
    put = fetch(f"http://{door.host}/v2/lambda/accept/manifests/v1", "PUT",
                layout.blobs[image["digest"]], {"Content-Type": OCI_MANIFEST})
    assert put.status == 201, put.body
    for method in ("GET", "HEAD"):
        got = door.gw.request(method, "/v2/lambda/accept/manifests/v1",
                              headers=[("Accept", OCI_MANIFEST), ("Accept", OCI_INDEX)])
        assert got.status == 200, got.body
        assert got.headers["Docker-Content-Digest"] == image["digest"]
        assert got.headers["Content-Type"] == OCI_MANIFEST
    assert got.body == b""
    assert door.gw.request("GET", "/v2/lambda/accept/manifests/v1", headers=[
        ("Accept", OCI_MANIFEST), ("Accept", OCI_INDEX)]).body == layout.blobs[image["digest"]]


def test_regctl_pushes_50_mib_in_4_mib_chunks_and_pulls_it_back(
        door: Door, env: dict[str, str], tmp_path: Path) -> None:
    regctl = tool("regctl")
    data = random.Random(50).randbytes(50 * MIB)
    digest = sha256(data)
    (tmp_path / "blob.bin").write_bytes(data)
    client(env, regctl, "registry", "set", "--tls", "disabled", "--blob-chunk", str(LIMIT),
           door.host)

    mark = door.mark()
    pushed = client(env, regctl, "blob", "put", f"{door.host}/lambda/big",
                    stdin=tmp_path / "blob.bin", timeout=180)
    assert pushed.stdout.decode().strip() == digest
    seen = door.since(mark)
    finished, patches = chunked_upload(seen, digest)
    assert finished.status == 201 and not finished.length
    assert [s.status for s in patches] == [202] * len(patches)
    sizes = [s.length for s in patches]
    assert len(patches) >= 12 and all(size <= LIMIT for size in sizes), sizes
    assert sizes[:-1] == [LIMIT] * (len(patches) - 1), sizes
    assert_contiguous(patches, len(data))
    assert all(s.length is not None and s.length <= LIMIT for s in seen)
    assert all(s.status < 400 for s in seen), [s for s in seen if s.status >= 400]

    # Back by digest, through the 307: once by regctl, once by plain HTTP.
    mark = door.mark()
    got = client(env, regctl, "blob", "get", f"{door.host}/lambda/big", digest, timeout=180)
    assert hashlib.sha256(got.stdout).hexdigest() == digest.split(":", 1)[1]
    assert got.stdout == data
    gets = [s for s in door.since(mark) if s.method == "GET" and "/blobs/" in s.path]
    assert gets and all(s.status == 307 for s in gets)
    assert pull_by_digest(door, "lambda/big", digest) == data


def test_3_mib_blob_is_pushed_in_one_body(
        door: Door, env: dict[str, str], tmp_path: Path) -> None:
    oras = tool("oras")
    rng = random.Random(3)
    work = tmp_path / "work"
    work.mkdir()
    payload = rng.randbytes(3 * MIB)
    (work / "payload.bin").write_bytes(payload)

    # oras: POST for a session, then one PUT ?digest= carrying the whole blob.
    mark = door.mark()
    client(env, oras, "push", *oras_args(env), f"{door.host}/lambda/mono:v1",
           "payload.bin:application/octet-stream", cwd=work)
    seen = door.since(mark)
    (put,) = [s for s in seen if s.method == "PUT" and s.query.get("digest") == [sha256(payload)]]
    assert put.status == 201 and put.length == len(payload)
    assert not [s for s in seen if s.method == "PATCH"]
    out = tmp_path / "out"
    client(env, oras, "pull", *oras_args(env), "-o", out, f"{door.host}/lambda/mono:v1")
    assert (out / "payload.bin").read_bytes() == payload

    # And a single POST ?digest= with the body, the spec's one-request upload.
    other = rng.randbytes(3 * MIB)
    digest = sha256(other)
    created = fetch(f"http://{door.host}/v2/lambda/mono/blobs/uploads/?digest={digest}",
                    "POST", other, {"Content-Type": OCTET})
    assert created.status == 201, created.body
    assert created.headers["Docker-Content-Digest"] == digest
    assert pull_by_digest(door, "lambda/mono", digest) == other


def test_monolithic_push_over_the_cap_fails_clearly(
        door: Door, env: dict[str, str], tmp_path: Path, snapshot) -> None:
    oras = tool("oras")
    rng = random.Random(6)
    base = f"http://{door.host}/v2/lambda/over"

    # One POST ?digest= request: refused before anything is stored.
    before = snapshot()
    invocations = door.gw.gateway.function.invocations
    body = rng.randbytes(5 * MIB)  # its base64 event exceeds Lambda's 6 MB: the gateway says no
    refused = fetch(f"{base}/blobs/uploads/?digest={sha256(body)}", "POST", body,
                    {"Content-Type": OCTET})
    assert refused.status == 413
    error = refused.error()
    assert error["code"] == "SIZE_INVALID"
    assert "push in chunks of at most 4 MiB" in error["message"]
    assert error["detail"]["chunkMaxLength"] == LIMIT
    assert door.gw.gateway.function.invocations == invocations
    body = rng.randbytes(LIMIT + 1)  # its event fits: the function itself says no
    refused = fetch(f"{base}/blobs/uploads/?digest={sha256(body)}", "POST", body,
                    {"Content-Type": OCTET})
    assert refused.status == 413
    error = refused.error()
    assert error["code"] == "SIZE_INVALID"
    assert error["detail"]["limit"] == LIMIT
    assert f"push in chunks of at most {LIMIT} bytes" in error["detail"]["reason"]
    assert door.gw.gateway.function.invocations == invocations + 1
    assert snapshot() == before

    # oras (POST, then one PUT with the whole blob): what its user reads.
    work = tmp_path / "work"
    work.mkdir()
    rejected: list[str] = []
    for name, size, says in [
            ("six.bin", 6_000_000, "request body larger than the function's 6 MB payload: "
                                   "push in chunks of at most 4 MiB"),
            ("over.bin", LIMIT + 64 * 1024, "request body too large: map[limit:4.194304e+06 "
                                            "reason:this registry runs in a function that "
                                            f"accepts request bodies of at most {LIMIT} bytes: "
                                            f"push in chunks of at most {LIMIT} bytes")]:
        data = rng.randbytes(size)
        (work / name).write_bytes(data)
        mark = door.mark()
        failed = client(env, oras, "push", *oras_args(env), f"{door.host}/lambda/over:{name}",
                        f"{name}:application/octet-stream", cwd=work, ok=False)
        message = failed.stderr.decode()
        # oras turns the 413's OCI envelope into "Error response from registry: …".
        assert "Error response from registry: size invalid: " in message, message
        assert says in message, message
        (put,) = [s for s in door.since(mark)
                  if s.method == "PUT" and s.query.get("digest") == [sha256(data)]]
        assert put.status == 413 and put.length == size
        assert fetch(f"{base}/blobs/{sha256(data)}", "HEAD").status == 404
        rejected.append(sha256(data).split(":", 1)[1])
    # oras may store its empty config ("{}"), pushed alongside the layer; nothing
    # of the rejected layers was kept, and no manifest or tag was made.
    after = snapshot()
    config = sha256(b"{}").split(":", 1)[1]
    new_keys = set(s3_keys(after)) - set(s3_keys(before))
    assert all(config in key for key in new_keys), new_keys
    new_items = [i for i in non_upload_items(after) if i not in non_upload_items(before)]
    assert not [i for i in new_items if any(d in json.dumps(i) for d in rejected)
                or i["sk"]["S"].startswith(("manifest#", "tag#"))], new_items
    listed = fetch(f"{base}/tags/list")
    assert listed.status == 404 or not json.loads(listed.body).get("tags")


def test_regctl_raises_its_chunk_to_the_advertised_minimum(
        door: Door, env: dict[str, str], tmp_path: Path) -> None:
    regctl = tool("regctl")
    rng = random.Random(64)
    big = random_layer(rng, 64 * MIB, "big.bin")
    small = [random_layer(rng, size, f"small{i}.bin") for i, size in
             enumerate([20_000, 300_000])]
    layout = LayoutWriter(tmp_path / "layout")
    image = layout.image([big, *small])
    layout.tag(image, "v1")
    layout.close()
    # A chunk size below the advertised minimum, and chunked pushes above 1 MiB.
    client(env, regctl, "registry", "set", "--tls", "disabled", "--blob-chunk", str(MIB),
           "--blob-max", str(MIB), door.host)

    mark = door.mark()
    client(env, regctl, "image", "copy", f"ocidir://{tmp_path / 'layout'}:v1",
           f"{door.host}/lambda/image:v1", timeout=240)
    seen = door.since(mark)
    posts = [s for s in seen if s.method == "POST" and s.status == 202]
    assert posts and all(s.reply_headers["oci-chunk-min-length"] == str(LIMIT) for s in posts)
    finished, patches = chunked_upload(seen, big.digest)
    assert finished.status == 201 and not finished.length
    sizes = [s.length for s in patches]
    # Every chunk but the last is exactly the advertised minimum, not regctl's 1 MiB.
    assert len(patches) == -(-len(big.blob) // LIMIT) >= 17, sizes
    assert sizes[:-1] == [LIMIT] * (len(patches) - 1) and 0 < sizes[-1] <= LIMIT, sizes
    assert_contiguous(patches, len(big.blob))
    assert all(s.length is not None and s.length <= LIMIT for s in seen)
    assert all(s.status < 400 for s in seen if s.method != "HEAD"), [
        s for s in seen if s.status >= 400]

    served = fetch(f"http://{door.host}/v2/lambda/image/manifests/v1",
                   headers={"Accept": image["mediaType"]})
    assert served.status == 200 and served.body == layout.blobs[image["digest"]]

    mark = door.mark()
    back = tmp_path / "back"
    client(env, regctl, "image", "copy", f"{door.host}/lambda/image:v1", f"ocidir://{back}:v1",
           timeout=240)
    assert resolve(back, "v1")["digest"] == image["digest"]
    assert closure(back, image["digest"]) == closure(tmp_path / "layout", image["digest"])
    assert read_blob(back, big.digest) == big.blob
    blob_gets = [s for s in door.since(mark) if s.method == "GET" and "/blobs/" in s.path]
    assert len(blob_gets) >= 4 and all(s.status == 307 for s in blob_gets)
