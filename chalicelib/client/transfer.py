"""Copy an image between registries and OCI layouts (or from a docker archive).

A copy reads the top manifest, walks an index's children recursively,
moves every config and layer blob in parallel (skipping blobs the target
already holds, mounting across repositories of one registry), then writes
manifests children-first so that a registry never sees a manifest whose
references are missing. Every byte is checked against its digest: by the
layout writer, the streaming reader, or the receiving registry.

Memory stays bounded whatever the blob size: layout and archive blobs are
read from files; a registry→registry blob is streamed from one connection
into the other (a part of a direct-to-S3 upload is a ranged GET).
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core.grammar import parse_digest
from ..core.manifests import INDEX_TYPES, MANIFEST_TYPES, NON_DISTRIBUTABLE_LAYERS
from .errors import DigestMismatchError, ProtocolError, RegistryResponseError
from .layout import (
    ArchiveBlob,
    ArchiveImage,
    DockerArchive,
    LayoutError,
    OciLayout,
    check_digest,
    manifest_media_type,
    sha256_of,
)
from .registry import RegistryClient, UploadSource

Descriptor = dict[str, Any]
Progress = Callable[[int], None]
MAX_CONFIG_BYTES = 16 * 1024 * 1024
RANGE_WINDOW = 16 * 1024 * 1024


class Reporter(Protocol):
    """Where a copy reports its progress (the CLI draws a tqdm bar)."""

    def plan(self, total_bytes: int, blobs: int) -> None: ...

    def advance(self, n: int) -> None: ...


class _Silent:
    def plan(self, total_bytes: int, blobs: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


# -- sources -------------------------------------------------------------------
class Source(Protocol):
    """Where an image is read from."""

    def resolve(self) -> tuple[Descriptor, bytes]:
        """The top manifest's descriptor and its verified bytes."""
        ...

    def manifest(self, descriptor: Descriptor) -> bytes:
        """A child manifest's verified bytes."""
        ...

    def upload_source(self, descriptor: Descriptor) -> UploadSource:
        """The blob as an :class:`UploadSource` (for a registry sink)."""
        ...

    def iter_blob(self, descriptor: Descriptor, verify: bool = True,
                  progress: Progress | None = None) -> Iterator[bytes]:
        """The blob as a stream of chunks (for a layout sink)."""
        ...

    def read_small(self, descriptor: Descriptor) -> bytes:
        """A small blob (a config), verified."""
        ...

    @property
    def default_tag(self) -> str | None:
        """The name the image goes by at the source, if it has one."""
        ...


class RegistrySource:
    """An image in a registry repository, by tag or digest."""

    def __init__(self, client: RegistryClient, repo: str, reference: str) -> None:
        self.client = client
        self.repo = repo
        self.reference = reference
        self._resolved: tuple[Descriptor, bytes] | None = None

    @property
    def default_tag(self) -> str | None:
        return None if ":" in self.reference else self.reference

    def _fetch(self, reference: str) -> tuple[bytes, str]:
        got = self.client.get_manifest(self.repo, reference)
        actual = sha256_of(got.body)
        if got.digest.startswith("sha256:") and got.digest != actual:
            raise DigestMismatchError(f"manifest {self.repo}:{reference} hashed to {actual}, "
                                      f"the registry said {got.digest}")
        if ":" in reference:
            check_digest(reference, got.body, "manifest")
        return got.body, manifest_media_type(got.body, got.media_type)

    def resolve(self) -> tuple[Descriptor, bytes]:
        if self._resolved is None:  # fetched once, however often asked
            body, media_type = self._fetch(self.reference)
            digest = self.reference if ":" in self.reference else sha256_of(body)
            self._resolved = {"mediaType": media_type, "digest": digest,
                              "size": len(body)}, body
        return self._resolved

    def manifest(self, descriptor: Descriptor) -> bytes:
        return self._fetch(descriptor["digest"])[0]

    def upload_source(self, descriptor: Descriptor) -> UploadSource:
        digest, size = descriptor["digest"], int(descriptor["size"])
        return UploadSource(size, lambda: RemoteBlobReader(self.client, self.repo, digest, size))

    def iter_blob(self, descriptor: Descriptor, verify: bool = True,
                  progress: Progress | None = None) -> Iterator[bytes]:
        return self.client.get_blob(self.repo, descriptor["digest"], verify=verify,
                                    progress=progress)

    def read_small(self, descriptor: Descriptor) -> bytes:
        data = b""
        for chunk in self.client.get_blob(self.repo, descriptor["digest"]):
            data += chunk
            if len(data) > MAX_CONFIG_BYTES:
                raise ProtocolError(f"blob {descriptor['digest']} is too large to inspect")
        return data


class LayoutSource:
    """An image in an OCI layout, by ref name or digest (or the only one)."""

    def __init__(self, layout: OciLayout, reference: str | None = None) -> None:
        self.layout = layout
        self.reference = reference
        self._tag: str | None = None

    @property
    def default_tag(self) -> str | None:
        return self._tag

    def resolve(self) -> tuple[Descriptor, bytes]:
        descriptor = self.layout.resolve(self.reference)
        annotations = descriptor.get("annotations") or {}
        self._tag = annotations.get("org.opencontainers.image.ref.name")
        body = self.layout.read_blob(descriptor["digest"])
        media_type = manifest_media_type(body, descriptor.get("mediaType"))
        return {"mediaType": media_type, "digest": descriptor["digest"], "size": len(body)}, body

    def manifest(self, descriptor: Descriptor) -> bytes:
        return self.layout.read_blob(descriptor["digest"])

    def upload_source(self, descriptor: Descriptor) -> UploadSource:
        digest = descriptor["digest"]
        size = self.layout.blob_size(digest)
        if size is None:
            raise LayoutError(f"{self.layout.root}: blob {digest} is missing")
        if size != int(descriptor["size"]):
            raise DigestMismatchError(f"{self.layout.root}: blob {digest} is {size} bytes, "
                                      f"its descriptor says {descriptor['size']}")
        path = self.layout.blob_path(digest)
        return UploadSource(size, lambda: path.open("rb"))

    def iter_blob(self, descriptor: Descriptor, verify: bool = True,
                  progress: Progress | None = None) -> Iterator[bytes]:
        for chunk in self.layout.iter_blob(descriptor["digest"], verify=verify):
            if progress:
                progress(len(chunk))
            yield chunk

    def read_small(self, descriptor: Descriptor) -> bytes:
        return self.layout.read_blob(descriptor["digest"], MAX_CONFIG_BYTES)


class ArchiveSource:
    """An image of a ``docker save`` tarball, as a Docker schema 2 image."""

    def __init__(self, archive: DockerArchive, reference: str | None = None) -> None:
        self.archive = archive
        self.reference = reference
        self._image: ArchiveImage | None = None

    def _load(self) -> ArchiveImage:
        if self._image is None:
            self._image = self.archive.image(self.reference)
        return self._image

    @property
    def default_tag(self) -> str | None:
        image = self._load()
        for repo_tag in [self.reference or "", *image.repo_tags]:
            _, sep, tag = repo_tag.rpartition(":")
            if sep and "/" not in tag:
                return tag
        return None

    def resolve(self) -> tuple[Descriptor, bytes]:
        image = self._load()
        return {"mediaType": image.media_type, "digest": image.digest,
                "size": len(image.manifest)}, image.manifest

    def manifest(self, descriptor: Descriptor) -> bytes:
        raise LayoutError(f"{self.archive.path}: no manifest {descriptor['digest']}")

    def _blob(self, descriptor: Descriptor) -> ArchiveBlob:
        blob = self._load().blobs.get(descriptor["digest"])
        if blob is None:
            raise LayoutError(f"{self.archive.path}: no blob {descriptor['digest']}")
        return blob

    def upload_source(self, descriptor: Descriptor) -> UploadSource:
        blob = self._blob(descriptor)
        return UploadSource(blob.size, lambda: self.archive.open_member(blob.member))

    def iter_blob(self, descriptor: Descriptor, verify: bool = True,
                  progress: Progress | None = None) -> Iterator[bytes]:
        blob = self._blob(descriptor)
        expected = parse_digest(blob.digest)
        hasher = expected.hasher()
        with self.archive.open_member(blob.member) as stream:
            while chunk := stream.read(1024 * 1024):
                hasher.update(chunk)
                if progress:
                    progress(len(chunk))
                yield chunk
        if verify and hasher.hexdigest() != expected.hex:
            raise DigestMismatchError(f"{self.archive.path}: {blob.member} changed while read")

    def read_small(self, descriptor: Descriptor) -> bytes:
        data = self.archive.read_member(self._blob(descriptor).member, MAX_CONFIG_BYTES)
        check_digest(descriptor["digest"], data, "config")
        return data


class RemoteBlobReader(io.RawIOBase):
    """A seekable, read-only file over a registry blob, so a registry→registry
    copy streams from one connection into the other with bounded memory.

    Reading from offset 0 to the end is verified against the digest; after a
    seek elsewhere (a part of a direct-to-S3 upload) the read is a ranged
    GET, and the receiving registry verifies the assembled blob.
    """

    def __init__(self, client: RegistryClient, repo: str, digest: str, size: int) -> None:
        super().__init__()
        self._client = client
        self._repo = repo
        self._digest = digest
        self._size = size
        self._pos = 0
        self._chunks: Iterator[bytes] | None = None
        self._pending = b""
        self._left = 0  # bytes the open stream may still deliver

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        target = max(0, base + pos)
        if target != self._pos:
            self._drop()
            self._pos = target
        return self._pos

    def _drop(self) -> None:
        if self._chunks is not None:
            close = getattr(self._chunks, "close", None)
            if close:
                close()
        self._chunks = None
        self._pending = b""

    def _open(self, want: int) -> Iterator[bytes]:
        """A whole-blob GET from offset 0 (verified as it streams), else a
        ranged GET of a window from the current offset."""
        if self._pos == 0:
            self._left = self._size
            return self._client.get_blob(self._repo, self._digest)
        end = min(self._size, self._pos + max(want, RANGE_WINDOW))
        self._left = end - self._pos
        return self._client.get_blob(self._repo, self._digest, byte_range=(self._pos, end - 1))

    def read(self, n: int = -1) -> bytes:
        if self._pos >= self._size:
            return b""
        want = self._size - self._pos if n is None or n < 0 else min(n, self._size - self._pos)
        out = bytearray(self._pending)
        self._pending = b""
        while len(out) < want:
            if self._chunks is None:
                self._pos += len(out)  # the next window starts after what we hold
                try:
                    self._chunks = self._open(want - len(out))
                finally:
                    self._pos -= len(out)
            try:
                chunk = next(self._chunks)
            except StopIteration:
                if self._left:
                    raise ProtocolError(f"blob {self._digest} ended {self._left} bytes "
                                        "early") from None
                self._chunks = None
                continue
            self._left -= len(chunk)
            if self._left < 0:
                raise ProtocolError(f"blob {self._digest} is longer than {self._size} bytes "
                                    "(or a ranged read returned more than its range)")
            out += chunk
        self._pending = bytes(out[want:])
        data = bytes(out[:want])
        self._pos += len(data)
        if self._left == 0 and not self._pending and self._chunks is not None:
            # finish the stream: a whole-blob read is verified when it ends
            for extra in self._chunks:
                if extra:
                    raise ProtocolError(f"blob {self._digest} is longer than {self._size}")
            self._chunks = None
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._drop()
        super().close()


# -- sinks -----------------------------------------------------------------------
class Sink(Protocol):
    """Where an image is written."""

    def prepare(self) -> None: ...

    def has_blob(self, descriptor: Descriptor) -> bool: ...

    def put_blob(self, descriptor: Descriptor, source: Source,
                 progress: Progress | None) -> str:
        """Store a blob; returns ``"uploaded"`` or ``"mounted"``."""
        ...

    def put_manifest(self, descriptor: Descriptor, body: bytes, tag: str | None) -> str: ...


class RegistrySink:
    """A registry repository; ``tag`` names the top manifest (else by digest)."""

    def __init__(self, client: RegistryClient, repo: str) -> None:
        self.client = client
        self.repo = repo

    def prepare(self) -> None:
        pass

    def has_blob(self, descriptor: Descriptor) -> bool:
        return self.client.blob_size(self.repo, descriptor["digest"]) is not None

    def put_blob(self, descriptor: Descriptor, source: Source,
                 progress: Progress | None) -> str:
        digest = descriptor["digest"]
        if (isinstance(source, RegistrySource) and source.repo != self.repo
                and source.client.base_url == self.client.base_url):
            try:
                if self.client.mount_blob(self.repo, digest, source.repo):
                    if progress:
                        progress(int(descriptor["size"]))
                    return "mounted"
            except RegistryResponseError:
                pass  # some registries refuse mounts outright: upload instead
        try:
            self.client.upload_blob(self.repo, digest, source.upload_source(descriptor),
                                    progress=progress)
        except RegistryResponseError as exc:
            if exc.code == "DIGEST_INVALID":
                raise DigestMismatchError(
                    f"blob {digest}: the registry found that the content does not hash to "
                    f"its digest ({exc})") from exc
            raise
        return "uploaded"

    def put_manifest(self, descriptor: Descriptor, body: bytes, tag: str | None) -> str:
        digest = descriptor["digest"]
        stored = self.client.put_manifest(self.repo, tag or digest, body,
                                          descriptor["mediaType"])
        if stored != digest:
            raise DigestMismatchError(f"registry stored manifest {digest} as {stored}")
        return stored


class LayoutSink:
    """An OCI layout; the top manifest is named ``tag`` in ``index.json``."""

    def __init__(self, layout: OciLayout) -> None:
        self.layout = layout

    def prepare(self) -> None:
        self.layout.init()

    def has_blob(self, descriptor: Descriptor) -> bool:
        return self.layout.has_blob(descriptor["digest"], int(descriptor["size"]))

    def put_blob(self, descriptor: Descriptor, source: Source,
                 progress: Progress | None) -> str:
        # the layout verifies as it writes, so the source need not hash too
        self.layout.write_blob(descriptor["digest"],
                               source.iter_blob(descriptor, verify=False, progress=progress))
        return "uploaded"

    def put_manifest(self, descriptor: Descriptor, body: bytes, tag: str | None) -> str:
        self.layout.write_bytes(body, descriptor["digest"])
        return descriptor["digest"]

    def name(self, descriptor: Descriptor, tag: str | None) -> None:
        self.layout.add_ref(descriptor, tag)


# -- the copy --------------------------------------------------------------------
@dataclass
class CopyResult:
    digest: str
    media_type: str
    size: int
    tag: str | None
    manifests: int = 0
    uploaded: int = 0
    mounted: int = 0
    skipped: int = 0
    bytes_moved: int = 0
    blobs: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"digest": self.digest, "mediaType": self.media_type, "size": self.size,
                "tag": self.tag, "manifests": self.manifests, "uploaded": self.uploaded,
                "mounted": self.mounted, "skipped": self.skipped,
                "bytes": self.bytes_moved}


@dataclass
class ImageGraph:
    """A manifest tree: manifests children-first, and the blobs they name."""

    top: Descriptor
    manifests: list[tuple[Descriptor, bytes]]
    blobs: dict[str, Descriptor]


def walk(source: Source) -> ImageGraph:
    """Read the top manifest and, for an index, every child, recursively."""
    top, body = source.resolve()
    manifests: list[tuple[Descriptor, bytes]] = []
    blobs: dict[str, Descriptor] = {}
    seen: set[str] = set()

    def visit(descriptor: Descriptor, data: bytes, depth: int) -> None:
        if descriptor["digest"] in seen:
            return
        if depth > 8:
            raise ProtocolError("indexes nested more than 8 deep")
        seen.add(descriptor["digest"])
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise ProtocolError(f"manifest {descriptor['digest']} is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ProtocolError(f"manifest {descriptor['digest']} is not a JSON object")
        if descriptor["mediaType"] in INDEX_TYPES or "manifests" in document:
            for child in document.get("manifests") or []:
                if child.get("mediaType") in MANIFEST_TYPES:
                    child_body = source.manifest(child)
                    child_type = manifest_media_type(child_body, child.get("mediaType"))
                    visit({"mediaType": child_type, "digest": child["digest"],
                           "size": len(child_body)}, child_body, depth + 1)
                else:
                    _add_blob(blobs, child)
        if isinstance(document.get("config"), dict):
            _add_blob(blobs, document["config"])
        for layer in document.get("layers") or []:
            if layer.get("mediaType") in NON_DISTRIBUTABLE_LAYERS and layer.get("urls"):
                continue  # foreign layers live elsewhere; registries need not hold them
            _add_blob(blobs, layer)
        manifests.append((descriptor, data))

    visit(top, body, 0)
    return ImageGraph(top, manifests, blobs)


def _add_blob(blobs: dict[str, Descriptor], descriptor: Any) -> None:
    if not isinstance(descriptor, dict) or not isinstance(descriptor.get("digest"), str):
        raise ProtocolError(f"bad descriptor {descriptor!r}")
    parse_digest(descriptor["digest"])
    blobs.setdefault(descriptor["digest"], {
        "mediaType": descriptor.get("mediaType", ""), "digest": descriptor["digest"],
        "size": int(descriptor.get("size") or 0)})


def copy_image(source: Source, sink: Sink, *, tag: str | None, concurrency: int = 4,
               reporter: Reporter | None = None) -> CopyResult:
    """Copy one image (an index with all its children); returns what was done.

    ``tag`` names the top manifest at the sink; without one it is stored by
    digest only (a layout then lists it unnamed in ``index.json``).
    """
    reporter = reporter or _Silent()
    graph = walk(source)
    sink.prepare()
    result = CopyResult(graph.top["digest"], graph.top["mediaType"], graph.top["size"], tag,
                        manifests=len(graph.manifests), blobs=sorted(graph.blobs))
    reporter.plan(sum(int(d["size"]) for d in graph.blobs.values()), len(graph.blobs))
    lock = threading.Lock()

    def move(descriptor: Descriptor) -> None:
        size = int(descriptor["size"])
        if sink.has_blob(descriptor):
            reporter.advance(size)
            with lock:
                result.skipped += 1
            return
        how = sink.put_blob(descriptor, source, reporter.advance)
        with lock:
            if how == "mounted":
                result.mounted += 1
            else:
                result.uploaded += 1
                result.bytes_moved += size

    # biggest first, so one large layer does not start last
    ordered = sorted(graph.blobs.values(), key=lambda d: -int(d["size"]))
    with ThreadPoolExecutor(max_workers=max(1, concurrency),
                            thread_name_prefix="cargohold-copy") as pool:
        futures = [pool.submit(move, d) for d in ordered]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for future in futures:
                future.cancel()
            raise failed[0].exception()  # type: ignore[misc]
    for descriptor, body in graph.manifests:
        is_top = descriptor["digest"] == graph.top["digest"]
        sink.put_manifest(descriptor, body, tag if is_top else None)
    if isinstance(sink, LayoutSink):
        sink.name(graph.top, tag)
    return result
