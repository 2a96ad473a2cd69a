"""Create the bucket and table the registry needs (local emulation, tests).

On AWS the same resources come from ``infra/template.yaml``; this module
mirrors it for ``make run`` and the tests, so both see the same shape:
the table's key schema and TTL, and the bucket's lifecycle rule that
aborts abandoned multipart uploads and expires staging objects.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from .clients import client

log = logging.getLogger(__name__)

STAGING_EXPIRY_DAYS = 2


def create_bucket(bucket: str, region: str) -> None:
    s3 = client("s3", region)
    args: dict = {"Bucket": bucket}
    if region != "us-east-1":
        args["CreateBucketConfiguration"] = {"LocationConstraint": region}
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(**args)
    try:
        _expire_abandoned_uploads(s3, bucket)
    except s3.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NotImplemented":
            raise
        log.warning("bucket %s: this S3 has no lifecycle rules; run "
                    "`python -m chalicelib.cleanup` to remove abandoned uploads", bucket)


def _expire_abandoned_uploads(s3: Any, bucket: str) -> None:
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
        {"ID": "abandoned-staging", "Status": "Enabled", "Filter": {"Prefix": "uploads/"},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": STAGING_EXPIRY_DAYS},
         "Expiration": {"Days": STAGING_EXPIRY_DAYS}},
        {"ID": "abandoned-multipart", "Status": "Enabled", "Filter": {"Prefix": "blobs/large/"},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": STAGING_EXPIRY_DAYS}},
    ]})


def create_table(table: str, region: str) -> None:
    ddb = client("dynamodb", region)
    try:
        ddb.create_table(
            TableName=table, BillingMode="PAY_PER_REQUEST",
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                  {"AttributeName": "sk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                       {"AttributeName": "sk", "KeyType": "RANGE"}])
    except ddb.exceptions.ResourceInUseException:
        return
    ddb.get_waiter("table_exists").wait(TableName=table)
    ddb.update_time_to_live(TableName=table, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": "ttl"})


def provision(bucket: str, table: str, region: str) -> None:
    create_bucket(bucket, region)
    create_table(table, region)
