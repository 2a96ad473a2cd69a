"""SHA-256 whose running state can be saved between requests.

Why: on Lambda a large blob arrives as many short requests, possibly on
different instances, and no single request may re-read the whole blob to
hash it (a request has about 29 s). hashlib objects cannot be serialised,
so we carry the state ourselves: each request restores the state, hashes
its own chunk at native speed, and saves the state with the upload's
progress. Completion then costs one ``final`` call, whatever the size.

The portable state is ``h0..h7`` (32 bytes, big-endian) ‖ bytes hashed so
far (8 bytes, big-endian) ‖ the pending partial block (0 to 63 bytes). Two
engines produce and accept it: OpenSSL's ``SHA256_*`` through ctypes (the
libcrypto that Python's own ``_hashlib`` already loaded, so nothing new is
installed), and a pure-Python fallback for interpreters without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import struct
from typing import Any

BLOCK = 64
STATE_HEADER = 40
_INITIAL = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A,
            0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)


class _Sha256Ctx(ctypes.Structure):
    """OpenSSL's SHA256_CTX (stable layout since 0.9.8, still in 3.x)."""

    _fields_ = [("h", ctypes.c_uint32 * 8), ("Nl", ctypes.c_uint32), ("Nh", ctypes.c_uint32),
                ("data", ctypes.c_uint8 * BLOCK), ("num", ctypes.c_uint), ("md_len", ctypes.c_uint)]


def _load_libcrypto() -> Any | None:
    """The libcrypto Python already uses; None when it has no SHA256_* API."""
    import _hashlib  # noqa: F401 - makes sure libcrypto is mapped into the process

    candidates = []
    try:
        with open("/proc/self/maps") as maps:
            candidates = sorted({line.split()[-1] for line in maps
                                 if "libcrypto" in line and line.strip().endswith(
                                     tuple(f".so{v}" for v in ("", ".3", ".1.1", ".10")))})
    except OSError:
        pass
    found = ctypes.util.find_library("crypto")
    if found:
        candidates.append(found)
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
            update = lib.SHA256_Update
        except (OSError, AttributeError):
            continue
        update.argtypes = [ctypes.POINTER(_Sha256Ctx), ctypes.c_char_p, ctypes.c_size_t]
        update.restype = ctypes.c_int
        lib.SHA256_Final.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Sha256Ctx)]
        lib.SHA256_Final.restype = ctypes.c_int
        return lib
    return None


_LIB: Any | None = None
_LIB_LOADED = False


def _lib() -> Any | None:
    global _LIB, _LIB_LOADED
    if not _LIB_LOADED:
        _LIB, _LIB_LOADED = _load_libcrypto(), True
    return _LIB


def _parse(state: bytes | None) -> tuple[tuple[int, ...], int, bytes]:
    if not state:
        return _INITIAL, 0, b""
    if len(state) < STATE_HEADER or len(state) >= STATE_HEADER + BLOCK:
        raise ValueError("malformed SHA-256 state")
    h = struct.unpack(">8I", state[:32])
    (length,) = struct.unpack(">Q", state[32:40])
    pending = state[40:]
    if length % BLOCK != len(pending):
        raise ValueError("SHA-256 state length and pending bytes disagree")
    return h, length, pending


def _pack(h: tuple[int, ...] | list[int], length: int, pending: bytes) -> bytes:
    return struct.pack(">8I", *h) + struct.pack(">Q", length) + pending


class ResumableSha256:
    """A SHA-256 that can ``save()`` its state and be rebuilt from it."""

    name = "sha256"

    def __init__(self, state: bytes | None = None, *, engine: str | None = None) -> None:
        h, length, pending = _parse(state)
        lib = _lib() if engine in (None, "openssl") else None
        if engine == "openssl" and lib is None:
            raise RuntimeError("OpenSSL's SHA256_* functions are not available")
        self._lib = lib
        if lib is not None:
            ctx = _Sha256Ctx()
            ctx.h[:] = list(h)
            bits = length * 8
            ctx.Nl, ctx.Nh = bits & 0xFFFFFFFF, (bits >> 32) & 0xFFFFFFFF
            ctx.data[: len(pending)] = list(pending)
            ctx.num, ctx.md_len = len(pending), 32
            self._ctx = ctx
        else:
            self._py = _PySha256(list(h), length, pending)

    @property
    def engine(self) -> str:
        return "openssl" if self._lib is not None else "python"

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if self._lib is not None:
            raw = bytes(data)
            self._lib.SHA256_Update(ctypes.byref(self._ctx), raw, len(raw))
        else:
            self._py.update(bytes(data))

    def save(self) -> bytes:
        """The portable state (40 to 103 bytes)."""
        if self._lib is not None:
            ctx = self._ctx
            length = ((ctx.Nh << 32) | ctx.Nl) // 8
            return _pack(list(ctx.h), length, bytes(ctx.data[: ctx.num]))
        return self._py.save()

    def hexdigest(self) -> str:
        """The digest of everything so far; the object stays usable."""
        if self._lib is not None:
            ctx = _Sha256Ctx.from_buffer_copy(self._ctx)
            out = ctypes.create_string_buffer(32)
            self._lib.SHA256_Final(out, ctypes.byref(ctx))
            return out.raw.hex()
        return self._py.hexdigest()


class _PySha256:
    """FIPS 180-4 SHA-256 in Python: the fallback engine (slow, but exact)."""

    K = (
        0x428A2F98, 0x71374491, 0xB5C0FBCF, 0xE9B5DBA5, 0x3956C25B, 0x59F111F1, 0x923F82A4,
        0xAB1C5ED5, 0xD807AA98, 0x12835B01, 0x243185BE, 0x550C7DC3, 0x72BE5D74, 0x80DEB1FE,
        0x9BDC06A7, 0xC19BF174, 0xE49B69C1, 0xEFBE4786, 0x0FC19DC6, 0x240CA1CC, 0x2DE92C6F,
        0x4A7484AA, 0x5CB0A9DC, 0x76F988DA, 0x983E5152, 0xA831C66D, 0xB00327C8, 0xBF597FC7,
        0xC6E00BF3, 0xD5A79147, 0x06CA6351, 0x14292967, 0x27B70A85, 0x2E1B2138, 0x4D2C6DFC,
        0x53380D13, 0x650A7354, 0x766A0ABB, 0x81C2C92E, 0x92722C85, 0xA2BFE8A1, 0xA81A664B,
        0xC24B8B70, 0xC76C51A3, 0xD192E819, 0xD6990624, 0xF40E3585, 0x106AA070, 0x19A4C116,
        0x1E376C08, 0x2748774C, 0x34B0BCB5, 0x391C0CB3, 0x4ED8AA4A, 0x5B9CCA4F, 0x682E6FF3,
        0x748F82EE, 0x78A5636F, 0x84C87814, 0x8CC70208, 0x90BEFFFA, 0xA4506CEB, 0xBEF9A3F7,
        0xC67178F2)

    def __init__(self, h: list[int], length: int, pending: bytes) -> None:
        self.h, self.length, self.pending = h, length, pending

    def update(self, data: bytes) -> None:
        self.length += len(data)
        buffer = self.pending + data
        whole = len(buffer) - len(buffer) % BLOCK
        for offset in range(0, whole, BLOCK):
            self._compress(buffer[offset:offset + BLOCK])
        self.pending = buffer[whole:]

    def save(self) -> bytes:
        return _pack(self.h, self.length, self.pending)

    def hexdigest(self) -> str:
        copy = _PySha256(list(self.h), self.length, self.pending)
        bits = self.length * 8
        padding = b"\x80" + b"\x00" * ((55 - self.length) % BLOCK) + struct.pack(">Q", bits)
        copy.update(padding)
        return struct.pack(">8I", *copy.h).hex()

    def _compress(self, block: bytes) -> None:
        mask = 0xFFFFFFFF
        w = list(struct.unpack(">16I", block))
        for i in range(16, 64):
            a, b = w[i - 15], w[i - 2]
            s0 = ((a >> 7) | (a << 25)) ^ ((a >> 18) | (a << 14)) ^ (a >> 3)
            s1 = ((b >> 17) | (b << 15)) ^ ((b >> 19) | (b << 13)) ^ (b >> 10)
            w.append((w[i - 16] + s0 + w[i - 7] + s1) & mask)
        a, b, c, d, e, f, g, h = self.h
        for i in range(64):
            s1 = ((e >> 6) | (e << 26)) ^ ((e >> 11) | (e << 21)) ^ ((e >> 25) | (e << 7))
            ch = (e & f) ^ (~e & g)
            t1 = (h + (s1 & mask) + ch + self.K[i] + w[i]) & mask
            s0 = ((a >> 2) | (a << 30)) ^ ((a >> 13) | (a << 19)) ^ ((a >> 22) | (a << 10))
            t2 = ((s0 & mask) + ((a & b) ^ (a & c) ^ (b & c))) & mask
            a, b, c, d, e, f, g, h = (t1 + t2) & mask, a, b, c, (d + t1) & mask, e, f, g
        self.h = [(x + y) & mask for x, y in zip(self.h, (a, b, c, d, e, f, g, h), strict=True)]
