"""The one route table of the Distribution API.

Routing, URL building (``Location`` headers, the client) and ``docs/api.md``
are all derived from :data:`ROUTES`, so they cannot drift apart.

Repository names contain '/', so a path cannot be split on '/' from the
left: each route is a fixed *suffix* of segments after the name, and a path
is matched from the right (``a/manifests/manifests/tags`` is the manifest
``tags`` of repository ``a/manifests``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlencode

from . import errors
from .errors import ErrorCode, RegistryError
from .grammar import validate_name

PREFIX = "/v2/"


@dataclass(frozen=True)
class Operation:
    """One method of a route: what it does, its success status, its errors."""

    method: str
    summary: str
    success: tuple[int, ...]
    errors: tuple[ErrorCode, ...] = ()
    query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    """A path shape: ``{name}`` (when ``has_name``) followed by ``suffix``.

    Suffix items in braces are parameters; others are literal segments.
    ``trailing_slash`` routes also match without the slash, because API
    Gateway and some clients drop it.
    """

    id: str
    suffix: tuple[str, ...]
    operations: tuple[Operation, ...]
    description: str
    has_name: bool = True
    trailing_slash: bool = False
    extension: bool = False
    methods: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", frozenset(op.method for op in self.operations))

    @property
    def template(self) -> str:
        parts = (["{name}"] if self.has_name else []) + list(self.suffix)
        if not parts:
            return PREFIX
        return PREFIX + "/".join(parts) + ("/" if self.trailing_slash else "")

    def operation(self, method: str) -> Operation | None:
        for op in self.operations:
            if op.method == method:
                return op
        return None


_NAME = (errors.NAME_INVALID,)

ROUTES: tuple[Route, ...] = (
    Route("base", (), (
        Operation("GET", "Check that the endpoint implements the Distribution API.", (200,),
                  ()),
        Operation("HEAD", "Same as GET, without the body.", (200,), ()),
    ), "API version check. Answers `{}` with `Docker-Distribution-API-Version: registry/2.0`.",
        has_name=False, trailing_slash=True),
    Route("catalog", ("_catalog",), (
        Operation("GET", "List repositories in lexical order.", (200,),
                  (errors.PAGINATION_NUMBER_INVALID,), query=("n", "last")),
    ), "Repository catalog, paginated with `n`/`last` and a `Link` header.",
        has_name=False),
    Route("tags", ("tags", "list"), (
        Operation("GET", "List the tags of a repository in lexical order.", (200,),
                  _NAME + (errors.NAME_UNKNOWN, errors.PAGINATION_NUMBER_INVALID),
                  query=("n", "last")),
    ), "Tags of a repository, paginated with `n`/`last` and a `Link` header."),
    Route("manifest", ("manifests", "{reference}"), (
        Operation("GET", "Fetch a manifest by tag or digest (exact stored bytes).", (200,),
                  _NAME + (errors.TAG_INVALID, errors.DIGEST_INVALID, errors.MANIFEST_UNKNOWN),
                  headers=("Accept",)),
        Operation("HEAD", "Check a manifest; same headers as GET.", (200,),
                  _NAME + (errors.TAG_INVALID, errors.DIGEST_INVALID, errors.MANIFEST_UNKNOWN),
                  headers=("Accept",)),
        Operation("PUT", "Store a manifest under a tag or its digest.", (201,),
                  _NAME + (errors.TAG_INVALID, errors.DIGEST_INVALID, errors.MANIFEST_INVALID,
                           errors.MANIFEST_BLOB_UNKNOWN, errors.BODY_TOO_LARGE),
                  headers=("Content-Type",)),
        Operation("DELETE", "Delete a tag, or a manifest by digest with its tags.", (202,),
                  _NAME + (errors.TAG_INVALID, errors.DIGEST_INVALID, errors.MANIFEST_UNKNOWN,
                           errors.UNSUPPORTED)),
    ), "Manifests by tag or digest, with content negotiation on `Accept`."),
    Route("referrers", ("referrers", "{digest}"), (
        Operation("GET", "List manifests whose subject is the digest, as an image index.", (200,),
                  _NAME + (errors.DIGEST_INVALID,), query=("artifactType",)),
    ), "Referrers of a manifest; never 404, an empty index when there are none."),
    Route("uploads", ("blobs", "uploads"), (
        Operation("POST", "Start an upload; monolithic with `digest`; mount with `mount`+`from`.",
                  (201, 202),
                  _NAME + (errors.DIGEST_INVALID, errors.SIZE_INVALID),
                  query=("digest", "mount", "from"), headers=("Content-Length", "Content-Type")),
    ), "Upload sessions. The `Location` carries an HMAC-signed state token.",
        trailing_slash=True),
    Route("upload", ("blobs", "uploads", "{session}"), (
        Operation("GET", "Report an upload's progress in `Range`.", (204,),
                  _NAME + (errors.BLOB_UPLOAD_INVALID, errors.BLOB_UPLOAD_UNKNOWN),
                  query=("_state",)),
        Operation("PATCH", "Append a chunk (streamed; `Content-Range` optional).", (202,),
                  _NAME + (errors.BLOB_UPLOAD_INVALID, errors.BLOB_UPLOAD_UNKNOWN,
                           errors.RANGE_INVALID),
                  query=("_state",), headers=("Content-Range", "Content-Length")),
        Operation("PUT", "Complete an upload, with an optional final chunk.", (201,),
                  _NAME + (errors.BLOB_UPLOAD_INVALID, errors.BLOB_UPLOAD_UNKNOWN,
                           errors.DIGEST_INVALID, errors.SIZE_INVALID, errors.RANGE_INVALID),
                  query=("_state", "digest")),
        Operation("DELETE", "Cancel an upload.", (204,),
                  _NAME + (errors.BLOB_UPLOAD_INVALID, errors.BLOB_UPLOAD_UNKNOWN),
                  query=("_state",)),
    ), "One upload session, addressed by its id and signed state token."),
    Route("blob", ("blobs", "{digest}"), (
        Operation("GET", "Fetch a blob (307 to storage, or streamed); `Range` → 206.",
                  (200, 206, 304, 307),
                  _NAME + (errors.DIGEST_INVALID, errors.BLOB_UNKNOWN, errors.RANGE_INVALID),
                  headers=("Range", "If-None-Match")),
        Operation("HEAD", "Check a blob's existence and size.", (200, 304),
                  _NAME + (errors.DIGEST_INVALID, errors.BLOB_UNKNOWN)),
        Operation("DELETE", "Unlink a blob from the repository.", (202,),
                  _NAME + (errors.DIGEST_INVALID, errors.BLOB_UNKNOWN, errors.UNSUPPORTED)),
    ), "Blobs by digest, content-addressed and shared by all repositories."),
    Route("upload-parts", ("_cargohold", "uploads", "{session}", "parts"), (
        Operation("POST", "Presigned S3 UploadPart URLs for parts `first`..`first+count-1` of "
                  "a fresh upload; complete with the standard `PUT …?digest=`.", (200,),
                  _NAME + (errors.BLOB_UPLOAD_INVALID, errors.BLOB_UPLOAD_UNKNOWN),
                  query=("_state", "first", "count")),
    ), "Direct-to-S3 uploads (cargohold extension). Answers JSON `{location, minPartSize, "
       "maxParts, expiresIn, parts: [{partNumber, url}]}`. Each URL writes one part of "
       "this upload only and expires after `CARGOHOLD_PART_URL_TTL_SECONDS`; parts of "
       "5 MiB or more, numbered from 1 without gaps; the registry hashes the assembled "
       "blob before answering 201.", extension=True),
)

ROUTES_BY_ID = {route.id: route for route in ROUTES}

# The most segments any route puts after the repository name: doors that
# must enumerate path depths (Chalice) derive their routes from this.
MAX_SUFFIX_SEGMENTS = max(len(r.suffix) for r in ROUTES if r.has_name)


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, str]


def match(path: str) -> Match:
    """Resolve a request path to a route and its parameters.

    Raises 404 for paths no route describes. The repository name is
    validated here, once, for every route.
    """
    if not path.startswith(PREFIX):
        if path == PREFIX.rstrip("/"):
            return Match(ROUTES_BY_ID["base"], {})
        raise _no_route(path)
    rest = path[len(PREFIX):]
    if rest == "":
        return Match(ROUTES_BY_ID["base"], {})
    segments = [unquote(s) for s in rest.split("/")]
    for route in ROUTES:
        if not route.suffix:
            continue
        candidate = segments
        if route.trailing_slash and candidate and candidate[-1] == "":
            candidate = candidate[:-1]
        params = _match_suffix(route, candidate)
        if params is not None:
            if route.has_name:
                validate_name(params["name"])
            return Match(route, params)
    raise _no_route(path)


def _match_suffix(route: Route, segments: list[str]) -> dict[str, str] | None:
    k = len(route.suffix)
    need = k + (1 if route.has_name else 0)
    if len(segments) < need or (not route.has_name and len(segments) != k):
        return None
    tail = segments[len(segments) - k:]
    params: dict[str, str] = {}
    for pattern, value in zip(route.suffix, tail, strict=True):
        if pattern.startswith("{"):
            if value == "":
                return None
            params[pattern[1:-1]] = value
        elif pattern != value:
            return None
    if route.has_name:
        params["name"] = "/".join(segments[: len(segments) - k])
    return params


def _no_route(path: str) -> RegistryError:
    return RegistryError(errors.UNSUPPORTED, {"path": path[:300]},
                         message="no such endpoint", status=404)


def url_for(route_id: str, query: dict[str, str] | None = None, **params: str) -> str:
    """The path (and query) of a route, for ``Location`` headers and clients."""
    route = ROUTES_BY_ID[route_id]
    parts = []
    if route.has_name:
        parts.append(quote(params["name"], safe="/"))
    for pattern in route.suffix:
        parts.append(quote(params[pattern[1:-1]], safe=":") if pattern.startswith("{") else pattern)
    path = PREFIX + "/".join(parts)
    if route.trailing_slash and route.suffix:
        path += "/"
    if query:
        path += "?" + urlencode(query)
    return path
