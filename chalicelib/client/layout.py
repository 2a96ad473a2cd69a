"""Images on disk: OCI image layout directories and ``docker save`` tarballs.

An OCI layout (image-spec ``image-layout.md``) is read and written: blobs
live under ``blobs/<alg>/<hex>``, named images are entries of
``index.json`` annotated with ``org.opencontainers.image.ref.name``. A
docker archive (what ``docker save`` writes: ``manifest.json``, a config
JSON, layer tars) is only read, and presented as a Docker schema 2 image
whose layer digests are those of the layer files as stored.

Blobs are streamed to and from files and verified against their digests as
they pass; nothing here holds a layer in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ..core.grammar import parse_digest
from ..core.manifests import DOCKER_MANIFEST, MANIFEST_TYPES, OCI_INDEX
from .errors import ClientError, DigestMismatchError

REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
READ_SIZE = 1024 * 1024

Descriptor = dict[str, Any]


class LayoutError(ClientError):
    """A layout or archive is missing, malformed, or has no such image."""


def sha256_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor_of(media_type: str, data: bytes) -> Descriptor:
    return {"mediaType": media_type, "digest": sha256_of(data), "size": len(data)}


def manifest_media_type(body: bytes, declared: str | None = None) -> str:
    """The media type of a manifest: its own ``mediaType`` field, else the
    declared one, else inferred from its shape (an index has ``manifests``)."""
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise LayoutError(f"manifest is not JSON: {exc}") from None
    media_type = document.get("mediaType") if isinstance(document, dict) else None
    if isinstance(media_type, str) and media_type:
        return media_type
    if declared:
        return declared
    if isinstance(document, dict) and "manifests" in document:
        return OCI_INDEX
    return "application/vnd.oci.image.manifest.v1+json"


# -- OCI image layout ----------------------------------------------------------
class OciLayout:
    """One OCI image layout directory (created on first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._index_lock = threading.Lock()

    # reading ------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / "index.json").is_file()

    def index(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError:
            raise LayoutError(f"{self.root} is not an OCI image layout (no index.json)") from None
        except ValueError as exc:
            raise LayoutError(f"{self.root}/index.json is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise LayoutError(f"{self.root}/index.json has no manifests list")
        return data

    def blob_path(self, digest: str) -> Path:
        parsed = parse_digest(digest)
        return self.root / "blobs" / parsed.algorithm / parsed.hex

    def blob_size(self, digest: str) -> int | None:
        try:
            return self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None

    def has_blob(self, digest: str, size: int | None = None) -> bool:
        found = self.blob_size(digest)
        return found is not None and (size is None or found == size)

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return self.blob_path(digest).open("rb")
        except FileNotFoundError:
            raise LayoutError(f"{self.root}: blob {digest} is missing") from None

    def read_blob(self, digest: str, limit: int = 64 * 1024 * 1024) -> bytes:
        """A small blob (manifest, config), verified against its name."""
        with self.open_blob(digest) as stream:
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise LayoutError(f"{self.root}: blob {digest} is larger than {limit} bytes")
        check_digest(digest, data, f"{self.root}: blob")
        return data

    def iter_blob(self, digest: str, verify: bool = True) -> Iterator[bytes]:
        """Stream a blob; with ``verify`` it is hashed on the way (mismatch at the end)."""
        expected = parse_digest(digest)
        hasher = expected.hasher() if verify else None
        with self.open_blob(digest) as stream:
            while chunk := stream.read(READ_SIZE):
                if hasher is not None:
                    hasher.update(chunk)
                yield chunk
        if hasher is not None and hasher.hexdigest() != expected.hex:
            raise DigestMismatchError(f"{self.root}: blob {digest} hashed to "
                                      f"{expected.algorithm}:{hasher.hexdigest()}")

    def resolve(self, reference: str | None = None) -> Descriptor:
        """The descriptor ``index.json`` holds for a ref name or digest, or
        its only entry when no reference is given."""
        entries = [d for d in self.index().get("manifests", []) if isinstance(d, dict)]
        if reference is None:
            if len(entries) != 1:
                names = sorted(_ref_name(d) or d.get("digest", "?") for d in entries)
                raise LayoutError(f"{self.root} holds {len(entries)} images: name one of "
                                  f"{', '.join(names) or '(none)'}")
            return entries[0]
        if ":" in reference:  # tags cannot hold a colon
            found = [d for d in entries if d.get("digest") == reference]
            if found:
                return found[0]
            size = self.blob_size(reference)
            if size is not None:  # a manifest in the layout that index.json does not name
                body = self.read_blob(reference)
                return {"mediaType": manifest_media_type(body), "digest": reference,
                        "size": size}
        else:
            found = [d for d in entries if _ref_name(d) == reference]
            if found:
                return found[-1]
        raise LayoutError(f"{self.root}: no image named {reference!r}")

    # writing ------------------------------------------------------------------
    def init(self) -> None:
        """Create the layout skeleton (``oci-layout``, empty ``index.json``) if absent."""
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / "oci-layout"
        if not marker.exists():
            marker.write_text(json.dumps({"imageLayoutVersion": LAYOUT_VERSION}))
        if not (self.root / "index.json").exists():
            self._write_index({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})

    def write_blob(self, digest: str, chunks: Iterable[bytes],
                   progress: Callable[[int], None] | None = None) -> int:
        """Stream ``chunks`` into the blob file, verified before it appears
        under its name (a temp file is renamed into place); returns the size."""
        expected = parse_digest(digest)
        target = self.blob_path(digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        hasher = expected.hasher()
        size = 0
        fd, temp = tempfile.mkstemp(prefix=".partial-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if progress:
                        progress(len(chunk))
            if hasher.hexdigest() != expected.hex:
                raise DigestMismatchError(f"blob {digest} hashed to "
                                          f"{expected.algorithm}:{hasher.hexdigest()}")
            os.chmod(temp, 0o644)
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return size

    def write_bytes(self, data: bytes, digest: str | None = None) -> str:
        digest = digest or sha256_of(data)
        self.write_blob(digest, [data])
        return digest

    def add_ref(self, descriptor: Descriptor, name: str | None) -> None:
        """Record an image in ``index.json``: named ``name`` (replacing any
        entry of that name), or unnamed (once per digest)."""
        entry = {k: descriptor[k] for k in ("mediaType", "digest", "size")}
        if name:
            entry["annotations"] = {REF_NAME: name}
        with self._index_lock:
            self.init()
            index = self.index()
            kept = [d for d in index.get("manifests", [])
                    if not (_ref_name(d) == name if name else
                            (d.get("digest") == entry["digest"] and not _ref_name(d)))]
            index["manifests"] = kept + [entry]
            index.setdefault("schemaVersion", 2)
            index.setdefault("mediaType", OCI_INDEX)
            self._write_index(index)

    def _write_index(self, index: dict[str, Any]) -> None:
        fd, temp = tempfile.mkstemp(prefix=".index-", dir=self.root)
        with os.fdopen(fd, "w") as out:
            json.dump(index, out, indent=2)
        os.chmod(temp, 0o644)
        os.replace(temp, self.root / "index.json")


def _ref_name(descriptor: Any) -> str | None:
    annotations = descriptor.get("annotations") if isinstance(descriptor, dict) else None
    return annotations.get(REF_NAME) if isinstance(annotations, dict) else None


def check_digest(digest: str, data: bytes, what: str = "content") -> None:
    expected = parse_digest(digest)
    actual = hashlib.new(expected.algorithm, data).hexdigest()
    if actual != expected.hex:
        raise DigestMismatchError(f"{what} {digest} hashed to {expected.algorithm}:{actual}")


# -- a window onto part of a file ----------------------------------------------
class FileSlice(io.RawIOBase):
    """``size`` bytes of ``path`` from ``offset``, as a seekable read-only
    file: how a layer inside a tarball is uploaded without extracting it."""

    def __init__(self, path: str | os.PathLike[str], offset: int, size: int) -> None:
        super().__init__()
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._offset = offset
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._pos
        if left <= 0:
            return b""
        n = left if n is None or n < 0 else min(n, left)
        self._file.seek(self._offset + self._pos)
        data = self._file.read(n)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


# -- docker save archives --------------------------------------------------------
@dataclass(frozen=True)
class ArchiveBlob:
    """A blob stored inside the archive: where, how big, what digest."""

    member: str
    offset: int
    size: int
    digest: str
    media_type: str


@dataclass
class ArchiveImage:
    """One image of a docker archive as a Docker schema 2 image."""

    manifest: bytes
    media_type: str
    digest: str
    repo_tags: list[str]
    blobs: dict[str, ArchiveBlob]


class DockerArchive:
    """A ``docker save`` tarball (plain or gzip'd members; the legacy
    ``<id>/layer.tar`` form and the OCI-style ``blobs/sha256/…`` form)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._members: dict[str, tarfile.TarInfo] | None = None

    def _scan(self) -> dict[str, tarfile.TarInfo]:
        if self._members is None:
            with contextlib.suppress(OSError), self.path.open("rb") as head:
                if head.read(2) == b"\x1f\x8b":
                    raise LayoutError(f"{self.path} is gzip-compressed: layers are read in "
                                      "place, so gunzip it first")
            try:
                with tarfile.open(self.path, "r:") as tar:
                    self._members = {_norm(m.name): m for m in tar.getmembers()}
            except (OSError, tarfile.TarError) as exc:
                raise LayoutError(f"{self.path}: not a readable docker archive: {exc}") from None
        return self._members

    def _member(self, name: str) -> tarfile.TarInfo:
        members = self._scan()
        info = members.get(_norm(name))
        seen: set[str] = set()
        while info is not None and (info.issym() or info.islnk()) and info.name not in seen:
            seen.add(info.name)  # docker's legacy format links identical layers
            target = info.linkname if info.islnk() else os.path.normpath(
                os.path.join(os.path.dirname(info.name), info.linkname))
            info = members.get(_norm(target))
        if info is None or not info.isfile():
            raise LayoutError(f"{self.path}: no file {name!r} in the archive")
        return info

    def open_member(self, name: str) -> FileSlice:
        info = self._member(name)
        return FileSlice(self.path, info.offset_data, info.size)

    def read_member(self, name: str, limit: int = 64 * 1024 * 1024) -> bytes:
        info = self._member(name)
        if info.size > limit:
            raise LayoutError(f"{self.path}: {name} is larger than {limit} bytes")
        with self.open_member(name) as stream:
            return stream.read()

    def image(self, reference: str | None = None) -> ArchiveImage:
        """The image named ``reference`` (a RepoTag such as ``app:v1``), or the
        only image of the archive."""
        try:
            entries = json.loads(self.read_member("manifest.json"))
        except ValueError as exc:
            raise LayoutError(f"{self.path}: manifest.json is not JSON: {exc}") from None
        if not isinstance(entries, list) or not entries:
            raise LayoutError(f"{self.path}: manifest.json lists no images")
        if reference:
            wanted = [e for e in entries if reference in (e.get("RepoTags") or [])
                      or any(t.endswith("/" + reference) for t in e.get("RepoTags") or [])]
            if not wanted:
                raise LayoutError(f"{self.path}: no image tagged {reference!r}")
        elif len(entries) > 1:
            tags = [t for e in entries for t in e.get("RepoTags") or []]
            raise LayoutError(f"{self.path} holds {len(entries)} images: name one of "
                              f"{', '.join(tags) or '(untagged)'}")
        else:
            wanted = entries
        entry = wanted[0]
        blobs: dict[str, ArchiveBlob] = {}
        config_name = entry.get("Config")
        if not isinstance(config_name, str):
            raise LayoutError(f"{self.path}: manifest.json entry has no Config")
        config = self.read_member(config_name)
        config_blob = ArchiveBlob(config_name, self._member(config_name).offset_data,
                                  len(config), sha256_of(config), DOCKER_CONFIG)
        blobs[config_blob.digest] = config_blob
        layers = []
        for name in entry.get("Layers") or []:
            blob = self._layer(name)
            blobs.setdefault(blob.digest, blob)
            layers.append({"mediaType": blob.media_type, "size": blob.size,
                           "digest": blob.digest})
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config_blob.size,
                       "digest": config_blob.digest},
            "layers": layers}, indent=3).encode()
        return ArchiveImage(manifest, DOCKER_MANIFEST, sha256_of(manifest),
                            list(entry.get("RepoTags") or []), blobs)

    def _layer(self, name: str) -> ArchiveBlob:
        """Hash a layer file as stored (streamed), noting whether it is gzip'd."""
        info = self._member(name)
        hasher = hashlib.sha256()
        with self.open_member(name) as stream:
            head = stream.read(2)
            stream.seek(0)
            while chunk := stream.read(READ_SIZE):
                hasher.update(chunk)
        media_type = DOCKER_LAYER_GZIP if head == b"\x1f\x8b" else DOCKER_LAYER
        return ArchiveBlob(name, info.offset_data, info.size, "sha256:" + hasher.hexdigest(),
                           media_type)


def _norm(name: str) -> str:
    return os.path.normpath(name.removeprefix("./")).lstrip("/")


def is_manifest_type(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES
