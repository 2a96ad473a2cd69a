"""The Lambda door: Chalice routes onto the same registry core.

Why routes by depth: repository names contain '/', Chalice has no greedy
path parameters (aws/chalice#866) and ``chalice local`` cannot route
``{proxy+}`` (#2072). Instead of one route per API operation and name
depth, the door registers one catch-all route per *path depth*:
``/v2/{p0}``, ``/v2/{p0}/{p1}``, … up to the longest path a repository
name of :data:`MAX_NAME_COMPONENTS` components can produce (derived from
the route table). Each glues its segments back into the path and hands
the request to the core, which matches it from the right with the one
route table. In API Gateway this is a single chain of resources (one per
depth), far inside its resource limit; a deeper path gets API Gateway's
own 403, so the limit is documented in the README.
"""

from __future__ import annotations

from urllib.parse import urlencode

from chalice import Chalice, Response

from chalicelib.core import errors
from chalicelib.core.errors import RegistryError
from chalicelib.core.http import Request
from chalicelib.core.routes import MAX_SUFFIX_SEGMENTS

app = Chalice(app_name="cargohold")
# Only upload bodies are raw bytes; everything else the API answers is JSON,
# a manifest (UTF-8 JSON) or empty, so Chalice's Accept check never bites.
app.api.binary_types = ["application/octet-stream"]

MAX_NAME_COMPONENTS = 10
MAX_DEPTH = MAX_NAME_COMPONENTS + MAX_SUFFIX_SEGMENTS
METHODS = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]
BINARY = "application/octet-stream"

_registry = None


def registry():
    """The registry service, built on first request so cold start stays cheap."""
    global _registry
    if _registry is None:
        from chalicelib.config import Settings
        from chalicelib.registry.service import Registry

        _registry = Registry(Settings.from_env(blob_redirects_default=True,
                                              function_limits_default=True))
    return _registry


def _dispatch(depth: int) -> Response:
    from chalicelib.registry.dispatch import error_response, handle

    current = app.current_request
    params = current.uri_params or {}
    path = "/v2/" + "/".join(params[f"p{i}"] for i in range(depth))
    query = urlencode([(k, v) for k in (current.query_params or {})
                       for v in current.query_params.getlist(k)])
    # API Gateway keeps only the last value of a repeated header in `headers`
    # (Chalice's view); every value is in `multiValueHeaders`, and a client
    # may well send Accept once per media type.
    multi = current.to_original_event().get("multiValueHeaders") or {}
    headers = ([(k, v) for k, values in multi.items() for v in values] if multi
               else list(current.headers.items()))
    request = Request.build(current.method, path, query, headers, current.raw_body or b"")
    response = handle(registry(), request)
    body = response.read_body()
    content_type = response.headers.get("Content-Type", "")
    if content_type == BINARY and not body:
        # HEAD, 304: no bytes to type, and a binary type would make Chalice
        # (like API Gateway) refuse a client that did not Accept it.
        del response.headers["Content-Type"]
    elif content_type == BINARY:
        accept = current.headers.get("accept") or ""
        if accept.split(",")[0].split(";")[0].strip().lower() != BINARY:
            # API Gateway decodes a binary body only when the *first* Accept
            # type is binary (not */*); say so instead of letting the
            # gateway return base64 text in place of the bytes.
            response = error_response(RegistryError(
                errors.UNSUPPORTED, {"reason": "send Accept: application/octet-stream, or "
                                     "enable CARGOHOLD_BLOB_REDIRECTS"}, status=406))
            body = response.read_body()
        else:
            return Response(body=body, headers=response.headers, status_code=response.status)
    return Response(body=body.decode("utf-8", "replace"), headers=response.headers,
                    status_code=response.status)


@app.route("/v2", methods=["GET", "HEAD"])
def base() -> Response:
    return _dispatch(0)


def _register(depth: int) -> None:
    path = "/v2/" + "/".join(f"{{p{i}}}" for i in range(depth))

    def view(**_params: str) -> Response:
        return _dispatch(depth)

    view.__name__ = f"depth_{depth}"
    app.route(path, methods=METHODS, content_types=[BINARY, "application/json", "*/*"])(view)


for _depth in range(1, MAX_DEPTH + 1):
    _register(_depth)
