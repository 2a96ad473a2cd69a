"""Settings, read once from the environment.

Every knob is an environment variable so that the Lambda stage
(``.chalice/config.json``), ``make run`` and tests configure the same code
the same way. The README lists them all.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def _key_from_parameter() -> str:
    """The HMAC key from SSM Parameter Store (SecureString), as deployed by
    ``infra/template.yaml``: the key never sits in Lambda's plain config."""
    name = os.environ.get("CARGOHOLD_HMAC_KEY_PARAMETER")
    if not name:
        return ""
    from .storage.clients import client

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    reply = client("ssm", region).get_parameter(Name=name, WithDecryption=True)
    return reply["Parameter"]["Value"]


@dataclass(frozen=True)
class Settings:
    bucket: str
    table: str
    region: str
    hmac_key: bytes
    hmac_key_is_ephemeral: bool
    blob_redirects: bool
    redirect_ttl: int
    upload_ttl: int
    delete_enabled: bool
    page_cap: int
    part_size: int
    chunk_min_length: int
    function_limits: bool
    max_body: int
    part_url_ttl: int

    @classmethod
    def from_env(cls, *, blob_redirects_default: bool,
                 function_limits_default: bool = False) -> Settings:
        """Settings for one door; redirects and function limits default by door.

        Without ``CARGOHOLD_HMAC_KEY`` a random key is made: uploads then
        work only within this one process, which suits a laptop and nothing
        else (the Lambda stage always sets the key).
        """
        key_text = os.environ.get("CARGOHOLD_HMAC_KEY", "") or _key_from_parameter()
        part_size = _int("CARGOHOLD_PART_SIZE", 8 * 1024 * 1024)
        if part_size < 5 * 1024 * 1024:
            raise ValueError("CARGOHOLD_PART_SIZE must be at least 5 MiB (S3's minimum part)")
        return cls(
            bucket=os.environ.get("CARGOHOLD_BUCKET", "cargohold-blobs"),
            table=os.environ.get("CARGOHOLD_TABLE", "cargohold"),
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            or "us-east-1",
            hmac_key=key_text.encode() if key_text else secrets.token_bytes(32),
            hmac_key_is_ephemeral=not key_text,
            blob_redirects=_flag("CARGOHOLD_BLOB_REDIRECTS", blob_redirects_default),
            redirect_ttl=_int("CARGOHOLD_REDIRECT_TTL_SECONDS", 300),
            upload_ttl=_int("CARGOHOLD_UPLOAD_TTL_SECONDS", 24 * 3600),
            delete_enabled=_flag("CARGOHOLD_DELETE_ENABLED", True),
            page_cap=_int("CARGOHOLD_PAGE_CAP", 1000),
            part_size=part_size,
            chunk_min_length=_int("CARGOHOLD_CHUNK_MIN_LENGTH", 5 * 1024 * 1024),
            function_limits=_flag("CARGOHOLD_FUNCTION_LIMITS", function_limits_default),
            # API Gateway hands Lambda at most 6 MB, base64-encoded: 4 MiB of
            # raw body plus headers fits with room to spare.
            max_body=_int("CARGOHOLD_MAX_BODY_BYTES", 4 * 1024 * 1024),
            part_url_ttl=_int("CARGOHOLD_PART_URL_TTL_SECONDS", 900),
        )
