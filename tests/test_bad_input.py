"""Hostile and malformed input: every rejection is a proper OCI error that
changes nothing.

Each failure case checks three things: the HTTP status, the error envelope
``{"errors":[{"code","message","detail"}]}`` with the expected code, and that
storage (every S3 object and DynamoDB item) is the same before and after the
request. Where a rejected request interrupts work in progress (an upload),
the test also finishes that work to show it was not damaged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import pytest

from chalicelib.core import manifests
from chalicelib.core.http import Request
from chalicelib.devserver import local_app
from chalicelib.storage import clients
from chalicelib.storage.metadata import MetadataStore

OCI_MANIFEST = manifests.OCI_MANIFEST
OCI_INDEX = manifests.OCI_INDEX
DOCKER_MANIFEST = manifests.DOCKER_MANIFEST
LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
ENVELOPE_KEYS = {"code", "message", "detail"}

GOOD_DIGEST = "sha256:" + "a" * 64


# -- helpers ---------------------------------------------------------------

def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_error(response: Any, status: int, code: str, *, method: str = "GET",
                 count: int = 1) -> list[dict[str, Any]]:
    """Status, envelope shape and code; a HEAD answer must have no body at all."""
    assert response.status == status, (response.status, response.body[:500])
    if method == "HEAD":
        assert response.body == b""
        return []
    assert response.headers.get("Content-Type") == "application/json"
    document = json.loads(response.body)
    assert set(document) == {"errors"}
    errors = document["errors"]
    assert isinstance(errors, list) and len(errors) == count, errors
    for error in errors:
        assert set(error) == ENVELOPE_KEYS, error
        assert error["code"] == code, error
        assert isinstance(error["message"], str) and error["message"]
    return errors


def push_blob(call, name: str, data: bytes) -> str:
    """A monolithic POST ?digest= upload; returns the digest."""
    digest = sha256(data)
    created = call("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", data,
                   {"Content-Length": str(len(data))})
    assert created.status == 201, created.body
    return digest


def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256(data), "size": len(data)}


def image_manifest(config: bytes, layers: list[bytes],
                   subject: dict[str, Any] | None = None) -> bytes:
    document: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor(CONFIG, config),
        "layers": [descriptor(LAYER, layer) for layer in layers],
    }
    if subject is not None:
        document["subject"] = subject
    return json.dumps(document).encode()


def push_image(call, name: str, reference: str = "v1", config: bytes = b"{}") -> bytes:
    """Push a config blob and an image manifest without layers; returns its bytes."""
    push_blob(call, name, config)
    body = image_manifest(config, [])
    put = call("PUT", f"/v2/{name}/manifests/{reference}", body,
               {"Content-Type": OCI_MANIFEST})
    assert put.status == 201, put.body
    return body


def start_upload(call, name: str) -> str:
    started = call("POST", f"/v2/{name}/blobs/uploads/")
    assert started.status == 202, started.body
    return started.headers["Location"]


def patch(call, location: str, data: bytes, content_range: str | None = None,
          length: int | None = None, *, method: str = "PATCH") -> Any:
    headers = {"Content-Type": "application/octet-stream"}
    if length is not None:
        headers["Content-Length"] = str(length)
    if content_range is not None:
        headers["Content-Range"] = content_range
    return call(method, location, data, headers)


def finish(call, location: str, data: bytes, name: str) -> None:
    """Complete an upload and check the blob reads back byte for byte."""
    digest = sha256(data)
    put = call("PUT", f"{location}&digest={digest}", b"", {"Content-Length": "0"})
    assert put.status == 201, put.body
    got = call("GET", f"/v2/{name}/blobs/{digest}")
    assert got.status == 200
    assert got.body == data


def pick(cases: list[Any], *ids: str) -> list[Any]:
    """The cases of a table with the given ids (a representative subset)."""
    chosen = [case for case in cases if case.id in ids]
    assert len(chosen) == len(ids)
    return chosen


def cross(cases: list[Any], routes: list[Any]) -> list[Any]:
    """Every case on every route, as one flat parameter list."""
    return [pytest.param(*case.values, *route.values, id=f"{case.id}-{route.id}")
            for case in cases for route in routes]


# -- repository names ------------------------------------------------------

BAD_NAMES = [
    pytest.param("..", id="dotdot"),
    pytest.param("a/../b", id="inner-dotdot"),
    pytest.param("%2e%2e", id="encoded-dotdot"),
    pytest.param("a/%2E%2E/b", id="encoded-inner-dotdot"),
    pytest.param(".", id="dot"),
    pytest.param("Upper", id="upper-case"),
    pytest.param("a/B", id="upper-case-component"),
    pytest.param("a//b", id="empty-component"),
    pytest.param("/a", id="leading-slash"),
    pytest.param("a/", id="trailing-slash"),
    pytest.param("a" * 256, id="256-chars"),
    pytest.param("x/" * 127 + "xy", id="256-chars-components"),
    pytest.param("a%20b", id="space"),
    pytest.param("a$b", id="dollar"),
    pytest.param("a:b", id="colon"),
    pytest.param("_a", id="leading-underscore"),
    pytest.param("a-", id="trailing-dash"),
    pytest.param("a..b", id="double-dot"),
    pytest.param("a___b", id="triple-underscore"),
    pytest.param("a%00b", id="nul"),
    pytest.param("%C3%A4", id="non-ascii"),
]

# Every bad name on one read and one write route; a representative subset
# on the others (the name is validated once, by the router, for all routes).
NAME_CASES = cross(BAD_NAMES, [
    pytest.param("GET", "/v2/{name}/manifests/latest", id="manifest-GET"),
    pytest.param("POST", "/v2/{name}/blobs/uploads/", id="uploads-POST"),
]) + cross(pick(BAD_NAMES, "dotdot", "encoded-dotdot", "upper-case", "empty-component",
                "trailing-slash", "256-chars", "dollar"), [
    pytest.param("PUT", "/v2/{name}/manifests/latest", id="manifest-PUT"),
    pytest.param("HEAD", "/v2/{name}/blobs/" + GOOD_DIGEST, id="blob-HEAD"),
    pytest.param("GET", "/v2/{name}/tags/list", id="tags-list"),
])


@pytest.mark.parametrize(("name", "method", "template"), NAME_CASES)
def test_invalid_repository_name(call, snapshot, name: str, method: str, template: str) -> None:
    body = image_manifest(b"{}", []) if method == "PUT" else b""
    headers = {"Content-Type": OCI_MANIFEST} if method == "PUT" else {}
    before = snapshot()
    response = call(method, template.format(name=name), body, headers)
    assert_error(response, 400, "NAME_INVALID", method=method)
    assert snapshot() == before


def test_name_of_255_characters_is_accepted(call) -> None:
    """The limit is inclusive: a 255-character name works end to end."""
    name = "x/" * 126 + "xyz"
    assert len(name) == 255
    unknown = call("GET", f"/v2/{name}/manifests/latest")
    assert_error(unknown, 404, "MANIFEST_UNKNOWN")
    location = start_upload(call, name)
    assert location.startswith(f"/v2/{name}/blobs/uploads/")
    body = push_image(call, name, "latest")
    got = call("GET", f"/v2/{name}/manifests/latest")
    assert got.status == 200
    assert got.body == body
    tags = call("GET", f"/v2/{name}/tags/list")
    assert tags.status == 200
    assert json.loads(tags.body) == {"name": name, "tags": ["latest"]}


def test_invalid_name_in_mount_source(call, snapshot) -> None:
    before = snapshot()
    response = call("POST", f"/v2/ok/blobs/uploads/?mount={GOOD_DIGEST}&from=Bad//name")
    assert_error(response, 400, "NAME_INVALID")
    assert snapshot() == before


# -- tags ------------------------------------------------------------------

BAD_TAGS = [
    pytest.param("t" * 129, id="129-chars"),
    pytest.param(".hidden", id="leading-dot"),
    pytest.param("-dash", id="leading-dash"),
    pytest.param("a+b", id="plus"),
    pytest.param("a$b", id="dollar"),
    pytest.param("a%20b", id="space"),
    pytest.param("a%2Fb", id="encoded-slash"),
    pytest.param("a@b", id="at"),
    pytest.param("t%C3%A4g", id="non-ascii"),
]


@pytest.mark.parametrize("tag", BAD_TAGS)
def test_invalid_tag_on_manifest_put(call, snapshot, tag: str) -> None:
    """The manifest itself is valid (its config exists), so only the tag is at fault."""
    push_blob(call, "repo", b"{}")
    body = image_manifest(b"{}", [])
    before = snapshot()
    response = call("PUT", f"/v2/repo/manifests/{tag}", body, {"Content-Type": OCI_MANIFEST})
    assert_error(response, 400, "TAG_INVALID")
    assert snapshot() == before
    accepted = call("PUT", "/v2/repo/manifests/good", body, {"Content-Type": OCI_MANIFEST})
    assert accepted.status == 201


@pytest.mark.parametrize(("tag", "method"), cross(BAD_TAGS, [pytest.param("GET", id="GET")])
                         + cross(pick(BAD_TAGS, "129-chars", "leading-dot", "encoded-slash"),
                                 [pytest.param("HEAD", id="HEAD"),
                                  pytest.param("DELETE", id="DELETE")]))
def test_invalid_tag_on_manifest_read(call, snapshot, tag: str, method: str) -> None:
    push_image(call, "repo")
    before = snapshot()
    response = call(method, f"/v2/repo/manifests/{tag}")
    assert_error(response, 400, "TAG_INVALID", method=method)
    assert snapshot() == before


def test_tag_of_128_characters_is_accepted(call) -> None:
    tag = "T" * 128
    body = push_image(call, "repo", tag)
    got = call("GET", f"/v2/repo/manifests/{tag}")
    assert got.status == 200
    assert got.body == body


# -- digests ---------------------------------------------------------------

BAD_DIGESTS = [
    pytest.param("sha256:xyz", "DIGEST_INVALID", id="not-hex"),
    pytest.param("sha256:" + "a" * 63, "DIGEST_INVALID", id="too-short"),
    pytest.param("sha256:" + "a" * 65, "DIGEST_INVALID", id="too-long"),
    pytest.param("sha256:" + "A" * 64, "DIGEST_INVALID", id="upper-hex"),
    pytest.param("sha256:" + "g" * 64, "DIGEST_INVALID", id="non-hex-letter"),
    pytest.param("sha256:", "DIGEST_INVALID", id="empty-hex"),
    pytest.param(":" + "a" * 64, "DIGEST_INVALID", id="missing-algorithm"),
    pytest.param("SHA256:" + "a" * 64, "DIGEST_INVALID", id="upper-algorithm"),
    pytest.param("sha512:" + "a" * 64, "DIGEST_INVALID", id="sha512-short"),
    pytest.param("md5:" + "a" * 32, "UNSUPPORTED", id="md5"),
    pytest.param("blake3:" + "a" * 64, "UNSUPPORTED", id="unknown-algorithm"),
]

# Every bad digest on the routes that parse a digest their own way (path,
# path-or-tag, query); a representative subset on the rest.
DIGEST_CASES = cross(BAD_DIGESTS, [
    pytest.param("GET", "/v2/repo/blobs/{d}", id="blob-GET"),
    pytest.param("GET", "/v2/repo/manifests/{d}", id="manifest-GET"),
    pytest.param("POST", "/v2/repo/blobs/uploads/?digest={d}", id="monolithic-POST"),
    pytest.param("POST", "/v2/other/blobs/uploads/?mount={d}&from=repo", id="mount"),
]) + cross(pick(BAD_DIGESTS, "not-hex", "upper-hex", "missing-algorithm", "md5"), [
    pytest.param("HEAD", "/v2/repo/blobs/{d}", id="blob-HEAD"),
    pytest.param("DELETE", "/v2/repo/blobs/{d}", id="blob-DELETE"),
    pytest.param("HEAD", "/v2/repo/manifests/{d}", id="manifest-HEAD"),
    pytest.param("PUT", "/v2/repo/manifests/{d}", id="manifest-PUT"),
    pytest.param("DELETE", "/v2/repo/manifests/{d}", id="manifest-DELETE"),
    pytest.param("GET", "/v2/repo/referrers/{d}", id="referrers"),
])


@pytest.mark.parametrize(("digest", "code", "method", "template"), DIGEST_CASES)
def test_invalid_digest(call, snapshot, digest: str, code: str, method: str,
                        template: str) -> None:
    """Malformed digests are DIGEST_INVALID; a well-formed digest of an
    algorithm the registry does not implement is UNSUPPORTED, still 400
    (grammar.parse_digest)."""
    push_blob(call, "repo", b"{}")
    body = b""
    headers: dict[str, str] = {}
    if method == "PUT":
        body, headers = image_manifest(b"{}", []), {"Content-Type": OCI_MANIFEST}
    elif method == "POST":
        body, headers = b"data", {"Content-Length": "4"}
    before = snapshot()
    response = call(method, template.format(d=digest), body, headers)
    assert_error(response, 400, code, method=method)
    assert snapshot() == before


@pytest.mark.parametrize(("digest", "code"), BAD_DIGESTS)
def test_invalid_digest_on_upload_put(call, snapshot, digest: str, code: str) -> None:
    """A bad ``?digest=`` on completion leaves the upload open and intact."""
    data = b"0123456789"
    location = start_upload(call, "repo")
    location = patch(call, location, data, "0-9", 10).headers["Location"]
    before = snapshot()
    response = call("PUT", f"{location}&digest={digest}", b"", {"Content-Length": "0"})
    assert_error(response, 400, code)
    assert snapshot() == before
    finish(call, location, data, "repo")


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_bare_hex_blob_reference_is_invalid(call, snapshot, method: str) -> None:
    """Without ``algorithm:`` a blob reference is malformed (for manifests it is a tag)."""
    before = snapshot()
    response = call(method, "/v2/repo/blobs/" + "a" * 64)
    assert_error(response, 400, "DIGEST_INVALID", method=method)
    assert snapshot() == before


# -- chunked uploads -------------------------------------------------------

DATA = bytes(range(30))

BAD_CHUNKS = [
    # (Content-Range, body, Content-Length or None, expected code)
    pytest.param("15-24", DATA[15:25], 10, "RANGE_INVALID", id="gap"),
    pytest.param("0-9", DATA[0:10], 10, "RANGE_INVALID", id="resent-first-chunk"),
    pytest.param("5-14", DATA[5:15], 10, "RANGE_INVALID", id="overlap"),
    pytest.param("10-19", DATA[10:15], 5, "RANGE_INVALID", id="length-disagrees"),
    pytest.param("10-19", DATA[10:15], None, "RANGE_INVALID", id="body-shorter-than-range"),
    pytest.param("10-14", DATA[10:20], None, "RANGE_INVALID", id="body-longer-than-range"),
    pytest.param("abc", DATA[10:20], 10, "RANGE_INVALID", id="malformed-text"),
    pytest.param("bytes=10-19", DATA[10:20], 10, "RANGE_INVALID", id="malformed-bytes-eq"),
    pytest.param("10-", DATA[10:20], 10, "RANGE_INVALID", id="malformed-open"),
    pytest.param("19-10", DATA[10:20], 10, "RANGE_INVALID", id="malformed-reversed"),
    pytest.param("-10", DATA[10:20], 10, "RANGE_INVALID", id="malformed-negative"),
]


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
@pytest.mark.parametrize(("content_range", "chunk", "length", "code"), BAD_CHUNKS)
def test_bad_chunk_is_416_and_upload_continues(call, snapshot, content_range: str,
                                               chunk: bytes, length: int | None, code: str,
                                               method: str) -> None:
    """A chunk that is not the next one (or whose range is malformed) is 416
    with ``Range`` at the current progress; the upload then carries on."""
    location = start_upload(call, "chunky")
    first = patch(call, location, DATA[:10], "0-9", 10)
    assert first.status == 202
    assert first.headers["Range"] == "0-9"
    location = first.headers["Location"]
    before = snapshot()
    target = f"{location}&digest={sha256(DATA)}" if method == "PUT" else location
    response = patch(call, target, chunk, content_range, length, method=method)
    assert_error(response, 416, code)
    assert response.headers.get("Range") == "0-9"
    assert snapshot() == before
    status = call("GET", location)
    assert status.status == 204
    assert status.headers["Range"] == "0-9"
    rest = patch(call, location, DATA[10:], "10-29", 20)
    assert rest.status == 202, rest.body
    assert rest.headers["Range"] == "0-29"
    finish(call, rest.headers["Location"], DATA, "chunky")


def test_out_of_order_first_chunk_reports_empty_progress(call, snapshot) -> None:
    """At offset 0 the reported progress is ``0-0``, as distribution does."""
    location = start_upload(call, "chunky")
    before = snapshot()
    response = patch(call, location, DATA[5:10], "5-9", 5)
    assert_error(response, 416, "RANGE_INVALID")
    assert response.headers.get("Range") == "0-0"
    assert snapshot() == before
    whole = patch(call, location, DATA, "0-29", 30)
    assert whole.status == 202
    finish(call, whole.headers["Location"], DATA, "chunky")


def test_final_body_shorter_than_content_length(call, snapshot) -> None:
    """A PUT whose body is shorter than it declares is SIZE_INVALID and the
    session survives (the client may retry the completion)."""
    location = start_upload(call, "chunky")
    location = patch(call, location, DATA[:10], "0-9", 10).headers["Location"]
    before = snapshot()
    response = call("PUT", f"{location}&digest={sha256(DATA)}", DATA[10:20],
                    {"Content-Length": "20"})
    assert_error(response, 400, "SIZE_INVALID")
    assert snapshot() == before
    rest = patch(call, location, DATA[10:], "10-29", 20)
    finish(call, rest.headers["Location"], DATA, "chunky")


# -- digest mismatches -----------------------------------------------------

@pytest.mark.parametrize("final_chunk", [False, True], ids=["patch-then-put", "put-with-body"])
def test_digest_mismatch_on_completion_ends_the_session(call, snapshot,
                                                        final_chunk: bool) -> None:
    wrong = sha256(b"something else")
    before = snapshot()
    location = start_upload(call, "mismatch")
    if final_chunk:
        location = patch(call, location, DATA[:10], "0-9", 10).headers["Location"]
        response = call("PUT", f"{location}&digest={wrong}", DATA[10:],
                        {"Content-Length": "20", "Content-Range": "10-29"})
    else:
        location = patch(call, location, DATA, "0-29", 30).headers["Location"]
        response = call("PUT", f"{location}&digest={wrong}", b"", {"Content-Length": "0"})
    assert_error(response, 400, "DIGEST_INVALID")
    assert snapshot() == before  # record deleted, staging removed, nothing linked
    for digest in (wrong, sha256(DATA)):
        assert_error(call("GET", f"/v2/mismatch/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    assert_error(call("GET", location), 404, "BLOB_UPLOAD_UNKNOWN")


def test_digest_mismatch_on_multipart_upload_aborts_staging(settings, snapshot) -> None:
    """Above one S3 part the upload is staged as a multipart upload; a
    mismatch must abort it too (the snapshot cannot see open multiparts)."""
    app = local_app(replace(settings, part_size=5 * 1024 * 1024))

    def call(method: str, path: str, body: bytes = b"",
             headers: dict[str, str] | None = None) -> Any:
        path, _, query = path.partition("?")
        response = app(Request.build(method, path, query, headers or {}, body))
        response.body = response.read_body()
        return response

    data = bytes(5 * 1024 * 1024 + 10)
    before = snapshot()
    location = start_upload(call, "big")
    location = patch(call, location, data, f"0-{len(data) - 1}", len(data)).headers["Location"]
    s3 = clients.client("s3", settings.region)
    assert s3.list_multipart_uploads(Bucket=settings.bucket).get("Uploads")
    response = call("PUT", f"{location}&digest={sha256(b'x')}", b"", {"Content-Length": "0"})
    assert_error(response, 400, "DIGEST_INVALID")
    assert snapshot() == before
    assert not s3.list_multipart_uploads(Bucket=settings.bucket).get("Uploads")


def test_digest_mismatch_on_monolithic_post(call, snapshot) -> None:
    wrong = sha256(b"something else")
    before = snapshot()
    response = call("POST", f"/v2/mono/blobs/uploads/?digest={wrong}", DATA,
                    {"Content-Length": str(len(DATA))})
    assert_error(response, 400, "DIGEST_INVALID")
    assert snapshot() == before
    for digest in (wrong, sha256(DATA)):
        assert_error(call("GET", f"/v2/mono/blobs/{digest}"), 404, "BLOB_UNKNOWN")


def test_monolithic_post_with_short_body(call, snapshot) -> None:
    before = snapshot()
    response = call("POST", f"/v2/mono/blobs/uploads/?digest={sha256(DATA)}", DATA[:10],
                    {"Content-Length": str(len(DATA))})
    assert_error(response, 400, "SIZE_INVALID")
    assert snapshot() == before


def test_put_without_digest(call, snapshot) -> None:
    location = start_upload(call, "nodigest")
    location = patch(call, location, DATA, "0-29", 30).headers["Location"]
    before = snapshot()
    response = call("PUT", location, b"", {"Content-Length": "0"})
    assert_error(response, 400, "DIGEST_INVALID")
    assert snapshot() == before
    finish(call, location, DATA, "nodigest")


# -- manifests -------------------------------------------------------------

@pytest.mark.parametrize("declare_length", [True, False], ids=["declared", "streamed"])
def test_oversize_manifest_is_413(call, snapshot, declare_length: bool) -> None:
    body = b" " * (manifests.MAX_MANIFEST_BYTES + 1)
    headers = {"Content-Type": OCI_MANIFEST}
    if declare_length:
        headers["Content-Length"] = str(len(body))
    before = snapshot()
    response = call("PUT", "/v2/repo/manifests/big", body, headers)
    assert_error(response, 413, "SIZE_INVALID")
    assert snapshot() == before


def _ambiguous() -> bytes:
    document = json.loads(image_manifest(b"{}", []))
    document["manifests"] = []
    return json.dumps(document).encode()


BAD_MANIFESTS = [
    pytest.param(b"{not json", OCI_MANIFEST, id="invalid-json"),
    pytest.param(b"[]", OCI_MANIFEST, id="json-array"),
    pytest.param(b"\xff\xfe", OCI_MANIFEST, id="not-utf8"),
    pytest.param(image_manifest(b"{}", []), DOCKER_MANIFEST, id="mediatype-vs-content-type"),
    pytest.param(image_manifest(b"{}", []), OCI_INDEX, id="image-sent-as-index"),
    pytest.param(_ambiguous(), OCI_MANIFEST, id="ambiguous-image"),
    pytest.param(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [],
                             "layers": []}).encode(), OCI_INDEX, id="ambiguous-index"),
    pytest.param(json.dumps({"schemaVersion": 2, "config": {}, "layers": [],
                             "manifests": []}).encode(), "", id="ambiguous-untyped"),
    pytest.param(image_manifest(b"{}", []).replace(b'"schemaVersion": 2', b'"schemaVersion": 1'),
                 OCI_MANIFEST, id="schema-version-1"),
    pytest.param(image_manifest(b"{}", []).replace(b'"size": 2', b'"size": -1'),
                 OCI_MANIFEST, id="negative-size"),
]


@pytest.mark.parametrize(("body", "content_type"), BAD_MANIFESTS)
def test_invalid_manifest(call, snapshot, body: bytes, content_type: str) -> None:
    push_blob(call, "repo", b"{}")
    before = snapshot()
    headers = {"Content-Type": content_type} if content_type else {}
    response = call("PUT", "/v2/repo/manifests/bad", body, headers)
    assert_error(response, 400, "MANIFEST_INVALID")
    assert snapshot() == before


def test_one_error_per_missing_blob(call, snapshot) -> None:
    config, present = b"{}", b"present layer"
    missing = [b"missing layer one", b"missing layer two"]
    push_blob(call, "repo", config)
    push_blob(call, "repo", present)
    body = image_manifest(config, [missing[0], present, missing[1]])
    before = snapshot()
    response = call("PUT", "/v2/repo/manifests/v1", body, {"Content-Type": OCI_MANIFEST})
    errors = assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN", count=2)
    assert sorted(e["detail"]["digest"] for e in errors) == sorted(sha256(m) for m in missing)
    assert snapshot() == before


def test_blob_linked_to_another_repository_does_not_count(call, snapshot) -> None:
    """References are checked against the repository, not the whole bucket."""
    push_blob(call, "elsewhere", b"{}")
    before = snapshot()
    response = call("PUT", "/v2/repo/manifests/v1", image_manifest(b"{}", []),
                    {"Content-Type": OCI_MANIFEST})
    errors = assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert errors[0]["detail"]["digest"] == sha256(b"{}")
    assert snapshot() == before


def test_put_by_digest_of_other_bytes(call, snapshot) -> None:
    push_blob(call, "repo", b"{}")
    body = image_manifest(b"{}", [])
    before = snapshot()
    response = call("PUT", f"/v2/repo/manifests/{sha256(body + b' ')}", body,
                    {"Content-Type": OCI_MANIFEST})
    assert_error(response, 400, "DIGEST_INVALID")
    assert snapshot() == before
    accepted = call("PUT", f"/v2/repo/manifests/{sha256(body)}", body,
                    {"Content-Type": OCI_MANIFEST})
    assert accepted.status == 201


def test_index_with_missing_child(call, snapshot) -> None:
    child = push_image(call, "repo", "child")
    ghost = image_manifest(b"{}", [b"never pushed"])
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        descriptor(OCI_MANIFEST, child), descriptor(OCI_MANIFEST, ghost)]}).encode()
    before = snapshot()
    response = call("PUT", "/v2/repo/manifests/multi", index, {"Content-Type": OCI_INDEX})
    errors = assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert errors[0]["detail"]["digest"] == sha256(ghost)
    assert snapshot() == before


def test_missing_subject_is_accepted(call) -> None:
    """The referrers API allows pushing an artifact before its subject."""
    push_blob(call, "repo", b"{}")
    subject = {"mediaType": OCI_MANIFEST, "digest": sha256(b"not here"), "size": 8}
    body = image_manifest(b"{}", [], subject=subject)
    response = call("PUT", f"/v2/repo/manifests/{sha256(body)}", body,
                    {"Content-Type": OCI_MANIFEST})
    assert response.status == 201, response.body
    assert response.headers["OCI-Subject"] == subject["digest"]
    referrers = call("GET", f"/v2/repo/referrers/{subject['digest']}")
    assert referrers.status == 200
    listed = json.loads(referrers.body)["manifests"]
    assert [d["digest"] for d in listed] == [sha256(body)]


# -- pagination ------------------------------------------------------------

BAD_N = [
    pytest.param("-1", id="negative"),
    pytest.param("abc", id="not-a-number"),
    pytest.param("1.5", id="fraction"),
    pytest.param("%2B5", id="plus-sign"),
    pytest.param("0x10", id="hex"),
    pytest.param("1e3", id="exponent"),
    pytest.param("1001", id="cap-plus-one"),
    pytest.param("99999999999", id="huge"),
    pytest.param(str(10**30), id="10e30"),
]


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/repo/tags/list"], ids=["catalog", "tags"])
@pytest.mark.parametrize("n", BAD_N)
def test_invalid_page_size(call, snapshot, n: str, path: str) -> None:
    """``n`` must be an integer from 0 to the cap (1000 by default):
    grammar.parse_page_size refuses a larger one, as distribution and ECR do."""
    push_image(call, "repo")
    before = snapshot()
    response = call("GET", f"{path}?n={n}")
    assert_error(response, 400, "PAGINATION_NUMBER_INVALID")
    assert snapshot() == before


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/r0/tags/list"], ids=["catalog", "tags"])
def test_page_size_is_bounded_by_the_cap(settings, call, monkeypatch, path: str) -> None:
    """n up to the cap is served (one page and a ``Link``); above it is 400
    before storage is asked; storage is never asked for more than cap + 1
    items (CVE-2023-2253)."""
    for i in range(3):
        push_image(call, f"r{i}", "v1")
        push_image(call, "r0", f"t{i}")
    asked: list[int | None] = []
    for method in ("list_repositories", "list_tags"):
        original = getattr(MetadataStore, method)

        def spy(self, *args, _original=original):
            asked.append(args[-1])
            return _original(self, *args)

        monkeypatch.setattr(MetadataStore, method, spy)
    capped = local_app(replace(settings, page_cap=2))

    def get(n: str) -> tuple[Any, bytes]:
        response = capped(Request.build("GET", path, f"n={n}"))
        return response, response.read_body()

    response, body = get("2")
    assert response.status == 200
    listed = json.loads(body).get("repositories", json.loads(body).get("tags"))
    assert len(listed) == 2
    assert response.headers["Link"].endswith('; rel="next"')
    assert "n=2&" in response.headers["Link"]
    assert asked == [3]
    for n in ("3", "99999999999"):
        response, body = get(n)
        assert response.status == 400
        assert json.loads(body)["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"
    assert asked == [3]


@pytest.mark.parametrize("path", ["/v2/_catalog", "/v2/repo/tags/list"], ids=["catalog", "tags"])
def test_page_size_zero_is_empty(call, path: str) -> None:
    push_image(call, "repo")
    response = call("GET", f"{path}?n=0")
    assert response.status == 200
    body = json.loads(response.body)
    assert body.get("repositories", body.get("tags")) == []


# -- unknown things --------------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
def test_blob_not_linked(call, snapshot, method: str) -> None:
    before = snapshot()
    response = call(method, f"/v2/repo/blobs/{sha256(b'absent')}")
    assert_error(response, 404, "BLOB_UNKNOWN", method=method)
    assert snapshot() == before


def test_blob_is_per_repository_until_mounted(call, snapshot) -> None:
    data = b"layer of a"
    digest = push_blob(call, "a", data)
    before = snapshot()
    for method in ("GET", "HEAD"):
        assert_error(call(method, f"/v2/b/blobs/{digest}"), 404, "BLOB_UNKNOWN", method=method)
    assert snapshot() == before
    mounted = call("POST", f"/v2/b/blobs/uploads/?mount={digest}&from=a")
    assert mounted.status == 201
    assert mounted.headers["Location"] == f"/v2/b/blobs/{digest}"
    assert mounted.headers["Docker-Content-Digest"] == digest
    got = call("GET", f"/v2/b/blobs/{digest}")
    assert got.status == 200
    assert got.body == data


@pytest.mark.parametrize("source", ["lacks", "never-existed"])
def test_mount_from_repository_without_the_blob_starts_an_upload(call, source: str) -> None:
    """Mounting never leaks a blob from a repository that does not link it:
    the answer is a normal 202 upload session."""
    data = b"secret layer"
    digest = push_blob(call, "owner", data)
    push_blob(call, "lacks", b"unrelated")
    response = call("POST", f"/v2/b/blobs/uploads/?mount={digest}&from={source}")
    assert response.status == 202
    assert response.headers["Range"] == "0-0"
    assert_error(call("GET", f"/v2/b/blobs/{digest}"), 404, "BLOB_UNKNOWN")
    location = patch(call, response.headers["Location"], data, None,
                     len(data)).headers["Location"]
    finish(call, location, data, "b")


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE"])
@pytest.mark.parametrize("reference", ["nosuchtag", sha256(b"no such manifest")])
def test_manifest_unknown(call, snapshot, method: str, reference: str) -> None:
    push_image(call, "repo")
    before = snapshot()
    response = call(method, f"/v2/repo/manifests/{reference}")
    assert_error(response, 404, "MANIFEST_UNKNOWN", method=method)
    assert snapshot() == before


def test_tags_of_unknown_repository(call, snapshot) -> None:
    before = snapshot()
    assert_error(call("GET", "/v2/nobody/tags/list"), 404, "NAME_UNKNOWN")
    assert snapshot() == before


WRONG_METHODS = [
    pytest.param("POST", "/v2/repo/manifests/latest", id="POST-manifest"),
    pytest.param("PATCH", "/v2/repo/manifests/latest", id="PATCH-manifest"),
    pytest.param("PUT", f"/v2/repo/blobs/{GOOD_DIGEST}", id="PUT-blob"),
    pytest.param("POST", f"/v2/repo/blobs/{GOOD_DIGEST}", id="POST-blob"),
    pytest.param("DELETE", "/v2/repo/tags/list", id="DELETE-tags"),
    pytest.param("HEAD", "/v2/repo/tags/list", id="HEAD-tags"),
    pytest.param("GET", "/v2/repo/blobs/uploads/", id="GET-uploads"),
    pytest.param("PUT", "/v2/repo/blobs/uploads/", id="PUT-uploads"),
    pytest.param("POST", "/v2/repo/referrers/" + GOOD_DIGEST, id="POST-referrers"),
    pytest.param("POST", "/v2/_catalog", id="POST-catalog"),
    pytest.param("DELETE", "/v2/", id="DELETE-base"),
]


@pytest.mark.parametrize(("method", "path"), WRONG_METHODS)
def test_wrong_method(call, snapshot, method: str, path: str) -> None:
    before = snapshot()
    response = call(method, path, b"x" if method in ("PUT", "POST", "PATCH") else b"")
    assert_error(response, 405, "UNSUPPORTED", method=method)
    assert method not in response.headers["Allow"].split(", ")
    assert snapshot() == before


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("path", ["/", "/v3/", "/v2/repo/unknown", "/v2/repo/blobs",
                                  "/v2/_catalog/extra", "/v2/repo/manifests/",
                                  "/v2/repo/tags/list/more"])
def test_unknown_path(call, snapshot, path: str, method: str) -> None:
    """No route: 404 with the envelope (code UNSUPPORTED, "no such endpoint")."""
    before = snapshot()
    response = call(method, path)
    errors = assert_error(response, 404, "UNSUPPORTED", method=method)
    if method == "GET":
        assert errors[0]["message"] == "no such endpoint"
    assert snapshot() == before
