"""Signed upload state carried in the upload ``Location`` (``_state``).

Any instance that shares the HMAC key can check that a request continues
an upload it was told about: the token binds repository, upload id, offset
and expiry. Format: base64url(HMAC-SHA256(key, payload) ‖ payload), where
payload is compact JSON, the only thing ever deserialised from it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from ..core import errors
from ..core.errors import RegistryError

MAC_SIZE = 32
MAX_TOKEN_LENGTH = 2048


@dataclass(frozen=True)
class UploadState:
    name: str
    upload_id: str
    offset: int
    expires: int


def pack(key: bytes, state: UploadState) -> str:
    payload = json.dumps({"n": state.name, "u": state.upload_id, "o": state.offset,
                          "e": state.expires}, separators=(",", ":")).encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def _invalid(reason: str) -> RegistryError:
    return RegistryError(errors.BLOB_UPLOAD_INVALID, {"reason": reason})


def unpack(key: bytes, token: str | None, *, now: float | None = None) -> UploadState:
    """Verify and decode a token; every failure is BLOB_UPLOAD_INVALID."""
    if not token:
        raise _invalid("missing upload state (_state)")
    if len(token) > MAX_TOKEN_LENGTH:
        raise _invalid("upload state too long")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, TypeError):
        raise _invalid("upload state is not base64url") from None
    mac, payload = raw[:MAC_SIZE], raw[MAC_SIZE:]
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    if len(mac) != MAC_SIZE or not hmac.compare_digest(mac, expected):
        raise _invalid("upload state signature does not verify")
    try:
        data = json.loads(payload)
        state = UploadState(str(data["n"]), str(data["u"]), int(data["o"]), int(data["e"]))
    except (ValueError, KeyError, TypeError):
        raise _invalid("upload state payload is malformed") from None
    if state.expires < (time.time() if now is None else now):
        raise _invalid("upload state has expired")
    return state
