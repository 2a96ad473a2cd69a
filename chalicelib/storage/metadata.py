"""Registry metadata in one DynamoDB table (pk, sk strings; ttl number).

Item layout, chosen so that every read a handler makes is one GetItem or
one Query:

=====================  ===========================  =========================
pk                     sk                           holds
=====================  ===========================  =========================
``repos``              ``<name>``                   catalog entry
``blob#<digest>``      ``blob``                     the one S3 object of a
                                                    digest: key, size (dedup)
``repo#<name>``        ``blob#<digest>``            blob link: size, S3 key
``repo#<name>``        ``manifest#<digest>``        media type, size, bytes
                                                    (or ``in_s3``), subject
``repo#<name>``        ``tag#<tag>``                digest, media type, size
``repo#<name>``        ``referrer#<subj>#<digest>`` referrers descriptor
``upload#<id>``        ``upload``                   upload progress, ``ttl``
=====================  ===========================  =========================

Manifests larger than :data:`INLINE_MANIFEST_LIMIT` keep their bytes in S3
under the blob key, because a DynamoDB item holds at most 400 KB.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .clients import client

INLINE_MANIFEST_LIMIT = 300 * 1024
CATALOG_PK = "repos"


def repo_pk(name: str) -> str:
    return f"repo#{name}"


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: int) -> dict[str, str]:
    return {"N": str(value)}


@dataclass
class ManifestRecord:
    digest: str
    media_type: str
    size: int
    body: bytes | None
    subject: str | None = None


@dataclass
class TagRecord:
    tag: str
    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class BlobLink:
    """Where a repository's blob lives: its size and S3 object key."""

    size: int
    key: str


@dataclass
class UploadRecord:
    """Progress of one upload session; all a fresh instance needs to continue it.

    ``hash_state`` is the resumable SHA-256 state over bytes ``[0, offset)``;
    ``direct`` marks a session whose parts clients PUT straight to S3, whose
    bytes the registry never saw (so it has no hash state). ``part_chain``
    is SHA-256 chained over the ETags of parts ``1..next_part-1`` as this
    upload uploaded them, so completion can tell that no concurrent request
    has overwritten one of them since.
    """

    upload_id: str
    name: str
    offset: int = 0
    multipart_id: str | None = None
    next_part: int = 1
    tail_key: str | None = None
    tail_size: int = 0
    hash_state: bytes | None = None
    direct: bool = False
    expires: int = 0
    part_chain: bytes | None = None

    def to_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "pk": _s(f"upload#{self.upload_id}"), "sk": _s("upload"),
            "name": _s(self.name), "offset": _n(self.offset), "next_part": _n(self.next_part),
            "tail_size": _n(self.tail_size), "ttl": _n(self.expires),
        }
        for attr in ("multipart_id", "tail_key"):
            value = getattr(self, attr)
            if value is not None:
                item[attr] = _s(value)
        if self.hash_state is not None:
            item["hash_state"] = {"B": self.hash_state}
        if self.part_chain is not None:
            item["part_chain"] = {"B": self.part_chain}
        if self.direct:
            item["direct"] = {"BOOL": True}
        return item

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> UploadRecord:
        return cls(
            upload_id=item["pk"]["S"].split("#", 1)[1],
            name=item["name"]["S"],
            offset=int(item["offset"]["N"]),
            multipart_id=item.get("multipart_id", {}).get("S"),
            next_part=int(item["next_part"]["N"]),
            tail_key=item.get("tail_key", {}).get("S"),
            tail_size=int(item["tail_size"]["N"]),
            hash_state=item["hash_state"]["B"] if "hash_state" in item else None,
            direct=item.get("direct", {}).get("BOOL", False),
            expires=int(item["ttl"]["N"]),
            part_chain=item["part_chain"]["B"] if "part_chain" in item else None,
        )


class ConditionFailedError(Exception):
    """A conditional write lost a race (or its precondition no longer holds)."""


class MetadataStore:
    """Everything but blob bytes, in one DynamoDB table."""

    def __init__(self, table: str, region: str) -> None:
        self.table = table
        self.region = region

    @property
    def ddb(self) -> Any:
        return client("dynamodb", self.region)

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        """Strongly consistent, like every read here: a client that has just
        pushed (or deleted) must see it on its next request."""
        reply = self.ddb.get_item(TableName=self.table, Key={"pk": _s(pk), "sk": _s(sk)},
                                  ConsistentRead=True)
        return reply.get("Item")

    def _delete_existing(self, pk: str, sk: str) -> bool:
        """Delete an item; False (and nothing done) when it was not there."""
        from botocore.exceptions import ClientError

        try:
            self.ddb.delete_item(TableName=self.table, Key={"pk": _s(pk), "sk": _s(sk)},
                                 ConditionExpression="attribute_exists(pk)")
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True

    def _query_prefix(self, pk: str, prefix: str, after: str | None = None,
                      limit: int | None = None) -> list[dict[str, Any]]:
        """Items of one partition whose sk starts with ``prefix``, in order.

        ``after`` skips up to and including that sk suffix; ``limit`` bounds
        the items returned (pages are followed until it is reached).
        """
        low = prefix + (after or "")
        high = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        items: list[dict[str, Any]] = []
        start_key = None
        while True:
            args: dict[str, Any] = {
                "TableName": self.table,
                "KeyConditionExpression": "pk = :pk AND sk BETWEEN :lo AND :hi",
                "ExpressionAttributeValues": {":pk": _s(pk), ":lo": _s(low), ":hi": _s(high)},
                "ConsistentRead": True,
            }
            if limit is not None:
                args["Limit"] = limit - len(items) + (1 if after else 0)
            if start_key:
                args["ExclusiveStartKey"] = start_key
            reply = self.ddb.query(**args)
            for item in reply.get("Items", []):
                if after is not None and item["sk"]["S"] == low:
                    continue
                if item["sk"]["S"] == high:
                    continue
                items.append(item)
            start_key = reply.get("LastEvaluatedKey")
            if not start_key or (limit is not None and len(items) >= limit):
                return items[:limit] if limit is not None else items

    # -- repositories and blob links ---------------------------------------
    def repository_exists(self, name: str) -> bool:
        return self._get(CATALOG_PK, name) is not None

    def list_repositories(self, after: str | None, limit: int | None) -> list[str]:
        return [item["sk"]["S"] for item in self._query_all(CATALOG_PK, after, limit)]

    def _query_all(self, pk: str, after: str | None, limit: int | None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        start_key = None
        while True:
            args: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True,
                                    "ExpressionAttributeValues": {":pk": _s(pk)}}
            if after is not None:
                args["KeyConditionExpression"] = "pk = :pk AND sk > :after"
                args["ExpressionAttributeValues"][":after"] = _s(after)
            else:
                args["KeyConditionExpression"] = "pk = :pk"
            if limit is not None:
                args["Limit"] = limit - len(items)
            if start_key:
                args["ExclusiveStartKey"] = start_key
            reply = self.ddb.query(**args)
            items.extend(reply.get("Items", []))
            start_key = reply.get("LastEvaluatedKey")
            if not start_key or (limit is not None and len(items) >= limit):
                return items

    def blob_link(self, name: str, digest: str) -> BlobLink | None:
        item = self._get(repo_pk(name), f"blob#{digest}")
        if item is None:
            return None
        return BlobLink(int(item["size"]["N"]), item["key"]["S"])

    def stored_blob(self, digest: str) -> BlobLink | None:
        """The registry-wide object of a digest, if any repository has it."""
        item = self._get(f"blob#{digest}", "blob")
        return BlobLink(int(item["size"]["N"]), item["key"]["S"]) if item else None

    def claim_blob(self, digest: str, link: BlobLink) -> BlobLink:
        """Record ``link`` as the object of ``digest`` unless one already is;
        returns the winner, so two uploads of one digest keep one object."""
        from botocore.exceptions import ClientError

        try:
            self.ddb.put_item(TableName=self.table, Item={
                "pk": _s(f"blob#{digest}"), "sk": _s("blob"), "size": _n(link.size),
                "key": _s(link.key), "created": _n(int(time.time()))},
                ConditionExpression="attribute_not_exists(pk)")
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            existing = self.stored_blob(digest)
            if existing is not None:
                return existing
        return link

    def link_blob(self, name: str, digest: str, link: BlobLink,
                  record_object: bool = False) -> None:
        """Link a blob to a repository and list the repository in the catalog
        (and, for a content-addressed object, record it registry-wide)."""
        now = _n(int(time.time()))
        puts = [
            {"pk": _s(repo_pk(name)), "sk": _s(f"blob#{digest}"), "size": _n(link.size),
             "key": _s(link.key), "created": now},
            {"pk": _s(CATALOG_PK), "sk": _s(name), "created": now},
        ]
        if record_object:
            puts.append({"pk": _s(f"blob#{digest}"), "sk": _s("blob"), "size": _n(link.size),
                         "key": _s(link.key), "created": now})
        pending: dict[str, Any] = {self.table: [{"PutRequest": {"Item": i}} for i in puts]}
        while pending:
            reply = self.ddb.batch_write_item(RequestItems=pending)
            pending = reply.get("UnprocessedItems") or {}

    def unlink_blob(self, name: str, digest: str) -> bool:
        return self._delete_existing(repo_pk(name), f"blob#{digest}")

    def missing(self, name: str, blobs: Iterable[str], manifests: Iterable[str]) -> list[str]:
        """Which of the given blob and manifest digests the repository lacks."""
        wanted = {f"blob#{d}": d for d in blobs}
        wanted.update({f"manifest#{d}": d for d in manifests})
        found: set[str] = set()
        keys = [{"pk": _s(repo_pk(name)), "sk": _s(sk)} for sk in wanted]
        for i in range(0, len(keys), 100):
            pending: dict[str, Any] = {self.table: {"Keys": keys[i:i + 100],
                                                    "ProjectionExpression": "sk",
                                                    "ConsistentRead": True}}
            while pending:
                reply = self.ddb.batch_get_item(RequestItems=pending)
                found.update(item["sk"]["S"] for item in reply["Responses"].get(self.table, []))
                pending = reply.get("UnprocessedKeys") or {}
        return [digest for sk, digest in wanted.items() if sk not in found]

    # -- manifests and tags ------------------------------------------------
    def put_manifest(self, name: str, record: ManifestRecord, tag: str | None,
                     referrer: tuple[str, dict[str, Any]] | None) -> None:
        """Store a manifest, its tag and its referrers entry in one transaction,
        so that a tag never points to a manifest that is not there."""
        pk = _s(repo_pk(name))
        now = _n(int(time.time()))
        manifest_item: dict[str, Any] = {
            "pk": pk, "sk": _s(f"manifest#{record.digest}"),
            "media_type": _s(record.media_type), "size": _n(record.size), "created": now,
        }
        if record.body is not None:
            manifest_item["body"] = {"B": record.body}
        else:
            manifest_item["in_s3"] = {"BOOL": True}
        if record.subject:
            manifest_item["subject"] = _s(record.subject)
        items = [{"Put": {"TableName": self.table, "Item": manifest_item}},
                 {"Put": {"TableName": self.table,
                          "Item": {"pk": _s(CATALOG_PK), "sk": _s(name), "created": now}}}]
        if tag is not None:
            items.append({"Put": {"TableName": self.table, "Item": {
                "pk": pk, "sk": _s(f"tag#{tag}"), "digest": _s(record.digest),
                "media_type": _s(record.media_type), "size": _n(record.size), "updated": now}}})
        if referrer is not None:
            subject, descriptor = referrer
            items.append({"Put": {"TableName": self.table, "Item": {
                "pk": pk, "sk": _s(f"referrer#{subject}#{record.digest}"),
                "descriptor": _s(json.dumps(descriptor, separators=(",", ":")))}}})
        self.ddb.transact_write_items(TransactItems=items)

    def get_manifest(self, name: str, digest: str) -> ManifestRecord | None:
        item = self._get(repo_pk(name), f"manifest#{digest}")
        if item is None:
            return None
        return ManifestRecord(
            digest=digest, media_type=item["media_type"]["S"], size=int(item["size"]["N"]),
            body=item["body"]["B"] if "body" in item else None,
            subject=item.get("subject", {}).get("S"))

    def get_tag(self, name: str, tag: str) -> TagRecord | None:
        item = self._get(repo_pk(name), f"tag#{tag}")
        if item is None:
            return None
        return TagRecord(tag, item["digest"]["S"], item["media_type"]["S"], int(item["size"]["N"]))

    def list_tags(self, name: str, after: str | None, limit: int | None) -> list[str]:
        items = self._query_prefix(repo_pk(name), "tag#", after, limit)
        return [item["sk"]["S"][len("tag#"):] for item in items]

    def delete_tag(self, name: str, tag: str) -> bool:
        return self._delete_existing(repo_pk(name), f"tag#{tag}")

    def delete_manifest(self, name: str, record: ManifestRecord) -> None:
        """Delete a manifest with every tag that points to it and its referrers entry."""
        pk = repo_pk(name)
        keys = [f"manifest#{record.digest}"]
        keys += [item["sk"]["S"] for item in self._query_prefix(pk, "tag#")
                 if item["digest"]["S"] == record.digest]
        if record.subject:
            keys.append(f"referrer#{record.subject}#{record.digest}")
        requests = [{"DeleteRequest": {"Key": {"pk": _s(pk), "sk": _s(sk)}}} for sk in keys]
        for i in range(0, len(requests), 25):
            pending: dict[str, Any] = {self.table: requests[i:i + 25]}
            while pending:
                reply = self.ddb.batch_write_item(RequestItems=pending)
                pending = reply.get("UnprocessedItems") or {}

    def referrers(self, name: str, subject: str) -> list[dict[str, Any]]:
        items = self._query_prefix(repo_pk(name), f"referrer#{subject}#")
        return [json.loads(item["descriptor"]["S"]) for item in items]

    # -- upload sessions ---------------------------------------------------
    def create_upload(self, record: UploadRecord) -> None:
        self.ddb.put_item(TableName=self.table, Item=record.to_item(),
                          ConditionExpression="attribute_not_exists(pk)")

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        item = self._get(f"upload#{upload_id}", "upload")
        if item is None:
            return None
        record = UploadRecord.from_item(item)
        if record.expires and record.expires < time.time():
            return None  # DynamoDB TTL deletes lazily; expired is gone to us
        return record

    def save_upload(self, record: UploadRecord, expected_offset: int,
                    first_claim: bool = False) -> None:
        """Replace an upload's progress only if nobody advanced it meanwhile
        (and, with ``first_claim``, only if it has no multipart upload yet)."""
        from botocore.exceptions import ClientError

        condition = "#o = :expected"
        if first_claim:
            condition += " AND attribute_not_exists(multipart_id)"
        try:
            self.ddb.put_item(TableName=self.table, Item=record.to_item(),
                              ConditionExpression=condition,
                              ExpressionAttributeNames={"#o": "offset"},
                              ExpressionAttributeValues={":expected": _n(expected_offset)})
        except ClientError as exc:
            if _is_condition_failure(exc):
                raise ConditionFailedError(record.upload_id) from None
            raise

    def delete_upload(self, upload_id: str) -> bool:
        return self._delete_existing(f"upload#{upload_id}", "upload")


def _is_condition_failure(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return code == "ConditionalCheckFailedException"
