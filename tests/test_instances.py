"""Statelessness: separate registry processes that share only the HMAC key
and the storage serve one upload between them, as Lambda instances must.

Each registry is a real ``python -m chalicelib.devserver --storage external``
process on a free loopback port, pointed at the session's moto server and a
bucket and table made fresh for the test.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from chalicelib.config import Settings
from chalicelib.devserver import spawn_registry, stop_process
from chalicelib.storage import clients

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
SHARED_KEY = "instances-shared-key-0123456789abcdef"
START_TIMEOUT = 30.0

Start = Callable[[str, str], str]


@pytest.fixture
def start_registry(settings: Settings, moto_url: str, tmp_path: Path) -> Iterator[Start]:
    """``start_registry(hmac_key, label)`` → ``host:port`` of a new registry
    process on the test's bucket and table; every process is stopped after."""
    started: list[subprocess.Popen] = []

    def _start(hmac_key: str, label: str) -> str:
        env = dict(os.environ, CARGOHOLD_HMAC_KEY=hmac_key, CARGOHOLD_BUCKET=settings.bucket,
                   CARGOHOLD_TABLE=settings.table, AWS_ENDPOINT_URL=moto_url,
                   CARGOHOLD_PART_SIZE=str(5 * MIB), CARGOHOLD_BLOB_REDIRECTS="false")
        proc, hostport = spawn_registry(env, tmp_path / f"{label}.log", "--no-provision",
                                        timeout=START_TIMEOUT)
        started.append(proc)
        return hostport

    yield _start
    for proc in started:
        stop_process(proc)


def request(hostport: str, method: str, path: str, body: Any = b"",
            headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """One request on a fresh connection. An iterator body goes chunked."""
    headers = dict(headers or {})
    chunked = not isinstance(body, (bytes, bytearray))
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    conn = http.client.HTTPConnection(hostport, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def error_codes(body: bytes) -> list[str]:
    return [e["code"] for e in json.loads(body)["errors"]]


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_one_upload_alternating_between_two_processes(start_registry: Start,
                                                      settings: Settings) -> None:
    """POST on A, PATCH on B, A, B, A, PUT on B; then pull from A.

    Chunks of 3 MiB + 1 with 5 MiB parts, so S3 parts and tail objects are
    written by one process and picked up by the other.
    """
    a = start_registry(SHARED_KEY, "a")
    b = start_registry(SHARED_KEY, "b")
    assert a != b
    chunk = 3 * MIB + 1
    data = random.Random(41).randbytes(4 * chunk + 1000)
    name = "shared/upload"

    status, headers, body = request(a, "POST", f"/v2/{name}/blobs/uploads/")
    assert status == 202, body
    location = headers["Location"]
    upload_id = headers["Docker-Upload-UUID"]
    offset = 0
    for i, host in enumerate((b, a, b, a)):
        piece = data[offset:offset + chunk]
        if i % 2:  # bounded chunk with Content-Range
            status, headers, body = request(host, "PATCH", location, piece, {
                "Content-Range": f"{offset}-{offset + len(piece) - 1}",
                "Content-Length": str(len(piece))})
        else:  # streamed, no Content-Length
            status, headers, body = request(host, "PATCH", location, pieces(piece, 256 * 1024))
        assert status == 202, (i, body)
        offset += len(piece)
        assert headers["Range"] == f"0-{offset - 1}"
        assert headers["Docker-Upload-UUID"] == upload_id
        location = headers["Location"]

    status, headers, body = request(a, "GET", location)
    assert status == 204, body
    assert headers["Range"] == f"0-{offset - 1}"

    digest = sha256(data)
    final = data[offset:]
    status, headers, body = request(b, "PUT", f"{location}&digest={digest}", final,
                                    {"Content-Length": str(len(final))})
    assert status == 201, body
    assert headers["Docker-Content-Digest"] == digest

    status, headers, pulled = request(a, "GET", f"/v2/{name}/blobs/{digest}")
    assert status == 200
    assert headers["Content-Length"] == str(len(data))
    assert pulled == data
    status, headers, _ = request(b, "HEAD", f"/v2/{name}/blobs/{digest}")
    assert status == 200
    assert headers["Docker-Content-Digest"] == digest

    s3 = clients.client("s3", settings.region)
    assert s3.list_objects_v2(Bucket=settings.bucket, Prefix="uploads/").get("Contents") is None
    assert s3.list_multipart_uploads(Bucket=settings.bucket).get("Uploads", []) == []


def test_manifest_pushed_on_one_read_from_the_other(start_registry: Start) -> None:
    a = start_registry(SHARED_KEY, "a")
    b = start_registry(SHARED_KEY, "b")
    name = "shared/manifest"
    config = b'{"architecture":"amd64","os":"linux"}'
    layer = random.Random(43).randbytes(4096)
    for blob in (config, layer):
        status, _, body = request(a, "POST", f"/v2/{name}/blobs/uploads/?digest={sha256(blob)}",
                                  blob, {"Content-Length": str(len(blob))})
        assert status == 201, body
    media_type = "application/vnd.oci.image.manifest.v1+json"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(layer), "size": len(layer)}]}, indent=1).encode()
    status, headers, body = request(b, "PUT", f"/v2/{name}/manifests/v1", manifest,
                                    {"Content-Type": media_type})
    assert status == 201, body
    digest = headers["Docker-Content-Digest"]
    assert digest == sha256(manifest)

    for reference in ("v1", digest):
        status, headers, body = request(a, "GET", f"/v2/{name}/manifests/{reference}",
                                        headers={"Accept": media_type})
        assert status == 200
        assert body == manifest
        assert headers["Content-Type"] == media_type
        assert headers["Docker-Content-Digest"] == digest
    status, _, body = request(a, "GET", f"/v2/{name}/tags/list")
    assert status == 200
    assert json.loads(body) == {"name": name, "tags": ["v1"]}


def test_a_different_key_rejects_the_upload_location(start_registry: Start) -> None:
    """A process with another HMAC key cannot continue (or read) the upload,
    and its refusal leaves the upload intact for the key that issued it."""
    a = start_registry(SHARED_KEY, "a")
    other = start_registry("a-different-key-fedcba9876543210", "other")
    name = "keyed/upload"
    status, headers, body = request(a, "POST", f"/v2/{name}/blobs/uploads/")
    assert status == 202, body
    location = headers["Location"]

    for method, payload, extra in (("PATCH", b"stolen", {"Content-Length": "6"}),
                                   ("GET", b"", {}),
                                   ("PUT", b"x", {"Content-Length": "1"}),
                                   ("DELETE", b"", {})):
        path = f"{location}&digest={sha256(b'x')}" if method == "PUT" else location
        status, _, body = request(other, method, path, payload, extra)
        assert status == 400, (method, body)
        assert error_codes(body) == ["BLOB_UPLOAD_INVALID"], method

    data = b"only the issuing key may continue"
    status, headers, body = request(a, "PATCH", location, data,
                                    {"Content-Length": str(len(data))})
    assert status == 202, body
    assert headers["Range"] == f"0-{len(data) - 1}"
    status, _, body = request(a, "PUT", f"{headers['Location']}&digest={sha256(data)}")
    assert status == 201, body
    status, _, pulled = request(other, "GET", f"/v2/{name}/blobs/{sha256(data)}")
    assert status == 200
    assert pulled == data
