"""Blob uploads that any instance can continue, streamed into S3.

Bytes are staged per upload: every full part (``part_size``, at least S3's
5 MiB minimum) goes straight into an S3 multipart upload; the remainder, if
any, waits in a small *tail* object that the next request picks up. So a
request holds at most one part in memory, whatever the blob size, and the
only state between requests is the DynamoDB record.

The digest is the registry's own computation: when one request streamed the
whole blob from offset 0 (docker, crane, skopeo: one PATCH, or a monolithic
PUT/POST) the hash is taken on the way in; otherwise the staged object is
read back and hashed before anything is made visible.
"""

from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from typing import BinaryIO

from ..core import errors
from ..core.errors import RegistryError
from ..core.grammar import Digest
from ..storage.blobs import BlobStore, blob_key, staging_prefix
from ..storage.metadata import ConditionFailedError, MetadataStore, UploadRecord

READ_SIZE = 1024 * 1024


def range_header(offset: int) -> str:
    """The ``Range`` an upload reports: inclusive, ``0-0`` when empty (as distribution)."""
    return f"0-{max(offset - 1, 0)}"


def _out_of_order(offset: int, detail: dict[str, object],
                  error: errors.ErrorCode = errors.RANGE_INVALID) -> RegistryError:
    return RegistryError(error, detail, status=416, headers={"Range": range_header(offset)})


@dataclass
class Appended:
    """What one streamed append changed, before it is committed."""

    received: int
    buffer: bytearray
    sha256_from_zero: str | None
    new_parts: int


class Uploads:
    """Start, append to, inspect, complete and cancel upload sessions."""

    def __init__(self, blobs: BlobStore, meta: MetadataStore, part_size: int, ttl: int) -> None:
        self.blobs = blobs
        self.meta = meta
        self.part_size = part_size
        self.ttl = ttl

    # -- lifecycle ---------------------------------------------------------
    def start(self, name: str) -> UploadRecord:
        record = UploadRecord(upload_id=str(uuid.uuid4()), name=name,
                              expires=int(time.time()) + self.ttl)
        self.meta.create_upload(record)
        return record

    def load(self, name: str, upload_id: str) -> UploadRecord:
        record = self.meta.get_upload(upload_id)
        if record is None or record.name != name:
            raise RegistryError(errors.BLOB_UPLOAD_UNKNOWN, {"upload": upload_id[:100]})
        return record

    def cancel(self, record: UploadRecord) -> None:
        self.meta.delete_upload(record.upload_id)
        self._discard_staging(record)

    def _discard_staging(self, record: UploadRecord) -> None:
        if record.multipart_id:
            self.blobs.abort_multipart(self._data_key(record), record.multipart_id)
        self.blobs.delete_prefix(staging_prefix(record.upload_id))

    @staticmethod
    def _data_key(record: UploadRecord) -> str:
        return staging_prefix(record.upload_id) + "data"

    # -- appending ---------------------------------------------------------
    def _append(self, record: UploadRecord, body: BinaryIO, expected: int | None,
                by_range: bool = False) -> Appended:
        """Stream ``body`` into staging; updates ``record`` in memory only.

        Full parts are uploaded as they fill (a part number at or beyond
        ``record.next_part`` is invisible until the record says otherwise,
        so an append that is later rejected leaves nothing behind that a
        completion would use).
        """
        buffer = bytearray()
        if record.tail_key and record.tail_size:
            buffer += self.blobs.read(record.tail_key)
        hasher = Digest("sha256", "").hasher() if record.offset == 0 else None
        received = 0
        new_parts = 0
        while True:
            want = READ_SIZE if expected is None else min(READ_SIZE, expected - received + 1)
            chunk = body.read(want) if want > 0 else b""
            if not chunk:
                break
            received += len(chunk)
            if expected is not None and received > expected:
                break
            buffer += chunk
            if hasher is not None:
                hasher.update(chunk)
            while len(buffer) >= self.part_size:
                self._upload_part(record, bytes(buffer[: self.part_size]))
                del buffer[: self.part_size]
                new_parts += 1
        if expected is not None and received != expected:
            detail = {"expected": expected, "received": received}
            if by_range:
                raise _out_of_order(record.offset, {"reason": "body length does not match "
                                                    "Content-Range", **detail})
            raise RegistryError(errors.SIZE_INVALID, detail,
                                message="body length does not match Content-Length")
        return Appended(received, buffer, hasher.hexdigest() if hasher else None, new_parts)

    def _upload_part(self, record: UploadRecord, data: bytes) -> None:
        if record.multipart_id is None:
            record.multipart_id = self.blobs.start_multipart(self._data_key(record))
        self.blobs.upload_part(self._data_key(record), record.multipart_id,
                               record.next_part, data)
        record.next_part += 1

    def append(self, record: UploadRecord, body: BinaryIO, content_range: tuple[int, int] | None,
               content_length: int | None) -> UploadRecord:
        """A PATCH: append a chunk and commit the new progress atomically."""
        expected = self._check_range(record, content_range, content_length)
        before = UploadRecord(**vars(record))
        appended = self._append(record, body, expected, content_range is not None)
        if appended.received == 0:
            return before
        old_tail = before.tail_key
        record.offset = before.offset + appended.received
        record.prefix_sha256 = appended.sha256_from_zero
        record.tail_key, record.tail_size = self._write_tail(record, appended.buffer)
        try:
            self.meta.save_upload(record, expected_offset=before.offset)
        except ConditionFailedError:
            if record.tail_key and record.tail_key != old_tail:
                self.blobs.delete(record.tail_key)
            current = self.meta.get_upload(record.upload_id)
            raise _out_of_order(current.offset if current else before.offset,
                                {"reason": "another request advanced this upload"},
                                errors.BLOB_UPLOAD_INVALID) from None
        if old_tail and old_tail != record.tail_key:
            self.blobs.delete(old_tail)
        return record

    def _write_tail(self, record: UploadRecord, buffer: bytearray) -> tuple[str | None, int]:
        if not buffer:
            return None, 0
        key = f"{staging_prefix(record.upload_id)}tail-{record.offset}-{secrets.token_hex(4)}"
        self.blobs.put(key, bytes(buffer))
        return key, len(buffer)

    @staticmethod
    def _check_range(record: UploadRecord, content_range: tuple[int, int] | None,
                     content_length: int | None) -> int | None:
        """The number of bytes to expect, or 416 if the chunk is not next in order."""
        if content_range is None:
            return content_length
        start, end = content_range
        if start != record.offset:
            raise _out_of_order(record.offset, {"reason": "chunk does not start at the "
                                                "upload's offset", "offset": record.offset,
                                                "start": start})
        length = end - start + 1
        if content_length is not None and content_length != length:
            raise _out_of_order(record.offset, {"reason": "Content-Range and Content-Length "
                                                "disagree", "range": length,
                                                "length": content_length})
        return length

    # -- completion --------------------------------------------------------
    def complete(self, record: UploadRecord, digest: Digest, body: BinaryIO,
                 content_range: tuple[int, int] | None, content_length: int | None,
                 persisted: bool = True) -> int:
        """Finish an upload: append the final chunk, verify, publish, link.

        Returns the blob size. On a digest mismatch the session is ended and
        its staging removed, as distribution does: nothing becomes visible.
        """
        expected = self._check_range(record, content_range, content_length)
        start_offset = record.offset
        prefix = record.prefix_sha256
        try:
            appended = self._append(record, body, expected, content_range is not None)
        except RegistryError:
            if not persisted:
                self._discard_staging(record)
            raise
        size = start_offset + appended.received
        staged = bool(record.tail_key or record.multipart_id)
        try:
            if record.multipart_id is None:
                self._publish_small(digest, bytes(appended.buffer))
            else:
                known = appended.sha256_from_zero if start_offset == 0 else (
                    prefix if appended.received == 0 else None)
                self._publish_large(record, digest, appended.buffer, size, known)
        except RegistryError:
            if persisted:
                self.meta.delete_upload(record.upload_id)
            self._discard_staging(record)
            raise
        self.meta.link_blob(record.name, str(digest), size)
        if persisted:
            self.meta.delete_upload(record.upload_id)
        if staged:
            self.blobs.delete_prefix(staging_prefix(record.upload_id))
        return size

    def _publish_small(self, digest: Digest, data: bytes) -> None:
        hasher = digest.hasher()
        hasher.update(data)
        _verify(digest, hasher.hexdigest())
        self.blobs.put(blob_key(digest), data)

    def _publish_large(self, record: UploadRecord, digest: Digest, remainder: bytearray,
                       size: int, known_sha256: str | None) -> None:
        data_key = self._data_key(record)
        assert record.multipart_id is not None
        if remainder:
            self._upload_part(record, bytes(remainder))
        parts = [p for p in self.blobs.list_parts(data_key, record.multipart_id)
                 if p["PartNumber"] < record.next_part]
        parts.sort(key=lambda p: p["PartNumber"])
        if sum(p["Size"] for p in parts) != size or len(parts) != record.next_part - 1:
            raise RegistryError(errors.BLOB_UPLOAD_INVALID,
                                {"reason": "staged parts do not add up; restart the upload"})
        if known_sha256 is not None and digest.algorithm == "sha256":
            _verify(digest, known_sha256)
            self.blobs.complete_multipart(data_key, record.multipart_id, parts)
        else:
            self.blobs.complete_multipart(data_key, record.multipart_id, parts)
            record.multipart_id = None  # completed: nothing left to abort
            hasher = digest.hasher()
            for chunk in self.blobs.stream(data_key):
                hasher.update(chunk)
            _verify(digest, hasher.hexdigest())
        record.multipart_id = None
        final = blob_key(digest)
        if not self.blobs.exists(final):
            self.blobs.copy(data_key, final)

    def new_ephemeral(self, name: str) -> UploadRecord:
        """A record for a one-request (monolithic) upload, never stored."""
        return UploadRecord(upload_id=str(uuid.uuid4()), name=name)


def _verify(digest: Digest, actual_hex: str) -> None:
    if actual_hex != digest.hex:
        raise RegistryError(errors.DIGEST_INVALID,
                            {"expected": str(digest), "actual": f"{digest.algorithm}:{actual_hex}"})
