"""The single entry point every door calls: request in, response out.

It matches the route, checks the method, runs the handler, and is the one
place that turns a :class:`RegistryError` (or an unexpected exception) into
the OCI error envelope.
"""

from __future__ import annotations

import logging

from ..core import errors
from ..core.errors import RegistryError, envelope_bytes
from ..core.http import Request, Response
from ..core.routes import match
from .service import Registry

log = logging.getLogger(__name__)

API_VERSION_HEADER = {"Docker-Distribution-API-Version": "registry/2.0"}


def handle(registry: Registry, request: Request) -> Response:
    try:
        found = match(request.path)
        handler = registry.handlers.get((found.route.id, request.method))
        if handler is None:
            raise RegistryError(errors.UNSUPPORTED, {
                "method": request.method, "allowed": sorted(found.route.methods)},
                message=f"method {request.method} not allowed here",
                headers={"Allow": ", ".join(sorted(found.route.methods))})
        response = handler(request, found.params)
    except RegistryError as error:
        response = error_response(error, request.method)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(RegistryError(errors.UNKNOWN), request.method)
    response.headers.update(API_VERSION_HEADER)
    return response


def error_response(error: RegistryError, method: str = "GET") -> Response:
    body = envelope_bytes(error)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    headers.update(error.headers)
    return Response(error.status, headers, b"" if method == "HEAD" else body)
