"""The Distribution API handlers, one method per route operation.

Handlers take plain :class:`Request` values and return :class:`Response`
values; they raise :class:`RegistryError` for every failure and never
format an error body themselves (see :mod:`chalicelib.registry.dispatch`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..config import Settings
from ..core import errors, manifests
from ..core.errors import RegistryError
from ..core.grammar import (
    Digest,
    parse_byte_range,
    parse_content_range,
    parse_digest,
    parse_page_size,
    parse_reference,
    validate_name,
)
from ..core.http import Request, Response, read_capped
from ..core.routes import url_for
from ..storage.blobs import BlobStore, blob_key
from ..storage.metadata import INLINE_MANIFEST_LIMIT, ManifestRecord, MetadataStore
from . import tokens
from .uploads import S3_MAX_PARTS, S3_MIN_PART, Uploads, range_header

Handler = Callable[[Request, dict[str, str]], Response]

OCTET_STREAM = "application/octet-stream"


def _etag(digest: str) -> str:
    return f'"{digest}"'


def _content_range(req: Request, offset: int) -> tuple[int, int] | None:
    """A PATCH/PUT ``Content-Range``; a malformed one is 416 with the upload's
    progress in ``Range``, like an out-of-order chunk, so the client can resume."""
    text = req.headers.get("Content-Range")
    if not text:
        return None
    try:
        return parse_content_range(text)
    except RegistryError as error:
        error.headers["Range"] = range_header(offset)
        raise


class Registry:
    """The registry service over one bucket and one table."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.blobs = BlobStore(settings.bucket, settings.region)
        self.meta = MetadataStore(settings.table, settings.region)
        self.uploads = Uploads(self.blobs, self.meta, settings.part_size, settings.upload_ttl,
                               settings.max_body if settings.function_limits else None)
        self.handlers: dict[tuple[str, str], Handler] = {
            ("base", "GET"): self.base,
            ("base", "HEAD"): self.base,
            ("catalog", "GET"): self.catalog,
            ("tags", "GET"): self.tags,
            ("manifest", "GET"): self.get_manifest,
            ("manifest", "HEAD"): self.get_manifest,
            ("manifest", "PUT"): self.put_manifest,
            ("manifest", "DELETE"): self.delete_manifest,
            ("referrers", "GET"): self.referrers,
            ("blob", "GET"): self.get_blob,
            ("blob", "HEAD"): self.get_blob,
            ("blob", "DELETE"): self.delete_blob,
            ("uploads", "POST"): self.start_upload,
            ("upload", "GET"): self.upload_status,
            ("upload", "PATCH"): self.patch_upload,
            ("upload", "PUT"): self.put_upload,
            ("upload", "DELETE"): self.cancel_upload,
            ("upload-parts", "POST"): self.presign_parts,
        }

    # -- base and listings -------------------------------------------------
    def base(self, req: Request, params: dict[str, str]) -> Response:
        return Response.json(200, {})

    def _page(self, req: Request, route_id: str, list_items: Callable[
            [str | None, int | None], list[str]], **route_params: str
              ) -> tuple[list[str], dict[str, str]]:
        """One page of a lexically ordered list, and a ``Link`` when more remain.

        Asks storage for n+1 items (never more than the cap + 1), so it can
        tell whether a next page exists without a second request.
        """
        n = parse_page_size(req.arg("n"), self.settings.page_cap)
        if n == 0:
            return [], {}
        items = list_items(req.arg("last") or None, None if n is None else n + 1)
        if n is None or len(items) <= n:
            return items, {}
        items = items[:n]
        link = url_for(route_id, query={"n": str(n), "last": items[-1]}, **route_params)
        return items, {"Link": f'<{link}>; rel="next"'}

    def catalog(self, req: Request, params: dict[str, str]) -> Response:
        names, headers = self._page(req, "catalog", self.meta.list_repositories)
        return Response.json(200, {"repositories": names}, headers)

    def tags(self, req: Request, params: dict[str, str]) -> Response:
        name = params["name"]
        tags, headers = self._page(
            req, "tags", lambda last, limit: self.meta.list_tags(name, last, limit), name=name)
        if not tags and not self.meta.repository_exists(name):
            raise RegistryError(errors.NAME_UNKNOWN, {"name": name})
        return Response.json(200, {"name": name, "tags": tags}, headers)

    # -- manifests ---------------------------------------------------------
    def get_manifest(self, req: Request, params: dict[str, str]) -> Response:
        name, reference = params["name"], params["reference"]
        tag, digest = parse_reference(reference)
        record: ManifestRecord | None = None
        if tag is not None:
            found = self.meta.get_tag(name, tag)
            if found is None:
                raise RegistryError(errors.MANIFEST_UNKNOWN, {"name": name, "tag": tag})
            if not manifests.accepts(req.headers.get_all("Accept"), found.media_type):
                raise RegistryError(errors.MANIFEST_UNKNOWN, {
                    "name": name, "tag": tag, "reason": "stored media type not accepted",
                    "mediaType": found.media_type})
            digest_text, media_type, size = found.digest, found.media_type, found.size
        else:
            record = self.meta.get_manifest(name, str(digest))
            if record is None:
                raise RegistryError(errors.MANIFEST_UNKNOWN, {"name": name, "digest": reference})
            digest_text, media_type, size = record.digest, record.media_type, record.size
        headers = {"Content-Type": media_type, "Content-Length": str(size),
                   "Docker-Content-Digest": digest_text, "ETag": _etag(digest_text)}
        if req.method == "HEAD":
            return Response(200, headers)
        if record is None:
            record = self.meta.get_manifest(name, digest_text)
            if record is None:  # deleted between the two reads
                raise RegistryError(errors.MANIFEST_UNKNOWN, {"name": name, "digest": digest_text})
        body = record.body if record.body is not None else self.blobs.read(blob_key(digest_text))
        return Response(200, headers, body)

    def put_manifest(self, req: Request, params: dict[str, str]) -> Response:
        name, reference = params["name"], params["reference"]
        tag, expected_digest = parse_reference(reference)
        declared = req.content_length()
        if declared is not None and declared > manifests.MAX_MANIFEST_BYTES:
            raise RegistryError(errors.BODY_TOO_LARGE,
                                {"size": declared, "limit": manifests.MAX_MANIFEST_BYTES})
        body = read_capped(req.body, manifests.MAX_MANIFEST_BYTES)
        if body is None:
            raise RegistryError(errors.BODY_TOO_LARGE, {"limit": manifests.MAX_MANIFEST_BYTES})
        parsed = manifests.parse_manifest(body, req.headers.get("Content-Type"))
        if expected_digest is not None:
            actual = Digest.of(body, expected_digest.algorithm)
            if actual != expected_digest:
                raise RegistryError(errors.DIGEST_INVALID, {
                    "expected": str(expected_digest), "actual": str(actual),
                    "reason": "manifest bytes do not hash to the digest in the URL"})
            parsed.digest = actual  # addressed by the digest the client named (e.g. sha512)
        missing = self.meta.missing(name, [str(d) for d in parsed.blobs],
                                    [str(d) for d in parsed.children])
        if missing:
            error = RegistryError(errors.MANIFEST_BLOB_UNKNOWN, {"digest": missing[0]})
            for digest in missing[1:]:
                error.add(errors.MANIFEST_BLOB_UNKNOWN, {"digest": digest})
            raise error
        digest_text = str(parsed.digest)
        inline = len(body) <= INLINE_MANIFEST_LIMIT
        if not inline:
            self.blobs.put(blob_key(digest_text), body)
        record = ManifestRecord(digest_text, parsed.media_type, len(body),
                                body if inline else None,
                                str(parsed.subject) if parsed.subject else None)
        referrer = ((str(parsed.subject), manifests.referrer_descriptor(parsed))
                    if parsed.subject else None)
        self.meta.put_manifest(name, record, tag, referrer)
        headers = {"Location": url_for("manifest", name=name, reference=digest_text),
                   "Docker-Content-Digest": digest_text, "Content-Length": "0"}
        if parsed.subject:
            headers["OCI-Subject"] = str(parsed.subject)
        return Response(201, headers)

    def delete_manifest(self, req: Request, params: dict[str, str]) -> Response:
        self._require_delete()
        name, reference = params["name"], params["reference"]
        tag, digest = parse_reference(reference)
        if tag is not None:
            if not self.meta.delete_tag(name, tag):
                raise RegistryError(errors.MANIFEST_UNKNOWN, {"name": name, "tag": tag})
            return Response(202, {"Content-Length": "0"})
        record = self.meta.get_manifest(name, str(digest))
        if record is None:
            raise RegistryError(errors.MANIFEST_UNKNOWN, {"name": name, "digest": reference})
        self.meta.delete_manifest(name, record)
        return Response(202, {"Content-Length": "0"})

    def referrers(self, req: Request, params: dict[str, str]) -> Response:
        name = params["name"]
        subject = parse_digest(params["digest"])
        descriptors = self.meta.referrers(name, str(subject))
        headers = {"Content-Type": manifests.OCI_INDEX}
        artifact_type = req.arg("artifactType")
        if artifact_type:
            descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
            headers["OCI-Filters-Applied"] = "artifactType"
        index = {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": descriptors}
        response = Response.json(200, index, headers)
        response.headers["Content-Type"] = manifests.OCI_INDEX
        return response

    # -- blobs -------------------------------------------------------------
    def get_blob(self, req: Request, params: dict[str, str]) -> Response:
        name = params["name"]
        digest = str(parse_digest(params["digest"]))
        link = self.meta.blob_link(name, digest)
        if link is None:
            raise RegistryError(errors.BLOB_UNKNOWN, {"name": name, "digest": digest})
        size, key = link.size, link.key
        headers = {"Docker-Content-Digest": digest, "ETag": _etag(digest),
                   "Accept-Ranges": "bytes", "Content-Type": OCTET_STREAM,
                   "Cache-Control": "max-age=31536000"}
        if_none_match = req.headers.get("If-None-Match")
        if if_none_match and _etag(digest) in [t.strip() for t in if_none_match.split(",")]:
            return Response(304, headers)
        if req.method == "HEAD":
            headers["Content-Length"] = str(size)
            return Response(200, headers)
        if self.settings.blob_redirects:
            url = self.blobs.presign_get(key, self.settings.redirect_ttl)
            return Response(307, {"Location": url, "Docker-Content-Digest": digest,
                                  "Content-Length": "0"})
        range_text = req.headers.get("Range")
        if range_text:
            start, end = parse_byte_range(range_text, size)
            headers.update({"Content-Range": f"bytes {start}-{end}/{size}",
                            "Content-Length": str(end - start + 1)})
            return Response(206, headers, self.blobs.stream(key, start, end))
        headers["Content-Length"] = str(size)
        return Response(200, headers, self.blobs.stream(key) if size else b"")

    def delete_blob(self, req: Request, params: dict[str, str]) -> Response:
        self._require_delete()
        name = params["name"]
        digest = str(parse_digest(params["digest"]))
        if not self.meta.unlink_blob(name, digest):
            raise RegistryError(errors.BLOB_UNKNOWN, {"name": name, "digest": digest})
        return Response(202, {"Content-Length": "0", "Docker-Content-Digest": digest})

    def _require_delete(self) -> None:
        if not self.settings.delete_enabled:
            raise RegistryError(errors.UNSUPPORTED, {"reason": "deletes are disabled"})

    # -- uploads -----------------------------------------------------------
    def _upload_location(self, name: str, upload_id: str, offset: int) -> str:
        token = tokens.pack(self.settings.hmac_key, tokens.UploadState(
            name, upload_id, offset, int(time.time()) + self.settings.upload_ttl))
        return url_for("upload", name=name, session=upload_id, query={"_state": token})

    def _upload_progress(self, status: int, name: str, upload_id: str, offset: int) -> Response:
        return Response(status, {
            "Location": self._upload_location(name, upload_id, offset),
            "Docker-Upload-UUID": upload_id,
            "Range": range_header(offset),
            "Content-Length": "0",
        })

    def _blob_created(self, name: str, digest: str) -> Response:
        return Response(201, {"Location": url_for("blob", name=name, digest=digest),
                              "Docker-Content-Digest": digest, "Content-Length": "0"})

    def start_upload(self, req: Request, params: dict[str, str]) -> Response:
        name = params["name"]
        mount, source = req.arg("mount"), req.arg("from")
        if mount is not None:
            digest = str(parse_digest(mount))
            if source:
                validate_name(source)
                link = self.meta.blob_link(source, digest)
                if link is not None:
                    self.meta.link_blob(name, digest, link)
                    return self._blob_created(name, digest)
        digest_arg = req.arg("digest")
        if digest_arg is not None:
            digest = parse_digest(digest_arg)
            record = self.uploads.new_ephemeral(name)
            self.uploads.complete(record, digest, req.body, None, req.content_length(),
                                  persisted=False)
            return self._blob_created(name, str(digest))
        record = self.uploads.start(name)
        response = self._upload_progress(202, name, record.upload_id, 0)
        response.headers.update(self._chunk_limits())
        return response

    def _chunk_limits(self) -> dict[str, str]:
        """What chunking clients are told. In function-limits mode the
        maximum is the largest body the function can receive (the proposed
        ``OCI-Chunk-Max-Length``) and the minimum never exceeds it."""
        minimum = self.settings.chunk_min_length
        if not self.settings.function_limits:
            return {"OCI-Chunk-Min-Length": str(minimum)}
        maximum = self.settings.max_body
        return {"OCI-Chunk-Min-Length": str(min(minimum, maximum)),
                "OCI-Chunk-Max-Length": str(maximum)}

    def _session(self, req: Request, params: dict[str, str], *, exact_offset: bool):
        """Check the signed state against the URL and stored progress.

        A token for another repository or upload, or a stale offset (a
        replayed Location), is rejected before anything is read or written.
        """
        name, upload_id = params["name"], params["session"]
        state = tokens.unpack(self.settings.hmac_key, req.arg("_state"))
        if state.name != name or state.upload_id != upload_id:
            raise RegistryError(errors.BLOB_UPLOAD_INVALID,
                                {"reason": "upload state was issued for another upload"})
        record = self.uploads.load(name, upload_id)
        if exact_offset and state.offset != record.offset:
            raise RegistryError(errors.BLOB_UPLOAD_INVALID, {
                "reason": "upload state is stale: resume from the reported Range",
                "offset": record.offset}, status=416,
                headers={"Range": range_header(record.offset)})
        return record

    def upload_status(self, req: Request, params: dict[str, str]) -> Response:
        record = self._session(req, params, exact_offset=False)
        return self._upload_progress(204, record.name, record.upload_id, record.offset)

    def patch_upload(self, req: Request, params: dict[str, str]) -> Response:
        record = self._session(req, params, exact_offset=True)
        parsed_range = _content_range(req, record.offset)
        record = self.uploads.append(record, req.body, parsed_range, req.content_length())
        return self._upload_progress(202, record.name, record.upload_id, record.offset)

    def put_upload(self, req: Request, params: dict[str, str]) -> Response:
        digest_arg = req.arg("digest")
        if digest_arg is None:
            raise RegistryError(errors.DIGEST_INVALID, {"reason": "digest parameter required"})
        digest = parse_digest(digest_arg)
        record = self._session(req, params, exact_offset=True)
        parsed_range = _content_range(req, record.offset)
        self.uploads.complete(record, digest, req.body, parsed_range, req.content_length())
        return self._blob_created(record.name, str(digest))

    def cancel_upload(self, req: Request, params: dict[str, str]) -> Response:
        record = self._session(req, params, exact_offset=False)
        self.uploads.cancel(record)
        return Response(204, {"Content-Length": "0"})

    def presign_parts(self, req: Request, params: dict[str, str]) -> Response:
        """Extension: presigned UploadPart URLs so a client can PUT parts of a
        fresh upload straight to S3, in parallel, then complete it with the
        standard ``PUT …?digest=`` (the registry verifies before 201)."""
        record = self._session(req, params, exact_offset=True)
        first = _positive_int(req.arg("first") or "1", "first")
        count = _positive_int(req.arg("count") or "1", "count")
        if count > MAX_PART_URLS:
            raise RegistryError(errors.BLOB_UPLOAD_INVALID,
                                {"reason": f"at most {MAX_PART_URLS} part URLs per request"})
        ttl = self.settings.part_url_ttl
        parts = self.uploads.presign_parts(record, first, count, ttl)
        return Response.json(200, {
            "location": self._upload_location(record.name, record.upload_id, 0),
            "minPartSize": S3_MIN_PART, "maxParts": S3_MAX_PARTS,
            "expiresIn": ttl, "parts": parts,
        })


MAX_PART_URLS = 1000


def _positive_int(value: str, name: str) -> int:
    if not value.isdigit() or len(value) > 6 or int(value) < 1:
        raise RegistryError(errors.BLOB_UPLOAD_INVALID,
                            {"reason": f"{name} must be a positive integer", name: value[:20]})
    return int(value)
