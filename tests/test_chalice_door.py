"""The Chalice door (app.py) serves every route kind for names of 1 to 5
components, through ``chalice.test.Client`` (Chalice's own local gateway)."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import replace

import pytest
from chalice.test import Client

import app as chalice_app
from chalicelib.registry.service import Registry

NAMES = ["one", "two/parts", "a/b/c", "a-1/b_2/c.3/d", "org/team/proj/app/image"]


@pytest.fixture
def client(settings, monkeypatch) -> Iterator[Client]:
    """The Chalice app with redirects on (its default) over fresh storage."""
    monkeypatch.setattr(chalice_app, "_registry", Registry(replace(settings, blob_redirects=True)))
    with Client(chalice_app.app) as test_client:
        yield test_client


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _path_and_query(location: str) -> str:
    return location


def test_base_endpoint(client: Client) -> None:
    for path in ("/v2/", "/v2"):
        response = client.http.get(path)
        assert response.status_code == 200
        assert json.loads(response.body) == {}
        assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"


@pytest.mark.parametrize("name", NAMES)
def test_every_route_kind(client: Client, name: str) -> None:
    octet = {"Content-Type": "application/octet-stream"}
    # chunked upload: POST, PATCH, GET status, PUT
    started = client.http.post(f"/v2/{name}/blobs/uploads/")
    assert started.status_code == 202, started.body
    location = started.headers["Location"]
    assert location.startswith(f"/v2/{name}/blobs/uploads/")
    layer = f"layer of {name}".encode() * 100
    patched = client.http.patch(location, body=layer[:500],
                                headers={**octet, "Content-Range": "0-499"})
    assert patched.status_code == 202, patched.body
    assert patched.headers["Range"] == "0-499"
    status = client.http.get(patched.headers["Location"])
    assert status.status_code == 204
    assert status.headers["Range"] == "0-499"
    done = client.http.put(patched.headers["Location"] + f"&digest={_digest(layer)}",
                           body=layer[500:], headers=octet)
    assert done.status_code == 201, done.body
    assert done.headers["Docker-Content-Digest"] == _digest(layer)

    # monolithic upload of the config
    config = json.dumps({"name": name}).encode()
    mono = client.http.post(f"/v2/{name}/blobs/uploads/?digest={_digest(config)}",
                            body=config, headers=octet)
    assert mono.status_code == 201, mono.body

    # blob HEAD, GET (307 to a presigned URL that serves the bytes), DELETE later
    head = client.http.head(f"/v2/{name}/blobs/{_digest(layer)}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(layer))
    got = client.http.get(f"/v2/{name}/blobs/{_digest(layer)}")
    assert got.status_code == 307
    with urllib.request.urlopen(got.headers["Location"]) as redirected:
        assert redirected.read() == layer

    # manifest PUT/GET/HEAD by tag, tags list, referrers, catalog
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer), "size": len(layer)}],
    }, indent=1).encode()
    media = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    put = client.http.put(f"/v2/{name}/manifests/v1", body=manifest, headers=media)
    assert put.status_code == 201, put.body
    assert put.headers["Docker-Content-Digest"] == _digest(manifest)
    fetched = client.http.get(f"/v2/{name}/manifests/v1")
    assert fetched.status_code == 200
    assert fetched.body == manifest
    assert fetched.headers["Content-Type"] == media["Content-Type"]
    assert client.http.head(f"/v2/{name}/manifests/{_digest(manifest)}").status_code == 200
    tags = client.http.get(f"/v2/{name}/tags/list")
    assert json.loads(tags.body) == {"name": name, "tags": ["v1"]}
    referrers = client.http.get(f"/v2/{name}/referrers/{_digest(manifest)}")
    assert referrers.status_code == 200
    assert json.loads(referrers.body)["manifests"] == []
    catalog = client.http.get("/v2/_catalog")
    assert name in json.loads(catalog.body)["repositories"]

    # deletes and a cancelled upload
    assert client.http.delete(f"/v2/{name}/manifests/v1").status_code == 202
    assert client.http.delete(f"/v2/{name}/blobs/{_digest(config)}").status_code == 202
    cancel = client.http.post(f"/v2/{name}/blobs/uploads/")
    assert client.http.delete(cancel.headers["Location"]).status_code == 204


def test_errors_come_back_as_envelopes(client: Client) -> None:
    missing = client.http.get("/v2/a/b/manifests/nope")
    assert missing.status_code == 404
    assert json.loads(missing.body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    bad_name = client.http.get("/v2/Upper/Case/tags/list")
    assert bad_name.status_code == 400
    assert json.loads(bad_name.body)["errors"][0]["code"] == "NAME_INVALID"
    wrong_method = client.http.post("/v2/a/tags/list")
    assert wrong_method.status_code == 405
    assert json.loads(wrong_method.body)["errors"][0]["code"] == "UNSUPPORTED"


def test_streamed_blob_needs_binary_accept(settings, monkeypatch) -> None:
    """With redirects off, API Gateway can only return bytes to clients that
    accept them; the door says so in an envelope instead of mangling them."""
    monkeypatch.setattr(chalice_app, "_registry", Registry(settings))
    data = b"\x00\x01binary\xff" * 10
    with Client(chalice_app.app) as client:
        client.http.post(f"/v2/raw/blobs/uploads/?digest={_digest(data)}", body=data,
                         headers={"Content-Type": "application/octet-stream"})
        refused = client.http.get(f"/v2/raw/blobs/{_digest(data)}",
                                  headers={"Accept": "application/json"})
        assert refused.status_code == 406
        assert json.loads(refused.body)["errors"][0]["code"] == "UNSUPPORTED"
        served = client.http.get(f"/v2/raw/blobs/{_digest(data)}",
                                 headers={"Accept": "application/octet-stream"})
        assert served.status_code == 200
        assert served.body == data


def test_cold_import_is_light() -> None:
    """Importing the handler must not import boto3 (it loads on first request)."""
    import subprocess
    import sys

    code = "import sys, app; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=str(chalice_app.__file__).rsplit("/", 1)[0])
    assert out.stdout.split() == ["False", "False"]
