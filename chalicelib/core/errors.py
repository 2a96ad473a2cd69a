"""The one error registry of the Distribution API.

Handlers raise :class:`RegistryError` with a registered code; exactly one
place (:func:`envelope`) turns errors into the JSON body clients parse, so
no handler ever formats an error response itself.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ErrorCode:
    """A registered error: its wire code, default message and HTTP status."""

    code: str
    message: str
    description: str
    status: int


REGISTRY: dict[str, ErrorCode] = {}


def _register(code: str, message: str, status: int, description: str) -> ErrorCode:
    error = ErrorCode(code, message, description, status)
    if code in REGISTRY:
        raise ValueError(f"error code {code} registered twice")
    REGISTRY[code] = error
    return error


BLOB_UNKNOWN = _register(
    "BLOB_UNKNOWN", "blob unknown to registry", 404,
    "The blob is not stored in, or not linked to, this repository.")
BLOB_UPLOAD_INVALID = _register(
    "BLOB_UPLOAD_INVALID", "blob upload invalid", 400,
    "The upload state token is malformed, tampered with, expired, issued for "
    "another repository or upload, or replays an old offset.")
BLOB_UPLOAD_UNKNOWN = _register(
    "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", 404,
    "The upload was never started, has completed, was cancelled or expired.")
DIGEST_INVALID = _register(
    "DIGEST_INVALID", "provided digest did not match uploaded content", 400,
    "The digest is malformed, or the content does not hash to it.")
MANIFEST_BLOB_UNKNOWN = _register(
    "MANIFEST_BLOB_UNKNOWN", "manifest references a manifest or blob unknown to registry", 400,
    "A config, layer or child manifest named by the manifest is not in the repository.")
MANIFEST_INVALID = _register(
    "MANIFEST_INVALID", "manifest invalid", 400,
    "The manifest is not valid JSON, is ambiguous, disagrees with its "
    "Content-Type, or breaks the rules of its media type.")
MANIFEST_UNKNOWN = _register(
    "MANIFEST_UNKNOWN", "manifest unknown to registry", 404,
    "No manifest with this tag or digest in the repository (or none of an "
    "accepted media type).")
MANIFEST_UNVERIFIED = _register(
    "MANIFEST_UNVERIFIED", "manifest failed signature verification", 400,
    "A signed manifest's signature does not verify.")
NAME_INVALID = _register(
    "NAME_INVALID", "invalid repository name", 400,
    "The repository name breaks the grammar or is longer than 255 characters.")
NAME_UNKNOWN = _register(
    "NAME_UNKNOWN", "repository name not known to registry", 404,
    "The repository has no tags, manifests or blobs.")
SIZE_INVALID = _register(
    "SIZE_INVALID", "provided length did not match content length", 400,
    "A declared size disagrees with the bytes received, or a body is too large.")
TAG_INVALID = _register(
    "TAG_INVALID", "manifest tag did not match URI", 400,
    "The tag breaks the tag grammar.")
UNAUTHORIZED = _register(
    "UNAUTHORIZED", "authentication required", 401,
    "The request needs credentials.")
DENIED = _register(
    "DENIED", "requested access to the resource is denied", 403,
    "The credentials do not allow this operation.")
UNSUPPORTED = _register(
    "UNSUPPORTED", "the operation is unsupported", 405,
    "The method or feature is not supported by this registry or route.")
TOOMANYREQUESTS = _register(
    "TOOMANYREQUESTS", "too many requests", 429,
    "The client is sending too many requests.")
PAGINATION_NUMBER_INVALID = _register(
    "PAGINATION_NUMBER_INVALID", "invalid number of results requested", 400,
    "The n parameter is not a non-negative integer.")
RANGE_INVALID = _register(
    "RANGE_INVALID", "invalid content range", 416,
    "A Content-Range or Range header is malformed, out of order or unsatisfiable.")
BODY_TOO_LARGE = _register(
    "SIZE_INVALID_BODY", "request body too large", 413,
    "A manifest above 4 MiB, or (in function-limits mode) an upload body above "
    "the advertised OCI-Chunk-Max-Length.")
UNKNOWN = _register(
    "UNKNOWN", "unknown error", 500,
    "An unexpected failure inside the registry; nothing was changed.")

# The wire code of BODY_TOO_LARGE is SIZE_INVALID (clients know no other),
# registered under its own key only so that it can carry status 413.
_WIRE_CODES = {"SIZE_INVALID_BODY": "SIZE_INVALID"}


class RegistryError(Exception):
    """One or more registry errors answered with a single status.

    ``headers`` lets an error carry protocol headers the client needs to
    recover, e.g. ``Range`` on a 416 so an upload can resume.
    """

    def __init__(
        self,
        error: ErrorCode,
        detail: Any = None,
        *,
        message: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.errors: list[tuple[ErrorCode, str, Any]] = [
            (error, message or error.message, detail)]
        self.status = status or error.status
        self.headers = dict(headers or {})
        super().__init__(f"{error.code}: {message or error.message}")

    def add(self, error: ErrorCode, detail: Any = None, message: str | None = None) -> None:
        """Attach another error of the same response (e.g. one per missing blob)."""
        self.errors.append((error, message or error.message, detail))

    def to_wire(self) -> dict[str, Any]:
        return envelope(self.errors)


def envelope(errors: list[tuple[ErrorCode, str, Any]]) -> dict[str, Any]:
    """The ``{"errors":[{"code","message","detail"}]}`` body of a failure."""
    return {
        "errors": [
            {"code": _WIRE_CODES.get(e.code, e.code), "message": message,
             "detail": detail if detail is not None else {}}
            for e, message, detail in errors
        ]
    }


def envelope_bytes(error: RegistryError) -> bytes:
    return json.dumps(error.to_wire(), separators=(",", ":")).encode()


def parse_envelope(body: bytes | str) -> list[dict[str, Any]]:
    """Read an error body from any registry; tolerant of missing fields."""
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        return []
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return []
    return [e for e in errors if isinstance(e, dict) and isinstance(e.get("code"), str)]


def lookup(code: str) -> ErrorCode:
    """The registered error for a wire code; UNKNOWN for codes we never issue."""
    return REGISTRY.get(code, UNKNOWN)
