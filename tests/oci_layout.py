"""Build and read OCI image layouts (image-spec ``oci-layout`` 1.0.0) in Python.

Client tests push layouts made here and pull layouts back, so every digest
they compare against is computed by the test itself, never by the client
under test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"

Descriptor = dict[str, Any]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: object) -> bytes:
    """Compact JSON: the bytes that get hashed are exactly the bytes stored."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def tar_of(files: dict[str, bytes]) -> bytes:
    """A reproducible tar (fixed mtimes and owners) holding ``files``."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass(frozen=True)
class Layer:
    """A gzip'd tar layer: ``blob`` is what a registry stores, ``diff_id``
    the digest of the uncompressed tar (what the config lists)."""

    blob: bytes
    diff_id: str
    files: dict[str, bytes]

    @property
    def digest(self) -> str:
        return sha256(self.blob)


def random_layer(rng: random.Random, size: int, name: str = "data.bin") -> Layer:
    """A layer with one file of ``size`` incompressible bytes (so the blob is
    about ``size`` long: chunking tests depend on that)."""
    files = {name: rng.randbytes(size)}
    tar = tar_of(files)
    return Layer(gzip.compress(tar, compresslevel=1, mtime=0), sha256(tar), files)


@dataclass
class LayoutWriter:
    """Writes blobs as they are added; ``close()`` writes ``index.json``."""

    root: Path
    refs: list[Descriptor] = field(default_factory=list)
    blobs: dict[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    def blob(self, data: bytes, media_type: str, **extra: Any) -> Descriptor:
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        self.blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def image(self, layers: list[Layer], platform: dict[str, str] | None = None,
              annotations: dict[str, str] | None = None) -> Descriptor:
        """An OCI image manifest with a real config (diff_ids match the layers)."""
        plat = platform or {"os": "linux", "architecture": "amd64"}
        config = {
            "architecture": plat["architecture"], "os": plat["os"],
            "config": {"Env": ["PATH=/usr/bin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
            "history": [{"created_by": f"cargohold test layer {i}"}
                        for i in range(len(layers))],
        }
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.blob(canonical_json(config), OCI_CONFIG),
            "layers": [self.blob(layer.blob, OCI_LAYER_GZIP) for layer in layers],
        }
        if annotations:
            manifest["annotations"] = annotations
        extra = {"platform": plat} if platform else {}
        return self.blob(canonical_json(manifest), OCI_MANIFEST, **extra)

    def index(self, manifests: list[Descriptor]) -> Descriptor:
        return self.blob(canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                         "manifests": manifests}), OCI_INDEX)

    def tag(self, descriptor: Descriptor, name: str) -> None:
        """Name a manifest or index in ``index.json`` (the ``oci:DIR:NAME`` form)."""
        plain = {k: descriptor[k] for k in ("mediaType", "digest", "size")}
        self.refs.append({**plain, "annotations": {REF_NAME: name}})

    def close(self) -> None:
        (self.root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}
        (self.root / "index.json").write_text(json.dumps(index, indent=1))


def read_blob(root: Path, digest: str) -> bytes:
    """A blob of a layout, checked against its own name."""
    algorithm, hex_digest = digest.split(":", 1)
    data = (root / "blobs" / algorithm / hex_digest).read_bytes()
    assert sha256(data) == digest, f"{root}: blob {digest} does not match its content"
    return data


def resolve(root: Path, name: str | None = None) -> Descriptor:
    """The descriptor ``index.json`` names ``name`` (or its only entry)."""
    index = json.loads((root / "index.json").read_text())
    entries = index["manifests"]
    if name is not None:
        entries = [d for d in entries if d.get("annotations", {}).get(REF_NAME) == name]
    assert len(entries) == 1, f"{root}: expected one entry for {name!r}: {index}"
    return entries[0]


def closure(root: Path, digest: str) -> dict[str, bytes]:
    """Every blob reachable from a manifest or index (itself included),
    read from the layout and verified: digest → bytes."""
    found: dict[str, bytes] = {}
    pending = [digest]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        document = json.loads(found.setdefault(current, read_blob(root, current)))
        children = list(document.get("manifests", []))
        children += [document["config"]] if "config" in document else []
        children += document.get("layers", [])
        for child in children:
            if child["mediaType"] in (OCI_MANIFEST, OCI_INDEX):
                pending.append(child["digest"])
            elif child["digest"] not in found:
                found[child["digest"]] = read_blob(root, child["digest"])
    return found
