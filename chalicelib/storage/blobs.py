"""Blob bytes in S3: one object per digest, shared by every repository.

A blob small enough to arrive in one part is verified in memory and written
to its content-addressed key. A larger one is assembled by an S3 multipart
upload at ``blobs/large/<upload id>`` and, once verified, stays there: the
digest → key mapping lives in DynamoDB, so completion never copies
gigabytes (a copy is not O(1) and would not fit a Lambda request). Small
leftovers between requests are staged under ``uploads/<id>/``, which a
lifecycle rule expires.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..core.grammar import Digest
from .clients import client

READ_CHUNK = 1024 * 1024


def blob_key(digest: Digest | str) -> str:
    text = str(digest)
    algorithm, hex_part = text.split(":", 1)
    return f"blobs/{algorithm}/{hex_part[:2]}/{hex_part}"


def staging_prefix(upload_id: str) -> str:
    return f"uploads/{upload_id}/"


LARGE_PREFIX = "blobs/large/"


def large_blob_key(upload_id: str) -> str:
    return LARGE_PREFIX + upload_id


READ_PARALLELISM = 8
RANGE_SIZE = 8 * 1024 * 1024


class BlobStore:
    """The S3 side of the registry: blob objects and multipart staging."""

    def __init__(self, bucket: str, region: str) -> None:
        self.bucket = bucket
        self.region = region

    @property
    def s3(self) -> Any:
        return client("s3", self.region)

    # -- content-addressed blobs -------------------------------------------
    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def put(self, key: str, data: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data,
                           ContentType="application/octet-stream")

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def stream(self, key: str, start: int | None = None, end: int | None = None,
               chunk: int = READ_CHUNK) -> Iterator[bytes]:
        """Yield an object's bytes (optionally an inclusive range) in bounded chunks."""
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if start is not None:
            args["Range"] = f"bytes={start}-{'' if end is None else end}"
        body = self.s3.get_object(**args)["Body"]
        try:
            yield from body.iter_chunks(chunk)
        finally:
            body.close()

    def hash_object(self, key: str, size: int, hasher: Any,
                    parallelism: int = READ_PARALLELISM) -> None:
        """Feed an object to ``hasher`` in order, reading ranges in parallel.

        Hashing is sequential but one S3 stream is not the bottleneck S3
        can be: up to ``parallelism`` ranges are in flight while the hasher
        consumes them in order, and at most that many ranges are in memory.
        """
        from concurrent.futures import ThreadPoolExecutor

        def fetch(start: int) -> bytes:
            end = min(start + RANGE_SIZE, size) - 1
            return self.s3.get_object(Bucket=self.bucket, Key=key,
                                      Range=f"bytes={start}-{end}")["Body"].read()

        starts = list(range(0, size, RANGE_SIZE))
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            window = [pool.submit(fetch, s) for s in starts[:parallelism]]
            for i in range(len(starts)):
                data = window.pop(0).result()
                following = i + parallelism
                if following < len(starts):
                    window.append(pool.submit(fetch, starts[following]))
                hasher.update(data)

    def presign_upload_part(self, key: str, multipart_id: str, number: int, ttl: int) -> str:
        """A URL that can write exactly one part of one multipart upload, until ``ttl``."""
        return self.s3.generate_presigned_url(
            "upload_part", Params={"Bucket": self.bucket, "Key": key, "UploadId": multipart_id,
                                   "PartNumber": number}, ExpiresIn=ttl)

    def presign_get(self, key: str, ttl: int) -> str:
        return self.s3.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=ttl)

    def copy(self, source: str, destination: str) -> None:
        """Server-side copy; boto3's managed copy switches to multipart above 5 GiB."""
        self.s3.copy({"Bucket": self.bucket, "Key": source}, self.bucket, destination)

    def delete(self, key: str) -> None:
        self.s3.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> None:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})

    # -- multipart staging -------------------------------------------------
    def start_multipart(self, key: str) -> str:
        return self.s3.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType="application/octet-stream")["UploadId"]

    def upload_part(self, key: str, multipart_id: str, number: int, data: bytes) -> str:
        return self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=multipart_id,
                                   PartNumber=number, Body=data)["ETag"]

    def list_parts(self, key: str, multipart_id: str) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        marker = 0
        while True:
            page = self.s3.list_parts(Bucket=self.bucket, Key=key, UploadId=multipart_id,
                                      PartNumberMarker=marker, MaxParts=1000)
            parts.extend(page.get("Parts", []))
            if not page.get("IsTruncated"):
                return parts
            marker = page["NextPartNumberMarker"]

    def complete_multipart(self, key: str, multipart_id: str,
                           parts: list[dict[str, Any]]) -> None:
        self.s3.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=multipart_id,
            MultipartUpload={"Parts": [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]}
                                       for p in parts]})

    def list_multipart(self, prefix: str) -> list[dict[str, Any]]:
        """Unfinished multipart uploads under ``prefix`` (Key, UploadId, Initiated)."""
        found: list[dict[str, Any]] = []
        for page in self.s3.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=prefix):
            found.extend(page.get("Uploads", []))
        return found

    def list_keys(self, prefix: str) -> list[dict[str, Any]]:
        """Objects under ``prefix`` (Key, LastModified, Size)."""
        found: list[dict[str, Any]] = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix):
            found.extend(page.get("Contents", []))
        return found

    def abort_multipart(self, key: str, multipart_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
