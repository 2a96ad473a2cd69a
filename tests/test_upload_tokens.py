"""The signed ``_state`` token in upload ``Location`` headers.

Any instance holding the shared HMAC key must be able to continue an upload,
and nobody else must be able to steer one: tampered, truncated, foreign,
replayed, expired and wrongly keyed tokens are all ``BLOB_UPLOAD_INVALID``,
change nothing, and leave the real upload intact and completable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest

from chalicelib.core.errors import RegistryError
from chalicelib.registry import tokens
from chalicelib.registry.tokens import UploadState
from chalicelib.storage import clients

ENVELOPE_KEYS = {"code", "message", "detail"}
DATA = bytes(range(256)) * 4  # 1 KiB blob, pushed as two chunks
FIRST = 100


# -- helpers ---------------------------------------------------------------

def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def assert_error(response: Any, status: int, code: str, *,
                 reason: str | None = None) -> dict[str, Any]:
    assert response.status == status, (response.status, response.body[:500])
    assert response.headers.get("Content-Type") == "application/json"
    document = json.loads(response.body)
    assert set(document) == {"errors"}
    [error] = document["errors"]
    assert set(error) == ENVELOPE_KEYS
    assert error["code"] == code, error
    if reason is not None:
        assert reason in error["detail"]["reason"], error
    return error


def state_of(location: str) -> str:
    return parse_qs(location.partition("?")[2])["_state"][0]


def with_state(location: str, token: str | None) -> str:
    """The same upload URL carrying another ``_state`` (or none)."""
    path, _, query = location.partition("?")
    params = parse_qs(query, keep_blank_values=True)
    params.pop("_state", None)
    if token is not None:
        params["_state"] = [token]
    return path + ("?" + urlencode(params, doseq=True) if params else "")


def upload_id_of(location: str) -> str:
    return location.partition("?")[0].rsplit("/", 1)[1]


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def signed(key: bytes, payload: bytes) -> str:
    """A correctly signed token around an arbitrary payload."""
    return b64(hmac.new(key, payload, hashlib.sha256).digest() + payload)


def begin(call, name: str = "tok") -> tuple[str, str]:
    """Start an upload and send its first chunk: (Location before, after)."""
    started = call("POST", f"/v2/{name}/blobs/uploads/")
    assert started.status == 202, started.body
    before = started.headers["Location"]
    sent = call("PATCH", before, DATA[:FIRST],
                {"Content-Range": f"0-{FIRST - 1}", "Content-Length": str(FIRST)})
    assert sent.status == 202, sent.body
    return before, sent.headers["Location"]


def assert_intact_and_finish(call, location: str, name: str = "tok",
                             offset: int = FIRST) -> None:
    """The upload still reports its progress, takes the rest and completes."""
    status = call("GET", location)
    assert status.status == 204, status.body
    assert status.headers["Range"] == f"0-{offset - 1}"
    rest = call("PATCH", status.headers["Location"], DATA[offset:],
                {"Content-Range": f"{offset}-{len(DATA) - 1}",
                 "Content-Length": str(len(DATA) - offset)})
    assert rest.status == 202, rest.body
    done = call("PUT", f"{rest.headers['Location']}&digest={sha256(DATA)}", b"",
                {"Content-Length": "0"})
    assert done.status == 201, done.body
    got = call("GET", f"/v2/{name}/blobs/{sha256(DATA)}")
    assert got.status == 200
    assert got.body == DATA


def attempt(call, method: str, location: str) -> Any:
    """One request of each upload method, as a client would send it next."""
    if method == "PATCH":
        return call("PATCH", location, DATA[FIRST:],
                    {"Content-Range": f"{FIRST}-{len(DATA) - 1}",
                     "Content-Length": str(len(DATA) - FIRST)})
    if method == "PUT":
        separator = "&" if "?" in location else "?"
        return call("PUT", f"{location}{separator}digest={sha256(DATA)}", DATA[FIRST:],
                    {"Content-Length": str(len(DATA) - FIRST)})
    return call(method, location)


# -- tampering -------------------------------------------------------------

def _flip_first_mac_byte(token: str, key: bytes, state: UploadState) -> str | None:
    raw = bytearray(unb64(token))
    raw[0] ^= 0x01
    return b64(bytes(raw))


def _flip_last_mac_byte(token: str, key: bytes, state: UploadState) -> str | None:
    raw = bytearray(unb64(token))
    raw[tokens.MAC_SIZE - 1] ^= 0x80
    return b64(bytes(raw))


def _payload_offset_changed(token: str, key: bytes, state: UploadState) -> str | None:
    raw = unb64(token)
    payload = json.loads(raw[tokens.MAC_SIZE:])
    payload["o"] = 0
    return b64(raw[:tokens.MAC_SIZE] + json.dumps(payload, separators=(",", ":")).encode())


def _payload_expiry_extended(token: str, key: bytes, state: UploadState) -> str | None:
    raw = unb64(token)
    payload = json.loads(raw[tokens.MAC_SIZE:])
    payload["e"] += 10**6
    return b64(raw[:tokens.MAC_SIZE] + json.dumps(payload, separators=(",", ":")).encode())


def _payload_byte_flipped(token: str, key: bytes, state: UploadState) -> str | None:
    raw = bytearray(unb64(token))
    raw[-2] ^= 0x01
    return b64(bytes(raw))


TAMPERED: list[Any] = [
    pytest.param(_flip_first_mac_byte, "signature", id="mac-first-byte-flipped"),
    pytest.param(_flip_last_mac_byte, "signature", id="mac-last-byte-flipped"),
    pytest.param(_payload_offset_changed, "signature", id="payload-offset-changed"),
    pytest.param(_payload_expiry_extended, "signature", id="payload-expiry-changed"),
    pytest.param(_payload_byte_flipped, "signature", id="payload-byte-flipped"),
    pytest.param(lambda t, k, s: t[:-6], "signature", id="truncated"),
    pytest.param(lambda t, k, s: t[:30], "signature", id="truncated-inside-mac"),
    pytest.param(lambda t, k, s: t + "AAAA", "signature", id="extended"),
    pytest.param(lambda t, k, s: "not*base64*at*all!", "signature", id="not-base64"),
    pytest.param(lambda t, k, s: t[:-1] + "=", "base64", id="bad-padding"),
    pytest.param(lambda t, k, s: "", "missing", id="empty"),
    pytest.param(lambda t, k, s: None, "missing", id="missing"),
    pytest.param(lambda t, k, s: t + "A" * tokens.MAX_TOKEN_LENGTH, "too long", id="too-long"),
    pytest.param(lambda t, k, s: tokens.pack(b"another key", s), "signature", id="other-key"),
    pytest.param(lambda t, k, s: tokens.pack(k, UploadState(
        s.name, s.upload_id, s.offset, int(time.time()) - 5)), "expired", id="expired"),
    pytest.param(lambda t, k, s: signed(k, b"\x80\x04\x95pickle."), "malformed",
                 id="signed-non-json"),
    pytest.param(lambda t, k, s: signed(k, b"[1,2,3]"), "malformed", id="signed-json-list"),
    pytest.param(lambda t, k, s: signed(k, json.dumps({"n": s.name}).encode()), "malformed",
                 id="signed-missing-fields"),
    pytest.param(lambda t, k, s: signed(k, json.dumps(
        {"n": s.name, "u": s.upload_id, "o": "ten", "e": s.expires}).encode()), "malformed",
        id="signed-offset-not-int"),
]


def _on(cases: list[Any], method: str) -> list[Any]:
    return [pytest.param(*case.values, method, id=f"{case.id}-{method}") for case in cases]


# Every bad token on PATCH (the request that writes bytes); a representative
# subset on status, completion and cancel, which share the same check.
TOKEN_CASES = _on(TAMPERED, "PATCH") + [
    case for method in ("GET", "PUT", "DELETE") for case in _on(
        [c for c in TAMPERED if c.id in ("mac-first-byte-flipped", "payload-offset-changed",
                                          "not-base64", "missing", "other-key", "expired")],
        method)]


@pytest.mark.parametrize(("tamper", "reason", "method"), TOKEN_CASES)
def test_bad_token_is_rejected_and_changes_nothing(
        call, snapshot, settings, method: str,
        tamper: Callable[[str, bytes, UploadState], str | None], reason: str) -> None:
    _, location = begin(call)
    token = state_of(location)
    state = tokens.unpack(settings.hmac_key, token)
    bad = with_state(location, tamper(token, settings.hmac_key, state))
    before = snapshot()
    assert_error(attempt(call, method, bad), 400, "BLOB_UPLOAD_INVALID", reason=reason)
    assert snapshot() == before
    assert_intact_and_finish(call, location)


# -- tokens for another upload ---------------------------------------------

@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
@pytest.mark.parametrize("case", ["other-repo-url", "other-repo-and-upload",
                                  "other-upload-same-repo"])
def test_token_of_another_upload(call, snapshot, method: str, case: str) -> None:
    _, in_a = begin(call, "a")
    _, in_b = begin(call, "b")
    _, other_in_a = begin(call, "a")
    a_token = state_of(in_a)
    target = {
        # a's upload id and token, presented under repository b
        "other-repo-url": with_state(in_a.replace("/v2/a/", "/v2/b/", 1), a_token),
        # b's upload URL with a's token
        "other-repo-and-upload": with_state(in_b, a_token),
        # another upload of the same repository, with a's token
        "other-upload-same-repo": with_state(other_in_a, a_token),
    }[case]
    before = snapshot()
    assert_error(attempt(call, method, target), 400, "BLOB_UPLOAD_INVALID",
                 reason="another upload")
    assert snapshot() == before
    assert_intact_and_finish(call, in_a, "a")
    assert_intact_and_finish(call, in_b, "b")


def test_signed_token_cannot_move_an_upload_to_another_repository(call, snapshot,
                                                                  settings) -> None:
    """Even a token correctly signed for repository b cannot continue a's
    upload there: the stored record names its repository."""
    _, in_a = begin(call, "a")
    state = tokens.unpack(settings.hmac_key, state_of(in_a))
    forged = tokens.pack(settings.hmac_key, UploadState("b", state.upload_id, state.offset,
                                                        state.expires))
    target = with_state(in_a.replace("/v2/a/", "/v2/b/", 1), forged)
    before = snapshot()
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        assert_error(attempt(call, method, target), 404, "BLOB_UPLOAD_UNKNOWN")
    assert snapshot() == before
    assert_intact_and_finish(call, in_a, "a")


# -- replay ----------------------------------------------------------------

@pytest.mark.parametrize("method", ["PATCH", "PUT"])
def test_replayed_stale_token_is_416_with_current_range(call, snapshot, method: str) -> None:
    """The Location from before a PATCH, used after it, would rewrite bytes
    already accepted: 416 BLOB_UPLOAD_INVALID and the current ``Range``."""
    stale, current = begin(call)
    before = snapshot()
    response = attempt(call, method, stale)
    assert_error(response, 416, "BLOB_UPLOAD_INVALID", reason="stale")
    assert response.headers["Range"] == f"0-{FIRST - 1}"
    assert snapshot() == before
    assert_intact_and_finish(call, current)


def test_replay_after_two_chunks(call, snapshot) -> None:
    _, middle = begin(call)
    second = call("PATCH", middle, DATA[FIRST:200],
                  {"Content-Range": f"{FIRST}-199", "Content-Length": str(200 - FIRST)})
    assert second.status == 202
    before = snapshot()
    replay = call("PATCH", middle, DATA[FIRST:200],
                  {"Content-Range": f"{FIRST}-199", "Content-Length": str(200 - FIRST)})
    assert_error(replay, 416, "BLOB_UPLOAD_INVALID")
    assert replay.headers["Range"] == "0-199"
    assert snapshot() == before
    assert_intact_and_finish(call, second.headers["Location"], offset=200)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_stale_token_may_still_inspect_or_cancel(call, method: str) -> None:
    """Status and cancel do not write bytes, so they accept any genuine token
    of the upload, however old its offset: a client that lost track of
    progress asks GET to find it (product behaviour, kept deliberately)."""
    stale, _ = begin(call)
    response = call(method, stale)
    if method == "GET":
        assert response.status == 204
        assert response.headers["Range"] == f"0-{FIRST - 1}"
    else:
        assert response.status == 204
        assert_error(call("GET", stale), 404, "BLOB_UPLOAD_UNKNOWN")


# -- uploads that are gone -------------------------------------------------

@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_unknown_upload_with_valid_token(call, snapshot, settings, method: str) -> None:
    _, location = begin(call)
    ghost = str(uuid.uuid4())
    token = tokens.pack(settings.hmac_key,
                        UploadState("tok", ghost, FIRST, int(time.time()) + 3600))
    target = f"/v2/tok/blobs/uploads/{ghost}?_state={token}"
    before = snapshot()
    assert_error(attempt(call, method, target), 404, "BLOB_UPLOAD_UNKNOWN")
    assert snapshot() == before
    assert_intact_and_finish(call, location)


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_cancelled_upload_is_unknown(call, snapshot, method: str) -> None:
    empty = snapshot()
    _, location = begin(call)
    cancelled = call("DELETE", location)
    assert cancelled.status == 204
    assert snapshot() == empty  # record and staged tail both gone
    assert_error(attempt(call, method, location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert snapshot() == empty


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_completed_upload_is_unknown(call, snapshot, method: str) -> None:
    _, location = begin(call)
    done = call("PUT", f"{location}&digest={sha256(DATA)}", DATA[FIRST:],
                {"Content-Length": str(len(DATA) - FIRST)})
    assert done.status == 201
    before = snapshot()
    assert_error(attempt(call, method, location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert snapshot() == before


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
def test_upload_whose_record_expired_is_unknown(call, snapshot, settings,
                                                method: str) -> None:
    """DynamoDB deletes expired items lazily; until it does, a record past
    its ``ttl`` must already count as gone."""
    _, location = begin(call)
    ddb = clients.client("dynamodb", settings.region)
    ddb.update_item(TableName=settings.table,
                    Key={"pk": {"S": f"upload#{upload_id_of(location)}"}, "sk": {"S": "upload"}},
                    UpdateExpression="SET #t = :past",
                    ExpressionAttributeNames={"#t": "ttl"},
                    ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 60)}})
    before = snapshot()
    assert_error(attempt(call, method, location), 404, "BLOB_UPLOAD_UNKNOWN")
    assert snapshot() == before


# -- tokens.pack / tokens.unpack -------------------------------------------

KEY = b"unit-test-key"


def test_round_trip() -> None:
    state = UploadState("a/b/c", str(uuid.uuid4()), 12345, int(time.time()) + 60)
    token = tokens.pack(KEY, state)
    assert tokens.unpack(KEY, token) == state
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    payload = json.loads(unb64(token)[tokens.MAC_SIZE:])
    assert payload == {"n": "a/b/c", "u": state.upload_id, "o": 12345, "e": state.expires}


def test_round_trip_with_test_key(settings) -> None:
    state = UploadState("tok", "id", 0, int(time.time()) + 60)
    assert tokens.unpack(settings.hmac_key, tokens.pack(settings.hmac_key, state)) == state
    with pytest.raises(RegistryError):
        tokens.unpack(KEY, tokens.pack(settings.hmac_key, state))


def test_expiry_is_inclusive_of_now() -> None:
    token = tokens.pack(KEY, UploadState("a", "u", 0, 1000))
    assert tokens.unpack(KEY, token, now=1000).expires == 1000
    with pytest.raises(RegistryError) as raised:
        tokens.unpack(KEY, token, now=1001)
    assert raised.value.errors[0][0].code == "BLOB_UPLOAD_INVALID"


def test_mac_comparison_is_constant_time(monkeypatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens.hmac, "compare_digest", spy)
    state = UploadState("a", "u", 7, int(time.time()) + 60)
    token = tokens.pack(KEY, state)
    assert tokens.unpack(KEY, token) == state
    assert len(calls) == 1
    presented, expected = calls[0]
    assert presented == expected == unb64(token)[:tokens.MAC_SIZE]
    tampered = bytearray(unb64(token))
    tampered[5] ^= 0xFF
    with pytest.raises(RegistryError):
        tokens.unpack(KEY, b64(bytes(tampered)))
    assert len(calls) == 2
    assert calls[1][0] != calls[1][1]
