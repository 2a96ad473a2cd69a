"""Validation of everything a client puts in a URL or header.

Every parser here either returns a clean value or raises the protocol's own
error, so handlers never see unchecked input.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from . import errors
from .errors import RegistryError

MAX_NAME_LENGTH = 255
NAME_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*\Z")
TAG = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")
DIGEST = re.compile(r"(?P<algorithm>[a-z0-9]+(?:[+._-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)\Z")
HEX_LENGTHS = {"sha256": 64, "sha512": 128}
CONTENT_RANGE = re.compile(r"(?:bytes )?([0-9]{1,19})-([0-9]{1,19})\Z")
BYTE_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})\Z")


def validate_name(name: str) -> str:
    """A repository name: lower-case components joined by '/', ≤255 chars."""
    if not name or len(name) > MAX_NAME_LENGTH:
        raise RegistryError(errors.NAME_INVALID, {"name": name[:MAX_NAME_LENGTH + 1],
                                                  "reason": "length must be 1 to 255"})
    for component in name.split("/"):
        if not NAME_COMPONENT.match(component):
            raise RegistryError(errors.NAME_INVALID,
                                {"name": name, "reason": f"invalid component {component!r}"})
    return name


def validate_tag(tag: str) -> str:
    if not TAG.match(tag):
        raise RegistryError(errors.TAG_INVALID, {"tag": tag[:200]})
    return tag


@dataclass(frozen=True)
class Digest:
    """A content digest ``algorithm:hex`` of a supported algorithm."""

    algorithm: str
    hex: str

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    def hasher(self) -> hashlib._Hash:
        return hashlib.new(self.algorithm)

    @classmethod
    def of(cls, data: bytes, algorithm: str = "sha256") -> Digest:
        return cls(algorithm, hashlib.new(algorithm, data).hexdigest())


def parse_digest(text: str) -> Digest:
    """Parse a digest; malformed → DIGEST_INVALID, unknown algorithm → UNSUPPORTED."""
    match = DIGEST.match(text or "")
    if not match:
        raise RegistryError(errors.DIGEST_INVALID, {"digest": (text or "")[:200],
                                                    "reason": "not algorithm:hex"})
    algorithm, hex_part = match.group("algorithm"), match.group("hex")
    if algorithm not in HEX_LENGTHS:
        raise RegistryError(errors.UNSUPPORTED, {"digest": text[:200],
                                                 "reason": f"unsupported algorithm {algorithm}"},
                            status=400)
    if len(hex_part) != HEX_LENGTHS[algorithm] or not re.fullmatch(r"[a-f0-9]+", hex_part):
        raise RegistryError(errors.DIGEST_INVALID, {"digest": text[:200],
                                                    "reason": "bad hex for " + algorithm})
    return Digest(algorithm, hex_part)


def is_digest(reference: str) -> bool:
    return ":" in reference


def parse_reference(reference: str) -> tuple[str | None, Digest | None]:
    """A manifest reference: a tag or a digest, never both."""
    if is_digest(reference):
        return None, parse_digest(reference)
    return validate_tag(reference), None


def parse_content_range(header: str) -> tuple[int, int]:
    """``start-end`` (inclusive) of a PATCH; malformed → 416."""
    match = CONTENT_RANGE.match(header.strip())
    if not match:
        raise RegistryError(errors.RANGE_INVALID, {"Content-Range": header[:100],
                                                   "reason": "expected start-end"})
    start, end = int(match.group(1)), int(match.group(2))
    if end < start:
        raise RegistryError(errors.RANGE_INVALID, {"Content-Range": header[:100],
                                                   "reason": "end before start"})
    return start, end


def parse_byte_range(header: str, size: int) -> tuple[int, int] | None:
    """A single ``Range: bytes=`` request against a blob of ``size`` bytes.

    Returns the inclusive (start, end) to serve, or raises 416. Multiple
    ranges are not supported: clients of registries only ever ask for one.
    """
    match = BYTE_RANGE.match(header.strip())
    if not match or (match.group(1) == "" and match.group(2) == ""):
        raise _unsatisfiable(header, size)
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix range: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last != "" else size - 1
    if start >= size or end < start:
        raise _unsatisfiable(header, size)
    return start, min(end, size - 1)


def _unsatisfiable(header: str, size: int) -> RegistryError:
    return RegistryError(errors.RANGE_INVALID, {"Range": header[:100], "size": size},
                         headers={"Content-Range": f"bytes */{size}"})


def parse_page_size(value: str | None, cap: int) -> int | None:
    """The ``n`` of a paginated list: an integer from 0 to ``cap``.

    A larger n is refused, as distribution and ECR do, rather than served:
    work is never in proportion to what a client asks for (CVE-2023-2253).
    """
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,18}", value) or int(value) > cap:
        raise RegistryError(errors.PAGINATION_NUMBER_INVALID,
                            {"n": value[:40], "reason": f"n must be an integer from 0 to {cap}"})
    return int(value)
