"""bench/s3proxy.py, the counting S3 proxy the benchmarks put in front of moto,
and the CNCF distribution registry on its s3 driver behind it.

The proxy's counts are only worth comparing with cargohold's in-process
botocore counts if both name the same requests the same way: so boto3 is
driven through the proxy and the two counts must be equal, operation by
operation.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import random
import subprocess
import tarfile
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from bench.s3proxy import S3CountingProxy, classify

from .conftest import tool
from .distribution import running_distribution_s3
from .oci_layout import tar_of

MIB = 1024 * 1024


@pytest.fixture
def proxy(moto_url: str) -> Iterator[S3CountingProxy]:
    with S3CountingProxy(moto_url) as running:
        yield running


def s3_client(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


class HookCounts:
    """botocore's own view: API calls (``before-call``) and HTTP attempts
    (``before-send``, whose event name ends with the operation)."""

    def __init__(self, client: Any) -> None:
        self.calls: Counter[str] = Counter()
        self.sends: Counter[str] = Counter()
        client.meta.events.register("before-call", self._call)
        client.meta.events.register("before-send", self._send)

    def _call(self, model: Any, **_: Any) -> None:
        self.calls[model.name] += 1

    def _send(self, event_name: str, **_: Any) -> None:
        self.sends[event_name.rsplit(".", 1)[-1]] += 1


# -- classification, no sockets -------------------------------------------------------
@pytest.mark.parametrize(("method", "target", "headers", "operation"), [
    ("GET", "/", {}, "ListBuckets"),
    ("PUT", "/b", {}, "CreateBucket"),
    ("PUT", "/b/", {}, "CreateBucket"),
    ("HEAD", "/b", {}, "HeadBucket"),
    ("DELETE", "/b", {}, "DeleteBucket"),
    ("GET", "/b?location", {}, "GetBucketLocation"),
    ("GET", "/b?list-type=2&prefix=a%2F&delimiter=%2F", {}, "ListObjectsV2"),
    ("GET", "/b?prefix=a", {}, "ListObjects"),
    ("GET", "/b?uploads&prefix=x", {}, "ListMultipartUploads"),
    ("GET", "/b?versions", {}, "ListObjectVersions"),
    ("POST", "/b?delete", {}, "DeleteObjects"),
    ("PUT", "/b?versioning", {}, "PutBucketVersioning"),
    ("GET", "/b?policy", {}, "GetBucketPolicy"),
    ("PUT", "/b/k", {}, "PutObject"),
    ("PUT", "/b/a/b/c", {"x-amz-copy-source": "/b/k"}, "CopyObject"),
    ("GET", "/b/k", {}, "GetObject"),
    ("GET", "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=ab", {}, "GetObject"),
    ("HEAD", "/b/k", {}, "HeadObject"),
    ("DELETE", "/b/k", {}, "DeleteObject"),
    ("POST", "/b/k?uploads", {}, "CreateMultipartUpload"),
    ("PUT", "/b/k?partNumber=1&uploadId=u", {}, "UploadPart"),
    ("PUT", "/b/k?partNumber=2&uploadId=u", {"x-amz-copy-source": "/b/o"}, "UploadPartCopy"),
    ("GET", "/b/k?uploadId=u", {}, "ListParts"),
    ("POST", "/b/k?uploadId=u", {}, "CompleteMultipartUpload"),
    ("DELETE", "/b/k?uploadId=u", {}, "AbortMultipartUpload"),
    ("GET", "/b/k?tagging", {}, "GetObjectTagging"),
    ("PUT", "/b/k?tagging", {}, "PutObjectTagging"),
    ("GET", "/b/uploads", {}, "GetObject"),  # a key named like a subresource
    ("POST", "/", {"x-amz-target": "DynamoDB_20120810.GetItem"}, "GetItem"),
    ("PATCH", "/b/k", {}, "Other"),
])
def test_classify_names_each_operation(method: str, target: str, headers: dict[str, str],
                                       operation: str) -> None:
    assert classify(method, target, headers) == operation


# -- through the proxy -----------------------------------------------------------------
def test_counts_equal_botocore_event_hooks(proxy: S3CountingProxy) -> None:
    """Every operation cargohold's and distribution's storage code uses, driven
    by boto3 through the proxy: the proxy's count per operation equals
    botocore's, and the bytes come back intact through it."""
    s3 = s3_client(proxy.url)
    hooks = HookCounts(s3)
    rng = random.Random(7)
    bucket = f"proxy-{uuid.uuid4().hex[:12]}"

    s3.create_bucket(Bucket=bucket)
    s3.head_bucket(Bucket=bucket)
    s3.get_bucket_location(Bucket=bucket)
    small = rng.randbytes(1000)
    s3.put_object(Bucket=bucket, Key="dir/small", Body=small)
    assert s3.get_object(Bucket=bucket, Key="dir/small")["Body"].read() == small
    ranged = s3.get_object(Bucket=bucket, Key="dir/small", Range="bytes=10-19")
    assert ranged["Body"].read() == small[10:20]
    assert s3.head_object(Bucket=bucket, Key="dir/small")["ContentLength"] == len(small)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="dir/missing")
    s3.copy_object(Bucket=bucket, Key="dir/copy", CopySource={"Bucket": bucket,
                                                              "Key": "dir/small"})

    part = rng.randbytes(5 * MIB)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
    first = s3.upload_part(Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=part)
    second = s3.upload_part_copy(Bucket=bucket, Key="big", UploadId=upload, PartNumber=2,
                                 CopySource={"Bucket": bucket, "Key": "dir/small"})
    listed = s3.list_parts(Bucket=bucket, Key="big", UploadId=upload)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2]
    pending = s3.list_multipart_uploads(Bucket=bucket)
    assert [u["UploadId"] for u in pending["Uploads"]] == [upload]
    s3.complete_multipart_upload(Bucket=bucket, Key="big", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": first["ETag"]},
                  {"PartNumber": 2, "ETag": second["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == part + small
    dropped = s3.create_multipart_upload(Bucket=bucket, Key="dropped")["UploadId"]
    s3.abort_multipart_upload(Bucket=bucket, Key="dropped", UploadId=dropped)

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["big", "dir/copy", "dir/small"]
    s3.list_objects_v2(Bucket=bucket, Prefix="dir/", Delimiter="/", MaxKeys=1)
    s3.list_objects(Bucket=bucket)
    s3.delete_object(Bucket=bucket, Key="big")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "dir/copy"},
                                                         {"Key": "dir/small"}]})
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0

    counted = proxy.counts()
    assert hooks.calls == hooks.sends, "botocore retried: the counts would not be comparable"
    assert counted == hooks.sends
    assert counted["HeadObject"] == 2 and counted["GetObject"] == 3
    # every operation above, none folded into another
    assert set(counted) == {
        "CreateBucket", "HeadBucket", "GetBucketLocation", "PutObject", "GetObject",
        "HeadObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "UploadPartCopy",
        "ListParts", "ListMultipartUploads", "CompleteMultipartUpload",
        "AbortMultipartUpload", "ListObjectsV2", "ListObjects", "DeleteObject",
        "DeleteObjects"}
    assert sum(seen.bytes_in for seen in proxy.seen()) >= len(part)
    assert proxy.reset() == counted
    assert proxy.counts() == Counter()


def test_streams_chunked_bodies_and_counts_presigned_gets(proxy: S3CountingProxy) -> None:
    """A chunked request body (as SDKs send unsized streams) is relayed chunk
    by chunk; a client following a presigned URL is a GetObject like any."""
    s3 = s3_client(proxy.url)
    bucket = f"proxy-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    proxy.reset()
    data = random.Random(3).randbytes(3 * MIB + 17)

    def presigned(method: str) -> str:
        url = s3.generate_presigned_url(method, Params={"Bucket": bucket, "Key": "chunked"})
        split = urlsplit(url)
        assert split.netloc == proxy.address
        return f"{split.path}?{split.query}"

    host, port = proxy.address.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        conn.putrequest("PUT", presigned("put_object"))
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for at in range(0, len(data), MIB):
            piece = data[at:at + MIB]
            conn.send(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        conn.send(b"0\r\n\r\n")
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        # The same kept-alive connection carries a second request.
        conn.request("HEAD", presigned("head_object"))
        head = conn.getresponse()
        head.read()
        assert head.status == 200 and int(head.getheader("Content-Length")) == len(data)
    finally:
        conn.close()

    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "chunked"})
    assert urlsplit(url).netloc == proxy.address
    with urllib.request.urlopen(url, timeout=60) as got:
        assert got.read() == data
    assert proxy.counts() == Counter({"PutObject": 1, "HeadObject": 1, "GetObject": 1})
    put = next(seen for seen in proxy.seen() if seen.operation == "PutObject")
    assert put.bytes_in == len(data) and put.status == 200


def test_upstream_down_answers_502_and_still_counts(moto_url: str) -> None:
    """A request the emulator never answered is still a request made."""
    with S3CountingProxy("http://127.0.0.1:9") as dead:  # discard port: nothing listens
        with pytest.raises(urllib.error.HTTPError) as failure:
            urllib.request.urlopen(f"{dead.url}/bucket/key", timeout=30)
        assert failure.value.code == 502
        assert dead.counts() == Counter({"GetObject": 1})


# -- distribution on S3, behind the proxy ------------------------------------------------
def _crane(home: Path, *args: str | Path) -> str:
    env = {"HOME": str(home), "DOCKER_CONFIG": str(home / ".docker"),
           "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    proc = subprocess.run([tool("crane"), *map(str, args)], env=env, capture_output=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return proc.stdout.decode()


@pytest.mark.clients
def test_distribution_on_s3_push_pull_counted(proxy: S3CountingProxy, moto_url: str,
                                             tmp_path: Path) -> None:
    """distribution with its s3 driver stores in the emulator through the
    proxy, and answers blob GETs with 307 to presigned URLs on the proxy, so
    both its own and its clients' S3 requests are counted."""
    bucket = f"dist-{uuid.uuid4().hex[:12]}"
    payload = random.Random(5).randbytes(2 * MIB)
    (tmp_path / "layer.tar").write_bytes(tar_of({"payload.bin": payload}))
    with running_distribution_s3(tmp_path, proxy.url, bucket) as address:
        assert proxy.reset() == Counter({"CreateBucket": 1})  # start-up made no request
        ref = f"{address}/bench/app:v1"
        _crane(tmp_path, "append", "--insecure", "-f", tmp_path / "layer.tar", "-t", ref)
        push = proxy.reset()
        assert push["PutObject"] >= 3  # blob data and link files, manifest, tag
        assert push["CompleteMultipartUpload"] >= 1  # blobs land through its writer

        _crane(tmp_path, "pull", "--insecure", "--format", "oci", ref, tmp_path / "pulled")
        pulled, pull = proxy.seen(), proxy.reset()
        presigned = [seen for seen in pulled if "X-Amz-Signature=" in seen.target]
        assert pull["PutObject"] == 0
        # config and layer: the client's own GETs through the redirects
        assert [seen.operation for seen in presigned] == ["GetObject", "GetObject"]
        index = json.loads((tmp_path / "pulled" / "index.json").read_text())
        manifest_digest = index["manifests"][0]["digest"]
        manifest = json.loads(_blob(tmp_path / "pulled", manifest_digest))
        layer_digest = manifest["layers"][0]["digest"]
        layer = _blob(tmp_path / "pulled", layer_digest)
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
            member = tar.extractfile("payload.bin")
            assert member is not None and member.read() == payload

        # The redirect itself: a 307 to the proxy, whose follow is a GetObject.
        blob_url = f"http://{address}/v2/bench/app/blobs/{layer_digest}"
        location = _redirect_of(blob_url)
        assert urlsplit(location).netloc == proxy.address
        assert proxy.reset()["GetObject"] >= 1  # distribution's own reads (links)
        with urllib.request.urlopen(location, timeout=60) as got:
            assert hashlib.sha256(got.read()).hexdigest() == layer_digest.split(":")[1]
        assert proxy.counts() == Counter({"GetObject": 1})
        assert "X-Amz-Signature=" in proxy.seen()[0].target

    stored = s3_client(moto_url).list_objects_v2(Bucket=bucket, Prefix="docker/registry/v2/")
    assert any(o["Key"].endswith(f"/{layer_digest.split(':')[1]}/data")
               for o in stored["Contents"])


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


def _redirect_of(url: str) -> str:
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(url, timeout=30)
    assert answer.value.code == 307
    return answer.value.headers["Location"]
