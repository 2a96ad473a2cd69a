"""Blob uploads that any instance can continue, streamed into S3.

Bytes are staged per upload: every full part (``part_size``, at least S3's
5 MiB minimum) goes straight into an S3 multipart upload; the remainder, if
any, waits in a small *tail* object that the next request folds into the
next part. So a request holds at most one part in memory, chunks may be any
size from one byte up, and the only state between requests is the DynamoDB
record, advanced with a conditional write.

Digests: the record carries a resumable SHA-256 state over every byte
received so far, so completion of a streamed upload hashes nothing: its
cost does not grow with the blob, which is what lets a 29 s Lambda request
finish a multi-gigabyte upload. Bytes that bypassed the registry (the
direct-to-S3 extension) or a sha512 digest are verified instead by reading
the assembled object back with parallel ranged reads. Either way the
registry checks the digest before anything becomes visible.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, BinaryIO

from ..core import errors
from ..core.errors import RegistryError
from ..core.grammar import Digest
from ..storage.blobs import BlobStore, blob_key, large_blob_key, staging_prefix
from ..storage.metadata import BlobLink, ConditionFailedError, MetadataStore, UploadRecord
from .resumable_sha256 import ResumableSha256

READ_SIZE = 1024 * 1024
S3_MIN_PART = 5 * 1024 * 1024
S3_MAX_PARTS = 10_000


def range_header(offset: int) -> str:
    """The ``Range`` an upload reports: inclusive, ``0-0`` when empty (as distribution)."""
    return f"0-{max(offset - 1, 0)}"


def _out_of_order(offset: int, detail: dict[str, object],
                  error: errors.ErrorCode = errors.RANGE_INVALID) -> RegistryError:
    return RegistryError(error, detail, status=416, headers={"Range": range_header(offset)})


def body_too_large(limit: int) -> RegistryError:
    return RegistryError(errors.BODY_TOO_LARGE, {
        "limit": limit,
        "reason": f"this registry runs in a function that accepts request bodies of at most "
                  f"{limit} bytes: push in chunks of at most {limit} bytes (the "
                  f"OCI-Chunk-Max-Length of the upload), e.g. regctl --blob-chunk, or with "
                  f"the cargohold CLI, which does so on its own"})


@dataclass
class Appended:
    """What one streamed append changed, before it is committed."""

    received: int
    buffer: bytearray
    hasher: ResumableSha256 | None


class Uploads:
    """Start, append to, inspect, complete and cancel upload sessions."""

    def __init__(self, blobs: BlobStore, meta: MetadataStore, part_size: int, ttl: int,
                 max_body: int | None = None) -> None:
        self.blobs = blobs
        self.meta = meta
        self.part_size = part_size
        self.ttl = ttl
        self.max_body = max_body

    # -- lifecycle ---------------------------------------------------------
    def start(self, name: str) -> UploadRecord:
        record = UploadRecord(upload_id=str(uuid.uuid4()), name=name,
                              hash_state=ResumableSha256().save(),
                              expires=int(time.time()) + self.ttl)
        self.meta.create_upload(record)
        return record

    def new_ephemeral(self, name: str) -> UploadRecord:
        """A record for a one-request (monolithic) upload, never stored."""
        return UploadRecord(upload_id=str(uuid.uuid4()), name=name,
                            hash_state=ResumableSha256().save())

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
            self.blobs.abort_multipart(large_blob_key(record.upload_id), record.multipart_id)
        self.blobs.delete_prefix(staging_prefix(record.upload_id))

    # -- appending ---------------------------------------------------------
    def _append(self, record: UploadRecord, body: BinaryIO, expected: int | None,
                by_range: bool = False) -> Appended:
        """Stream ``body`` into staging; updates ``record`` in memory only.

        Full parts are uploaded as they fill (a part number at or beyond
        ``record.next_part`` is invisible until the record says otherwise,
        so an append that is later rejected leaves nothing behind that a
        completion would use).
        """
        if self.max_body is not None and expected is not None and expected > self.max_body:
            raise body_too_large(self.max_body)
        hasher = ResumableSha256(record.hash_state) if record.hash_state is not None else None
        buffer = bytearray()
        if record.tail_key and record.tail_size:
            buffer += self.blobs.read(record.tail_key)
        received = 0
        while True:
            want = READ_SIZE if expected is None else min(READ_SIZE, expected - received + 1)
            chunk = body.read(want) if want > 0 else b""
            if not chunk:
                break
            received += len(chunk)
            if expected is not None and received > expected:
                break
            if self.max_body is not None and received > self.max_body:
                raise body_too_large(self.max_body)
            buffer += chunk
            if hasher is not None:
                hasher.update(chunk)
            while len(buffer) >= self.part_size:
                self._upload_part(record, bytes(buffer[: self.part_size]))
                del buffer[: self.part_size]
        if expected is not None and received != expected:
            detail = {"expected": expected, "received": received}
            if by_range:
                raise _out_of_order(record.offset, {"reason": "body length does not match "
                                                    "Content-Range", **detail})
            raise RegistryError(errors.SIZE_INVALID, detail,
                                message="body length does not match Content-Length")
        return Appended(received, buffer, hasher)

    def _upload_part(self, record: UploadRecord, data: bytes) -> None:
        key = large_blob_key(record.upload_id)
        if record.multipart_id is None:
            record.multipart_id = self.blobs.start_multipart(key)
        if record.next_part > S3_MAX_PARTS:
            raise RegistryError(errors.SIZE_INVALID, {"reason": "blob exceeds S3's 10,000 parts"})
        etag = self.blobs.upload_part(key, record.multipart_id, record.next_part, data)
        record.part_chain = _chain(record.part_chain, etag)
        record.next_part += 1

    def append(self, record: UploadRecord, body: BinaryIO, content_range: tuple[int, int] | None,
               content_length: int | None) -> UploadRecord:
        """A PATCH: append a chunk and commit the new progress atomically."""
        if record.direct:
            raise RegistryError(errors.BLOB_UPLOAD_INVALID, {
                "reason": "this upload sends its parts straight to storage; complete it with "
                          "PUT ?digest="})
        expected = self._check_range(record, content_range, content_length)
        before = UploadRecord(**vars(record))
        appended = self._append(record, body, expected, content_range is not None)
        if appended.received == 0:
            return before
        old_tail = before.tail_key
        record.offset = before.offset + appended.received
        record.hash_state = appended.hasher.save() if appended.hasher else None
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

    # -- direct-to-S3 parts (extension) ------------------------------------
    def presign_parts(self, record: UploadRecord, first: int, count: int,
                      ttl: int) -> list[dict[str, Any]]:
        """Presigned UploadPart URLs for parts ``first..first+count-1``.

        Each URL is bound by its signature to this bucket, this upload's
        key, this multipart upload id and one part number, and expires after
        ``ttl`` seconds: a leaked URL can write that one part and nothing else.
        """
        if record.offset or record.tail_key or (record.multipart_id and not record.direct):
            raise RegistryError(errors.BLOB_UPLOAD_INVALID, {
                "reason": "direct parts need a fresh upload: this one already has bytes"})
        if first < 1 or count < 1 or first + count - 1 > S3_MAX_PARTS:
            raise RegistryError(errors.BLOB_UPLOAD_INVALID, {
                "reason": f"part numbers must lie in 1..{S3_MAX_PARTS}",
                "first": first, "count": count})
        key = large_blob_key(record.upload_id)
        if not record.direct:
            created = self.blobs.start_multipart(key)
            claimed = UploadRecord(**{**vars(record), "multipart_id": created, "direct": True,
                                      "hash_state": None})
            try:
                self.meta.save_upload(claimed, expected_offset=0, first_claim=True)
                record = claimed
            except ConditionFailedError:
                self.blobs.abort_multipart(key, created)
                record = self.load(record.name, record.upload_id)
                if not record.direct:
                    raise RegistryError(errors.BLOB_UPLOAD_INVALID, {
                        "reason": "the upload changed meanwhile"}) from None
        assert record.multipart_id is not None
        return [{"partNumber": n,
                 "url": self.blobs.presign_upload_part(key, record.multipart_id, n, ttl)}
                for n in range(first, first + count)]

    # -- completion --------------------------------------------------------
    def complete(self, record: UploadRecord, digest: Digest, body: BinaryIO,
                 content_range: tuple[int, int] | None, content_length: int | None,
                 persisted: bool = True) -> int:
        """Finish an upload: append the final chunk, verify, publish, link.

        Returns the blob size. On a digest mismatch the session is ended and
        its staging removed, as distribution does: nothing becomes visible.
        """
        expected = self._check_range(record, content_range, content_length)
        if record.direct:
            if body.read(1):
                raise RegistryError(errors.BLOB_UPLOAD_INVALID, {
                    "reason": "an upload of direct parts completes with an empty PUT"})
            appended = Appended(0, bytearray(), None)
        else:
            try:
                appended = self._append(record, body, expected, content_range is not None)
            except RegistryError:
                if not persisted:
                    self._discard_staging(record)
                raise
        size = record.offset + appended.received
        try:
            if record.multipart_id is None:
                link = self._publish_small(digest, bytes(appended.buffer), appended.hasher)
                self.meta.link_blob(record.name, str(digest), link, record_object=True)
            else:
                link = self._publish_large(record, digest, appended, size)
                self.meta.link_blob(record.name, str(digest), link)
        except RegistryError:
            if persisted:
                self.meta.delete_upload(record.upload_id)
            self._discard_staging(record)
            raise
        if persisted:
            self.meta.delete_upload(record.upload_id)
        if record.tail_key:
            # the one staging object the record names: a DELETE, not a LIST
            # and a DELETE (a killed request's orphan expires by lifecycle)
            self.blobs.delete(record.tail_key)
        return link.size

    def _publish_small(self, digest: Digest, data: bytes,
                       hasher: ResumableSha256 | None) -> BlobLink:
        if hasher is not None and digest.algorithm == "sha256":
            actual = hasher.hexdigest()
        else:
            check = digest.hasher()
            check.update(data)
            actual = check.hexdigest()
        _verify(digest, actual)
        key = blob_key(digest)
        self.blobs.put(key, data)
        return BlobLink(len(data), key)

    def _publish_large(self, record: UploadRecord, digest: Digest, appended: Appended,
                       size: int) -> BlobLink:
        key = large_blob_key(record.upload_id)
        assert record.multipart_id is not None
        if appended.buffer:
            self._upload_part(record, bytes(appended.buffer))
        parts = sorted(self.blobs.list_parts(key, record.multipart_id),
                       key=lambda p: p["PartNumber"])
        if record.direct:
            size = self._check_direct_parts(parts)
        else:
            parts = [p for p in parts if p["PartNumber"] < record.next_part]
            if sum(p["Size"] for p in parts) != size or len(parts) != record.next_part - 1:
                raise RegistryError(errors.BLOB_UPLOAD_INVALID,
                                    {"reason": "staged parts do not add up; restart the upload"})
            chain = None
            for part in parts:
                chain = _chain(chain, part["ETag"])
            if chain != record.part_chain:  # a concurrent request rewrote a part number
                raise RegistryError(errors.BLOB_UPLOAD_INVALID, {
                    "reason": "a staged part was overwritten by a concurrent request; "
                              "restart the upload"})
        verified_early = appended.hasher is not None and digest.algorithm == "sha256"
        if verified_early:
            _verify(digest, appended.hasher.hexdigest())
            existing = self.meta.stored_blob(str(digest))
            if existing is not None:  # already stored: keep one object
                self.blobs.abort_multipart(key, record.multipart_id)
                record.multipart_id = None
                return existing
        self.blobs.complete_multipart(key, record.multipart_id, parts)
        record.multipart_id = None  # completed: nothing left to abort
        if not verified_early:
            hasher = digest.hasher()
            self.blobs.hash_object(key, size, hasher)
            if hasher.hexdigest() != digest.hex:
                self.blobs.delete(key)
                _verify(digest, hasher.hexdigest())
        winner = self.meta.claim_blob(str(digest), BlobLink(size, key))
        if winner.key != key:
            self.blobs.delete(key)
        return winner

    @staticmethod
    def _check_direct_parts(parts: list[dict[str, Any]]) -> int:
        numbers = [p["PartNumber"] for p in parts]
        if not parts or numbers != list(range(1, len(parts) + 1)):
            raise RegistryError(errors.BLOB_UPLOAD_INVALID, {
                "reason": "direct parts must be numbered 1..N without gaps", "parts": numbers[:50]})
        small = [p["PartNumber"] for p in parts[:-1] if p["Size"] < S3_MIN_PART]
        if small:
            raise RegistryError(errors.BLOB_UPLOAD_INVALID, {
                "reason": "every part but the last must be at least 5 MiB", "parts": small[:50]})
        return sum(p["Size"] for p in parts)


def _chain(previous: bytes | None, etag: str) -> bytes:
    """Extend the chain over part ETags by one part.

    Two requests that start from the same offset upload the same part
    numbers; the one whose conditional write loses may still overwrite a
    part after the winner committed. The hash state would then vouch for
    bytes that are no longer there, so completion checks this chain against
    the parts it lists and completes with exactly those ETags (S3 refuses
    a part changed in between).
    """
    return hashlib.sha256((previous or b"") + etag.strip('"').encode()).digest()


def _verify(digest: Digest, actual_hex: str) -> None:
    if actual_hex != digest.hex:
        raise RegistryError(errors.DIGEST_INVALID,
                            {"expected": str(digest), "actual": f"{digest.algorithm}:{actual_hex}"})
