"""The resumable SHA-256 behind tail-less upload completion.

An upload's hash state is saved to DynamoDB after every chunk and restored
by whichever instance takes the next one, possibly with the other engine
(OpenSSL through ctypes, or pure Python). Any drift between the engines or
any byte lost at a save/restore boundary would make a correct blob fail its
digest check (or, worse, a wrong one pass), so everything here is compared
with :mod:`hashlib`.
"""

from __future__ import annotations

import hashlib
import random
import struct

import pytest

from chalicelib.registry.resumable_sha256 import BLOCK, STATE_HEADER, ResumableSha256

ENGINES = ("openssl", "python")


def test_openssl_is_the_default_engine_here() -> None:
    """Without it, completion would hash in pure Python: correct but ~100x slower."""
    assert ResumableSha256().engine == "openssl"
    assert ResumableSha256(engine="python").engine == "python"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("length", [0, 1, 55, 56, 63, 64, 65, 127, 128, 200])
def test_state_round_trips(engine: str, length: int) -> None:
    """save() → restore → save() is the identity, for every pending-block size."""
    data = random.Random(length).randbytes(length)
    hasher = ResumableSha256(engine=engine)
    hasher.update(data)
    state = hasher.save()
    assert STATE_HEADER <= len(state) <= STATE_HEADER + BLOCK - 1
    assert len(state) == STATE_HEADER + length % BLOCK
    (counted,) = struct.unpack(">Q", state[32:40])
    assert counted == length
    assert state[STATE_HEADER:] == data[len(data) - length % BLOCK:]
    for other in ENGINES:
        restored = ResumableSha256(state, engine=other)
        assert restored.save() == state
        assert restored.hexdigest() == hashlib.sha256(data).hexdigest()


def test_both_engines_save_identical_states() -> None:
    data = random.Random(7).randbytes(1000)
    states = []
    for engine in ENGINES:
        hasher = ResumableSha256(engine=engine)
        hasher.update(data)
        states.append(hasher.save())
    assert states[0] == states[1]


PIECE_SIZES = (0, 1, 55, 56, 63, 64, 65, 127, 128, 129)


@pytest.mark.parametrize("seed", range(8))
def test_split_anywhere_restored_between_pieces(seed: int) -> None:
    """Random data cut into pieces of random sizes, among them empty pieces
    and pieces of 63, 64 and 65 bytes, at random offsets; the state saved and
    restored between every piece, alternating engines: hashes exactly as
    hashlib does, and so does every prefix on the way."""
    rng = random.Random(seed)
    data = rng.randbytes(rng.randint(3000, 9000))
    state: bytes | None = None
    start = 0
    pieces = 0
    expected = hashlib.sha256()
    while start < len(data) or pieces < 3:
        size = rng.choice(PIECE_SIZES) if rng.random() < 0.6 else rng.randint(1, 2000)
        size = 0 if pieces == 1 else size  # always at least one empty piece mid-stream
        piece = data[start:start + size]
        hasher = ResumableSha256(state, engine=ENGINES[(pieces + seed) % 2])
        hasher.update(piece)
        expected.update(piece)
        state = hasher.save()
        start += len(piece)
        pieces += 1
        if pieces % 5 == 0:
            assert hasher.hexdigest() == expected.hexdigest()
    assert start == len(data)
    for engine in ENGINES:
        final = ResumableSha256(state, engine=engine)
        assert final.hexdigest() == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("engine", ENGINES)
def test_hexdigest_does_not_disturb_further_updates(engine: str) -> None:
    hasher = ResumableSha256(engine=engine)
    expected = hashlib.sha256()
    for piece in (b"", b"a" * 63, b"b", b"c" * 64, b"d" * 65, b"tail"):
        hasher.update(piece)
        expected.update(piece)
        assert hasher.hexdigest() == expected.hexdigest()
        assert hasher.hexdigest() == expected.hexdigest()  # twice: still unchanged
    state = hasher.save()
    assert ResumableSha256(state).hexdigest() == expected.hexdigest()


@pytest.mark.parametrize("engine", ENGINES)
def test_memoryview_and_bytearray_inputs(engine: str) -> None:
    data = random.Random(3).randbytes(300)
    hasher = ResumableSha256(engine=engine)
    hasher.update(bytearray(data[:100]))
    hasher.update(memoryview(data)[100:])
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def _state(length: int, pending: bytes) -> bytes:
    return b"\x01" * 32 + struct.pack(">Q", length) + pending


@pytest.mark.parametrize("state", [
    b"\x00",                          # shorter than the header
    b"\x00" * (STATE_HEADER - 1),
    b"\x00" * (STATE_HEADER + BLOCK),  # a whole block pending: never saved
    b"\x00" * 500,
    _state(3, b"ab"),                 # length says 3 pending bytes, 2 present
    _state(64, b"x"),                 # length says 0 pending bytes, 1 present
    _state(65, b""),                  # length says 1 pending byte, none present
])
@pytest.mark.parametrize("engine", ENGINES)
def test_malformed_states_are_rejected(state: bytes, engine: str) -> None:
    with pytest.raises(ValueError):
        ResumableSha256(state, engine=engine)


def test_a_consistent_foreign_state_is_accepted() -> None:
    """The parser checks shape, not provenance: a well-formed state of 2
    pending bytes after 66 hashed is accepted by both engines alike."""
    state = _state(66, b"zz")
    digests = {ResumableSha256(state, engine=e).hexdigest() for e in ENGINES}
    assert len(digests) == 1
