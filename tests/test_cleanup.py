"""Expired uploads: unreachable at once, their staging removable at once.

DynamoDB's TTL deletes an expired upload record only eventually, so the
registry must treat an expired record as gone (404 BLOB_UPLOAD_UNKNOWN),
and ``chalicelib.cleanup`` must abort the multipart upload and delete the
tail objects of such uploads, and of no live one, without waiting for the
bucket's two-day lifecycle rules.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from chalicelib.cleanup import cleanup
from chalicelib.config import Settings
from chalicelib.core.http import Response
from chalicelib.devserver import local_app
from chalicelib.storage import clients
from chalicelib.storage.blobs import BlobStore, large_blob_key, staging_prefix
from chalicelib.storage.metadata import MetadataStore

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
PART = 5 * MIB

Call = Callable[..., Response]


@pytest.fixture
def small_parts(settings: Settings) -> Settings:
    return replace(settings, part_size=PART)


@pytest.fixture
def app(small_parts: Settings):
    """5 MiB parts, so a multipart upload costs only a little over 5 MiB."""
    return local_app(small_parts)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Upload:
    name: str
    upload_id: str
    location: str
    data: bytes


def begin(call: Call, name: str, data: bytes) -> Upload:
    """Start an upload and PATCH ``data`` into it (kept unfinished)."""
    response = call("POST", f"/v2/{name}/blobs/uploads/")
    assert response.status == 202, response.body
    upload_id = response.headers["Docker-Upload-UUID"]
    response = call("PATCH", response.headers["Location"], data,
                    {"Content-Length": str(len(data))})
    assert response.status == 202, response.body
    return Upload(name, upload_id, response.headers["Location"], data)


def expire(settings: Settings, upload: Upload) -> None:
    """Move the record's ``ttl`` into the past, as if a day had gone by
    (the item stays: DynamoDB's TTL deletes lazily)."""
    clients.client("dynamodb", settings.region).update_item(
        TableName=settings.table, Key={"pk": {"S": f"upload#{upload.upload_id}"},
                                       "sk": {"S": "upload"}},
        UpdateExpression="SET #t = :t", ExpressionAttributeNames={"#t": "ttl"},
        ExpressionAttributeValues={":t": {"N": str(int(time.time()) - 60)}},
        ConditionExpression="attribute_exists(pk)")


def staging(settings: Settings, upload: Upload | None = None) -> list[str]:
    prefix = staging_prefix(upload.upload_id) if upload else "uploads/"
    return [o["Key"] for o in BlobStore(settings.bucket, settings.region).list_keys(prefix)]


def multipart_keys(settings: Settings) -> list[str]:
    return sorted(u["Key"] for u in
                  BlobStore(settings.bucket, settings.region).list_multipart(""))


def code_of(response: Response) -> str:
    [error] = json.loads(response.body)["errors"]
    return error["code"]


def test_expired_uploads_are_gone_and_cleaned_up(call: Call, small_parts: Settings,
                                                 moto_url: str) -> None:
    rng = random.Random(5)
    tail_only = begin(call, "clean/tail", rng.randbytes(1000))
    with_part = begin(call, "clean/part", rng.randbytes(PART + 10))
    live_part = begin(call, "clean/live", rng.randbytes(PART + 20))
    live_tail = begin(call, "clean/live", rng.randbytes(300))
    blobs = BlobStore(small_parts.bucket, small_parts.region)
    meta = MetadataStore(small_parts.table, small_parts.region)
    for upload in (tail_only, with_part, live_part, live_tail):
        assert len(staging(small_parts, upload)) == 1  # one tail object each
    assert multipart_keys(small_parts) == sorted(
        [large_blob_key(with_part.upload_id), large_blob_key(live_part.upload_id)])

    for upload in (tail_only, with_part):
        expire(small_parts, upload)
        digest = sha256(upload.data)
        for method, path, body in (("GET", upload.location, b""),
                                   ("PATCH", upload.location, b"more"),
                                   ("PUT", f"{upload.location}&digest={digest}", b""),
                                   ("DELETE", upload.location, b"")):
            response = call(method, path, body, {"Content-Length": str(len(body))})
            assert response.status == 404, (method, response.body)
            assert code_of(response) == "BLOB_UPLOAD_UNKNOWN", method

    # Young staging is left alone by the default grace period. (moto answers
    # every multipart upload's Initiated with a fixed date in 2010, so there
    # only the session record protects a multipart upload: an expired one
    # may go already; a live one never.)
    early = cleanup(blobs, meta)
    assert early.deleted_objects == []
    assert early.aborted_multipart in ([], [large_blob_key(with_part.upload_id)])
    assert len(staging(small_parts)) == 4

    expired_tails = staging(small_parts, tail_only) + staging(small_parts, with_part)
    report = cleanup(blobs, meta, grace=0)
    assert early.aborted_multipart + report.aborted_multipart == [
        large_blob_key(with_part.upload_id)]
    assert sorted(report.deleted_objects) == sorted(expired_tails)
    assert report.kept_live == 3  # the live uploads' multipart upload and two tails
    assert staging(small_parts, tail_only) == staging(small_parts, with_part) == []
    assert multipart_keys(small_parts) == [large_blob_key(live_part.upload_id)]
    assert len(staging(small_parts, live_part)) == len(staging(small_parts, live_tail)) == 1

    # The live upload kept everything it needs: it completes correctly.
    digest = sha256(live_part.data)
    response = call("PUT", f"{live_part.location}&digest={digest}")
    assert response.status == 201, response.body
    pulled = call("GET", f"/v2/clean/live/blobs/{digest}")
    assert pulled.status == 200 and pulled.read_body() == live_part.data

    # The command line, as an operator's scheduled job runs it.
    expire(small_parts, live_tail)
    env = dict(os.environ, CARGOHOLD_BUCKET=small_parts.bucket,
               CARGOHOLD_TABLE=small_parts.table, AWS_ENDPOINT_URL=moto_url)
    done = subprocess.run([sys.executable, "-m", "chalicelib.cleanup", "--grace", "0"],
                          cwd=ROOT, env=env, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    printed = json.loads(done.stdout)
    assert printed["aborted_multipart"] == []
    assert [k.split("/")[1] for k in printed["deleted_objects"]] == [live_tail.upload_id]
    assert staging(small_parts) == []
    assert multipart_keys(small_parts) == []
    # A completed blob is never staging: still there after the clean-up.
    pulled = call("GET", f"/v2/clean/live/blobs/{digest}")
    assert pulled.status == 200 and pulled.read_body() == live_part.data
