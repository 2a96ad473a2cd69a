"""boto3 clients, created on first use and reused by every later request.

boto3 is imported here, lazily, so that a cold start pays for it only when
a request first touches storage; clients are cached per region so warm
Lambda invocations reuse their connection pools.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_clients: dict[tuple[str, str], Any] = {}


def client(service: str, region: str) -> Any:
    """A shared boto3 client; endpoints come from boto3's own settings
    (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_DYNAMODB``)."""
    key = (service, region)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"mode": "standard", "max_attempts": 4},
                max_pool_connections=32,
                s3={"addressing_style": "path"},
                signature_version="s3v4" if service == "s3" else None,
            )
            found = boto3.session.Session().client(service, region_name=region, config=config)
            _clients[key] = found
    return found


def reset() -> None:
    """Forget cached clients (tests that change endpoints between cases)."""
    with _lock:
        _clients.clear()
