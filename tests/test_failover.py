"""An instance dies mid-chunk; another one carries the upload to the end.

Lambda may kill an instance (timeout, crash, scale-in) while it streams a
PATCH into S3. The killed request has uploaded an S3 part but committed
nothing, so another process that shares only the HMAC key and the storage
must report the progress of the last committed chunk, accept the rest from
there, and publish a blob with exactly the right bytes: nothing the killed
request wrote may be lost, duplicated or used.
"""

from __future__ import annotations

import http.client
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chalicelib.config import Settings
from chalicelib.devserver import spawn_registry, stop_process
from chalicelib.storage import clients
from chalicelib.storage.blobs import BlobStore, large_blob_key
from chalicelib.storage.metadata import MetadataStore

from .test_instances import MIB, SHARED_KEY, request, sha256

ROOT = Path(__file__).resolve().parent.parent
PART = 5 * MIB
START_TIMEOUT = 30.0
PART_TIMEOUT = 30.0

Start = Callable[[str], tuple[subprocess.Popen, str]]


@pytest.fixture
def start_process(settings: Settings, moto_url: str, tmp_path: Path) -> Iterator[Start]:
    """``start_process(label)`` → (process, ``host:port``) of a registry
    process on the test's bucket and table, 5 MiB parts; all stopped after."""
    started: list[subprocess.Popen] = []

    def _start(label: str) -> tuple[subprocess.Popen, str]:
        env = dict(os.environ, CARGOHOLD_HMAC_KEY=SHARED_KEY, CARGOHOLD_BUCKET=settings.bucket,
                   CARGOHOLD_TABLE=settings.table, AWS_ENDPOINT_URL=moto_url,
                   CARGOHOLD_PART_SIZE=str(PART), CARGOHOLD_BLOB_REDIRECTS="false")
        proc, hostport = spawn_registry(env, tmp_path / f"{label}.log", "--no-provision",
                                        timeout=START_TIMEOUT)
        started.append(proc)
        return proc, hostport

    yield _start
    for proc in started:
        stop_process(proc)


def wait_for_part(settings: Settings, upload_id: str, number: int) -> None:
    """Until S3 holds part ``number`` of the upload (bounded in time)."""
    record = MetadataStore(settings.table, settings.region).get_upload(upload_id)
    assert record is not None and record.multipart_id is not None
    blobs = BlobStore(settings.bucket, settings.region)
    deadline = time.monotonic() + PART_TIMEOUT
    while time.monotonic() < deadline:
        parts = blobs.list_parts(large_blob_key(upload_id), record.multipart_id)
        if any(p["PartNumber"] == number for p in parts):
            return
        time.sleep(0.05)
    pytest.fail(f"part {number} never reached S3")


def test_instance_killed_mid_patch(start_process: Start, settings: Settings) -> None:
    proc_a, a = start_process("a")
    _, b = start_process("b")
    rng = random.Random(17)
    first = 6 * MIB
    data = rng.randbytes(14 * MIB + 123)
    name = "failover/blob"

    status, headers, body = request(a, "POST", f"/v2/{name}/blobs/uploads/")
    assert status == 202, body
    upload_id = headers["Docker-Upload-UUID"]
    status, headers, body = request(a, "PATCH", headers["Location"], data[:first], {
        "Content-Range": f"0-{first - 1}", "Content-Length": str(first)})
    assert status == 202, body
    good = headers["Location"]  # part 1 is in S3, 1 MiB waits in a tail object

    # A second PATCH on A, streamed, whose body never finishes: A gets ~7 MiB,
    # uploads part 2 (tail + 4 MiB), then is SIGKILLed. Its bytes are not the
    # blob's, so any later use of what it left behind would change the digest.
    garbled = bytes(x ^ 0xFF for x in data[first:first + 7 * MIB])
    conn = http.client.HTTPConnection(a, timeout=60)
    try:
        conn.putrequest("PATCH", good)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        step = 256 * 1024
        for i in range(0, len(garbled), step):
            piece = garbled[i:i + step]
            conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        wait_for_part(settings, upload_id, 2)
        proc_a.kill()
        proc_a.wait(timeout=10)
    finally:
        conn.close()
    assert proc_a.returncode == -9

    # The client resumes on B from what B says was committed.
    status, headers, body = request(b, "GET", good)
    assert status == 204, body
    assert headers["Range"] == f"0-{first - 1}"
    location = headers["Location"]
    rest = data[first:-100]
    status, headers, body = request(b, "PATCH", location, rest, {
        "Content-Range": f"{first}-{first + len(rest) - 1}", "Content-Length": str(len(rest))})
    assert status == 202, body
    assert headers["Range"] == f"0-{first + len(rest) - 1}"
    digest = sha256(data)
    status, headers, body = request(b, "PUT", f"{headers['Location']}&digest={digest}",
                                    data[-100:], {"Content-Length": "100"})
    assert status == 201, body
    assert headers["Docker-Content-Digest"] == digest

    status, headers, pulled = request(b, "GET", f"/v2/{name}/blobs/{digest}")
    assert status == 200
    assert headers["Content-Length"] == str(len(data))
    assert pulled == data

    s3 = clients.client("s3", settings.region)
    head = s3.head_object(Bucket=settings.bucket, Key=large_blob_key(upload_id))
    assert head["ContentLength"] == len(data)
    assert s3.list_objects_v2(Bucket=settings.bucket, Prefix="uploads/").get("Contents") is None
    assert s3.list_multipart_uploads(Bucket=settings.bucket).get("Uploads", []) == []
