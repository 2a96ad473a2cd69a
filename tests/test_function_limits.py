"""Uploads under Lambda's limits: bounded bodies, any chunk size, O(1) completion.

On Lambda a request body is at most ``max_body`` (4 MiB) and a request has
about 29 s, so the registry (in function-limits mode) advertises
``OCI-Chunk-Max-Length``, refuses larger bodies with 413 before changing
anything, folds chunks of any size into S3 parts of at least 5 MiB,
completes a streamed sha256 upload without reading the blob back, and
offers presigned direct-to-S3 part uploads as an extension.

The module overrides ``app`` with a function-limits registry (5 MiB parts),
so the shared ``call`` and ``server`` fixtures drive that registry.
moto does not check presigned signatures: the direct-to-S3 tests here test
function; ``test_presigned_security.py`` tests security on a real S3.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest

from chalicelib.config import Settings
from chalicelib.core.http import Request, Response
from chalicelib.devserver import local_app
from chalicelib.storage import clients
from chalicelib.storage.blobs import BlobStore
from chalicelib.storage.metadata import MetadataStore

from .test_instances import request as wire

MIB = 1024 * 1024
PART = 5 * MIB

Call = Callable[..., Response]


# -- fixtures ----------------------------------------------------------------
@pytest.fixture
def limited(settings: Settings) -> Settings:
    return replace(settings, function_limits=True, part_size=PART)


@pytest.fixture
def app(limited: Settings):
    """The registry in function-limits mode (overrides conftest's ``app``,
    so ``call`` and ``server`` use it)."""
    return local_app(limited)


# -- helpers -----------------------------------------------------------------
def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha512(data: bytes) -> str:
    return "sha512:" + hashlib.sha512(data).hexdigest()


def data_of(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def error_of(response: Any) -> dict[str, Any]:
    """The one error of an envelope (fails if it is not exactly one)."""
    [error] = json.loads(response.body)["errors"]
    return error


def state_of(location: str) -> str:
    return parse_qs(location.partition("?")[2])["_state"][0]


def upload_id_of(location: str) -> str:
    return location.partition("?")[0].rsplit("/", 1)[1]


def start(call: Call, name: str) -> str:
    response = call("POST", f"/v2/{name}/blobs/uploads/")
    assert response.status == 202, response.body
    return response.headers["Location"]


def patch(call: Call, location: str, piece: bytes, offset: int, *,
          with_range: bool = True) -> Response:
    headers = {"Content-Length": str(len(piece))}
    if with_range:
        headers["Content-Range"] = f"{offset}-{offset + len(piece) - 1}"
    return call("PATCH", location, piece, headers)


def push_chunks(call: Call, name: str, data: bytes, sizes: list[int]) -> tuple[str, int]:
    """PATCH ``data`` in pieces of ``sizes`` (alternately with and without
    Content-Range); returns the last Location and the offset reached."""
    location = start(call, name)
    offset = 0
    for i, size in enumerate(sizes):
        piece = data[offset:offset + size]
        response = patch(call, location, piece, offset, with_range=i % 2 == 0)
        assert response.status == 202, (i, response.body)
        offset += len(piece)
        assert response.headers["Range"] == f"0-{offset - 1}"
        location = response.headers["Location"]
    return location, offset


def keys(settings: Settings, prefix: str) -> list[str]:
    return [o["Key"] for o in BlobStore(settings.bucket, settings.region).list_keys(prefix)]


def multipart_uploads(settings: Settings) -> list[dict[str, Any]]:
    return BlobStore(settings.bucket, settings.region).list_multipart("")


def staged_parts(settings: Settings, location: str) -> list[dict[str, Any]]:
    """The S3 parts an unfinished upload holds so far."""
    record = MetadataStore(settings.table, settings.region).get_upload(upload_id_of(location))
    assert record is not None and record.multipart_id is not None
    blobs = BlobStore(settings.bucket, settings.region)
    return blobs.list_parts(f"blobs/large/{record.upload_id}", record.multipart_id)


@dataclass
class ReadBack:
    get_object_calls: int = 0
    hash_object_calls: int = 0


@contextmanager
def watch_reads(settings: Settings, *, forbid: bool) -> Iterator[ReadBack]:
    """Count S3 GetObject calls; with ``forbid``, fail on any attempt to read
    a blob back through ``BlobStore.hash_object`` or ``BlobStore.stream``."""
    seen = ReadBack()
    s3 = clients.client("s3", settings.region)
    lock = threading.Lock()

    def on_get(**_: Any) -> None:
        with lock:
            seen.get_object_calls += 1

    original_hash, original_stream = BlobStore.hash_object, BlobStore.stream

    def hash_object(self: BlobStore, *args: Any, **kwargs: Any) -> None:
        seen.hash_object_calls += 1
        if forbid:
            raise AssertionError("completion read the blob back (hash_object)")
        original_hash(self, *args, **kwargs)

    def stream(self: BlobStore, *args: Any, **kwargs: Any) -> Iterator[bytes]:
        raise AssertionError("completion read the blob back (stream)")

    s3.meta.events.register("before-call.s3.GetObject", on_get)
    BlobStore.hash_object = hash_object  # type: ignore[method-assign]
    if forbid:
        BlobStore.stream = stream  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        BlobStore.hash_object = original_hash  # type: ignore[method-assign]
        BlobStore.stream = original_stream  # type: ignore[method-assign]
        s3.meta.events.unregister("before-call.s3.GetObject", on_get)


def assert_blob(call: Call, name: str, digest: str, data: bytes) -> None:
    response = call("GET", f"/v2/{name}/blobs/{digest}")
    assert response.status == 200, response.body
    assert response.headers["Docker-Content-Digest"] == digest
    assert len(response.body) == len(data)
    assert response.body == data


# -- advertised limits -------------------------------------------------------
def test_post_advertises_the_chunk_limits(call: Call, limited: Settings,
                                          settings: Settings) -> None:
    response = call("POST", "/v2/limits/blobs/uploads/")
    assert response.status == 202
    maximum = int(response.headers["OCI-Chunk-Max-Length"])
    assert maximum == limited.max_body == 4 * MIB
    assert 0 < int(response.headers["OCI-Chunk-Min-Length"]) <= maximum

    plain = local_app(replace(settings, function_limits=False))
    response = plain(Request.build("POST", "/v2/limits/blobs/uploads/"))
    assert response.status == 202
    assert "OCI-Chunk-Max-Length" not in response.headers
    assert int(response.headers["OCI-Chunk-Min-Length"]) == settings.chunk_min_length


# -- bodies above the cap ----------------------------------------------------
def assert_too_large(status: int, body: bytes) -> None:
    assert status == 413, (status, body[:300])
    [error] = json.loads(body)["errors"]
    assert error["code"] == "SIZE_INVALID"
    reason = error["detail"]["reason"]
    assert "chunks" in reason
    assert "OCI-Chunk-Max-Length" in reason


def test_patch_above_the_cap_with_content_length(call: Call, limited: Settings,
                                                 snapshot) -> None:
    cap = limited.max_body
    data = data_of(cap + 3000, 1)
    location, offset = push_chunks(call, "cap/declared", data, [1000])
    before = snapshot()
    for with_range in (True, False):
        response = patch(call, location, data[offset:offset + cap + 1], offset,
                         with_range=with_range)
        assert_too_large(response.status, response.body)
        assert snapshot() == before

    # A Content-Length above the cap is refused before the body is read.
    response = call("PATCH", location, b"x", {"Content-Length": str(cap + 1)})
    assert_too_large(response.status, response.body)
    assert snapshot() == before

    # The upload is intact: continue with a chunk of exactly the cap, then finish.
    response = patch(call, location, data[offset:offset + cap], offset)
    assert response.status == 202, response.body
    offset += cap
    rest = data[offset:]
    response = call("PUT", f"{response.headers['Location']}&digest={sha256(data)}", rest,
                    {"Content-Length": str(len(rest))})
    assert response.status == 201, response.body
    assert_blob(call, "cap/declared", sha256(data), data)


def test_streamed_patch_above_the_cap(server: str, limited: Settings, snapshot) -> None:
    """No Content-Length (chunked transfer coding): refused once the cap is passed."""
    cap = limited.max_body
    data = data_of(cap + 3 * MIB, 2)  # more left unread than the server drains
    first = 4096
    name = "cap/streamed"
    status, headers, body = wire(server, "POST", f"/v2/{name}/blobs/uploads/")
    assert status == 202, body
    status, headers, body = wire(server, "PATCH", headers["Location"], data[:first],
                                 {"Content-Length": str(first)})
    assert status == 202, body
    location = headers["Location"]
    before = snapshot()
    uploads_before = multipart_uploads(limited)

    rest = data[first:]
    pieces = iter([rest[i:i + 256 * 1024] for i in range(0, len(rest), 256 * 1024)])
    status, headers, body = wire(server, "PATCH", location, pieces)
    assert_too_large(status, body)
    assert snapshot() == before
    assert multipart_uploads(limited) == uploads_before

    status, headers, body = wire(server, "GET", location)
    assert status == 204
    assert headers["Range"] == f"0-{first - 1}"
    # Still usable: the rest in two chunks within the cap, then complete.
    middle = first + cap - 10
    status, headers, body = wire(server, "PATCH", location, data[first:middle],
                                 {"Content-Length": str(middle - first)})
    assert status == 202, body
    status, headers, body = wire(server, "PUT", f"{headers['Location']}&digest={sha256(data)}",
                                 data[middle:], {"Content-Length": str(len(data) - middle)})
    assert status == 201, body
    status, _, pulled = wire(server, "GET", f"/v2/{name}/blobs/{sha256(data)}")
    assert status == 200
    assert pulled == data


def test_monolithic_and_final_chunk_above_the_cap(call: Call, limited: Settings,
                                                  snapshot) -> None:
    cap = limited.max_body
    data = data_of(cap + MIB, 3)
    digest = sha256(data)
    name = "cap/monolithic"
    before = snapshot()
    for headers in ({"Content-Length": str(len(data))}, {}):
        response = call("POST", f"/v2/{name}/blobs/uploads/?digest={digest}", data, headers)
        assert_too_large(response.status, response.body)
        assert snapshot() == before
    assert call("HEAD", f"/v2/{name}/blobs/{digest}").status == 404

    # A final chunk above the cap on PUT is refused the same way.
    location, offset = push_chunks(call, name, data, [10])
    before = snapshot()
    response = call("PUT", f"{location}&digest={digest}", data[offset:],
                    {"Content-Length": str(len(data) - offset)})
    assert_too_large(response.status, response.body)
    assert snapshot() == before
    # …and the upload is still usable.
    response = patch(call, location, data[offset:offset + 2 * MIB], offset)
    assert response.status == 202, response.body
    offset += 2 * MIB
    response = call("PUT", f"{response.headers['Location']}&digest={digest}", data[offset:],
                    {"Content-Length": str(len(data) - offset)})
    assert response.status == 201, response.body
    assert_blob(call, name, digest, data)

    small = b"fits in one request"
    response = call("POST", f"/v2/{name}/blobs/uploads/?digest={sha256(small)}", small,
                    {"Content-Length": str(len(small))})
    assert response.status == 201, response.body


# -- chunks of any size, folded into parts; O(1) completion -------------------
def test_chunks_of_any_size_fold_into_parts(call: Call, limited: Settings) -> None:
    """A 12 MiB blob in chunks from 1 byte to the cap; S3 sees 5 MiB parts;
    completion reads at most the tail, never the blob."""
    size = 12 * MIB
    data = data_of(size, 4)
    sizes = [1, 17, MIB, 4 * MIB, 3 * MIB + 5, 65536, 63, 64, 65]
    sizes.append(size - sum(sizes))
    assert 0 < sizes[-1] <= limited.max_body
    name = "fold/mixed"
    location, offset = push_chunks(call, name, data, sizes)
    assert offset == size

    parts = staged_parts(limited, location)
    assert [p["PartNumber"] for p in parts] == [1, 2]
    assert all(p["Size"] == PART for p in parts)

    digest = sha256(data)
    with watch_reads(limited, forbid=True) as seen:
        response = call("PUT", f"{location}&digest={digest}")
    assert response.status == 201, response.body
    assert seen.get_object_calls <= 1  # the 2 MiB tail, never the blob
    assert seen.hash_object_calls == 0
    assert_blob(call, name, digest, data)
    assert keys(limited, "uploads/") == []
    assert multipart_uploads(limited) == []


@pytest.mark.parametrize(("sizes", "final"), [
    ([4 * MIB, MIB, 4 * MIB, MIB], 0),   # ends on a part boundary, empty PUT
    ([4 * MIB, MIB], 2 * MIB),            # no tail; the PUT's chunk is the last part
])
def test_tailless_completion_reads_nothing(call: Call, limited: Settings,
                                           sizes: list[int], final: int) -> None:
    data = data_of(sum(sizes) + final, 5)
    name = "fold/tailless"
    location, offset = push_chunks(call, name, data, sizes)
    record = MetadataStore(limited.table, limited.region).get_upload(upload_id_of(location))
    assert record is not None and record.tail_key is None
    digest = sha256(data)
    with watch_reads(limited, forbid=True) as seen:
        response = call("PUT", f"{location}&digest={digest}", data[offset:],
                        {"Content-Length": str(final)})
    assert response.status == 201, response.body
    assert seen.get_object_calls == 0
    assert seen.hash_object_calls == 0
    assert_blob(call, name, digest, data)


def test_sha512_chunked_upload_is_verified_by_read_back(call: Call, limited: Settings) -> None:
    data = data_of(7 * MIB + 11, 6)
    name = "fold/sha512"
    location, offset = push_chunks(call, name, data, [4 * MIB, 3 * MIB])
    first = location
    digest = sha512(data)
    with watch_reads(limited, forbid=False) as seen:
        response = call("PUT", f"{location}&digest={digest}", data[offset:],
                        {"Content-Length": str(len(data) - offset)})
    assert response.status == 201, response.body
    assert seen.hash_object_calls == 1
    assert seen.get_object_calls >= 1
    assert_blob(call, name, digest, data)

    # A wrong sha512 is caught by the read-back, and nothing is published.
    other = data_of(6 * MIB, 7)
    location, offset = push_chunks(call, name, other, [4 * MIB, 2 * MIB])
    wrong = sha512(other[:-1])
    response = call("PUT", f"{location}&digest={wrong}")
    assert response.status == 400
    assert error_of(response)["code"] == "DIGEST_INVALID"
    assert call("HEAD", f"/v2/{name}/blobs/{wrong}").status == 404
    assert keys(limited, "blobs/large/") == [f"blobs/large/{upload_id_of(first)}"]
    assert multipart_uploads(limited) == []


# -- order, overlap, retries -------------------------------------------------
def test_out_of_order_overlap_and_retried_chunks(call: Call, limited: Settings,
                                                 snapshot) -> None:
    data = data_of(9 * MIB + 7, 8)
    name = "order/retry"
    first, second = 3 * MIB, 3 * MIB + 1
    location1, offset = push_chunks(call, name, data, [first])
    before = snapshot()

    gap = patch(call, location1, data[first + 10:first + 20], first + 10)
    assert gap.status == 416
    assert gap.headers["Range"] == f"0-{first - 1}"
    assert error_of(gap)["code"] == "RANGE_INVALID"
    overlap = patch(call, location1, data[first - 100:first + 100], first - 100)
    assert overlap.status == 416
    assert overlap.headers["Range"] == f"0-{first - 1}"
    assert snapshot() == before

    response = patch(call, location1, data[first:first + second], first)
    assert response.status == 202, response.body
    location2 = response.headers["Location"]
    offset = first + second
    before = snapshot()

    # The client did not see the 202 and retries the same chunk with the
    # current Location: refused, nothing appended twice.
    retry = patch(call, location2, data[first:first + second], first)
    assert retry.status == 416
    assert retry.headers["Range"] == f"0-{offset - 1}"
    # With the old Location, the stale state is refused outright.
    stale = patch(call, location1, data[first:first + second], first)
    assert stale.status == 416
    assert error_of(stale)["code"] == "BLOB_UPLOAD_INVALID"
    assert stale.headers["Range"] == f"0-{offset - 1}"
    assert snapshot() == before

    status = call("GET", location2)
    assert status.status == 204
    assert status.headers["Range"] == f"0-{offset - 1}"
    response = call("PUT", f"{location2}&digest={sha256(data)}", data[offset:],
                    {"Content-Range": f"{offset}-{len(data) - 1}",
                     "Content-Length": str(len(data) - offset)})
    assert response.status == 201, response.body
    assert_blob(call, name, sha256(data), data)


class GatedBody:
    """A request body that signals when the registry first reads it and then
    waits for ``gate``: it holds a request inside its append, after it has
    loaded the upload's progress and before it uploads anything."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0
        self.entered, self.gate = threading.Event(), threading.Event()

    def read(self, n: int = -1) -> bytes:
        self.entered.set()
        assert self.gate.wait(30), "gate never opened"
        end = len(self.data) if n is None or n < 0 else self.pos + n
        out = self.data[self.pos:end]
        self.pos += len(out)
        return out


def test_concurrent_chunks_from_one_offset_never_corrupt(call: Call,
                                                         limited: Settings) -> None:
    """Two PATCHes from the same offset (a client retrying on a second
    connection, or a hostile uploader) upload the same S3 part number. The
    loser's conditional write fails, but its part may land after the winner's:
    completion must then refuse, never publish bytes its digest does not name
    (which dedup would then hand to every later push of that digest)."""
    rng = random.Random(12)
    data, evil = rng.randbytes(10 * MIB), rng.randbytes(2 * MIB)
    name = "order/race"
    location, offset = push_chunks(call, name, data, [4 * MIB, 4 * MIB])
    assert offset == 8 * MIB  # part 1 in S3, 3 MiB in a tail; the next part is part 2
    gated = GatedBody(evil)
    loser: dict[str, Response] = {}

    def run_loser() -> None:
        loser["response"] = call("PATCH", location, gated, {"Content-Length": str(len(evil))})

    thread = threading.Thread(target=run_loser)
    thread.start()
    try:
        assert gated.entered.wait(30)
        # The winner: tail + 2 MiB make part 2, committed.
        winner = patch(call, location, data[offset:], offset)
        assert winner.status == 202, winner.body
    finally:
        gated.gate.set()
        thread.join(timeout=60)
    # The loser: the same tail + its 2 MiB make *its* part 2, uploaded after
    # the winner's; then its conditional write fails.
    assert loser["response"].status == 416
    assert error_of(loser["response"])["code"] == "BLOB_UPLOAD_INVALID"

    digest = sha256(data)
    response = call("PUT", f"{winner.headers['Location']}&digest={digest}")
    assert response.status != 201 or call("GET", f"/v2/{name}/blobs/{digest}").body == data, \
        "published a blob whose bytes do not match its digest"
    assert response.status == 400, response.body
    assert error_of(response)["code"] == "BLOB_UPLOAD_INVALID"
    assert call("HEAD", f"/v2/{name}/blobs/{digest}").status == 404
    assert MetadataStore(limited.table, limited.region).stored_blob(digest) is None
    assert keys(limited, "blobs/") == []
    assert multipart_uploads(limited) == []


# -- dedup of large blobs ----------------------------------------------------
def test_large_blob_pushed_twice_is_stored_once(call: Call, limited: Settings) -> None:
    data = data_of(11 * MIB, 9)
    digest = sha256(data)
    for name in ("a", "b"):
        location, _ = push_chunks(call, name, data, [4 * MIB, 4 * MIB, 3 * MIB])
        response = call("PUT", f"{location}&digest={digest}")
        assert response.status == 201, (name, response.body)
    assert len(keys(limited, "blobs/large/")) == 1
    assert keys(limited, "blobs/sha256/") == []
    assert multipart_uploads(limited) == []
    assert keys(limited, "uploads/") == []
    for name in ("a", "b"):
        assert_blob(call, name, digest, data)


# -- direct-to-S3 extension --------------------------------------------------
def parts_path(location: str, query: dict[str, str] | None = None) -> str:
    path = location.partition("?")[0]
    name, _, upload_id = path[len("/v2/"):].rpartition("/blobs/uploads/")
    params = {"_state": state_of(location), **(query or {})}
    return f"/v2/{name}/_cargohold/uploads/{upload_id}/parts?{urlencode(params)}"


def presign(call: Call, location: str, first: int = 1, count: int = 3) -> list[str]:
    response = call("POST", parts_path(location, {"first": str(first), "count": str(count)}))
    assert response.status == 200, response.body
    document = json.loads(response.body)
    assert document["minPartSize"] == PART
    assert [p["partNumber"] for p in document["parts"]] == list(range(first, first + count))
    return [p["url"] for p in document["parts"]]


def put_part(url: str, data: bytes) -> int:
    """PUT one part to its presigned URL, as a plain HTTP client would. (An
    explicit Content-Type: urllib's form-encoded default makes moto fail.)"""
    request = urllib.request.Request(url, data=data, method="PUT",
                                     headers={"Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        with error:
            return error.code


def put_parts_in_parallel(urls: list[str], pieces: list[bytes]) -> None:
    statuses: dict[int, int | BaseException] = {}

    def run(i: int) -> None:
        try:
            statuses[i] = put_part(urls[i], pieces[i])
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            statuses[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(pieces))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == dict.fromkeys(range(len(pieces)), 200)


def test_direct_parts_round_trip(call: Call, limited: Settings) -> None:
    data = data_of(11 * MIB, 10)
    digest = sha256(data)
    name = "direct/ok"
    location = start(call, name)
    urls = presign(call, location, count=3)
    put_parts_in_parallel(urls, [data[:PART], data[PART:2 * PART], data[2 * PART:]])
    response = call("PUT", f"{location}&digest={digest}")
    assert response.status == 201, response.body
    assert response.headers["Docker-Content-Digest"] == digest
    assert_blob(call, name, digest, data)
    assert multipart_uploads(limited) == []
    assert keys(limited, "uploads/") == []


def test_direct_parts_wrong_digest_publishes_nothing(call: Call, limited: Settings) -> None:
    data = data_of(PART + 100, 11)
    name = "direct/wrong"
    location = start(call, name)
    urls = presign(call, location, count=2)
    put_parts_in_parallel(urls, [data[:PART], data[PART:]])
    wrong = sha256(data + b"!")
    response = call("PUT", f"{location}&digest={wrong}")
    assert response.status == 400
    assert error_of(response)["code"] == "DIGEST_INVALID"
    for digest in (wrong, sha256(data)):
        assert call("HEAD", f"/v2/{name}/blobs/{digest}").status == 404
    assert MetadataStore(limited.table, limited.region).stored_blob(wrong) is None
    assert keys(limited, "blobs/") == []
    assert multipart_uploads(limited) == []


@pytest.mark.parametrize(("numbers", "sizes"), [
    ([1, 3], [PART, 1000]),   # a gap in the part numbers
    ([1, 2], [1000, 1000]),   # a part other than the last below 5 MiB
    ([2], [1000]),            # not starting at part 1
])
def test_direct_parts_must_be_complete_and_large_enough(
        call: Call, limited: Settings, numbers: list[int], sizes: list[int]) -> None:
    name = "direct/bad"
    location = start(call, name)
    urls = presign(call, location, count=3)
    for number, size in zip(numbers, sizes, strict=True):
        assert put_part(urls[number - 1], data_of(size, number)) == 200
    response = call("PUT", f"{location}&digest={sha256(b'whatever')}")
    assert response.status == 400
    assert error_of(response)["code"] == "BLOB_UPLOAD_INVALID"
    assert keys(limited, "blobs/") == []
    assert multipart_uploads(limited) == []


def test_direct_session_refuses_streamed_bytes(call: Call, limited: Settings,
                                               snapshot) -> None:
    location = start(call, "direct/session")
    presign(call, location, count=1)
    before = snapshot()
    response = call("PATCH", location, b"abc", {"Content-Length": "3"})
    assert response.status == 400
    assert error_of(response)["code"] == "BLOB_UPLOAD_INVALID"
    response = call("PUT", f"{location}&digest={sha256(b'abc')}", b"abc",
                    {"Content-Length": "3"})
    assert response.status == 400
    assert error_of(response)["code"] == "BLOB_UPLOAD_INVALID"
    assert snapshot() == before
    # Asking again for parts of the same direct session is fine.
    assert len(presign(call, location, first=2, count=2)) == 2


def test_direct_parts_need_a_fresh_upload(call: Call, limited: Settings, snapshot) -> None:
    location, _ = push_chunks(call, "direct/used", b"some bytes", [4])
    before = snapshot()
    response = call("POST", parts_path(location, {"count": "1"}))
    assert response.status == 400
    assert error_of(response)["code"] == "BLOB_UPLOAD_INVALID"
    assert snapshot() == before
    assert multipart_uploads(limited) == []


@pytest.mark.parametrize("query", [
    {"count": "0"}, {"count": "-1"}, {"count": "abc"}, {"count": "1001"}, {"count": "1.5"},
    {"first": "0"}, {"first": "x"}, {"first": "10000", "count": "2"},
])
def test_direct_parts_bad_numbers(call: Call, limited: Settings, snapshot,
                                  query: dict[str, str]) -> None:
    location = start(call, "direct/numbers")
    before = snapshot()
    response = call("POST", parts_path(location, query))
    assert response.status == 400, response.body
    assert error_of(response)["code"] == "BLOB_UPLOAD_INVALID"
    assert snapshot() == before
    assert multipart_uploads(limited) == []


def test_direct_parts_bad_state(call: Call, limited: Settings, snapshot) -> None:
    location = start(call, "direct/state")
    token = state_of(location)
    tampered = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    before = snapshot()
    for bad in (tampered, "", "not-a-token"):
        path = parts_path(location, {"count": "1"}).replace(token, bad)
        response = call("POST", path)
        assert response.status == 400, response.body
        assert error_of(response)["code"] == "BLOB_UPLOAD_INVALID"
    # A token of another upload cannot ask for this one's parts.
    other = start(call, "direct/state")
    path = parts_path(location, {"count": "1"}).replace(token, state_of(other))
    response = call("POST", path)
    assert response.status == 400
    assert error_of(response)["code"] == "BLOB_UPLOAD_INVALID"
    assert snapshot()["objects"] == before["objects"]
    assert multipart_uploads(limited) == []
