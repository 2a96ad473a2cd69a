"""End-to-end smoke test of the in-process registry: push and pull a blob."""

import hashlib


def test_monolithic_push_and_pull(call):
    data = b"hello cargohold"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    created = call("POST", f"/v2/smoke/blobs/uploads/?digest={digest}", data,
                   {"Content-Length": str(len(data))})
    assert created.status == 201, created.body
    got = call("GET", f"/v2/smoke/blobs/{digest}")
    assert got.status == 200
    assert got.body == data
    assert got.headers["Docker-Content-Digest"] == digest
