"""Plain request and response values passed between doors and the registry.

Doors (Chalice, the local server, an in-process client transport) translate
their own objects into these, so the registry never sees a framework type.
Bodies are streams both ways so that gigabyte blobs never sit in memory.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO
from urllib.parse import parse_qs


class Headers:
    """Case-insensitive, multi-valued HTTP headers."""

    def __init__(self, items: Iterable[tuple[str, str]] | dict[str, str] | None = None) -> None:
        self._items: list[tuple[str, str]] = []
        if isinstance(items, dict):
            items = items.items()
        for key, value in items or ():
            self.add(key, value)

    def add(self, key: str, value: str) -> None:
        self._items.append((key, str(value)))

    def get(self, key: str, default: str | None = None) -> str | None:
        lowered = key.lower()
        for k, v in self._items:
            if k.lower() == lowered:
                return v
        return default

    def get_all(self, key: str) -> list[str]:
        lowered = key.lower()
        return [v for k, v in self._items if k.lower() == lowered]

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)


@dataclass
class Request:
    """One HTTP request as the registry sees it."""

    method: str
    path: str
    query: dict[str, list[str]] = field(default_factory=dict)
    headers: Headers = field(default_factory=Headers)
    body: BinaryIO = field(default_factory=io.BytesIO)

    @classmethod
    def build(cls, method: str, path: str, query_string: str = "",
              headers: Iterable[tuple[str, str]] | dict[str, str] | None = None,
              body: bytes | BinaryIO = b"") -> Request:
        stream = io.BytesIO(body) if isinstance(body, (bytes, bytearray)) else body
        query = parse_qs(query_string, keep_blank_values=True)
        return cls(method.upper(), path, query, Headers(headers), stream)

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None or not value.strip().isdigit():
            return None
        return int(value)


@dataclass
class Response:
    """One HTTP response; ``body`` is bytes or an iterator of byte chunks."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterator[bytes] = b""

    @classmethod
    def json(cls, status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
        payload = json.dumps(data, separators=(",", ":")).encode()
        all_headers = {"Content-Type": "application/json",
                       "Content-Length": str(len(payload))}
        all_headers.update(headers or {})
        return cls(status, all_headers, payload)

    def read_body(self) -> bytes:
        """The whole body (for tests and small responses only)."""
        if isinstance(self.body, (bytes, bytearray)):
            return bytes(self.body)
        return b"".join(self.body)


def read_capped(stream: BinaryIO, limit: int) -> bytes | None:
    """Read a whole body, or None when it is longer than ``limit`` bytes.

    Reads at most ``limit + 1`` bytes, so a hostile body never costs more
    memory than the cap.
    """
    data = stream.read(limit + 1) or b""
    return None if len(data) > limit else data
