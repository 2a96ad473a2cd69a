"""Client-side errors, kept apart from the registry's own error codes.

    ClientError
    ├── TransportError          the registry could not be reached or the connection broke
    ├── AuthenticationError     credentials missing or refused (after following the challenge)
    ├── DigestMismatchError     content did not hash to the digest it was fetched by
    ├── ProtocolError           the registry answered something the protocol does not allow
    └── RegistryResponseError   the registry answered with an OCI error envelope
"""

from __future__ import annotations

from typing import Any

from ..core.errors import ErrorCode, lookup, parse_envelope


class ClientError(Exception):
    """Base of every error the client raises."""


class TransportError(ClientError):
    """The registry could not be reached, or the connection broke mid-way."""


class AuthenticationError(ClientError):
    """Credentials are missing or were refused."""


class DigestMismatchError(ClientError):
    """Downloaded or supplied content does not match its digest."""


class ProtocolError(ClientError):
    """The registry answered in a way the Distribution API does not allow."""


class RegistryResponseError(ClientError):
    """An OCI error envelope, parsed into the core's registered error codes."""

    def __init__(self, status: int, method: str, url: str, body: bytes) -> None:
        self.status = status
        self.method = method
        self.url = url
        self.errors: list[tuple[ErrorCode, str, Any]] = [
            (lookup(e["code"]), str(e.get("message", "")), e.get("detail"))
            for e in parse_envelope(body)]
        self.codes = [e.get("code") for e in parse_envelope(body)]
        first = self.errors[0] if self.errors else None
        summary = (f"{self.codes[0]}: {first[1]}" if first else
                   body[:200].decode("utf-8", "replace") or "no error body")
        detail = first[2] if first else None
        reason = detail.get("reason") if isinstance(detail, dict) else None
        super().__init__(f"{method} {url}: {status} {summary}" + (f" ({reason})" if reason else ""))

    @property
    def code(self) -> str | None:
        return self.codes[0] if self.codes else None
