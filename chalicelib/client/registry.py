"""RegistryClient: every Distribution API operation, on any registry.

URLs come from the core's route table (``url_for``), errors from its error
registry, so client and server cannot disagree about the protocol. Uploads
pick the fastest way the registry allows: the direct-to-S3 extension with
parallel parts when offered, chunks within an advertised
``OCI-Chunk-Max-Length`` otherwise, and one streamed request when there
is no limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urljoin, urlsplit

from ..core.grammar import parse_digest
from ..core.manifests import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from ..core.routes import url_for
from .auth import Authenticator, Credentials, resolve_credentials
from .errors import AuthenticationError, DigestMismatchError, ProtocolError, RegistryResponseError
from .transport import Body, HttpTransport, RawResponse, Transport

MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST])
_LINK = re.compile(r"<([^>]+)>\s*;\s*rel=\"?next\"?")
PART_SIZE = 16 * 1024 * 1024
Progress = Callable[[int], None]


@dataclass(frozen=True)
class Manifest:
    body: bytes
    media_type: str
    digest: str


@dataclass
class UploadSource:
    """Bytes to upload: an opener so a part can be re-read at any offset."""

    size: int
    open: Callable[[], BinaryIO]

    @classmethod
    def from_bytes(cls, data: bytes) -> UploadSource:
        import io

        return cls(len(data), lambda: io.BytesIO(data))

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> UploadSource:
        return cls(os.path.getsize(path), lambda: open(path, "rb"))


class RegistryClient:
    """A client for one registry, e.g. ``RegistryClient("http://127.0.0.1:5000")``."""

    def __init__(self, base_url: str, *, transport: Transport | None = None,
                 credentials: Credentials | None = None, username: str | None = None,
                 password: str | None = None, concurrency: int = 4,
                 use_extensions: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = urlsplit(self.base_url).netloc
        self.transport = transport or HttpTransport()
        self.concurrency = max(1, concurrency)
        self.use_extensions = use_extensions
        creds = credentials or resolve_credentials(self.host, username, password)
        self.auth = Authenticator(creds, self._fetch_token)

    # -- plumbing ----------------------------------------------------------
    def _fetch_token(self, url: str, headers: dict[str, str]) -> tuple[int, bytes]:
        reply = self.transport.send("GET", url, headers)
        return reply.status, reply.read()

    def _url(self, location: str) -> str:
        return urljoin(self.base_url + "/", location)

    def request(self, method: str, path_or_url: str, *, headers: dict[str, str] | None = None,
                body: Body = None, expect: tuple[int, ...] = (200,), scope: str = "",
                replayable: bool = True) -> RawResponse:
        """One request, answering an auth challenge once; raises on unexpected status."""
        url = self._url(path_or_url)
        sent = dict(headers or {})
        auth = self.auth.header_for(scope)
        if auth:
            sent["Authorization"] = auth
        reply = self.transport.send(method, url, sent, body)
        if reply.status == 401:
            challenge = reply.headers.get("WWW-Authenticate")
            reply.read()
            answer = self.auth.answer(challenge, scope) if challenge else None
            if answer is None or not replayable:
                raise AuthenticationError(f"{method} {url}: authentication required"
                                          + ("" if answer else " (no usable credentials)"))
            sent["Authorization"] = answer
            reply = self.transport.send(method, url, sent, body)
            if reply.status == 401:
                reply.read()
                raise AuthenticationError(f"{method} {url}: credentials refused")
        if reply.status not in expect:
            raise RegistryResponseError(reply.status, method, url, reply.read())
        return reply

    # -- base --------------------------------------------------------------
    def ping(self) -> dict[str, str]:
        reply = self.request("GET", url_for("base"))
        reply.read()
        version = reply.headers.get("Docker-Distribution-API-Version")
        return {"api_version": version or ""}

    # -- blobs -------------------------------------------------------------
    def blob_size(self, name: str, digest: str) -> int | None:
        """The size of a blob in the repository, or None when it is absent."""
        reply = self.request("HEAD", url_for("blob", name=name, digest=digest),
                             expect=(200, 307, 404), scope=f"{name}:pull")
        reply.read()
        if reply.status == 307:  # distribution on S3 redirects HEADs to storage too
            location = reply.headers.get("Location")
            if not location:
                raise ProtocolError("307 without Location")
            reply = self.transport.send("HEAD", self._url(location), {})
            reply.read()
            if reply.status not in (200, 404):
                raise RegistryResponseError(reply.status, "HEAD", "(redirected blob)", b"")
        if reply.status == 404:
            return None
        return int(reply.headers.get("Content-Length") or 0)

    def get_blob(self, name: str, digest: str, *, byte_range: tuple[int, int] | None = None,
                 verify: bool = True, progress: Progress | None = None) -> Iterator[bytes]:
        """Stream a blob, following a redirect to storage; whole-blob reads are
        verified against the digest as they stream (DigestMismatchError at the end)."""
        expected = parse_digest(digest)
        headers = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else {}
        reply = self.request("GET", url_for("blob", name=name, digest=digest), headers=headers,
                             expect=(200, 206, 307), scope=f"{name}:pull")
        if reply.status == 307:
            location = reply.headers.get("Location")
            reply.read()
            if not location:
                raise ProtocolError("307 without Location")
            # storage gets no registry credentials
            reply = self.transport.send("GET", self._url(location), headers)
            if reply.status not in (200, 206):
                raise RegistryResponseError(reply.status, "GET", "(redirected blob)", reply.read())
        hasher = expected.hasher() if verify and byte_range is None else None
        try:
            for chunk in reply.chunks:
                if hasher is not None:
                    hasher.update(chunk)
                if progress:
                    progress(len(chunk))
                yield chunk
        finally:
            reply.close()
        if hasher is not None and hasher.hexdigest() != expected.hex:
            raise DigestMismatchError(f"blob {digest} from {name} hashed to "
                                      f"{expected.algorithm}:{hasher.hexdigest()}")

    def read_blob(self, name: str, digest: str) -> bytes:
        return b"".join(self.get_blob(name, digest))

    def delete_blob(self, name: str, digest: str) -> None:
        self.request("DELETE", url_for("blob", name=name, digest=digest), expect=(202,),
                     scope=f"{name}:delete").read()

    def mount_blob(self, name: str, digest: str, source: str) -> bool:
        """Cross-repository mount; True when mounted, False when the registry
        started an ordinary upload instead (which is then cancelled)."""
        reply = self.request("POST", url_for("uploads", name=name,
                                             query={"mount": digest, "from": source}),
                             expect=(201, 202), scope=f"{name}:push")
        reply.read()
        if reply.status == 201:
            return True
        location = reply.headers.get("Location")
        if location:
            with contextlib.suppress(RegistryResponseError):
                self.request("DELETE", location, expect=(204, 202, 404),
                             scope=f"{name}:push").read()
        return False

    def upload_blob(self, name: str, digest: str, source: UploadSource | bytes, *,
                    progress: Progress | None = None) -> str:
        """Upload a blob the fastest way this registry allows; returns its digest."""
        if isinstance(source, bytes):
            source = UploadSource.from_bytes(source)
        parse_digest(digest)
        start = self.request("POST", url_for("uploads", name=name), expect=(202,),
                             scope=f"{name}:push")
        start.read()
        location = start.headers.get("Location")
        if not location:
            raise ProtocolError("upload started without a Location")
        max_chunk = _int_header(start.headers.get("OCI-Chunk-Max-Length"))
        # Direct parts only where a body cap forces chunking (a registry in a
        # function): without a cap, one streamed request is verified on the
        # way in, and beats parts that must be read back to be verified.
        if self.use_extensions and max_chunk is not None and source.size > max_chunk:
            direct = self._direct_parts(name, location, source, progress)
            if direct is not None:
                location = direct
                return self._complete(name, location, digest, b"", progress_done=None) or digest
        if max_chunk is None or source.size <= max_chunk:
            with source.open() as stream:
                body = _Counting(stream, progress)
                self._complete(name, location, digest, body, length=source.size)
            return digest
        # The largest chunk allowed: fewest requests (a min above the max is
        # the registry's contradiction; the max is the one it enforces).
        chunk = max(max_chunk, 1)
        offset = 0
        with source.open() as stream:
            while offset < source.size:
                data = stream.read(min(chunk, source.size - offset))
                reply = self.request(
                    "PATCH", location, body=data, expect=(202,), scope=f"{name}:push",
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{offset}-{offset + len(data) - 1}",
                             "Content-Length": str(len(data))})
                reply.read()
                location = reply.headers.get("Location") or location
                offset += len(data)
                if progress:
                    progress(len(data))
        self._complete(name, location, digest, b"")
        return digest

    def _complete(self, name: str, location: str, digest: str, body: Any,
                  length: int | None = None, progress_done: Progress | None = None) -> str:
        separator = "&" if "?" in location else "?"
        headers = {"Content-Type": "application/octet-stream"}
        if isinstance(body, bytes):
            headers["Content-Length"] = str(len(body))
        elif length is not None:
            headers["Content-Length"] = str(length)
        reply = self.request("PUT", f"{location}{separator}digest={digest}", body=body,
                             headers=headers, expect=(201,), scope=f"{name}:push",
                             replayable=isinstance(body, bytes))
        reply.read()
        returned = reply.headers.get("Docker-Content-Digest")
        if returned and returned != digest:
            raise DigestMismatchError(f"registry stored {returned}, expected {digest}")
        return digest

    def _direct_parts(self, name: str, location: str, source: UploadSource,
                      progress: Progress | None = None) -> str | None:
        """Upload parts straight to S3 through the cargohold extension; None if
        the registry does not offer it."""
        parts_url = _extension_url(location)
        if parts_url is None:
            return None
        count = -(-source.size // PART_SIZE)
        try:
            reply = self.request("POST", f"{parts_url}&first=1&count={count}",
                                 expect=(200,), scope=f"{name}:push")
        except RegistryResponseError as exc:
            if exc.status in (404, 405):
                return None
            raise
        plan = json.loads(reply.read())

        def put_part(part: dict[str, Any]) -> None:
            number = part["partNumber"]
            start = (number - 1) * PART_SIZE
            with source.open() as stream:
                stream.seek(start)
                data = stream.read(min(PART_SIZE, source.size - start))
            answer = self.transport.send("PUT", part["url"], {
                "Content-Length": str(len(data)), "Content-Type": "application/octet-stream"},
                data)
            body = answer.read()
            if answer.status != 200:
                raise RegistryResponseError(answer.status, "PUT", "(direct part)", body)
            if progress:
                progress(len(data))

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            list(pool.map(put_part, plan["parts"]))
        return plan.get("location") or location

    # -- manifests ---------------------------------------------------------
    def get_manifest(self, name: str, reference: str, accept: str = MANIFEST_ACCEPT) -> Manifest:
        reply = self.request("GET", url_for("manifest", name=name, reference=reference),
                             headers={"Accept": accept}, scope=f"{name}:pull")
        body = reply.read()
        media_type = (reply.headers.get("Content-Type") or "").split(";")[0]
        digest = reply.headers.get("Docker-Content-Digest") or ""
        actual = _sha256(body)
        if reference.startswith("sha256:") and actual != reference:
            raise DigestMismatchError(f"manifest {reference} hashed to {actual}")
        return Manifest(body, media_type, digest or actual)

    def manifest_digest(self, name: str, reference: str) -> str | None:
        reply = self.request("HEAD", url_for("manifest", name=name, reference=reference),
                             headers={"Accept": MANIFEST_ACCEPT}, expect=(200, 404),
                             scope=f"{name}:pull")
        reply.read()
        return reply.headers.get("Docker-Content-Digest") if reply.status == 200 else None

    def put_manifest(self, name: str, reference: str, body: bytes, media_type: str) -> str:
        reply = self.request("PUT", url_for("manifest", name=name, reference=reference),
                             body=body, headers={"Content-Type": media_type},
                             expect=(201,), scope=f"{name}:push")
        reply.read()
        return reply.headers.get("Docker-Content-Digest") or _sha256(body)

    def delete_manifest(self, name: str, reference: str) -> None:
        self.request("DELETE", url_for("manifest", name=name, reference=reference),
                     expect=(202,), scope=f"{name}:delete").read()

    # -- listings ----------------------------------------------------------
    def _pages(self, path: str, key: str, scope: str) -> Iterator[str]:
        url: str | None = path
        while url:
            reply = self.request("GET", url, scope=scope)
            data = json.loads(reply.read() or b"{}")
            yield from data.get(key) or []
            match = _LINK.search(reply.headers.get("Link") or "")
            url = match.group(1) if match else None

    def tags(self, name: str, page_size: int | None = None) -> list[str]:
        query = {"n": str(page_size)} if page_size else None
        return list(self._pages(url_for("tags", name=name, query=query), "tags",
                                f"{name}:pull"))

    def catalog(self, page_size: int | None = None) -> list[str]:
        query = {"n": str(page_size)} if page_size else None
        return list(self._pages(url_for("catalog", query=query), "repositories",
                                "registry:catalog:*"))

    def referrers(self, name: str, digest: str, artifact_type: str | None = None,
                  ) -> dict[str, Any]:
        query = {"artifactType": artifact_type} if artifact_type else None
        reply = self.request("GET", url_for("referrers", name=name, digest=digest, query=query),
                             scope=f"{name}:pull")
        return json.loads(reply.read())


def _int_header(value: str | None) -> int | None:
    return int(value) if value and value.strip().isdigit() else None


def _sha256(data: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(data).hexdigest()


def _extension_url(location: str) -> str | None:
    """The parts URL of cargohold's extension for an upload ``Location``."""
    parts = urlsplit(location)
    marker = "/blobs/uploads/"
    if marker not in parts.path:
        return None
    prefix, _, session = parts.path.rpartition(marker)
    state = parse_qs(parts.query).get("_state")
    if not state or not session:
        return None
    base = f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""
    return f"{base}{prefix}/_cargohold/uploads/{session}/parts?_state={state[0]}"


class _Counting:
    """A read-through stream that reports progress."""

    def __init__(self, stream: BinaryIO, progress: Progress | None) -> None:
        self._stream = stream
        self._progress = progress

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if data and self._progress:
            self._progress(len(data))
        return data
