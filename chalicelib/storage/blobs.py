"""Blob bytes in S3: one object per digest, shared by every repository.

Uploads are staged under ``uploads/<id>/`` and only copied to their
content-addressed key after the registry has verified the digest, so a
client can never place wrong bytes under a digest.
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

    def abort_multipart(self, key: str, multipart_id: str) -> None:
        from botocore.exceptions import ClientError

        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart_id)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
