"""app.py served through the local API Gateway stand-in, over real sockets.

What the deployed stack does to requests and answers is what these check:
binary bodies base64-encoded by Content-Type and decoded by Accept, text
bodies passed byte-exact, the 6 MB event limit (413 before the function),
the response limit (502), the 29 s timeout (504, shortened here), routes
deeper than app.py registers (the gateway's missing-token answer), and that
every gateway answer is the one in infra/gateway-responses.json.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

import app as chalice_app
from chalicelib import apigateway
from chalicelib.core import errors
from chalicelib.registry import dispatch

MIB = 1024 * 1024
OCTET = "application/octet-stream"
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Gateway:
    gateway: apigateway.ApiGateway
    port: int
    events: list[dict[str, Any]]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def headers_for(self, headers: list[tuple[str, str]],
                    body: bytes | None) -> list[tuple[str, str]]:
        """Exactly the headers :meth:`request` puts on the wire."""
        sent = [("Host", self.host)] + headers
        if body is not None:
            sent.append(("Content-Length", str(len(body))))
        return sent

    def request(self, method: str, target: str, body: bytes | None = None,
                headers: list[tuple[str, str]] | None = None) -> Answer:
        """One request on a fresh connection, with no header added behind our back."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers_for(headers or [], body):
                conn.putheader(name, value)
            conn.endheaders()
            if body:
                conn.send(body)
            response = conn.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            conn.close()


@contextmanager
def running_gateway(settings, monkeypatch, timeout: float = apigateway.INTEGRATION_TIMEOUT_SECONDS,
                    **env: str) -> Iterator[Gateway]:
    """app.py behind the gateway; the function reads its settings from the
    environment on its first request, as on Lambda."""
    monkeypatch.setenv("CARGOHOLD_BUCKET", settings.bucket)
    monkeypatch.setenv("CARGOHOLD_TABLE", settings.table)
    monkeypatch.setenv("CARGOHOLD_BLOB_REDIRECTS", "false")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    events: list[dict[str, Any]] = []
    gateway = apigateway.lambda_gateway(timeout=timeout, on_event=events.append)
    server, thread = apigateway.serve_in_thread(gateway)
    try:
        yield Gateway(gateway, server.server_address[1], events)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
        assert gateway.function.wait_idle(15), "an invocation outlived the test"


@pytest.fixture
def gw(settings, monkeypatch) -> Iterator[Gateway]:
    with running_gateway(settings, monkeypatch) as gateway:
        yield gateway


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _expected_gateway_error(response_type: str) -> tuple[int, dict[str, Any]]:
    """Status and body that infra/gateway-responses.json defines (request id aside)."""
    document = json.loads(apigateway.GATEWAY_RESPONSES.read_text())
    for resource in document["Resources"].values():
        props = resource["Properties"]
        if props["ResponseType"] == response_type:
            template = props["ResponseTemplates"]["application/json"]
            body = json.loads(template.replace("$context.requestId", "REQUEST-ID"))
            return int(props["StatusCode"]), body
    raise AssertionError(f"{response_type} is not in gateway-responses.json")


def _assert_gateway_error(answer: Answer, response_type: str) -> dict[str, Any]:
    status, expected = _expected_gateway_error(response_type)
    assert answer.status == status, answer.body
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers[API_VERSION[0]] == API_VERSION[1]
    body = answer.json()
    request_id = body["errors"][0]["detail"].pop("requestId")
    assert request_id == answer.headers["x-amzn-RequestId"]
    expected["errors"][0]["detail"].pop("requestId")
    assert body == expected
    return body


def _start_upload(gw: Gateway, name: str) -> Answer:
    started = gw.request("POST", f"/v2/{name}/blobs/uploads/")
    assert started.status == 202, started.body
    return started


def _patch(gw: Gateway, location: str, offset: int, chunk: bytes) -> Answer:
    return gw.request("PATCH", location, chunk, [
        ("Content-Type", OCTET), ("Content-Range", f"{offset}-{offset + len(chunk) - 1}")])


def _push_chunked(gw: Gateway, name: str, data: bytes, chunk_size: int) -> str:
    location = _start_upload(gw, name).headers["Location"]
    for offset in range(0, len(data), chunk_size):
        patched = _patch(gw, location, offset, data[offset:offset + chunk_size])
        assert patched.status == 202, patched.body
        location = patched.headers["Location"]
    done = gw.request("PUT", f"{location}&digest={_digest(data)}", b"",
                      [("Content-Type", OCTET)])
    assert done.status == 201, done.body
    return done.headers["Docker-Content-Digest"]


def test_base_endpoint_and_event_shape(gw: Gateway) -> None:
    for target in ("/v2/", "/v2"):
        answer = gw.request("GET", target)
        assert answer.status == 200
        assert json.loads(answer.body) == {}
        assert answer.headers[API_VERSION[0]] == API_VERSION[1]
    event = gw.events[0]
    assert event["resource"] == "/v2"
    assert event["requestContext"]["resourcePath"] == "/v2"
    assert event["pathParameters"] is None
    assert event["body"] is None and event["isBase64Encoded"] is False

    listed = gw.request("GET", "/v2/a/b/tags/list?n=1&last=x&n=2",
                        headers=[("X-Dup", "one"), ("X-Dup", "two")])
    assert listed.status == 404  # NAME_UNKNOWN from the registry itself
    assert listed.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    event = gw.events[-1]
    assert event["resource"] == "/v2/{p0}/{p1}/{p2}/{p3}"
    assert event["pathParameters"] == {"p0": "a", "p1": "b", "p2": "tags", "p3": "list"}
    assert event["httpMethod"] == event["requestContext"]["httpMethod"] == "GET"
    assert event["path"] == "/v2/a/b/tags/list"
    assert event["queryStringParameters"] == {"n": "2", "last": "x"}
    assert event["multiValueQueryStringParameters"] == {"n": ["1", "2"], "last": ["x"]}
    assert event["headers"]["X-Dup"] == "two"
    assert event["multiValueHeaders"]["X-Dup"] == ["one", "two"]
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert event["requestContext"]["stage"] == "api"
    assert event["requestContext"]["requestId"] == listed.headers["x-amzn-RequestId"]

    # API Gateway ignores one trailing slash: the upload route has depth 3.
    _start_upload(gw, "a")
    assert gw.events[-1]["resource"] == "/v2/{p0}/{p1}/{p2}"


def test_binary_chunks_arrive_intact(gw: Gateway) -> None:
    rng = random.Random(7)
    data = b"\xff\xfe\x80\xc3(" + rng.randbytes(3 * MIB - 100)  # invalid UTF-8 up front
    digest = _push_chunked(gw, "bin/data", data, MIB)
    patches = [e for e in gw.events if e["httpMethod"] == "PATCH"]
    assert len(patches) == 3
    assert all(e["isBase64Encoded"] for e in patches)

    pulled = gw.request("GET", f"/v2/bin/data/blobs/{digest}", headers=[("Accept", OCTET)])
    assert pulled.status == 200, pulled.body[:200]
    assert pulled.headers["Content-Type"] == OCTET
    assert pulled.headers["Docker-Content-Digest"] == digest
    assert pulled.body == data
    head = gw.request("HEAD", f"/v2/bin/data/blobs/{digest}")
    assert head.status == 200
    assert head.headers["Content-Length"] == str(len(data))


def test_binary_answer_needs_binary_first_accept(gw: Gateway) -> None:
    """API Gateway decodes a base64 answer only for a binary *first* Accept
    type; the door must refuse the rest rather than let the base64 through."""
    data = bytes(range(256)) * 8
    created = gw.request("POST", f"/v2/acc/blobs/uploads/?digest={_digest(data)}", data,
                         [("Content-Type", OCTET)])
    assert created.status == 201, created.body
    for accept in ("*/*", f"application/json, {OCTET}"):
        answer = gw.request("GET", f"/v2/acc/blobs/{_digest(data)}", headers=[("Accept", accept)])
        assert answer.body != data
        assert answer.status == 406, (accept, answer.status, answer.body[:80])
        assert answer.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_manifest_text_body_is_stored_byte_exact(gw: Gateway) -> None:
    config = b'{"architecture":"amd64"}'
    assert gw.request("POST", f"/v2/text/m/blobs/uploads/?digest={_digest(config)}", config,
                      [("Content-Type", OCTET)]).status == 201
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config), "size": len(config)},
        "layers": [],
        "annotations": {"note": "grüße \u2603 \"quoted\"\n\ttabbed"},
    }, indent=3, ensure_ascii=False).encode("utf-8") + b"\n"
    media = "application/vnd.oci.image.manifest.v1+json"
    put = gw.request("PUT", "/v2/text/m/manifests/v1", manifest, [("Content-Type", media)])
    assert put.status == 201, put.body
    assert put.headers["Docker-Content-Digest"] == _digest(manifest)
    event = gw.events[-1]
    assert event["isBase64Encoded"] is False
    assert event["body"] == manifest.decode("utf-8")
    got = gw.request("GET", "/v2/text/m/manifests/v1", headers=[("Accept", media)])
    assert got.status == 200
    assert got.body == manifest
    assert got.headers["Content-Type"] == media


def test_body_over_the_event_limit_never_reaches_the_function(gw: Gateway, snapshot) -> None:
    location = _start_upload(gw, "big/one").headers["Location"]
    before, invocations = snapshot(), gw.gateway.function.invocations
    answer = _patch(gw, location, 0, b"\x01" * (5 * MIB))
    body = _assert_gateway_error(answer, "REQUEST_TOO_LARGE")
    assert "4 MiB" in body["errors"][0]["message"]
    # A declared length over 6 MB is refused without reading the body.
    over = gw.request("PATCH", location, b"\0" * (7 * MIB),
                      [("Content-Type", OCTET), ("Content-Range", f"0-{7 * MIB - 1}")])
    _assert_gateway_error(over, "REQUEST_TOO_LARGE")
    assert over.headers["Connection"] == "close"
    # So is a chunked body, once it passes the limit.
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        conn.request("PATCH", location, body=iter([b"\0" * MIB] * 7), encode_chunked=True,
                     headers={"Content-Type": OCTET})
        chunked = conn.getresponse()
        assert chunked.status == 413
        assert json.loads(chunked.read())["errors"][0]["code"] == "SIZE_INVALID"
    finally:
        conn.close()
    assert gw.gateway.function.invocations == invocations
    assert snapshot() == before
    status = gw.request("GET", location)
    assert status.status == 204 and status.headers["Range"] == "0-0"


def _largest_fitting_body(gw: Gateway, target: str,
                          headers: Callable[[int], list[tuple[str, str]]]) -> int:
    """The largest binary body whose event (built like the gateway builds it) fits."""
    def size(n: int) -> int:
        body = b"\0" * n
        event = apigateway.build_event(gw.gateway.api, "PATCH", target,
                                       gw.headers_for(headers(n), body), body,
                                       server_port=gw.port)
        assert event is not None
        return len(apigateway.event_payload(event))

    low, high = 0, apigateway.REQUEST_PAYLOAD_LIMIT
    while low < high:  # bounded: about 23 steps
        middle = (low + high + 1) // 2
        if size(middle) <= apigateway.REQUEST_PAYLOAD_LIMIT:
            low = middle
        else:
            high = middle - 1
    return low


def test_largest_body_that_fits_succeeds(settings, monkeypatch) -> None:
    # Raise the registry's own body limit so only the gateway's applies.
    with running_gateway(settings, monkeypatch, CARGOHOLD_MAX_BODY_BYTES=str(8 * MIB)) as gw:
        location = _start_upload(gw, "edge/fit").headers["Location"]

        def headers(n: int) -> list[tuple[str, str]]:
            return [("Content-Type", OCTET), ("Content-Range", f"0-{n - 1}")]

        largest = _largest_fitting_body(gw, location, headers)
        assert 4 * MIB < largest < 4.5 * MIB
        too_big = _patch(gw, location, 0, b"\0" * (largest + 1))
        _assert_gateway_error(too_big, "REQUEST_TOO_LARGE")
        fits = _patch(gw, location, 0, b"\0" * largest)
        assert fits.status == 202, fits.body
        assert fits.headers["Range"] == f"0-{largest - 1}"


def test_advertised_chunk_maximum_fits_the_gateway(gw: Gateway) -> None:
    """The function's default OCI-Chunk-Max-Length is a body the gateway passes."""
    started = _start_upload(gw, "edge/max")
    maximum = int(started.headers["OCI-Chunk-Max-Length"])
    location = started.headers["Location"]
    chunk = random.Random(3).randbytes(maximum)
    patched = _patch(gw, location, 0, chunk)
    assert patched.status == 202, patched.body
    over = _patch(gw, patched.headers["Location"], maximum, b"\0" * (maximum + 1))
    assert over.status == 413  # the registry's own limit, inside the function
    assert gw.events[-1]["httpMethod"] == "PATCH"
    assert over.json()["errors"][0]["code"] == "SIZE_INVALID"


def test_response_over_the_limit_is_502(gw: Gateway) -> None:
    data = random.Random(5).randbytes(5 * MIB)
    digest = _push_chunked(gw, "big/pull", data, 5 * MIB // 2)
    head = gw.request("HEAD", f"/v2/big/pull/blobs/{digest}")
    assert head.status == 200 and head.headers["Content-Length"] == str(len(data))
    pulled = gw.request("GET", f"/v2/big/pull/blobs/{digest}", headers=[("Accept", OCTET)])
    assert pulled.status == 502
    body = pulled.json()
    assert pulled.headers[API_VERSION[0]] == API_VERSION[1]
    error = body["errors"][0]
    assert error["code"] == "UNKNOWN"
    assert error["message"] == "Internal server error"
    assert error["detail"]["gatewayResponse"] == "INTEGRATION_FAILURE"
    assert "CARGOHOLD_BLOB_REDIRECTS" in error["detail"]["hint"]


def test_paths_deeper_than_the_routes_get_the_missing_token_answer(gw: Gateway) -> None:
    limit = chalice_app.MAX_NAME_COMPONENTS
    _start_upload(gw, "/".join(f"c{i}" for i in range(limit)))  # always routed
    # The deepest path app.py routes reaches the registry; one segment more
    # is the gateway's to answer.
    name = "/".join(f"c{i}" for i in range(chalice_app.MAX_DEPTH - 2))
    routed = gw.request("GET", f"/v2/{name}/tags/list")
    assert routed.status == 404 and routed.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    assert "requestId" not in routed.json()["errors"][0]["detail"]
    invocations = gw.gateway.function.invocations
    for method, target in (("GET", f"/v2/{name}/one-more/tags/list"),
                           ("GET", "/not-v2"), ("POST", "/v2/"), ("GET", "/v2/a//tags/list")):
        answer = gw.request(method, target)
        body = _assert_gateway_error(answer, "MISSING_AUTHENTICATION_TOKEN")
        assert f"more than {limit} components" in body["errors"][0]["message"]
    assert gw.gateway.function.invocations == invocations


def test_slow_function_gets_504(settings, monkeypatch) -> None:
    release = threading.Event()
    original = dispatch.handle

    def slow(registry, request):
        release.wait(10)
        return original(registry, request)

    monkeypatch.setattr(dispatch, "handle", slow)  # app.py imports it per request
    with running_gateway(settings, monkeypatch, timeout=1.0) as gw:
        started = time.monotonic()
        answer = gw.request("GET", "/v2/")
        elapsed = time.monotonic() - started
        release.set()
        _assert_gateway_error(answer, "INTEGRATION_TIMEOUT")
        assert 1.0 <= elapsed < 5
        assert gw.gateway.function.wait_idle(10)
        assert gw.request("GET", "/v2/").status == 200


def test_concurrent_requests_stay_apart(gw: Gateway) -> None:
    """Each execution environment serves one event at a time, so Chalice's
    per-app current_request never mixes two requests."""
    names = [f"par/r{i}" for i in range(8)]
    results: dict[str, Answer] = {}

    def fetch(name: str) -> None:
        results[name] = gw.request("GET", f"/v2/{name}/tags/list")

    threads = [threading.Thread(target=fetch, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for name in names:
        error = results[name].json()["errors"][0]
        assert error["code"] == "NAME_UNKNOWN"
        assert name in json.dumps(error["detail"])


def test_gateway_responses_file_is_consistent() -> None:
    responses = apigateway.load_gateway_responses(apigateway.GATEWAY_RESPONSES)
    assert {"REQUEST_TOO_LARGE", "INTEGRATION_TIMEOUT", "MISSING_AUTHENTICATION_TOKEN",
            "DEFAULT_4XX", "DEFAULT_5XX"} <= set(responses)
    wire_codes = {errors._WIRE_CODES.get(code, code) for code in errors.REGISTRY}
    api = apigateway.RestApi({"/v2": frozenset({"GET"})}, ("application/octet-stream",))
    gateway = apigateway.ApiGateway(api, apigateway.LambdaFunction(lambda: None), responses)
    fallbacks = {"DEFAULT_4XX": "BAD_REQUEST_BODY", "DEFAULT_5XX": "INTEGRATION_FAILURE"}
    for response_type in responses:
        reply = gateway.gateway_error(fallbacks.get(response_type, response_type),
                                      "GET", "/v2/x", [])
        body = json.loads(reply.body)
        assert {e["code"] for e in body["errors"]} <= wire_codes
        assert (API_VERSION[0], API_VERSION[1]) in reply.headers
    message = json.loads(gateway.gateway_error("MISSING_AUTHENTICATION_TOKEN", "GET", "/x", [])
                         .body)["errors"][0]["message"]
    assert f"more than {chalice_app.MAX_NAME_COMPONENTS} components" in message
    assert os.path.basename(apigateway.GATEWAY_RESPONSES) in (
        apigateway.ROOT / "infra" / "template.yaml").read_text()
