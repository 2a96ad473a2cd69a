"""Happy paths of every Distribution endpoint: statuses, headers and bodies.

Most cases go in-process through ``call``; where streaming matters (a
chunked PATCH with no Content-Length, a streamed GET, Range on the wire)
they go over a real socket with ``http.client``, as clients do.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
import re
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from email.message import Message
from typing import Any

import pytest

from chalicelib.core.http import Request, Response
from chalicelib.devserver import local_app
from chalicelib.server import serve_in_thread
from chalicelib.storage import clients

MIB = 1024 * 1024
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LINK = re.compile(r'<([^>]+)>; rel="next"\Z')


# -- helpers -----------------------------------------------------------------
def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def codes(response: Response) -> list[str]:
    """The error codes of an error envelope (fails if it is not one)."""
    return [e["code"] for e in json.loads(response.body)["errors"]]


def pseudo_random(size: int, seed: int = 7) -> bytes:
    """Incompressible, reproducible test data."""
    return random.Random(seed).randbytes(size)


def push_blob(call, name: str, data: bytes, digest: str | None = None) -> str:
    """A monolithic POST ?digest= (what oras and containerd do)."""
    digest = digest or sha256(data)
    created = call("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", data,
                   {"Content-Length": str(len(data)), "Content-Type": "application/octet-stream"})
    assert created.status == 201, created.body
    return digest


def start_upload(call, name: str) -> str:
    started = call("POST", f"/v2/{name}/blobs/uploads/")
    assert started.status == 202, started.body
    return started.headers["Location"]


def put_manifest(call, name: str, reference: str, body: bytes, media_type: str) -> Response:
    put = call("PUT", f"/v2/{name}/manifests/{reference}", body,
               {"Content-Type": media_type, "Content-Length": str(len(body))})
    assert put.status == 201, put.body
    return put


def odd_bytes(doc: dict[str, Any]) -> bytes:
    """A valid JSON document that no canonical serialiser would produce, so
    any re-serialisation by the registry shows up as changed bytes."""
    return b" \n" + json.dumps(doc, indent=3, separators=(" ,", " :  ")).encode() + b"\n\n"


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"size": len(data), "digest": sha256(data), "mediaType": media_type, **extra}


def image_manifest(call, name: str, media_type: str = OCI_MANIFEST, seed: int = 1,
                   **extra: Any) -> bytes:
    """Push a config and a layer to ``name`` and return a manifest over them
    (keys deliberately out of the usual order)."""
    config_type, layer_type = ((OCI_CONFIG, OCI_LAYER) if media_type == OCI_MANIFEST
                               else (DOCKER_CONFIG, DOCKER_LAYER))
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    layer = pseudo_random(3000 + seed, seed)
    push_blob(call, name, config)
    push_blob(call, name, layer)
    doc = {"layers": [descriptor(layer_type, layer)], "config": descriptor(config_type, config),
           **extra, "mediaType": media_type, "schemaVersion": 2}
    return odd_bytes(doc)


def index_manifest(call, name: str, media_type: str) -> bytes:
    """Push two child image manifests and return an index/list over them."""
    child_type = OCI_MANIFEST if media_type == OCI_INDEX else DOCKER_MANIFEST
    children = []
    for seed, arch in ((11, "amd64"), (12, "arm64")):
        child = image_manifest(call, name, child_type, seed)
        put_manifest(call, name, sha256(child), child, child_type)
        children.append(descriptor(child_type, child,
                                   platform={"os": "linux", "architecture": arch}))
    return odd_bytes({"manifests": children, "schemaVersion": 2, "mediaType": media_type})


def s3_keys(settings, prefix: str) -> list[str]:
    s3 = clients.client("s3", settings.region)
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket,
                                                            Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def assert_no_staging_left(settings) -> None:
    """A finished upload leaves no staging objects and no open multipart upload."""
    assert s3_keys(settings, "uploads/") == []
    s3 = clients.client("s3", settings.region)
    assert s3.list_multipart_uploads(Bucket=settings.bucket).get("Uploads", []) == []


def invoke(app, method: str, path: str, body: bytes = b"",
           headers: dict[str, str] | None = None) -> Response:
    """Like the ``call`` fixture, for an app built with non-default settings."""
    path, _, query = path.partition("?")
    response = app(Request.build(method, path, query, headers or {}, body))
    response.body = response.read_body()
    return response


@contextmanager
def serving(app) -> Iterator[str]:
    """A real server for ``app`` on a free loopback port, stopped on exit."""
    httpd, thread = serve_in_thread(app)
    try:
        host, port = httpd.server_address[:2]
        yield f"{host}:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def wire(hostport: str, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None, *,
         encode_chunked: bool = False) -> tuple[int, Message, bytes]:
    """One request over a fresh connection; returns status, headers, body."""
    conn = http.client.HTTPConnection(hostport, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {},
                     encode_chunked=encode_chunked)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


# -- base ----------------------------------------------------------------------
def test_base_endpoint(call, server) -> None:
    got = call("GET", "/v2/")
    assert got.status == 200
    assert json.loads(got.body) == {}
    assert got.headers[API_VERSION[0]] == API_VERSION[1]

    status, headers, body = wire(server, "GET", "/v2/")
    assert status == 200
    assert json.loads(body) == {}
    assert headers[API_VERSION[0]] == API_VERSION[1]
    assert headers["Content-Type"] == "application/json"


# -- blob reads ----------------------------------------------------------------
BLOB = pseudo_random(10240, 3)


def test_blob_get_and_head(call) -> None:
    digest = push_blob(call, "pull/me", BLOB)
    got = call("GET", f"/v2/pull/me/blobs/{digest}")
    assert got.status == 200
    assert got.body == BLOB
    assert got.headers["Content-Length"] == str(len(BLOB))
    assert got.headers["Docker-Content-Digest"] == digest
    assert got.headers["ETag"] == f'"{digest}"'
    assert got.headers[API_VERSION[0]] == API_VERSION[1]

    head = call("HEAD", f"/v2/pull/me/blobs/{digest}")
    assert head.status == 200
    assert head.body == b""
    assert head.headers == got.headers


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-99", 0, 99),
    ("bytes=100-100", 100, 100),
    ("bytes=10000-", 10000, 10239),
    ("bytes=-100", 10140, 10239),
    ("bytes=10200-99999", 10200, 10239),  # an end past the blob is clamped
    ("bytes=-99999", 0, 10239),  # a suffix longer than the blob is the whole blob
])
def test_blob_range(call, header: str, start: int, end: int) -> None:
    digest = push_blob(call, "ranged", BLOB)
    got = call("GET", f"/v2/ranged/blobs/{digest}", headers={"Range": header})
    assert got.status == 206, got.body
    assert got.body == BLOB[start:end + 1]
    assert got.headers["Content-Range"] == f"bytes {start}-{end}/{len(BLOB)}"
    assert got.headers["Content-Length"] == str(end - start + 1)
    assert got.headers["Docker-Content-Digest"] == digest


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=20000-30000", "bytes=-0"])
def test_blob_range_unsatisfiable(call, header: str) -> None:
    digest = push_blob(call, "ranged", BLOB)
    got = call("GET", f"/v2/ranged/blobs/{digest}", headers={"Range": header})
    assert got.status == 416
    assert got.headers["Content-Range"] == f"bytes */{len(BLOB)}"


def test_blob_if_none_match(call) -> None:
    digest = push_blob(call, "cached", BLOB)
    etag = call("HEAD", f"/v2/cached/blobs/{digest}").headers["ETag"]
    for method in ("GET", "HEAD"):
        cached = call(method, f"/v2/cached/blobs/{digest}", headers={"If-None-Match": etag})
        assert cached.status == 304
        assert cached.body == b""
        assert cached.headers["ETag"] == etag
    listed = call("GET", f"/v2/cached/blobs/{digest}",
                  headers={"If-None-Match": f'"other", {etag}'})
    assert listed.status == 304
    stale = call("GET", f"/v2/cached/blobs/{digest}", headers={"If-None-Match": '"other"'})
    assert stale.status == 200
    assert stale.body == BLOB


def test_blob_reads_over_the_wire(server, call) -> None:
    """A streamed body arrives whole, with the advertised length, and Range works."""
    data = pseudo_random(3 * MIB + 17, 5)
    digest = push_blob(call, "wire/blob", data)
    status, headers, body = wire(server, "GET", f"/v2/wire/blob/blobs/{digest}")
    assert status == 200
    assert headers["Content-Length"] == str(len(data))
    assert headers["Docker-Content-Digest"] == digest
    assert body == data

    status, head_headers, body = wire(server, "HEAD", f"/v2/wire/blob/blobs/{digest}")
    assert status == 200
    assert body == b""
    assert head_headers["Content-Length"] == str(len(data))
    assert head_headers["ETag"] == headers["ETag"]

    status, headers, body = wire(server, "GET", f"/v2/wire/blob/blobs/{digest}",
                                 headers={"Range": f"bytes={MIB}-{2 * MIB + 4}"})
    assert status == 206
    assert body == data[MIB:2 * MIB + 5]
    assert headers["Content-Range"] == f"bytes {MIB}-{2 * MIB + 4}/{len(data)}"

    status, headers, body = wire(server, "GET", f"/v2/wire/blob/blobs/{digest}",
                                 headers={"If-None-Match": head_headers["ETag"]})
    assert status == 304
    assert body == b""


def test_blob_delete(call) -> None:
    digest = push_blob(call, "doomed", BLOB)
    deleted = call("DELETE", f"/v2/doomed/blobs/{digest}")
    assert deleted.status == 202
    for method in ("GET", "HEAD"):
        gone = call(method, f"/v2/doomed/blobs/{digest}")
        assert gone.status == 404
    assert codes(call("GET", f"/v2/doomed/blobs/{digest}")) == ["BLOB_UNKNOWN"]
    again = call("DELETE", f"/v2/doomed/blobs/{digest}")
    assert again.status == 404
    assert codes(again) == ["BLOB_UNKNOWN"]


# -- uploads -------------------------------------------------------------------
def test_upload_start_headers(call, settings) -> None:
    started = call("POST", "/v2/up/load/blobs/uploads/")
    assert started.status == 202
    upload_id = started.headers["Docker-Upload-UUID"]
    location = started.headers["Location"]
    assert location.startswith(f"/v2/up/load/blobs/uploads/{upload_id}?_state=")
    assert started.headers["Range"] == "0-0"
    assert started.headers["OCI-Chunk-Min-Length"] == str(settings.chunk_min_length)
    assert int(started.headers["OCI-Chunk-Min-Length"]) > 0
    assert started.headers["Content-Length"] == "0"
    assert started.headers[API_VERSION[0]] == API_VERSION[1]


def test_chunked_upload_status_and_completion(call, settings) -> None:
    """PATCH without and with Content-Range, a status GET, a PUT with a final body."""
    data = pseudo_random(3000, 9)
    first, second, last = data[:1000], data[1000:2500], data[2500:]
    location = start_upload(call, "chunks")

    patched = call("PATCH", location, first, {"Content-Length": str(len(first)),
                                              "Content-Type": "application/octet-stream"})
    assert patched.status == 202, patched.body
    assert patched.headers["Range"] == "0-999"
    upload_id = patched.headers["Docker-Upload-UUID"]
    assert patched.headers["Location"].startswith(f"/v2/chunks/blobs/uploads/{upload_id}?")
    location = patched.headers["Location"]

    patched = call("PATCH", location, second, {"Content-Range": "1000-2499",
                                               "Content-Length": str(len(second))})
    assert patched.status == 202, patched.body
    assert patched.headers["Range"] == "0-2499"
    location = patched.headers["Location"]

    status = call("GET", location)
    assert status.status == 204
    assert status.headers["Range"] == "0-2499"
    assert status.headers["Docker-Upload-UUID"] == upload_id
    assert status.body == b""

    digest = sha256(data)
    done = call("PUT", f"{location}&digest={digest}", last,
                {"Content-Length": str(len(last)), "Content-Range": "2500-2999"})
    assert done.status == 201, done.body
    assert done.headers["Location"] == f"/v2/chunks/blobs/{digest}"
    assert done.headers["Docker-Content-Digest"] == digest
    assert call("GET", f"/v2/chunks/blobs/{digest}").body == data

    finished = call("GET", location)
    assert finished.status == 404
    assert codes(finished) == ["BLOB_UPLOAD_UNKNOWN"]
    assert_no_staging_left(settings)


def test_upload_cancel(call, settings) -> None:
    location = start_upload(call, "cancel/me")
    patched = call("PATCH", location, b"abc", {"Content-Length": "3"})
    assert patched.status == 202
    location = patched.headers["Location"]
    cancelled = call("DELETE", location)
    assert cancelled.status == 204
    assert cancelled.body == b""
    gone = call("GET", location)
    assert gone.status == 404
    assert codes(gone) == ["BLOB_UPLOAD_UNKNOWN"]
    assert_no_staging_left(settings)


def test_monolithic_uploads(call) -> None:
    """POST ?digest= with the body (oras, containerd), and POST then one PUT."""
    data = b"monolithic bytes"
    digest = sha256(data)
    created = call("POST", f"/v2/mono/blobs/uploads/?digest={digest}", data,
                   {"Content-Length": str(len(data))})
    assert created.status == 201, created.body
    assert created.headers["Location"] == f"/v2/mono/blobs/{digest}"
    assert created.headers["Docker-Content-Digest"] == digest
    assert call("GET", f"/v2/mono/blobs/{digest}").body == data

    other = b"posted then put"
    location = start_upload(call, "mono")
    done = call("PUT", f"{location}&digest={sha256(other)}", other,
                {"Content-Length": str(len(other))})
    assert done.status == 201, done.body
    assert call("GET", f"/v2/mono/blobs/{sha256(other)}").body == other


def test_cross_repository_mount(call) -> None:
    digest = push_blob(call, "source/repo", BLOB)
    mounted = call("POST", f"/v2/target/repo/blobs/uploads/?mount={digest}&from=source/repo")
    assert mounted.status == 201, mounted.body
    assert mounted.headers["Location"] == f"/v2/target/repo/blobs/{digest}"
    assert mounted.headers["Docker-Content-Digest"] == digest
    got = call("GET", f"/v2/target/repo/blobs/{digest}")
    assert got.status == 200
    assert got.body == BLOB


@pytest.mark.parametrize("source", ["empty/repo", None])
def test_mount_falls_back_to_an_upload(call, source: str | None) -> None:
    digest = push_blob(call, "holder", BLOB)
    query = f"mount={digest}" + (f"&from={source}" if source else "")
    fallback = call("POST", f"/v2/target/blobs/uploads/?{query}")
    assert fallback.status == 202, fallback.body
    assert "Docker-Upload-UUID" in fallback.headers
    assert fallback.headers["Range"] == "0-0"
    assert call("HEAD", f"/v2/target/blobs/{digest}").status == 404
    done = call("PUT", f"{fallback.headers['Location']}&digest={digest}", BLOB,
                {"Content-Length": str(len(BLOB))})
    assert done.status == 201, done.body
    assert call("GET", f"/v2/target/blobs/{digest}").body == BLOB


def test_zero_byte_blob(call, server) -> None:
    digest = sha256(b"")
    created = call("POST", f"/v2/empty/blobs/uploads/?digest={digest}", b"",
                   {"Content-Length": "0"})
    assert created.status == 201, created.body
    location = start_upload(call, "empty2")
    done = call("PUT", f"{location}&digest={digest}", b"", {"Content-Length": "0"})
    assert done.status == 201, done.body
    for name in ("empty", "empty2"):
        got = call("GET", f"/v2/{name}/blobs/{digest}")
        assert got.status == 200
        assert got.body == b""
        assert got.headers["Content-Length"] == "0"
        head = call("HEAD", f"/v2/{name}/blobs/{digest}")
        assert head.status == 200
        assert head.headers["Content-Length"] == "0"
    status, headers, body = wire(server, "GET", f"/v2/empty/blobs/{digest}")
    assert (status, headers["Content-Length"], body) == (200, "0", b"")


def test_sha512_blob(call, settings) -> None:
    data = pseudo_random(5000, 13)
    digest = sha512(data)
    push_blob(call, "sha512/mono", data, digest)
    location = start_upload(call, "sha512/chunked")
    patched = call("PATCH", location, data[:2000], {"Content-Length": "2000"})
    assert patched.status == 202
    done = call("PUT", f"{patched.headers['Location']}&digest={digest}", data[2000:],
                {"Content-Length": str(len(data) - 2000)})
    assert done.status == 201, done.body
    assert done.headers["Docker-Content-Digest"] == digest
    for name in ("sha512/mono", "sha512/chunked"):
        got = call("GET", f"/v2/{name}/blobs/{digest}")
        assert got.status == 200
        assert got.body == data
        assert got.headers["Docker-Content-Digest"] == digest
    assert_no_staging_left(settings)


@pytest.fixture
def small_parts(settings):
    """Settings with S3's minimum part size, so a few MiB span several parts."""
    return replace(settings, part_size=5 * MIB)


def test_blob_larger_than_a_part_in_odd_chunks(small_parts) -> None:
    """Chunks that straddle part boundaries: multipart parts plus tail objects."""
    app = local_app(small_parts)
    chunk = 3 * MIB + 1
    data = pseudo_random(4 * chunk + 1, 21)
    location = invoke(app, "POST", "/v2/big/blobs/uploads/").headers["Location"]
    offset = 0
    for i in range(4):
        piece = data[offset:offset + chunk]
        headers = {"Content-Length": str(len(piece))}
        if i % 2:
            headers["Content-Range"] = f"{offset}-{offset + len(piece) - 1}"
        patched = invoke(app, "PATCH", location, piece, headers)
        assert patched.status == 202, patched.body
        offset += len(piece)
        assert patched.headers["Range"] == f"0-{offset - 1}"
        location = patched.headers["Location"]
    digest = sha256(data)
    done = invoke(app, "PUT", f"{location}&digest={digest}", data[offset:],
                  {"Content-Length": str(len(data) - offset)})
    assert done.status == 201, done.body
    got = invoke(app, "GET", f"/v2/big/blobs/{digest}")
    assert got.headers["Content-Length"] == str(len(data))
    assert hashlib.sha256(got.body).hexdigest() == digest.split(":")[1]
    assert got.body == data
    across = invoke(app, "GET", f"/v2/big/blobs/{digest}",
                    headers={"Range": f"bytes={5 * MIB - 10}-{5 * MIB + 9}"})
    assert across.status == 206
    assert across.body == data[5 * MIB - 10:5 * MIB + 10]
    assert_no_staging_left(small_parts)


def test_one_streamed_patch_over_the_wire(small_parts) -> None:
    """What docker, crane and skopeo do: the whole blob in one chunked PATCH
    with no Content-Length, then PUT ?digest= with no body."""
    data = pseudo_random(11 * MIB + 3, 23)
    pieces = [1 * MIB + 7] * 10
    pieces.append(len(data) - sum(pieces))

    def body() -> Iterator[bytes]:
        offset = 0
        for size in pieces:
            yield data[offset:offset + size]
            offset += size

    with serving(local_app(small_parts)) as hostport:
        status, headers, _ = wire(hostport, "POST", "/v2/streamed/blobs/uploads/")
        assert status == 202
        status, headers, reply = wire(hostport, "PATCH", headers["Location"], body(),
                                      {"Transfer-Encoding": "chunked",
                                       "Content-Type": "application/octet-stream"},
                                      encode_chunked=True)
        assert status == 202, reply
        assert headers["Range"] == f"0-{len(data) - 1}"
        digest = sha256(data)
        status, headers, reply = wire(hostport, "PUT", f"{headers['Location']}&digest={digest}",
                                      b"", {"Content-Length": "0"})
        assert status == 201, reply
        assert headers["Docker-Content-Digest"] == digest
        status, headers, pulled = wire(hostport, "GET", f"/v2/streamed/blobs/{digest}")
        assert status == 200
        assert headers["Content-Length"] == str(len(data))
        assert pulled == data
    assert_no_staging_left(small_parts)


# -- manifests -----------------------------------------------------------------
def build_manifest(call, name: str, media_type: str) -> bytes:
    if media_type in (OCI_INDEX, DOCKER_LIST):
        return index_manifest(call, name, media_type)
    return image_manifest(call, name, media_type)


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
def test_manifest_round_trip(call, media_type: str) -> None:
    name = "library/app"
    body = build_manifest(call, name, media_type)
    digest = sha256(body)
    assert json.dumps(json.loads(body)).encode() != body  # proves bytes are kept, not rebuilt

    put = put_manifest(call, name, "v1", body, media_type)
    assert put.headers["Location"] == f"/v2/{name}/manifests/{digest}"
    assert put.headers["Docker-Content-Digest"] == digest
    assert "OCI-Subject" not in put.headers

    for reference in ("v1", digest):
        got = call("GET", f"/v2/{name}/manifests/{reference}", headers={"Accept": media_type})
        assert got.status == 200, got.body
        assert got.body == body
        assert got.headers["Content-Type"] == media_type
        assert got.headers["Content-Length"] == str(len(body))
        assert got.headers["Docker-Content-Digest"] == digest
        head = call("HEAD", f"/v2/{name}/manifests/{reference}", headers={"Accept": media_type})
        assert head.status == 200
        assert head.body == b""
        assert head.headers == got.headers
        no_accept = call("GET", f"/v2/{name}/manifests/{reference}")
        assert no_accept.status == 200
        assert no_accept.body == body

    others = [t for t in (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
              if t != media_type]
    for method in ("GET", "HEAD"):
        refused = call(method, f"/v2/{name}/manifests/v1", headers={"Accept": ", ".join(others)})
        assert refused.status == 404
        if method == "GET":
            assert codes(refused) == ["MANIFEST_UNKNOWN"]
    several = call("GET", f"/v2/{name}/manifests/v1",
                   headers={"Accept": f"{others[0]}, {media_type};q=0.5"})
    assert several.status == 200
    assert several.body == body

    # PUT by digest: stored, readable by digest, no tag created.
    variant = odd_bytes({**json.loads(body), "annotations": {"variant": "by-digest"}})
    variant_digest = sha256(variant)
    by_digest = put_manifest(call, name, variant_digest, variant, media_type)
    assert by_digest.headers["Docker-Content-Digest"] == variant_digest
    assert by_digest.headers["Location"] == f"/v2/{name}/manifests/{variant_digest}"
    assert call("GET", f"/v2/{name}/manifests/{variant_digest}").body == variant
    assert json.loads(call("GET", f"/v2/{name}/tags/list").body)["tags"] == ["v1"]


def test_manifest_over_the_wire(call, server) -> None:
    """Exact bytes and agreeing HEAD/GET headers through the real server."""
    body = image_manifest(call, "wire/manifest")
    digest = sha256(body)
    put_manifest(call, "wire/manifest", "latest", body, OCI_MANIFEST)
    status, got_headers, got = wire(server, "GET", "/v2/wire/manifest/manifests/latest",
                                    headers={"Accept": OCI_MANIFEST})
    assert status == 200
    assert got == body
    status, head_headers, empty = wire(server, "HEAD", "/v2/wire/manifest/manifests/latest",
                                       headers={"Accept": OCI_MANIFEST})
    assert status == 200
    assert empty == b""
    for key in ("Content-Type", "Content-Length", "Docker-Content-Digest", "ETag"):
        assert head_headers[key] == got_headers[key], key
    assert got_headers["Docker-Content-Digest"] == digest


def test_manifest_delete_by_tag_and_by_digest(call) -> None:
    name = "deletes"
    body = image_manifest(call, name)
    digest = sha256(body)
    put_manifest(call, name, "a", body, OCI_MANIFEST)
    put_manifest(call, name, "b", body, OCI_MANIFEST)
    referrer = odd_bytes({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/x.note",
        "config": descriptor(OCI_EMPTY, b"{}"), "layers": [],
        "subject": descriptor(OCI_MANIFEST, body)})
    push_blob(call, name, b"{}")
    referrer_digest = sha256(referrer)
    put_manifest(call, name, referrer_digest, referrer, OCI_MANIFEST)

    assert call("DELETE", f"/v2/{name}/manifests/a").status == 202
    gone = call("GET", f"/v2/{name}/manifests/a")
    assert gone.status == 404
    assert codes(gone) == ["MANIFEST_UNKNOWN"]
    assert call("GET", f"/v2/{name}/manifests/b").body == body
    assert call("GET", f"/v2/{name}/manifests/{digest}").body == body
    assert json.loads(call("GET", f"/v2/{name}/tags/list").body)["tags"] == ["b"]

    listed = json.loads(call("GET", f"/v2/{name}/referrers/{digest}").body)["manifests"]
    assert [d["digest"] for d in listed] == [referrer_digest]
    assert call("DELETE", f"/v2/{name}/manifests/{referrer_digest}").status == 202
    assert call("GET", f"/v2/{name}/manifests/{referrer_digest}").status == 404
    listed = json.loads(call("GET", f"/v2/{name}/referrers/{digest}").body)["manifests"]
    assert listed == []

    assert call("DELETE", f"/v2/{name}/manifests/{digest}").status == 202
    for reference in (digest, "b"):
        gone = call("GET", f"/v2/{name}/manifests/{reference}")
        assert gone.status == 404
        assert codes(gone) == ["MANIFEST_UNKNOWN"]
    assert json.loads(call("GET", f"/v2/{name}/tags/list").body)["tags"] == []


def test_manifest_larger_than_the_inline_limit(call, settings) -> None:
    """Over 300 KiB the bytes live in S3, not DynamoDB; they still round-trip exactly."""
    name = "huge"
    annotations = {f"org.example.k{i:04d}": "v" * 1000 for i in range(400)}
    body = image_manifest(call, name, annotations=annotations)
    assert len(body) > 400 * 1024
    digest = sha256(body)
    put_manifest(call, name, "big", body, OCI_MANIFEST)
    hex_part = digest.split(":")[1]
    assert s3_keys(settings, f"blobs/sha256/{hex_part[:2]}/{hex_part}") != []
    for reference in ("big", digest):
        got = call("GET", f"/v2/{name}/manifests/{reference}")
        assert got.status == 200
        assert got.body == body
        assert got.headers["Content-Length"] == str(len(body))
        assert got.headers["Docker-Content-Digest"] == digest
        head = call("HEAD", f"/v2/{name}/manifests/{reference}")
        assert head.headers == got.headers


# -- listings ------------------------------------------------------------------
def follow_pages(call, first: str, key: str) -> tuple[list[list[str]], list[str | None]]:
    """Walk ``Link: rel="next"`` from ``first``; returns the pages and their links."""
    pages: list[list[str]] = []
    links: list[str | None] = []
    url: str | None = first
    for _ in range(50):
        if url is None:
            return pages, links
        got = call("GET", url)
        assert got.status == 200, got.body
        pages.append(json.loads(got.body)[key])
        link = got.headers.get("Link")
        if link is not None:
            found = LINK.match(link)
            assert found, link
            url = found.group(1)
        else:
            url = None
        links.append(url)
    raise AssertionError("pagination did not end")


TAGS = ["v2", "latest", "1.0", "Z", "a_b", "v10", "a", "a-b", "1.1", "_x"]


def test_tags_list_order_and_pagination(call) -> None:
    name = "tagged/repo"
    body = image_manifest(call, name)
    for tag in TAGS:
        put_manifest(call, name, tag, body, OCI_MANIFEST)
    expected = sorted(TAGS)

    whole = call("GET", f"/v2/{name}/tags/list")
    assert whole.status == 200
    assert json.loads(whole.body) == {"name": name, "tags": expected}
    assert "Link" not in whole.headers

    pages, links = follow_pages(call, f"/v2/{name}/tags/list?n=3", "tags")
    assert [t for page in pages for t in page] == expected
    assert [len(p) for p in pages] == [3, 3, 3, 1]
    assert links[0] == f"/v2/{name}/tags/list?n=3&last={expected[2]}"
    assert links[-1] is None

    pages, links = follow_pages(call, f"/v2/{name}/tags/list?n=5", "tags")
    assert pages == [expected[:5], expected[5:]]  # an exactly full last page has no Link
    assert links[-1] is None

    after = call("GET", f"/v2/{name}/tags/list?last={expected[3]}")
    assert json.loads(after.body)["tags"] == expected[4:]
    assert "Link" not in after.headers
    after_n = call("GET", f"/v2/{name}/tags/list?n=2&last={expected[3]}")
    assert json.loads(after_n.body)["tags"] == expected[4:6]
    assert "Link" in after_n.headers

    zero = call("GET", f"/v2/{name}/tags/list?n=0")
    assert zero.status == 200
    assert json.loads(zero.body) == {"name": name, "tags": []}
    assert "Link" not in zero.headers


REPOS = ["b/x", "a", "a/b", "c-d", "a.b", "a-b", "zz/top/deep", "a_b"]


def test_catalog_order_and_pagination(call) -> None:
    for name in REPOS:
        push_blob(call, name, b"catalog member")
    expected = sorted(REPOS)

    whole = call("GET", "/v2/_catalog")
    assert whole.status == 200
    assert json.loads(whole.body) == {"repositories": expected}
    assert "Link" not in whole.headers

    pages, links = follow_pages(call, "/v2/_catalog?n=3", "repositories")
    assert [r for page in pages for r in page] == expected
    assert [len(p) for p in pages] == [3, 3, 2]
    assert links[0] is not None and links[0].startswith("/v2/_catalog?n=3&last=")
    assert links[-1] is None

    pages, links = follow_pages(call, "/v2/_catalog?n=4", "repositories")
    assert pages == [expected[:4], expected[4:]]
    assert links[-1] is None

    after = call("GET", f"/v2/_catalog?last={expected[1]}")
    assert json.loads(after.body)["repositories"] == expected[2:]

    zero = call("GET", "/v2/_catalog?n=0")
    assert zero.status == 200
    assert json.loads(zero.body) == {"repositories": []}
    assert "Link" not in zero.headers


# -- referrers -----------------------------------------------------------------
def test_referrers_empty_is_an_index(call) -> None:
    subject = sha256(b"no such manifest")
    got = call("GET", f"/v2/lonely/referrers/{subject}")
    assert got.status == 200
    assert got.headers["Content-Type"] == OCI_INDEX
    assert json.loads(got.body) == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    assert "OCI-Filters-Applied" not in got.headers


def test_referrers_list_and_filter(call) -> None:
    name = "signed/app"
    subject_body = image_manifest(call, name)
    subject = sha256(subject_body)
    put_manifest(call, name, "v1", subject_body, OCI_MANIFEST)
    push_blob(call, name, b"{}")
    sbom_layer = b'{"sbom": true}'
    push_blob(call, name, sbom_layer)

    sbom = odd_bytes({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom.v1+json",
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor("application/json", sbom_layer)],
        "subject": descriptor(OCI_MANIFEST, subject_body),
        "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}})
    # No artifactType: the config's media type stands in for it.
    signature = odd_bytes({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.example.signature.v1", b"{}"),
        "layers": [], "subject": descriptor(OCI_MANIFEST, subject_body)})
    for body in (sbom, signature):
        put = put_manifest(call, name, sha256(body), body, OCI_MANIFEST)
        assert put.headers["OCI-Subject"] == subject

    got = call("GET", f"/v2/{name}/referrers/{subject}")
    assert got.status == 200
    assert got.headers["Content-Type"] == OCI_INDEX
    index = json.loads(got.body)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in index["manifests"]}
    assert by_digest == {
        sha256(sbom): {"mediaType": OCI_MANIFEST, "digest": sha256(sbom), "size": len(sbom),
                       "artifactType": "application/vnd.example.sbom.v1+json",
                       "annotations": {"org.opencontainers.image.created":
                                       "2024-01-01T00:00:00Z"}},
        sha256(signature): {"mediaType": OCI_MANIFEST, "digest": sha256(signature),
                            "size": len(signature),
                            "artifactType": "application/vnd.example.signature.v1"},
    }
    assert "OCI-Filters-Applied" not in got.headers

    filtered = call("GET", f"/v2/{name}/referrers/{subject}"
                    "?artifactType=application/vnd.example.sbom.v1%2Bjson")
    assert filtered.status == 200
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in json.loads(filtered.body)["manifests"]] == [sha256(sbom)]

    none = call("GET", f"/v2/{name}/referrers/{subject}?artifactType=application/x.none")
    assert none.status == 200
    assert none.headers["OCI-Filters-Applied"] == "artifactType"
    assert json.loads(none.body)["manifests"] == []


# -- blob redirects ------------------------------------------------------------
def test_blob_redirect_to_presigned_s3(settings, moto_url: str) -> None:
    app = local_app(replace(settings, blob_redirects=True))
    data = pseudo_random(70000, 31)
    digest = sha256(data)
    assert invoke(app, "POST", f"/v2/redirected/blobs/uploads/?digest={digest}", data,
                  {"Content-Length": str(len(data))}).status == 201

    got = invoke(app, "GET", f"/v2/redirected/blobs/{digest}")
    assert got.status == 307
    location = got.headers["Location"]
    assert location.startswith(f"{moto_url}/{settings.bucket}/")
    assert f"X-Amz-Expires={settings.redirect_ttl}" in location
    assert "X-Amz-Signature=" in location
    assert got.headers["Docker-Content-Digest"] == digest

    with urllib.request.urlopen(location, timeout=30) as reply:
        assert reply.status == 200
        assert reply.read() == data
    ranged = urllib.request.Request(location, headers={"Range": "bytes=1000-1999"})
    with urllib.request.urlopen(ranged, timeout=30) as reply:
        assert reply.status == 206
        assert reply.read() == data[1000:2000]

    unknown = invoke(app, "GET", f"/v2/redirected/blobs/{sha256(b'absent')}")
    assert unknown.status == 404
    assert codes(unknown) == ["BLOB_UNKNOWN"]
