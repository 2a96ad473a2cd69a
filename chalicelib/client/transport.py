"""How the client moves bytes: over HTTP, or straight into an app in-process.

A transport takes plain values and returns a :class:`RawResponse` whose
body is read as a stream; the client above it never knows which one it has.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol
from urllib.parse import urlsplit

from ..core.http import Headers, Request, Response
from .errors import TransportError

Body = bytes | BinaryIO | Iterable[bytes] | None


@dataclass
class RawResponse:
    status: int
    headers: Headers
    chunks: Iterator[bytes]
    close: Callable[[], None]

    def read(self) -> bytes:
        try:
            return b"".join(self.chunks)
        finally:
            self.close()


class Transport(Protocol):
    def send(self, method: str, url: str, headers: dict[str, str], body: Body = None,
             ) -> RawResponse: ...


class HttpTransport:
    """HTTP(S) through urllib3 (already a dependency of boto3), pooled."""

    def __init__(self, timeout: float = 300.0, verify_tls: bool = True,
                 pool_size: int = 16) -> None:
        import urllib3

        self._urllib3 = urllib3
        self._pool = urllib3.PoolManager(
            maxsize=pool_size, cert_reqs="CERT_REQUIRED" if verify_tls else "CERT_NONE",
            timeout=urllib3.Timeout(connect=30.0, read=timeout), retries=False)

    def send(self, method: str, url: str, headers: dict[str, str], body: Body = None,
             ) -> RawResponse:
        chunked = body is not None and not isinstance(body, bytes) and \
            "Content-Length" not in headers
        if hasattr(body, "read") and not chunked:
            payload: Any = body
        elif hasattr(body, "read"):
            payload = _iter_file(body)  # type: ignore[arg-type]
        else:
            payload = body
        try:
            reply = self._pool.request(method, url, body=payload, headers=headers,
                                       preload_content=False, redirect=False, chunked=chunked)
        except self._urllib3.exceptions.HTTPError as exc:
            raise TransportError(f"{method} {url}: {exc}") from exc
        response_headers = Headers(list(reply.headers.items()))

        def chunks() -> Iterator[bytes]:
            try:
                yield from reply.stream(1024 * 1024, decode_content=False)
            except self._urllib3.exceptions.HTTPError as exc:
                raise TransportError(f"{method} {url}: {exc}") from exc

        def finish() -> None:
            if not reply.closed:  # abandoned mid-body: its connection must not be reused
                reply.close()
            reply.release_conn()

        return RawResponse(reply.status, response_headers, chunks(), finish)


def _iter_file(stream: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    while True:
        data = stream.read(size)
        if not data:
            return
        yield data


class _IterReader(io.RawIOBase):
    """A file-like view of an iterable of byte chunks (for in-process bodies)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = bytearray(self._pending)
        while n < 0 or len(out) < n:
            try:
                out += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            self._pending = b""
            return bytes(out)
        self._pending = bytes(out[n:])
        return bytes(out[:n])


class AppTransport:
    """Calls a registry app (``Request -> Response``) in-process; URLs to any
    other host (e.g. presigned S3 URLs) go to ``fallback``."""

    def __init__(self, app: Callable[[Request], Response], host: str = "registry.local",
                 fallback: Transport | None = None) -> None:
        self.app = app
        self.host = host
        self.fallback = fallback

    def send(self, method: str, url: str, headers: dict[str, str], body: Body = None,
             ) -> RawResponse:
        parts = urlsplit(url)
        if parts.netloc != self.host:
            if self.fallback is None:
                raise TransportError(f"no transport for {parts.netloc}")
            return self.fallback.send(method, url, headers, body)
        if body is None or isinstance(body, bytes):
            stream: Any = io.BytesIO(body or b"")
        elif hasattr(body, "read"):
            stream = body
        else:
            stream = _IterReader(body)  # type: ignore[arg-type]
        response = self.app(Request.build(method, parts.path, parts.query, headers, stream))
        payload = response.body
        chunks = iter([payload]) if isinstance(payload, (bytes, bytearray)) else iter(payload)
        if method == "HEAD":
            chunks = iter([])
        return RawResponse(response.status, Headers(response.headers), chunks, lambda: None)
