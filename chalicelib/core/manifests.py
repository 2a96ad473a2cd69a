"""What makes a manifest acceptable, independent of where it is stored.

The registry keeps the exact bytes a client sent (the digest is over those
bytes), so this module only *reads* a manifest: it checks the document
against its media type and lists what it references.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from . import errors
from .errors import RegistryError
from .grammar import Digest, parse_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"

IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES

MAX_MANIFEST_BYTES = 4 * 1024 * 1024

# Layers "downloaded directly from a distributor but never uploaded" (image-spec
# layer.md, Non-Distributable Layers; docker's foreign layers): a manifest may
# name them without the registry holding the blob.
NON_DISTRIBUTABLE_LAYERS = frozenset({
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
})


@dataclass
class ParsedManifest:
    """The facts the registry needs from a manifest."""

    media_type: str
    digest: Digest
    size: int
    blobs: list[Digest] = field(default_factory=list)
    children: list[Digest] = field(default_factory=list)
    subject: Digest | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None


def _invalid(reason: str, **detail: Any) -> RegistryError:
    return RegistryError(errors.MANIFEST_INVALID, {"reason": reason, **detail})


def _descriptor_digest(descriptor: Any, where: str) -> Digest:
    if not isinstance(descriptor, dict):
        raise _invalid(f"{where} is not a descriptor")
    digest = descriptor.get("digest")
    size = descriptor.get("size")
    media_type = descriptor.get("mediaType")
    if not isinstance(digest, str):
        raise _invalid(f"{where} has no digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _invalid(f"{where} has no valid size")
    if not isinstance(media_type, str) or not media_type:
        raise _invalid(f"{where} has no mediaType")
    try:
        return parse_digest(digest)
    except RegistryError:
        raise _invalid(f"{where} has an invalid digest", digest=digest[:200]) from None


def parse_manifest(body: bytes, content_type: str | None) -> ParsedManifest:
    """Validate a manifest body against its declared type and list its references.

    Rejects: non-JSON, a body ``mediaType`` that disagrees with
    ``Content-Type``, documents that are both an image and an index
    (CVE-2021-41190), and descriptors without digest, size or media type.
    """
    if len(body) > MAX_MANIFEST_BYTES:
        raise RegistryError(errors.BODY_TOO_LARGE,
                            {"size": len(body), "limit": MAX_MANIFEST_BYTES})
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _invalid(f"not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _invalid("a manifest is a JSON object")

    declared = doc.get("mediaType")
    content_type = (content_type or "").split(";")[0].strip().lower() or None
    if declared is not None and not isinstance(declared, str):
        raise _invalid("mediaType is not a string")
    if content_type and declared and declared != content_type:
        raise _invalid("mediaType does not match Content-Type",
                       mediaType=declared, contentType=content_type)
    media_type = declared or content_type or _infer_type(doc)
    if media_type not in MANIFEST_TYPES:
        raise _invalid("unsupported manifest media type", mediaType=media_type)

    has_image_fields = "config" in doc or "layers" in doc
    has_index_fields = "manifests" in doc
    if has_image_fields and has_index_fields:
        raise _invalid("ambiguous manifest: both manifests and config/layers")
    if doc.get("schemaVersion") != 2:
        raise _invalid("schemaVersion must be 2")

    parsed = ParsedManifest(media_type, Digest.of(body), len(body))
    if media_type in IMAGE_TYPES:
        if has_index_fields:
            raise _invalid("an image manifest has no manifests list")
        parsed.blobs.append(_descriptor_digest(doc.get("config"), "config"))
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise _invalid("layers must be a list")
        for i, layer in enumerate(layers):
            layer_digest = _descriptor_digest(layer, f"layers[{i}]")
            if layer["mediaType"] not in NON_DISTRIBUTABLE_LAYERS:
                parsed.blobs.append(layer_digest)
        config = doc["config"]
        parsed.artifact_type = doc.get("artifactType") or config.get("mediaType")
    else:
        if has_image_fields:
            raise _invalid("an index has no config or layers")
        manifests = doc.get("manifests")
        if not isinstance(manifests, list):
            raise _invalid("manifests must be a list")
        for i, child in enumerate(manifests):
            parsed.children.append(_descriptor_digest(child, f"manifests[{i}]"))
        parsed.artifact_type = doc.get("artifactType")

    if media_type in (OCI_MANIFEST, OCI_INDEX) and "subject" in doc:
        parsed.subject = _descriptor_digest(doc["subject"], "subject")
    if parsed.artifact_type is not None and not isinstance(parsed.artifact_type, str):
        raise _invalid("artifactType is not a string")
    annotations = doc.get("annotations")
    if annotations is not None:
        if not isinstance(annotations, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
            raise _invalid("annotations must map strings to strings")
        parsed.annotations = annotations
    return parsed


def _infer_type(doc: dict[str, Any]) -> str | None:
    """OCI allows ``mediaType`` to be absent; infer it only when unambiguous."""
    if "manifests" in doc and not ("config" in doc or "layers" in doc):
        return OCI_INDEX
    if "config" in doc and "manifests" not in doc:
        return OCI_MANIFEST
    return None


def accepts(accept_values: list[str], media_type: str) -> bool:
    """Content negotiation: does an ``Accept`` list admit ``media_type``?

    No ``Accept`` at all admits everything, as does ``*/*``.
    """
    ranges = [part.split(";")[0].strip().lower()
              for value in accept_values for part in value.split(",") if part.strip()]
    if not ranges:
        return True
    main = media_type.split("/")[0]
    return any(r in ("*/*", media_type, f"{main}/*") for r in ranges)


def referrer_descriptor(parsed: ParsedManifest) -> dict[str, Any]:
    """The descriptor of a manifest as listed by the referrers API."""
    descriptor: dict[str, Any] = {
        "mediaType": parsed.media_type,
        "digest": str(parsed.digest),
        "size": parsed.size,
    }
    if parsed.artifact_type:
        descriptor["artifactType"] = parsed.artifact_type
    if parsed.annotations:
        descriptor["annotations"] = parsed.annotations
    return descriptor
