"""A local API Gateway (REST API, Lambda proxy integration) in front of app.py.

Why: the Chalice door only meets API Gateway's encoding and limits once it
is deployed. This stand-in serves the real Chalice app over real HTTP the
way the deployed stack does, so tests and ``make run --door lambda`` hit the
same walls a user would:

* the request becomes a Lambda proxy event (``resource``, ``path``,
  ``headers``/``multiValueHeaders``, query parameters, ``pathParameters``,
  ``requestContext``, ``body``, ``isBase64Encoded``), with bodies whose
  ``Content-Type`` matches the API's binary media types base64-encoded and
  all others passed as UTF-8 text;
* the serialized event may not exceed Lambda's 6 MB (413), the invocation
  may not take longer than 29 s (504), the function's serialized answer may
  not exceed Lambda's response limit (502);
* routing is API Gateway's: the resources of ``app.routes``, one path
  segment per ``{param}``, a trailing slash ignored; anything else (a deeper
  path, a method a resource lacks) is the gateway's 403 "Missing
  Authentication Token";
* a base64 answer is decoded only when the request's *first* ``Accept``
  media type is a binary type; otherwise the client gets the base64 text,
  as API Gateway does;
* the gateway's own errors are rendered from ``infra/gateway-responses.json``
  (the CloudFormation ``AWS::ApiGateway::GatewayResponse`` resources merged
  into the deployed stack), so that file is exercised, not decorative.

Like Lambda, each execution environment handles one event at a time: a pool
loads a fresh copy of app.py per environment (its own ``_registry``, built
from the environment on the first request, i.e. a cold start), so Chalice's
per-app ``current_request`` never crosses threads, and a timed-out
invocation keeps its environment busy until it ends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib.util
import itertools
import json
import logging
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from .server import BodyReader, RegistryServer, discard_rest

# Not under "cargohold": Chalice sets that logger to ERROR without
# propagation when app.py loads, which would silence the gateway's log.
log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
APP_FILE = ROOT / "app.py"
GATEWAY_RESPONSES = ROOT / "infra" / "gateway-responses.json"
CHALICE_CONFIG = ROOT / ".chalice" / "config.json"

# Lambda's synchronous invocation payload limit, request side (6 MB).
REQUEST_PAYLOAD_LIMIT = 6 * 1024 * 1024
# Response side: Lambda reports "Response payload size exceeded maximum
# allowed payload size (6291556 bytes)", 100 bytes more than the request side.
RESPONSE_PAYLOAD_LIMIT = 6_291_556
# API Gateway's REST API integration timeout.
INTEGRATION_TIMEOUT_SECONDS = 29.0

Headers = list[tuple[str, str]]
Handler = Callable[[dict[str, Any], Any], Any]

# Hop-by-hop headers: API Gateway terminates the connection, so these never
# reach the function (and the function's are not forwarded to the client).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                         "transfer-encoding", "upgrade", "expect"})
_STATE = re.compile(r"(_state=)[^&\s]+")


# --- the REST API's configuration (what `chalice deploy` creates) ---------

def media_type_matches(value: str | None, binary_types: Sequence[str]) -> bool:
    """Does the first media type of a Content-Type/Accept value name a binary type?

    API Gateway looks at the first ``Accept`` entry only; a list entry may be
    ``type/*`` or ``*/*``, the request's ``*/*`` matches nothing specific.
    """
    if not value:
        return False
    first = value.split(",", 1)[0].split(";", 1)[0].strip().lower()
    kind, _, subtype = first.partition("/")
    if not kind or not subtype:
        return False
    for entry in binary_types:
        e_kind, _, e_sub = entry.split(";", 1)[0].strip().lower().partition("/")
        if (e_kind, e_sub) == ("*", "*"):
            return True
        if e_kind == kind and e_sub in ("*", subtype):
            return True
    return False


@dataclass(frozen=True)
class RestApi:
    """The deployed resources: resource path -> methods, and binary media types."""

    resources: dict[str, frozenset[str]]
    binary_types: tuple[str, ...]
    stage: str = "api"

    @classmethod
    def from_chalice(cls, app: Any, stage: str = "api") -> RestApi:
        resources = {path: frozenset(methods) for path, methods in app.routes.items()}
        return cls(resources, tuple(app.api.binary_types), stage)

    def match(self, method: str, raw_path: str) -> tuple[str, dict[str, str]] | None:
        """(resource, pathParameters) for a raw request path, or None.

        Literal segments win over ``{param}`` ones at each level, a parameter
        matches exactly one non-empty segment, and one trailing slash is
        ignored (``/v2/a/blobs/uploads/`` is ``/v2/{p0}/{p1}/{p2}``).
        """
        if not raw_path.startswith("/"):
            return None
        if raw_path != "/" and raw_path.endswith("/"):
            raw_path = raw_path[:-1]
        segments = raw_path.split("/")[1:] if raw_path != "/" else []
        if any(not s for s in segments):
            return None
        found = self._walk(segments)
        if found is None:
            return None
        resource, params = found
        methods = self.resources[resource]
        if method not in methods and "ANY" not in methods:
            return None
        return resource, params

    def _walk(self, segments: list[str]) -> tuple[str, dict[str, str]] | None:
        best: tuple[tuple[int, ...], str, dict[str, str]] | None = None
        for resource in self.resources:
            parts = resource.split("/")[1:] if resource != "/" else []
            if len(parts) != len(segments):
                continue
            params: dict[str, str] = {}
            rank: list[int] = []
            for part, segment in zip(parts, segments, strict=True):
                if part.startswith("{") and part.endswith("}"):
                    params[part[1:-1]] = unquote(segment)
                    rank.append(1)
                elif part == unquote(segment):
                    rank.append(0)
                else:
                    break
            else:
                key = tuple(rank)
                if best is None or key < best[0]:
                    best = (key, resource, params)
        return None if best is None else (best[1], best[2])


# --- the proxy event ------------------------------------------------------

def _trace_id(now: float) -> str:
    return f"Root=1-{int(now):08x}-{secrets.token_hex(12)}"


def build_event(api: RestApi, method: str, target: str, headers: Sequence[tuple[str, str]],
                body: bytes, *, source_ip: str = "127.0.0.1", server_port: int = 0,
                request_id: str | None = None, now: float | None = None,
                ) -> dict[str, Any] | None:
    """The Lambda proxy event API Gateway would send, or None if no route matches.

    ``target`` is the request-target as sent (``/v2/a/tags/list?n=1``).
    Every variable part (ids, times, the trace id) has a fixed length, so the
    event's size depends only on the request.
    """
    now = time.time() if now is None else now
    request_id = request_id or str(uuid.uuid4())
    raw_path, _, query = target.partition("?")
    matched = api.match(method, raw_path)
    if matched is None:
        return None
    resource, path_params = matched

    forwarded: Headers = []
    seen_length = False
    for name, value in headers:
        lowered = name.lower()
        if lowered in _HOP_BY_HOP:
            continue
        if lowered == "content-length":
            seen_length = True
            value = str(len(body)) if body else value
        forwarded.append((name, value))
    if body and not seen_length:  # a chunked request: the gateway knows the length now
        forwarded.append(("Content-Length", str(len(body))))
    prior_for = [v for k, v in forwarded if k.lower() == "x-forwarded-for"]
    forwarded = [(k, v) for k, v in forwarded if k.lower() not in
                 ("x-forwarded-for", "x-forwarded-port", "x-forwarded-proto", "x-amzn-trace-id")]
    forwarded += [("X-Amzn-Trace-Id", _trace_id(now)),
                  ("X-Forwarded-For", ", ".join(prior_for + [source_ip])),
                  ("X-Forwarded-Port", str(server_port)),
                  ("X-Forwarded-Proto", "http")]

    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for name, value in forwarded:
        key = names.setdefault(name.lower(), name)  # first spelling seen wins
        single[key] = value  # the last value, as API Gateway does
        multi.setdefault(key, []).append(value)

    pairs = parse_qsl(query, keep_blank_values=True) if query else []
    query_single: dict[str, str] = {}
    query_multi: dict[str, list[str]] = {}
    for key, value in pairs:
        query_single[key] = value
        query_multi.setdefault(key, []).append(value)

    binary = bool(body) and media_type_matches(
        next((v for k, v in forwarded if k.lower() == "content-type"), None), api.binary_types)
    if not body:
        event_body: str | None = None
    elif binary:
        event_body = base64.b64encode(body).decode("ascii")
    else:
        event_body = body.decode("utf-8", "replace")

    host = single.get(names.get("host", "host"), "localhost")
    user_agent = single.get(names.get("user-agent", "user-agent"))
    path = unquote(raw_path)
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": single,
        "multiValueHeaders": multi,
        "queryStringParameters": query_single or None,
        "multiValueQueryStringParameters": query_multi or None,
        "pathParameters": path_params or None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": hashlib.sha256(resource.encode()).hexdigest()[:6],
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": base64.b64encode(uuid.UUID(request_id).bytes[:12]).decode(),
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            # Served at the host root, as behind a custom domain: registries
            # must answer /v2/ there, so there is no /{stage} prefix.
            "path": path,
            "accountId": "123456789012",
            "protocol": "HTTP/1.1",
            "stage": api.stage,
            "domainPrefix": host.split(".", 1)[0],
            "requestTimeEpoch": int(now * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None, "accountId": None, "cognitoIdentityId": None,
                "caller": None, "sourceIp": source_ip, "principalOrgId": None,
                "accessKey": None, "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None, "userArn": None,
                "userAgent": user_agent, "user": None,
            },
            "domainName": host,
            "apiId": "cargohold0",
        },
        "body": event_body,
        "isBase64Encoded": binary,
    }


def event_payload(event: dict[str, Any]) -> bytes:
    """The invocation payload whose size Lambda limits."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --- gateway responses ----------------------------------------------------

# API Gateway's defaults: (status, x-amzn-ErrorType, message).
_DEFAULTS: dict[str, tuple[int, str, str]] = {
    "MISSING_AUTHENTICATION_TOKEN": (403, "MissingAuthenticationTokenException",
                                     "Missing Authentication Token"),
    "REQUEST_TOO_LARGE": (413, "RequestEntityTooLargeException", "Request Too Long"),
    "INTEGRATION_TIMEOUT": (504, "InternalServerErrorException", "Endpoint request timed out"),
    "INTEGRATION_FAILURE": (502, "InternalServerErrorException", "Internal server error"),
    "BAD_REQUEST_BODY": (400, "BadRequestException", "Bad Request"),
    "THROTTLED": (429, "TooManyRequestsException", "Too Many Requests"),
}
_DEFAULT_TEMPLATE = '{"message":$context.error.messageString}'
_VARIABLE = re.compile(r"\$(!?)(?:\{context\.([\w.]+)\}|context\.(\w+(?:\.\w+)*))")


@dataclass(frozen=True)
class GatewayResponse:
    status: int | None
    headers: dict[str, str]  # name -> static value or method.request.* expression
    template: str


@dataclass(frozen=True)
class Reply:
    """What goes back on the wire."""

    status: int
    headers: Headers
    body: bytes
    close: bool = False
    reason: str = ""  # for the log: why the gateway answered itself


def load_gateway_responses(path: Path | None) -> dict[str, GatewayResponse]:
    """``AWS::ApiGateway::GatewayResponse`` resources of a CloudFormation fragment.

    Refuses what API Gateway would refuse or what this stand-in cannot
    render faithfully, so a broken file fails here and not in production.
    """
    if path is None:
        return {}
    document = json.loads(path.read_text())
    found: dict[str, GatewayResponse] = {}
    for logical_id, resource in document.get("Resources", {}).items():
        if resource.get("Type") != "AWS::ApiGateway::GatewayResponse":
            continue
        props = resource["Properties"]
        if props.get("RestApiId") != {"Ref": "RestAPI"}:
            raise ValueError(f"{logical_id}: RestApiId must be {{'Ref': 'RestAPI'}} "
                             "(the API of Chalice's packaged template)")
        headers: dict[str, str] = {}
        for key, value in props.get("ResponseParameters", {}).items():
            prefix = "gatewayresponse.header."
            if not key.startswith(prefix):
                raise ValueError(f"{logical_id}: unsupported response parameter {key}")
            if not (value.startswith("'") and value.endswith("'")) and not value.startswith(
                    ("method.request.header.", "method.request.querystring.",
                     "method.request.path.")):
                raise ValueError(f"{logical_id}: {key} must be a quoted static value "
                                 "or a method.request.* expression")
            headers[key[len(prefix):]] = value
        templates = props.get("ResponseTemplates", {})
        template = templates.get("application/json") or next(iter(templates.values()), None)
        status = props.get("StatusCode")
        found[props["ResponseType"]] = GatewayResponse(
            int(status) if status is not None else None, headers, template or _DEFAULT_TEMPLATE)
    return found


def _render(template: str, variables: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        quiet, braced, plain = match.groups()
        name = braced or plain
        if name in variables:
            return variables[name]
        return "" if quiet else match.group(0)  # VTL leaves unknown references as text

    return _VARIABLE.sub(substitute, template)


# --- the function: Lambda execution environments -------------------------

class LambdaContext:
    """What Lambda passes as ``context`` (the attributes handlers use)."""

    def __init__(self, function_name: str, memory_mb: int, timeout_s: float,
                 request_id: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = (f"arn:aws:lambda:us-east-1:123456789012:function:"
                                     f"{function_name}")
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = time.strftime("%Y/%m/%d/[$LATEST]") + secrets.token_hex(16)
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def load_chalice_app(path: Path = APP_FILE, module_name: str | None = None) -> Any:
    """A fresh copy of a Chalice app file, as a new execution environment loads it."""
    name = module_name or f"cargohold_lambda_{next(_LOADS)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


_LOADS = itertools.count()


class LambdaFunction:
    """A pool of execution environments; each handles one event at a time."""

    def __init__(self, load: Callable[[], Handler], *, name: str = "cargohold-dev",
                 memory_mb: int = 512, timeout_s: float = 29.0,
                 max_environments: int = 16) -> None:
        self._load = load
        self.name = name
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self._idle: list[Handler] = []
        self._slots = threading.BoundedSemaphore(max_environments)
        self._lock = threading.Condition()
        self._running = 0
        self.invocations = 0
        self.cold_starts = 0

    @classmethod
    def from_app_file(cls, path: Path = APP_FILE, **kwargs: Any) -> LambdaFunction:
        return cls(lambda: load_chalice_app(path), **kwargs)

    def context(self, request_id: str) -> LambdaContext:
        return LambdaContext(self.name, self.memory_mb, self.timeout_s, request_id)

    def invoke(self, payload: bytes, context: LambdaContext) -> bytes:
        """Run one event (JSON bytes) and return the function's JSON answer.

        Like the Python runtime, the handler gets the decoded JSON and its
        return value is serialized with ``json.dumps``.
        """
        with self._lock:
            self.invocations += 1
            self._running += 1
        try:
            with self._slots:
                with self._lock:
                    environment = self._idle.pop() if self._idle else None
                if environment is None:
                    environment = self._load()
                    with self._lock:
                        self.cold_starts += 1
                try:
                    result = environment(json.loads(payload), context)
                finally:
                    with self._lock:
                        self._idle.append(environment)
            return json.dumps(result).encode("utf-8")
        finally:
            with self._lock:
                self._running -= 1
                self._lock.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no invocation runs (e.g. one that outlived its gateway timeout)."""
        with self._lock:
            return self._lock.wait_for(lambda: self._running == 0, timeout)


def chalice_config(stage: str = "dev", path: Path = CHALICE_CONFIG) -> dict[str, Any]:
    """Function name, memory, timeout and API stage of a Chalice stage, with defaults."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        config = {}
    merged = {**config, **config.get("stages", {}).get(stage, {})}
    return {"name": f"{config.get('app_name', 'cargohold')}-{stage}",
            "memory_mb": int(merged.get("lambda_memory_size", 128)),
            "timeout_s": float(merged.get("lambda_timeout", 60)),
            "api_stage": merged.get("api_gateway_stage", "api")}


# --- the gateway ----------------------------------------------------------

@dataclass
class ApiGateway:
    """The request pipeline, free of sockets: (method, target, headers, body) -> Reply."""

    api: RestApi
    function: LambdaFunction
    responses: dict[str, GatewayResponse] = field(default_factory=dict)
    timeout: float = INTEGRATION_TIMEOUT_SECONDS
    request_limit: int = REQUEST_PAYLOAD_LIMIT
    response_limit: int = RESPONSE_PAYLOAD_LIMIT
    on_event: Callable[[dict[str, Any]], None] | None = None

    def gateway_error(self, response_type: str, method: str, target: str,
                      request_headers: Sequence[tuple[str, str]], *,
                      request_id: str | None = None, reason: str = "") -> Reply:
        """A gateway response: the custom one, else DEFAULT_4XX/5XX, else AWS's default."""
        default_status, error_type, message = _DEFAULTS[response_type]
        custom = self.responses.get(response_type) or self.responses.get(
            "DEFAULT_4XX" if default_status < 500 else "DEFAULT_5XX")
        request_id = request_id or str(uuid.uuid4())
        variables = {
            "requestId": request_id, "extendedRequestId": request_id,
            "error.message": message, "error.messageString": json.dumps(message),
            "error.responseType": response_type, "httpMethod": method,
            "stage": self.api.stage, "apiId": "cargohold0", "accountId": "123456789012",
        }
        status = default_status
        headers: Headers = []
        template = _DEFAULT_TEMPLATE
        if custom is not None:
            status = custom.status or default_status
            template = custom.template
            lowered = {k.lower(): v for k, v in request_headers}
            query = target.partition("?")[2]
            query_args = dict(parse_qsl(query, keep_blank_values=True))
            for name, expression in custom.headers.items():
                if expression.startswith("'"):
                    value: str | None = expression[1:-1]
                elif expression.startswith("method.request.header."):
                    value = lowered.get(expression.rsplit(".", 1)[1].lower())
                elif expression.startswith("method.request.querystring."):
                    value = query_args.get(expression.rsplit(".", 1)[1])
                else:
                    value = None  # no route matched, so no path parameters
                if value is not None:
                    headers.append((name, value))
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
        headers += [("x-amzn-RequestId", request_id), ("x-amzn-ErrorType", error_type)]
        body = _render(template, variables).encode("utf-8")
        return Reply(status, headers, body, reason=reason or message)

    def handle(self, method: str, target: str, headers: Sequence[tuple[str, str]],
               body: bytes, *, source_ip: str = "127.0.0.1", server_port: int = 0) -> Reply:
        request_id = str(uuid.uuid4())
        event = build_event(self.api, method, target, headers, body, source_ip=source_ip,
                            server_port=server_port, request_id=request_id)
        if event is None:
            return self.gateway_error("MISSING_AUTHENTICATION_TOKEN", method, target, headers,
                                      request_id=request_id, reason="no such resource/method")
        payload = event_payload(event)
        if len(payload) > self.request_limit:
            return self.gateway_error(
                "REQUEST_TOO_LARGE", method, target, headers, request_id=request_id,
                reason=f"event of {len(payload)} bytes exceeds {self.request_limit}")
        if self.on_event is not None:
            self.on_event(event)
        context = self.function.context(request_id)
        outcome: dict[str, Any] = {}
        finished = threading.Event()

        def run() -> None:
            try:
                outcome["answer"] = self.function.invoke(payload, context)
            except Exception as exc:  # the function failed: Lambda reports an error
                log.exception("function error for %s %s", method, _STATE.sub(r"\1…", target))
                outcome["error"] = exc
            finally:
                finished.set()

        threading.Thread(target=run, name=f"lambda-{request_id[:8]}", daemon=True).start()
        if not finished.wait(self.timeout):
            return self.gateway_error("INTEGRATION_TIMEOUT", method, target, headers,
                                      request_id=request_id,
                                      reason=f"no answer within {self.timeout:g} s")
        if "error" in outcome:
            return self.gateway_error("INTEGRATION_FAILURE", method, target, headers,
                                      request_id=request_id, reason="function error")
        answer: bytes = outcome["answer"]
        if len(answer) > self.response_limit:
            return self.gateway_error(
                "INTEGRATION_FAILURE", method, target, headers, request_id=request_id,
                reason=f"response payload of {len(answer)} bytes exceeds {self.response_limit}")
        try:
            return self._decode(json.loads(answer), method, headers, request_id)
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            return self.gateway_error("INTEGRATION_FAILURE", method, target, headers,
                                      request_id=request_id,
                                      reason=f"malformed Lambda proxy response: {exc}")

    def _decode(self, answer: Any, method: str, request_headers: Sequence[tuple[str, str]],
                request_id: str) -> Reply:
        """The function's proxy response as HTTP; malformed ones raise (502)."""
        if not isinstance(answer, dict):
            raise TypeError("the response is not an object")
        status = answer.get("statusCode")
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"statusCode {status!r}")
        single = answer.get("headers") or {}
        multi = answer.get("multiValueHeaders") or {}
        body = answer.get("body")
        if body is not None and not isinstance(body, str):
            raise TypeError("body must be a string")
        # Both header maps merge; a pair present in both appears once.
        merged: dict[str, list[str]] = {}
        for name, values in multi.items():
            merged[name] = [str(v) for v in values]
        for name, value in single.items():
            same = next((k for k in merged if k.lower() == name.lower()), None)
            if same is None:
                merged[name] = [str(value)]
            elif str(value) not in merged[same]:
                merged[same].append(str(value))
        accept = next((v for k, v in request_headers if k.lower() == "accept"), None)
        raw = (body or "").encode("utf-8")
        if answer.get("isBase64Encoded") and body and media_type_matches(
                accept, self.api.binary_types):
            raw = base64.b64decode(body, validate=True)
        headers: Headers = []
        declared_length = None
        for name, values in merged.items():
            lowered = name.lower()
            if lowered in _HOP_BY_HOP:
                continue
            if lowered == "content-length":
                declared_length = values[-1]
                continue
            headers += [(name, v) for v in values]
        if not any(k.lower() == "content-type" for k, _ in headers):
            headers.append(("Content-Type", "application/json"))
        if method == "HEAD" and declared_length is not None:
            # No body goes back, so the function's length stands (a blob's size).
            headers.append(("Content-Length", declared_length))
        headers.append(("x-amzn-RequestId", request_id))
        return Reply(status, headers, raw)

    def too_large(self, method: str, target: str, headers: Sequence[tuple[str, str]],
                  size: int | str) -> Reply:
        reply = self.gateway_error("REQUEST_TOO_LARGE", method, target, headers,
                                   reason=f"body of {size} bytes exceeds {self.request_limit}")
        return Reply(reply.status, reply.headers + [("Connection", "close")], reply.body,
                     close=True, reason=reply.reason)


def lambda_gateway(app_file: Path = APP_FILE, responses: Path | None = GATEWAY_RESPONSES, *,
                   timeout: float = INTEGRATION_TIMEOUT_SECONDS, stage: str = "dev",
                   on_event: Callable[[dict[str, Any]], None] | None = None) -> ApiGateway:
    """app.py behind the gateway, configured like the Chalice stage ``stage``."""
    config = chalice_config(stage)
    api = RestApi.from_chalice(load_chalice_app(app_file), stage=config["api_stage"])
    function = LambdaFunction.from_app_file(app_file, name=config["name"],
                                            memory_mb=config["memory_mb"],
                                            timeout_s=config["timeout_s"])
    return ApiGateway(api, function, load_gateway_responses(responses), timeout=timeout,
                      on_event=on_event)


# --- HTTP -----------------------------------------------------------------

def make_handler(gateway: ApiGateway) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "cargohold-apigateway"
        sys_version = ""

        def _declared_length(self) -> int | None:
            text = (self.headers.get("Content-Length") or "").strip()
            return int(text) if text.isdigit() else None

        def handle_expect_100(self) -> bool:
            """Refuse an over-limit body before the client sends it."""
            length = self._declared_length()
            if length is not None and length > gateway.request_limit:
                self._write(gateway.too_large(self.command, self.path,
                                              self.headers.items(), length))
                self.close_connection = True
                return False
            return super().handle_expect_100()

        def _serve(self) -> None:
            chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
            length = None if chunked else self._declared_length()
            if not chunked and self.headers.get("Content-Length") is not None and length is None:
                self.close_connection = True
                self._write(Reply(400, [("Content-Type", "application/json"),
                                        ("Connection", "close")],
                                  b'{"message":"Bad Request"}', close=True))
                return
            reader = BodyReader(self.rfile, length, chunked)
            if length is not None and length > gateway.request_limit:
                self._refuse(reader, length)
                return
            try:
                body = reader.read(gateway.request_limit + 1)
            except (ValueError, ConnectionError):
                self.close_connection = True
                return
            if len(body) > gateway.request_limit:
                self._refuse(reader, f"more than {gateway.request_limit}")
                return
            reply = gateway.handle(self.command, self.path, self.headers.items(), body,
                                   source_ip=self.client_address[0],
                                   server_port=self.server.server_address[1])
            self._write(reply)

        def _refuse(self, reader: BodyReader, size: int | str) -> None:
            """413 without invoking anything, then drop a bounded rest and close."""
            self.close_connection = True
            self._write(gateway.too_large(self.command, self.path, self.headers.items(), size))
            discard_rest(self.connection, reader)

        def _write(self, reply: Reply) -> None:
            self.log_request(reply.status)
            if reply.reason:
                log.info("gateway answered %d: %s", reply.status, reply.reason)
            self.send_response_only(reply.status)
            self.send_header("Date", formatdate(usegmt=True))
            has_length = False
            for name, value in reply.headers:
                has_length = has_length or name.lower() == "content-length"
                self.send_header(name, value)
            no_body = self.command == "HEAD" or reply.status in (204, 304)
            if not has_length and reply.status not in (204, 304):
                self.send_header("Content-Length", str(len(reply.body)))
            try:
                self.end_headers()
                if not no_body:
                    self.wfile.write(reply.body)
            except (BrokenPipeError, ConnectionResetError):
                log.info("client went away before the %d answer", reply.status)
                self.close_connection = True
            if reply.close:
                self.close_connection = True

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = do_OPTIONS = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.info("%s %s", self.address_string(), _STATE.sub(r"\1…", format % args))

    return Handler


def serve(gateway: ApiGateway, host: str = "127.0.0.1", port: int = 0) -> RegistryServer:
    """Bind the gateway (port 0 picks a free one); call ``serve_forever`` to run it."""
    server = RegistryServer((host, port), make_handler(gateway))
    server.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return server


def serve_in_thread(gateway: ApiGateway, host: str = "127.0.0.1",
                    port: int = 0) -> tuple[RegistryServer, threading.Thread]:
    server = serve(gateway, host, port)
    thread = threading.Thread(target=server.serve_forever, name="cargohold-apigateway",
                              daemon=True)
    thread.start()
    return server, thread
