"""AWS list prices (us-east-1) that the benchmarks turn request counts into dollars with.

Why a module: every section prices with the same figures, and each figure
carries its date and source so a reader can re-check it.

Dates and sources: these are the well-known AWS list prices for us-east-1
(N. Virginia) as published on the aws.amazon.com pricing pages, checked
2026-12. They were not fetched by this code (the benchmarks run offline);
re-check them at the page named beside each constant before relying on a
figure. Free tiers, savings plans, reserved capacity and taxes are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

MILLION = 1_000_000
GB = 1024 ** 3
HOURS_PER_MONTH = 730  # AWS's own convention for a month of on-demand hours

# -- Amazon S3 (https://aws.amazon.com/s3/pricing/, "Requests & data retrievals"
#    and "Storage", S3 Standard; us-east-1, checked 2026-12) -----------------------
S3_PUT_CLASS_PER_MILLION = 5.00   # PUT, COPY, POST, LIST: $0.005 per 1,000
S3_GET_CLASS_PER_MILLION = 0.40   # GET, SELECT and all other requests: $0.0004 per 1,000
S3_STANDARD_GB_MONTH = 0.023      # first 50 TB per month
# DELETE and CANCEL (AbortMultipartUpload) requests are free (same page).

# -- Amazon DynamoDB on-demand (https://aws.amazon.com/dynamodb/pricing/on-demand/,
#    us-east-1, checked 2026-12) -------------------------------------------------------
DDB_WRITE_PER_MILLION_WRU = 0.625  # per million write request units
DDB_READ_PER_MILLION_RRU = 0.125   # per million read request units
DDB_STORAGE_GB_MONTH = 0.25        # Standard table class, after the first 25 GB free
DDB_WRITE_UNIT_BYTES = 1024        # one WRU writes an item of up to 1 KB
DDB_READ_UNIT_BYTES = 4096         # one RRU reads up to 4 KB strongly consistent
DDB_TRANSACTION_FACTOR = 2         # a transactional item costs twice the units

# -- AWS Lambda (https://aws.amazon.com/lambda/pricing/, x86, us-east-1, checked 2026-12)
LAMBDA_PER_MILLION_REQUESTS = 0.20
LAMBDA_GB_SECOND = 0.0000166667
# Assumed per invocation (not measured): 50 ms billed at 512 MB.
LAMBDA_ASSUMED_SECONDS = 0.050
LAMBDA_ASSUMED_GB = 0.5

# -- Amazon API Gateway (https://aws.amazon.com/api-gateway/pricing/, first tier,
#    us-east-1, checked 2026-12) ---------------------------------------------------------
APIGW_REST_PER_MILLION = 3.50  # REST APIs, first 333 million requests per month
APIGW_HTTP_PER_MILLION = 1.00  # HTTP APIs, first 300 million requests per month

# -- Amazon ECR (https://aws.amazon.com/ecr/pricing/, us-east-1, checked 2026-12) -----
ECR_STORAGE_GB_MONTH = 0.10
ECR_TRANSFER_IN_REGION_PER_GB = 0.0  # data transfer within the same region is free

# -- Amazon EC2 (https://aws.amazon.com/ec2/pricing/on-demand/, Linux, us-east-1,
#    checked 2026-12): the always-on server a self-hosted registry needs ------------------
EC2_T4G_SMALL_HOUR = 0.0168  # 2 vCPU (Graviton2), 2 GiB; EBS volume not included

# S3 operation names (as S3CountingProxy and botocore name them) by billing class.
S3_PUT_CLASS = frozenset({
    "PutObject", "CopyObject", "PostObject", "UploadPart", "UploadPartCopy",
    "CreateMultipartUpload", "CompleteMultipartUpload", "ListObjects", "ListObjectsV2",
    "ListObjectVersions", "ListParts", "ListMultipartUploads", "ListBuckets",
    "CreateBucket", "PutBucketLifecycleConfiguration", "PutBucketPolicy",
})
S3_FREE = frozenset({"DeleteObject", "DeleteObjects", "AbortMultipartUpload", "DeleteBucket"})


def s3_class(operation: str) -> str:
    """``put``, ``get`` or ``free``: S3 bills every request not PUT-class or free as GET-class."""
    if operation in S3_PUT_CLASS:
        return "put"
    if operation in S3_FREE:
        return "free"
    return "get"


def s3_classes(counts: Mapping[str, float]) -> dict[str, float]:
    """S3 request counts by operation → counts by billing class."""
    out = {"put": 0.0, "get": 0.0, "free": 0.0}
    for operation, n in counts.items():
        out[s3_class(operation)] += n
    return out


def s3_requests_cost(counts: Mapping[str, float]) -> float:
    """Dollars for S3 requests given as {operation: count}."""
    classes = s3_classes(counts)
    return (classes["put"] * S3_PUT_CLASS_PER_MILLION
            + classes["get"] * S3_GET_CLASS_PER_MILLION) / MILLION


def ddb_cost(read_units: float, write_units: float) -> float:
    """Dollars for on-demand DynamoDB request units."""
    return (read_units * DDB_READ_PER_MILLION_RRU
            + write_units * DDB_WRITE_PER_MILLION_WRU) / MILLION


def ddb_write_units(item_bytes: int, transactional: bool = False) -> int:
    """WRUs of one item write: 1 per started KB (at least 1), twice in a transaction."""
    units = max(1, math.ceil(item_bytes / DDB_WRITE_UNIT_BYTES))
    return units * (DDB_TRANSACTION_FACTOR if transactional else 1)


def ddb_read_units(item_bytes: int, transactional: bool = False) -> int:
    """RRUs of one strongly consistent read: 1 per started 4 KB (at least 1)."""
    units = max(1, math.ceil(item_bytes / DDB_READ_UNIT_BYTES))
    return units * (DDB_TRANSACTION_FACTOR if transactional else 1)


def lambda_cost(invocations: float, seconds: float = LAMBDA_ASSUMED_SECONDS,
                memory_gb: float = LAMBDA_ASSUMED_GB) -> float:
    """Dollars for Lambda invocations: request charge plus GB-seconds."""
    return invocations * (LAMBDA_PER_MILLION_REQUESTS / MILLION
                          + seconds * memory_gb * LAMBDA_GB_SECOND)


def apigw_cost(requests: float, http_api: bool = False) -> float:
    """Dollars for API Gateway requests (REST API unless ``http_api``)."""
    per_million = APIGW_HTTP_PER_MILLION if http_api else APIGW_REST_PER_MILLION
    return requests * per_million / MILLION


def s3_storage_cost(gb: float) -> float:
    """Dollars per month for ``gb`` in S3 Standard."""
    return gb * S3_STANDARD_GB_MONTH


def ecr_storage_cost(gb: float) -> float:
    """Dollars per month for ``gb`` in ECR (pulls within the region are free)."""
    return gb * ECR_STORAGE_GB_MONTH


def ec2_month(hourly: float = EC2_T4G_SMALL_HOUR) -> float:
    """Dollars for one always-on on-demand instance for a month (730 h)."""
    return hourly * HOURS_PER_MONTH


def price_counts(counts: Mapping[str, Any]) -> dict[str, float]:
    """Dollars per line of a count dict with any of the keys ``s3`` (a mapping
    of S3 operation → count), ``rru``, ``wru``, ``lambda`` (invocations),
    ``apigw`` (REST requests), ``apigw_http``; plus ``total``."""
    out: dict[str, float] = {}
    s3 = counts.get("s3")
    if isinstance(s3, Mapping):
        out["s3"] = s3_requests_cost(s3)
    if "rru" in counts or "wru" in counts:
        out["dynamodb"] = ddb_cost(float(counts.get("rru", 0)), float(counts.get("wru", 0)))
    if "lambda" in counts:
        out["lambda"] = lambda_cost(float(counts["lambda"]))
    if "apigw" in counts:
        out["apigw"] = apigw_cost(float(counts["apigw"]))
    if "apigw_http" in counts:
        out["apigw_http"] = apigw_cost(float(counts["apigw_http"]), http_api=True)
    out["total"] = sum(out.values())
    return out
