"""The local door: a multi-threaded HTTP/1.1 server that streams both ways.

Request bodies reach the registry as file-like streams (``Content-Length``
or chunked transfer coding) and response bodies leave as iterators, so a
gigabyte blob passes through with one S3 part in memory at a time.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO

from .core.http import Request, Response

log = logging.getLogger(__name__)

DRAIN_LIMIT = 1024 * 1024
# After answering early (e.g. 416 to a chunk sent out of order) on a connection
# whose body is larger than DRAIN_LIMIT, up to this much is still read and
# dropped before closing, so the client sees the answer and not a reset.
LINGER_BYTES = 64 * 1024 * 1024
LINGER_SECONDS = 5.0
_STATE = re.compile(r"(_state=)[^&\s]+")


class BodyReader:
    """A request body as a stream: exactly Content-Length bytes, or the
    de-chunked transfer coding; ``read(n)`` returns n bytes unless at EOF."""

    def __init__(self, raw: BinaryIO, length: int | None, chunked: bool) -> None:
        self._raw = raw
        self._remaining = length if length is not None else 0
        self._chunked = chunked
        self._chunk_left = 0
        self._eof = not chunked and not self._remaining

    def _next_chunk(self) -> None:
        line = self._raw.readline(1024).strip()
        size_text = line.split(b";", 1)[0]
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError("malformed chunk size") from None
        if size == 0:
            while self._raw.readline(1024).strip():  # trailers
                pass
            self._eof = True
        self._chunk_left = size

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        want = n if n is not None and n >= 0 else 1 << 62
        while len(out) < want and not self._eof:
            if self._chunked:
                if self._chunk_left == 0:
                    self._next_chunk()
                    if self._eof:
                        break
                data = self._raw.read(min(self._chunk_left, want - len(out), 1 << 20))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                self._chunk_left -= len(data)
                if self._chunk_left == 0:
                    self._raw.readline(8)  # CRLF after the chunk
            else:
                data = self._raw.read(min(self._remaining, want - len(out), 1 << 20))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                self._remaining -= len(data)
                if self._remaining == 0:
                    self._eof = True
            out += data
        return bytes(out)

    def drain(self, limit: int) -> bool:
        """Discard what the handler left unread; False if more than ``limit``."""
        drained = 0
        while not self._eof:
            data = self.read(min(65536, limit - drained + 1))
            drained += len(data)
            if drained > limit:
                return False
        return True


def discard_rest(connection: socket.socket, body: BodyReader) -> None:
    """Read and drop the rest of an unread body, bounded in bytes and time.

    Closing a socket with unread data makes the kernel reset the
    connection, and a client still sending its body (Go's net/http) then
    reports a broken pipe instead of the answer already sent.
    """
    deadline = time.monotonic() + LINGER_SECONDS
    discarded = 0
    try:
        while discarded < LINGER_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            connection.settimeout(left)
            data = body.read(65536)
            if not data:
                return
            discarded += len(data)
    except (OSError, ValueError):
        return


def make_handler(app: Callable[[Request], Response]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "cargohold"
        sys_version = ""

        def _serve(self) -> None:
            path, _, query = self.path.partition("?")
            length_text = self.headers.get("Content-Length")
            chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
            length = int(length_text) if (length_text or "").isdigit() and not chunked else None
            body = BodyReader(self.rfile, length, chunked)
            request = Request.build(self.command, path, query, self.headers.items(), body)
            response = app(request)
            if not body.drain(DRAIN_LIMIT):
                self.close_connection = True
                response.headers["Connection"] = "close"
                self._write(response)
                discard_rest(self.connection, body)
                return
            self._write(response)

        def _write(self, response: Response) -> None:
            self.log_request(response.status)
            self.send_response_only(response.status)
            self.send_header("Date", self.date_time_string())
            payload = response.body
            has_length = any(k.lower() == "content-length" for k in response.headers)
            streaming = not isinstance(payload, (bytes, bytearray))
            use_chunked = streaming and not has_length and self.command != "HEAD"
            for key, value in response.headers.items():
                self.send_header(key, value)
            if not has_length and not streaming:
                self.send_header("Content-Length", str(len(payload)))
            if use_chunked:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command == "HEAD" or response.status in (204, 304):
                if streaming:
                    getattr(payload, "close", lambda: None)()
                return
            if not streaming:
                self.wfile.write(payload)
                return
            for chunk in payload:
                if not chunk:
                    continue
                if use_chunked:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                else:
                    self.wfile.write(chunk)
            if use_chunked:
                self.wfile.write(b"0\r\n\r\n")

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.info("%s %s", self.address_string(), _STATE.sub(r"\1…", format % args))

    return Handler


class RegistryServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


def serve(app: Callable[[Request], Response], host: str = "127.0.0.1",
          port: int = 5000) -> RegistryServer:
    """Bind a server (port 0 picks a free one); call ``serve_forever`` to run it."""
    server = RegistryServer((host, port), make_handler(app))
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server


def serve_in_thread(app: Callable[[Request], Response], host: str = "127.0.0.1",
                    port: int = 0) -> tuple[RegistryServer, threading.Thread]:
    server = serve(app, host, port)
    thread = threading.Thread(target=server.serve_forever, name="cargohold-server", daemon=True)
    thread.start()
    return server, thread
