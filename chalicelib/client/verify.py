"""``cargohold verify <registry-url>``: a black-box check of a registry
against the OCI Distribution Specification v1.1 (and the Docker Registry
HTTP API V2 behaviour clients still rely on).

Every check has an id (``end-2.range-206``, ``grammar.name-uppercase``, …),
a level (MUST / SHOULD / MAY from the spec, or CHECKLIST for behaviour
cargohold's ``protocol.md`` expects beyond the spec) and the rule it tests. A
check passes, fails (with what was expected and what came back), is
``unsupported`` (an optional feature is absent: 405 on delete, no
referrers API, no cross-repository mount) or is skipped (a fixture it
needed could not be made).

The suite only talks HTTP through :class:`RegistryClient` (so auth
challenges work on real registries), creates everything under one
repository prefix, and deletes what it created at the end (``--keep`` to
leave it). It pushes a few small blobs, one chunk of the registry's
advertised minimum chunk size, and one 4 MiB manifest (the size-limit
check): it is meant to take seconds.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from ..core.errors import RegistryError, parse_envelope
from ..core.grammar import validate_name
from ..core.http import Headers
from ..core.routes import url_for
from .errors import AuthenticationError, ClientError, TransportError
from .registry import RegistryClient
from .transport import HttpTransport

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
EMPTY_JSON = b"{}"
SBOM_TYPE = "application/vnd.cargohold.verify.sbom.v1+json"
SIGNATURE_TYPE = "application/vnd.cargohold.verify.signature.v1+json"
MAX_MANIFEST = 4 * 1024 * 1024
SMALL_CHUNK = 64 * 1024
ANY_STATUS = tuple(range(100, 600))
REDIRECTS = (301, 302, 303, 307, 308)
_LINK = re.compile(r"<([^>]+)>\s*;\s*rel=\"?next\"?")
_CODE = re.compile(r"[A-Z_]+\Z")

PASS, FAIL, UNSUPPORTED, SKIPPED = "pass", "fail", "unsupported", "skipped"
MUST, SHOULD, MAY, CHECKLIST = "MUST", "SHOULD", "MAY", "CHECKLIST"
SPEC = "distribution-spec v1.1 spec.md"
DETAIL = "Docker Registry API V2 (distribution-spec detail.md)"
PROTOCOL = "cargohold protocol.md"
CLEANUP_RULE = "verify deletes what it created (best effort)"


# -- results -------------------------------------------------------------------
@dataclass(frozen=True)
class CheckInfo:
    """What a check tests: its id, the rule it holds the registry to, and how strong."""

    id: str
    level: str
    rule: str
    title: str


@dataclass
class CheckResult:
    id: str
    status: str
    message: str
    level: str = ""
    rule: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CheckError(Exception):
    """The registry answered something the rule does not allow."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}, got {got}")


class UnsupportedError(Exception):
    """An optional feature is absent (e.g. deletes disabled, no referrers API)."""


class SkipError(Exception):
    """A fixture the check needs could not be made; nothing was tested."""


@dataclass
class Scenario:
    """One sequence of requests that several checks inspect."""

    name: str
    func: Callable[[Verifier], None]
    checks: tuple[CheckInfo, ...]


CHECKS: dict[str, CheckInfo] = {}
SCENARIOS: list[Scenario] = []


def check(id: str, level: str, rule: str, title: str) -> CheckInfo:  # noqa: A002
    info = CheckInfo(id, level, rule, title)
    if id in CHECKS:
        raise ValueError(f"check {id} declared twice")
    CHECKS[id] = info
    return info


def scenario(*checks: CheckInfo) -> Callable[[Callable[[Verifier], None]], Callable[
        [Verifier], None]]:
    def register(func: Callable[[Verifier], None]) -> Callable[[Verifier], None]:
        SCENARIOS.append(Scenario(func.__name__, func, checks))
        return func
    return register


# -- HTTP plumbing -------------------------------------------------------------
@dataclass
class Reply:
    """One response, read whole (the suite only moves small bodies)."""

    method: str
    url: str
    status: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def codes(self) -> list[str]:
        return [e["code"] for e in parse_envelope(self.body)]

    def describe(self) -> str:
        codes = self.codes()
        if codes:
            return f"{self.status} {','.join(codes)}"
        if self.status >= 400 and self.body:
            return f"{self.status} (body {self.body[:60]!r})"
        return str(self.status)


@dataclass
class Upload:
    """An upload session the suite opened; ``location`` follows the registry."""

    repo: str
    location: str
    open: bool = True


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={quote(digest, safe=':')}"


def octet(length: int | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/octet-stream"}
    if length is not None:
        headers["Content-Length"] = str(length)
    return headers


def media(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def next_link(reply: Reply) -> str | None:
    match = _LINK.search(reply.header("Link") or "")
    return match.group(1) if match else None


def random_digest() -> str:
    return sha256(os.urandom(16))


# -- expectations --------------------------------------------------------------
def want(condition: bool, expected: str, got: str) -> None:
    if not condition:
        raise CheckError(expected, got)


def want_status(reply: Reply, *statuses: int) -> None:
    want(reply.status in statuses, " or ".join(map(str, statuses)), reply.describe())


def want_error(reply: Reply, statuses: int | tuple[int, ...], *codes: str) -> None:
    """Status and an OCI error envelope holding one of ``codes``."""
    allowed = (statuses,) if isinstance(statuses, int) else statuses
    expected = f"{'/'.join(map(str, allowed))} {'/'.join(codes)}"
    want(reply.status in allowed and any(c in reply.codes() for c in codes), expected,
         reply.describe())


def want_header(reply: Reply, name: str, expected: str | None = None) -> str:
    value = reply.header(name)
    if value is None:
        raise CheckError(f"{name}" + (f": {expected}" if expected is not None else " header"),
                     f"no {name} header ({reply.status})")
    if expected is not None and value.strip() != expected:
        raise CheckError(f"{name}: {expected}", f"{name}: {value}")
    return value


def want_no_header(reply: Reply, name: str) -> None:
    value = reply.header(name)
    want(value is None, f"no {name} header", f"{name}: {value}")


# -- the verifier --------------------------------------------------------------
class Verifier:
    """Runs the scenarios against one registry and remembers what it created."""

    def __init__(self, client: RegistryClient, prefix: str, *,
                 only: Iterable[str] | None = None, keep: bool = False,
                 progress: Callable[[CheckResult], None] | None = None) -> None:
        validate_name(prefix)
        self.client = client
        self.prefix = prefix.rstrip("/")
        self.patterns = [p.strip() for p in only or () if p.strip()]
        self.keep = keep
        self.progress = progress
        self.nonce = os.urandom(6).hex()
        self.results: list[CheckResult] = []
        self._done: set[str] = set()
        self._clock = time.monotonic()
        self._cache: dict[Any, Any] = {}
        self.replies: list[Reply] = []
        # everything created, in order, for cleanup
        self.blobs: list[tuple[str, str]] = []
        self.manifests: list[tuple[str, str]] = []
        self.tags: list[tuple[str, str]] = []
        self.uploads: list[Upload] = []
        self.unreachable: str | None = None

    # -- selection and recording -------------------------------------------
    def selected(self, check_id: str) -> bool:
        if not self.patterns:
            return True
        return any(fnmatch.fnmatchcase(check_id, p) if any(ch in p for ch in "*?[")
                   else check_id == p or check_id.startswith(p.rstrip(".") + ".")
                   for p in self.patterns)

    def record(self, check_id: str, status: str, message: str) -> None:
        info = CHECKS[check_id]
        now = time.monotonic()
        seconds, self._clock = now - self._clock, now
        if check_id in self._done:
            raise RuntimeError(f"check {check_id} recorded twice")
        self._done.add(check_id)
        if not self.selected(check_id):
            return
        result = CheckResult(check_id, status, message, info.level, info.rule, round(seconds, 3))
        self.results.append(result)
        if self.progress:
            self.progress(result)

    @contextmanager
    def check(self, check_id: str) -> Iterator[list[str]]:
        """Record one check: passes unless the block raises. Append to the
        yielded list to say what passed (default: the check's title)."""
        note: list[str] = []
        try:
            yield note
        except CheckError as exc:
            self.record(check_id, FAIL, str(exc))
        except UnsupportedError as exc:
            self.record(check_id, UNSUPPORTED, str(exc))
        except SkipError as exc:
            self.record(check_id, SKIPPED, str(exc))
        except ClientError as exc:
            self.record(check_id, FAIL, f"error: {exc}")
        except Exception as exc:  # noqa: BLE001 - e.g. a JSON list where an object belongs
            self.record(check_id, FAIL, f"unexpected answer: {type(exc).__name__}: {exc}")
        else:
            self.record(check_id, PASS, "; ".join(note) or CHECKS[check_id].title)

    def mark(self, check_id: str, status: str, message: str) -> None:
        self.record(check_id, status, message)

    # -- requests ------------------------------------------------------------
    def repo(self, suffix: str) -> str:
        return f"{self.prefix}/{suffix}"

    def send(self, method: str, path: str, *, repo: str = "", headers: dict[str, str] | None
             = None, body: Any = None, stream: bool = False) -> Reply:
        scope = f"repository:{repo}:pull,push,delete" if repo else "registry:catalog:*"
        raw = self.client.request(method, path, headers=headers, body=body, expect=ANY_STATUS,
                                  scope=scope, replayable=not stream)
        data = raw.read()
        reply = Reply(method, self.client._url(path), raw.status, raw.headers, data)
        self.replies.append(reply)
        return reply

    def fetch_blob(self, repo: str, digest: str, headers: dict[str, str] | None = None,
                   ) -> tuple[Reply, Reply]:
        """GET a blob, following a redirect to storage (without credentials);
        returns (first answer, final answer)."""
        first = self.send("GET", url_for("blob", name=repo, digest=digest), repo=repo,
                          headers=headers)
        reply = first
        for _ in range(3):
            location = reply.header("Location")
            if reply.status not in REDIRECTS or not location:
                break
            url = urljoin(reply.url, location)
            raw = self.client.transport.send("GET", url, dict(headers or {}))
            reply = Reply("GET", url, raw.status, raw.headers, raw.read())
        return first, reply

    # -- tracked writes ------------------------------------------------------
    def start_upload(self, repo: str, query: dict[str, str] | None = None, *,
                     body: bytes | None = None, path: str | None = None,
                     ) -> tuple[Reply, Upload | None]:
        headers = octet(len(body)) if body is not None else {"Content-Length": "0"}
        reply = self.send("POST", path or url_for("uploads", name=repo, query=query), repo=repo,
                          headers=headers, body=body if body is not None else b"")
        location = reply.header("Location")
        upload = None
        if reply.status == 202 and location:
            upload = Upload(repo, location)
            self.uploads.append(upload)
        return reply, upload

    def follow(self, upload: Upload, reply: Reply) -> None:
        location = reply.header("Location")
        if reply.status < 300 and location:
            upload.location = location

    def cancel(self, upload: Upload | None) -> Reply | None:
        """DELETE an upload. A refused PUT may leave the Location stale (416,
        e.g. distribution's offset-bearing state): ask GET for a fresh one."""
        if upload is None or not upload.open:
            return None
        reply = self.send("DELETE", upload.location, repo=upload.repo)
        if reply.status == 416:
            status = self.send("GET", upload.location, repo=upload.repo)
            if status.status == 204 and status.header("Location"):
                upload.location = status.header("Location") or upload.location
                reply = self.send("DELETE", upload.location, repo=upload.repo)
        if reply.status in (202, 204, 404):
            upload.open = False
        return reply

    def finish(self, upload: Upload, digest: str, data: bytes = b"",
               headers: dict[str, str] | None = None) -> Reply:
        sent = octet(len(data))
        sent.update(headers or {})
        reply = self.send("PUT", with_digest(upload.location, digest), repo=upload.repo,
                          headers=sent, body=data)
        if reply.status == 201:
            upload.open = False
            self.track_blob(upload.repo, digest)
        return reply

    def track_blob(self, repo: str, digest: str) -> None:
        if (repo, digest) not in self.blobs:
            self.blobs.append((repo, digest))

    def put_manifest(self, repo: str, reference: str, body: bytes, media_type: str) -> Reply:
        reply = self.send("PUT", url_for("manifest", name=repo, reference=reference), repo=repo,
                          headers={"Content-Type": media_type}, body=body)
        if 200 <= reply.status < 300:
            digest = reply.header("Docker-Content-Digest") or sha256(body)
            if (repo, digest) not in self.manifests:
                self.manifests.append((repo, digest))
            if ":" not in reference:
                self.tags.append((repo, reference))
        return reply

    # -- fixtures --------------------------------------------------------------
    def cached(self, key: Any, make: Callable[[], Any], label: str = "") -> Any:
        """A fixture made once; a failure is remembered and skips every user."""
        if key not in self._cache:
            try:
                self._cache[key] = make()
            except (SkipError, ClientError) as exc:
                self._cache[key] = SkipError(f"fixture {label or key}: {exc}")
        value = self._cache[key]
        if isinstance(value, SkipError):
            raise value
        return value

    def push_blob(self, repo: str, data: bytes) -> str:
        """POST then PUT, the push every registry supports."""
        digest = sha256(data)

        def make() -> str:
            reply, upload = self.start_upload(repo)
            if upload is None:
                raise SkipError(f"could not start an upload in {repo}: {reply.describe()}")
            done = self.finish(upload, digest, data)
            if done.status != 201:
                self.cancel(upload)
                raise SkipError(f"could not push a blob to {repo}: {done.describe()}")
            return digest

        return self.cached(("blob", repo, digest), make, f"blob {digest[:19]} in {repo}")

    def layer_data(self) -> bytes:
        return self.cached("layer-data", lambda: os.urandom(4096))

    def base(self, repo: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Config and layer descriptors, their blobs pushed into ``repo``."""
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        layer = self.layer_data()
        config_desc = {"mediaType": OCI_CONFIG, "digest": self.push_blob(repo, config),
                       "size": len(config)}
        layer_desc = {"mediaType": OCI_LAYER, "digest": self.push_blob(repo, layer),
                      "size": len(layer)}
        return config_desc, layer_desc

    def image_body(self, repo: str, label: str) -> bytes:
        """An OCI image manifest, deliberately not canonically formatted (the
        registry must keep these exact bytes)."""
        config, layer = self.base(repo)
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": config, "layers": [layer],
                               "annotations": {"org.cargohold.verify.run": self.nonce,
                                               "org.cargohold.verify.label": label}}
        return (json.dumps(doc, indent=3) + "\n").encode()

    def image(self) -> tuple[str, bytes, str]:
        """The tagged image of the images repo: (repo, body, digest)."""
        repo = self.repo("images")

        def make() -> tuple[str, bytes, str]:
            body = self.image_body(repo, "image")
            reply = self.put_manifest(repo, "v1", body, OCI_MANIFEST)
            if reply.status != 201:
                raise SkipError(f"could not push the image manifest: {reply.describe()}")
            return repo, body, sha256(body)

        return self.cached("image", make)

    def empty_blob(self, repo: str) -> dict[str, Any]:
        return {"mediaType": OCI_EMPTY, "digest": self.push_blob(repo, EMPTY_JSON), "size": 2}

    # -- running -----------------------------------------------------------------
    def run(self) -> list[CheckResult]:
        for item in SCENARIOS:
            ids = [c.id for c in item.checks]
            if not any(self.selected(i) for i in ids):
                continue
            self._clock = time.monotonic()
            if self.unreachable:
                for i in ids:
                    self.record(i, SKIPPED, f"cannot use the registry: {self.unreachable}")
                continue
            self._run_scenario(item, ids)
        if not self.keep:
            self.cleanup()
        else:
            self.results.append(CheckResult("cleanup", SKIPPED, "--keep: left everything in "
                                            f"{self.prefix}/", SHOULD, CLEANUP_RULE))
        return self.results

    def _run_scenario(self, item: Scenario, ids: list[str]) -> None:
        reason, status = "not reached", SKIPPED
        try:
            item.func(self)
        except SkipError as exc:
            reason = str(exc)
        except (TransportError, AuthenticationError) as exc:
            reason, status = f"error: {exc}", FAIL
            if item.name == "base_endpoint":  # nothing else can work either
                self.unreachable = str(exc)
        except UnsupportedError as exc:
            reason, status = str(exc), UNSUPPORTED
        except (ClientError, CheckError) as exc:
            reason, status = f"error: {exc}", FAIL
        except Exception as exc:  # noqa: BLE001 - a suite bug must not hide the other results
            reason, status = f"verify internal error: {type(exc).__name__}: {exc}", FAIL
        for i in ids:
            if i in self._done:
                continue
            self.record(i, status, reason)
            if status == FAIL:  # the first check not reached carries the error
                status, reason = SKIPPED, f"not reached ({reason})"

    # -- cleanup -----------------------------------------------------------------
    def cleanup(self) -> None:
        """Delete every tag, manifest and blob the run created and cancel open
        uploads; 404 counts as gone, 400/405 as deletes disabled."""
        start = time.monotonic()
        problems: list[str] = []
        refused: list[str] = []

        def delete(path: str, repo: str, what: str, ok: tuple[int, ...]) -> None:
            try:
                reply = self.send("DELETE", path, repo=repo)
            except ClientError as exc:
                problems.append(f"{what}: {exc}")
                return
            if reply.status in ok:
                return
            if reply.status in (400, 405):
                refused.append(f"{what}: {reply.describe()}")
            else:
                problems.append(f"{what}: {reply.describe()}")

        for upload in self.uploads:
            try:
                reply = self.cancel(upload)
            except ClientError as exc:
                problems.append(f"upload in {upload.repo}: {exc}")
                continue
            if upload.open and reply is not None:
                problems.append(f"upload in {upload.repo}: {reply.describe()}")
        for repo, tag in reversed(self.tags):
            delete(url_for("manifest", name=repo, reference=tag), repo, f"{repo}:{tag}",
                   (202, 404))
        for repo, digest in reversed(self.manifests):
            delete(url_for("manifest", name=repo, reference=digest), repo,
                   f"{repo}@{digest[:19]}", (202, 404))
        for repo, digest in reversed(self.blobs):
            delete(url_for("blob", name=repo, digest=digest), repo,
                   f"blob {repo}@{digest[:19]}", (202, 404))
        total = len(self.tags) + len(self.manifests) + len(self.blobs)
        if problems:
            status, message = FAIL, f"{len(problems)} left behind: " + "; ".join(problems[:5])
        elif refused:
            status, message = UNSUPPORTED, (f"deletes refused, {len(refused)} items left in "
                                            f"{self.prefix}/: " + "; ".join(refused[:3]))
        else:
            status, message = PASS, (f"deleted {total} tags/manifests/blobs" if total
                                     else "nothing was created")
        self.results.append(CheckResult("cleanup", status, message, SHOULD, CLEANUP_RULE,
                                        round(time.monotonic() - start, 3)))


# == the checks ===================================================================
# end-1 ---------------------------------------------------------------------------
@scenario(
    check("end-1.status", MUST, f"{SPEC} §Determining Support (end-1)",
          "GET /v2/ answers 200"),
    check("end-1.version-header", SHOULD, f"{SPEC} §Legacy Docker support HTTP headers; "
          f"{PROTOCOL} end-1", "Docker-Distribution-API-Version: registry/2.0"),
)
def base_endpoint(v: Verifier) -> None:
    reply = v.send("GET", url_for("base"))
    with v.check("end-1.status"):
        want_status(reply, 200)
    with v.check("end-1.version-header"):
        want_header(reply, "Docker-Distribution-API-Version", "registry/2.0")


# end-4a / end-6: POST then PUT ---------------------------------------------------
@scenario(
    check("end-4a.status", MUST, f"{SPEC} §POST then PUT (end-4a)",
          "POST /blobs/uploads/ answers 202"),
    check("end-4a.location", MUST, f"{SPEC} §POST then PUT: MUST include Location",
          "the 202 carries a Location"),
    check("end-4a.upload-uuid", CHECKLIST, f"{DETAIL} §Initiate Blob Upload; {PROTOCOL} end-4a",
          "the 202 carries Docker-Upload-UUID"),
    check("end-4a.range", CHECKLIST, f"{DETAIL} §Initiate Blob Upload; {PROTOCOL} end-4a",
          "the 202 carries Range: 0-0"),
    check("end-4a.chunk-min-length", SHOULD, f"{SPEC} §Pushing a blob in chunks: "
          "OCI-Chunk-Min-Length", "OCI-Chunk-Min-Length is a non-negative integer"),
    check("end-6.status", MUST, f"{SPEC} §POST then PUT (end-6): 201 Created",
          "PUT <location>?digest= with the body answers 201"),
    check("end-6.location", MUST, f"{SPEC} §POST then PUT: Location is a pullable blob URL",
          "the 201 Location is a pullable blob URL"),
    check("end-6.digest-header", CHECKLIST, f"{DETAIL} §PUT Blob Upload; {PROTOCOL} end-6",
          "the 201 carries Docker-Content-Digest of the blob"),
)
def monolithic_push(v: Verifier) -> None:
    repo = v.repo("blobs")
    data = os.urandom(2048)
    digest = sha256(data)
    start, upload = v.start_upload(repo)
    with v.check("end-4a.status"):
        want_status(start, 202)
    with v.check("end-4a.location"):
        want_header(start, "Location")
    with v.check("end-4a.upload-uuid"):
        want_header(start, "Docker-Upload-UUID")
    with v.check("end-4a.range"):
        want_header(start, "Range", "0-0")
    with v.check("end-4a.chunk-min-length"):
        value = start.header("OCI-Chunk-Min-Length")
        if value is None:
            raise UnsupportedError("no OCI-Chunk-Min-Length: no minimum chunk size advertised")
        want(value.strip().isdigit(), "a non-negative integer", repr(value))
    if upload is None:
        raise SkipError("no upload session to complete")
    done = v.finish(upload, digest, data)
    with v.check("end-6.status"):
        want_status(done, 201)
    with v.check("end-6.location") as note:
        location = want_header(done, "Location")
        pulled = v.send("HEAD", location, repo=repo)
        if pulled.status in REDIRECTS:
            pulled = v.send("GET", location, repo=repo)
        want(pulled.status in (200, *REDIRECTS), f"HEAD {location} answers 200",
             pulled.describe())
        note.append(f"Location {location[:60]} answers {pulled.status}")
    with v.check("end-6.digest-header"):
        want_header(done, "Docker-Content-Digest", digest)


# end-4b: single POST ---------------------------------------------------------------
@scenario(
    check("end-4b.single-post", MAY, f"{SPEC} §Single POST (end-4b)",
          "POST /blobs/uploads/?digest= with the body answers 201 with Location"),
    check("end-4b.digest-mismatch", MUST, f"{SPEC} §Single POST: the digest MUST match; "
          f"{DETAIL} DIGEST_INVALID", "a single POST whose body does not match answers 400 "
          "DIGEST_INVALID"),
)
def single_post(v: Verifier) -> None:
    repo = v.repo("blobs")
    data = os.urandom(1024)
    digest = sha256(data)
    reply, upload = v.start_upload(repo, {"digest": digest}, body=data)
    supported = reply.status == 201
    with v.check("end-4b.single-post"):
        if reply.status == 202:
            v.cancel(upload)
            raise UnsupportedError("202: single-request monolithic upload not supported "
                              "(clients fall back to POST then PUT)")
        want_status(reply, 201)
        v.track_blob(repo, digest)
        want_header(reply, "Location")
    wrong = sha256(data + b"!")
    bad, upload = v.start_upload(repo, {"digest": wrong}, body=data)
    with v.check("end-4b.digest-mismatch"):
        if bad.status == 202 and not supported:
            v.cancel(upload)
            raise UnsupportedError("single POST not supported")
        if bad.status == 201:
            v.track_blob(repo, wrong)
        want_error(bad, 400, "DIGEST_INVALID")


# end-2: reading blobs ---------------------------------------------------------------
@scenario(
    check("end-2.head", MUST, f"{SPEC} §Checking if content exists (end-2): 200, SHOULD "
          "Docker-Content-Digest and Content-Length", "HEAD answers 200 with Content-Length "
          "and Docker-Content-Digest"),
    check("end-2.get", MUST, f"{SPEC} §Pulling blobs (end-2)",
          "GET answers 200 with the exact bytes, Content-Length and Docker-Content-Digest"),
    check("end-2.range-206", SHOULD, f"{SPEC} §Pulling blobs: SHOULD support Range (RFC 9110)",
          "Range: bytes=10-19 answers 206 with Content-Range and those bytes"),
    check("end-2.range-416", SHOULD, f"{SPEC} §Pulling blobs: Range per RFC 9110 §15.5.17",
          "an unsatisfiable Range answers 416"),
    check("end-2.blob-unknown", MUST, f"{SPEC} §Pulling blobs: 404; {DETAIL} BLOB_UNKNOWN",
          "GET of an absent blob answers 404 BLOB_UNKNOWN"),
    check("end-2.head-unknown", MUST, f"{SPEC} §Checking if content exists: 404",
          "HEAD of an absent blob answers 404"),
)
def blob_reads(v: Verifier) -> None:
    repo = v.repo("blobs")
    data = os.urandom(1000)
    digest = v.push_blob(repo, data)
    blob = url_for("blob", name=repo, digest=digest)
    head = v.send("HEAD", blob, repo=repo)
    with v.check("end-2.head"):
        want_status(head, 200)
        want_header(head, "Content-Length", str(len(data)))
        want_header(head, "Docker-Content-Digest", digest)
    first, got = v.fetch_blob(repo, digest)
    with v.check("end-2.get") as note:
        want_status(got, 200)
        want(got.body == data, f"the {len(data)} bytes pushed",
             f"{len(got.body)} bytes hashing to {sha256(got.body)[:19]}")
        want_header(got, "Content-Length", str(len(data)))
        want_header(first if first is not got else got, "Docker-Content-Digest", digest)
        if first is not got:
            note.append(f"served through a {first.status} redirect to storage")
    first, ranged = v.fetch_blob(repo, digest, {"Range": "bytes=10-19"})
    range_supported = ranged.status == 206
    with v.check("end-2.range-206"):
        if ranged.status == 200:
            raise UnsupportedError("Range ignored (200 with the whole blob)")
        want_status(ranged, 206)
        want(ranged.body == data[10:20], "bytes 10-19", f"{ranged.body[:20]!r}")
        want_header(ranged, "Content-Range", f"bytes 10-19/{len(data)}")
    _, beyond = v.fetch_blob(repo, digest, {"Range": f"bytes={len(data) + 100}-"
                                                     f"{len(data) + 200}"})
    with v.check("end-2.range-416"):
        if not range_supported and beyond.status == 200:
            raise UnsupportedError("Range not supported")
        want_status(beyond, 416)
    absent = random_digest()
    missing = v.send("GET", url_for("blob", name=repo, digest=absent), repo=repo)
    with v.check("end-2.blob-unknown"):
        want_error(missing, 404, "BLOB_UNKNOWN")
    missing_head = v.send("HEAD", url_for("blob", name=repo, digest=absent), repo=repo)
    with v.check("end-2.head-unknown"):
        want_status(missing_head, 404)


# end-5 / end-13 / end-6: chunks ------------------------------------------------------
@scenario(
    check("end-5.status", MUST, f"{SPEC} §Pushing a blob in chunks (end-5): 202",
          "PATCH with Content-Range answers 202"),
    check("end-5.location", MUST, f"{SPEC} §Pushing a blob in chunks: MUST have Location",
          "the 202 carries a Location"),
    check("end-5.range", MUST, f"{SPEC} §Pushing a blob in chunks: MUST have Range: "
          "0-<end-of-range>", "the 202 carries Range: 0-<last byte>"),
    check("end-13.status", MUST, f"{SPEC} §Pushing a blob in chunks (end-13): 204 with "
          "Location and Range", "GET of the upload answers 204 with Location and Range"),
    check("end-5.out-of-order", MUST, f"{SPEC} §Pushing a blob in chunks: out of order MUST "
          "be 416", "a chunk not starting at the current offset answers 416"),
    check("end-5.out-of-order-range", CHECKLIST, f"{PROTOCOL} end-5 (416 with Range so the "
          "client can resume)", "the 416 carries Range: 0-<last byte received>"),
    check("end-13.after-416", MUST, f"{SPEC} §Pushing a blob in chunks: GET after a 416 "
          "(end-13)", "after a 416, GET of the upload reports the unchanged offset"),
    check("end-6.final-chunk", MUST, f"{SPEC} §Pushing a blob in chunks: final chunk MAY be "
          "in the closing PUT", "PUT ?digest= with the final chunk and Content-Range answers "
          "201"),
    check("end-6.chunked-content", MUST, f"{SPEC} §Pulling blobs",
          "the chunked blob reads back byte for byte"),
    check("end-13.completed", CHECKLIST, f"{DETAIL} BLOB_UPLOAD_UNKNOWN; {PROTOCOL} end-13",
          "GET of a completed upload answers 404 BLOB_UPLOAD_UNKNOWN"),
)
def chunked_push(v: Verifier) -> None:
    repo = v.repo("blobs")
    start, upload = v.start_upload(repo)
    if upload is None:
        raise SkipError(f"could not start an upload: {start.describe()}")
    minimum = start.header("OCI-Chunk-Min-Length") or ""
    maximum = start.header("OCI-Chunk-Max-Length") or ""
    chunk = max(int(minimum) if minimum.isdigit() else 0, SMALL_CHUNK)
    if maximum.isdigit() and int(maximum) > 0:
        chunk = min(chunk, int(maximum))
    data = os.urandom(chunk + 777)
    first = data[:chunk]
    patched = v.send("PATCH", upload.location, repo=repo, body=first,
                     headers={**octet(len(first)), "Content-Range": f"0-{chunk - 1}"})
    v.follow(upload, patched)
    with v.check("end-5.status"):
        want_status(patched, 202)
    with v.check("end-5.location"):
        want_header(patched, "Location")
    with v.check("end-5.range"):
        want_header(patched, "Range", f"0-{chunk - 1}")
    status = v.send("GET", upload.location, repo=repo)
    v.follow(upload, status)
    with v.check("end-13.status"):
        want_status(status, 204)
        want_header(status, "Location")
        want_header(status, "Range", f"0-{chunk - 1}")
    skip = v.send("PATCH", upload.location, repo=repo, body=b"x" * 10,
                  headers={**octet(10), "Content-Range": f"{chunk + 5}-{chunk + 14}"})
    with v.check("end-5.out-of-order"):
        want_status(skip, 416)
    with v.check("end-5.out-of-order-range"):
        want_status(skip, 416)
        want_header(skip, "Range", f"0-{chunk - 1}")
    after = v.send("GET", upload.location, repo=repo)
    v.follow(upload, after)
    with v.check("end-13.after-416"):
        want_status(after, 204)
        want_header(after, "Range", f"0-{chunk - 1}")
    rest = data[chunk:]
    digest = sha256(data)
    done = v.finish(upload, digest, rest,
                    {"Content-Range": f"{chunk}-{len(data) - 1}"})
    with v.check("end-6.final-chunk"):
        want_status(done, 201)
        want_header(done, "Location")
    if done.status != 201:
        v.cancel(upload)
        raise SkipError("the upload did not complete")
    _, got = v.fetch_blob(repo, digest)
    with v.check("end-6.chunked-content") as note:
        want_status(got, 200)
        want(got.body == data, f"{len(data)} bytes hashing to {digest[:19]}",
             f"{len(got.body)} bytes hashing to {sha256(got.body)[:19]}")
        note.append(f"{chunk} + {len(rest)} bytes in two requests")
    finished = v.send("GET", upload.location, repo=repo)
    with v.check("end-13.completed"):
        want_error(finished, 404, "BLOB_UPLOAD_UNKNOWN")


# end-5: one streamed PATCH (docker, crane, skopeo, podman) ----------------------------
@scenario(
    check("end-5.streamed", CHECKLIST, f"{PROTOCOL} §Which clients do what: one streamed "
          "PATCH then PUT (docker, crane, skopeo)", "a PATCH with no Content-Range or "
          "Content-Length (chunked transfer encoding) answers 202 with Range"),
    check("end-6.after-stream", MUST, f"{SPEC} §Pushing a blob in chunks: the session MUST be "
          "closed with PUT", "PUT ?digest= with no body after the stream answers 201 and the "
          "blob reads back"),
)
def streamed_push(v: Verifier) -> None:
    repo = v.repo("blobs")
    data = os.urandom(3 * SMALL_CHUNK + 5)
    start, upload = v.start_upload(repo)
    if upload is None:
        raise SkipError(f"could not start an upload: {start.describe()}")

    def pieces() -> Iterator[bytes]:
        for offset in range(0, len(data), 50_000):
            yield data[offset:offset + 50_000]

    patched = v.send("PATCH", upload.location, repo=repo, body=pieces(),
                     headers={"Content-Type": "application/octet-stream"}, stream=True)
    v.follow(upload, patched)
    with v.check("end-5.streamed"):
        want_status(patched, 202)
        want_header(patched, "Range", f"0-{len(data) - 1}")
    digest = sha256(data)
    done = v.finish(upload, digest)
    _, got = v.fetch_blob(repo, digest) if done.status == 201 else (done, done)
    with v.check("end-6.after-stream"):
        want_status(done, 201)
        want(got.status == 200 and got.body == data, "the streamed bytes back", got.describe())
    v.cancel(upload)


# upload errors --------------------------------------------------------------------------
@scenario(
    check("end-6.digest-mismatch", MUST, f"{SPEC} §POST then PUT: <digest> is the blob's; "
          f"{DETAIL} DIGEST_INVALID", "PUT ?digest= of other content answers 400 DIGEST_INVALID"),
    check("end-6.digest-malformed", CHECKLIST, f"{PROTOCOL} §Grammar: digest; {DETAIL} "
          "DIGEST_INVALID", "PUT ?digest=sha256:<not hex> answers 400 DIGEST_INVALID"),
    check("end-14.cancel", CHECKLIST, f"{DETAIL} §DELETE Blob Upload; {PROTOCOL} end-14",
          "DELETE of an upload answers 204"),
    check("end-13.unknown", MUST, f"{SPEC} end-13 failure 404; {DETAIL} BLOB_UPLOAD_UNKNOWN",
          "GET of a cancelled upload answers 404 BLOB_UPLOAD_UNKNOWN"),
    check("end-5.unknown", MUST, f"{SPEC} end-5 failure 404; {DETAIL} BLOB_UPLOAD_UNKNOWN",
          "PATCH to a cancelled upload answers 404 BLOB_UPLOAD_UNKNOWN"),
)
def upload_errors(v: Verifier) -> None:
    repo = v.repo("blobs")
    data = os.urandom(512)
    start, upload = v.start_upload(repo)
    if upload is None:
        raise SkipError(f"could not start an upload: {start.describe()}")
    wrong = sha256(data + b"?")
    bad = v.finish(upload, wrong, data)
    with v.check("end-6.digest-mismatch"):
        want_error(bad, 400, "DIGEST_INVALID")
    v.cancel(upload)
    start, upload = v.start_upload(repo)
    if upload is None:
        raise SkipError(f"could not start an upload: {start.describe()}")
    malformed = v.finish(upload, "sha256:" + "z" * 64, data)
    with v.check("end-6.digest-malformed"):
        want_error(malformed, 400, "DIGEST_INVALID")
    location = upload.location
    cancelled = v.send("DELETE", location, repo=repo)
    if cancelled.status in (202, 204):
        upload.open = False
    with v.check("end-14.cancel"):
        want_status(cancelled, 204)
    if upload.open:
        raise SkipError(f"the upload could not be cancelled: {cancelled.describe()}")
    gone = v.send("GET", location, repo=repo)
    with v.check("end-13.unknown"):
        want_error(gone, 404, "BLOB_UPLOAD_UNKNOWN")
    late = v.send("PATCH", location, repo=repo, body=b"late",
                  headers={**octet(4), "Content-Range": "0-3"})
    with v.check("end-5.unknown"):
        want_error(late, 404, "BLOB_UPLOAD_UNKNOWN")


# end-11: mount ---------------------------------------------------------------------------
@scenario(
    check("end-11.mount", MAY, f"{SPEC} §Mounting a blob from another repository (end-11): "
          "201 with Location", "POST ?mount=&from= of a blob in another repository answers "
          "201 and the blob is readable there"),
    check("end-11.fallback", SHOULD, f"{SPEC} §Mounting a blob: unable to mount SHOULD be "
          "202", "POST ?mount= of an unknown blob answers 202 with an upload Location"),
)
def mount(v: Verifier) -> None:
    source, target = v.repo("blobs"), v.repo("mount")
    digest = v.push_blob(source, os.urandom(700))
    reply, upload = v.start_upload(target, {"mount": digest, "from": source})
    with v.check("end-11.mount"):
        if reply.status == 202:
            v.cancel(upload)
            raise UnsupportedError("202: cross-repository mount not supported")
        want_status(reply, 201)
        v.track_blob(target, digest)
        want_header(reply, "Location")
        head = v.send("HEAD", url_for("blob", name=target, digest=digest), repo=target)
        want(head.status == 200, f"HEAD in {target} answers 200", head.describe())
    reply, upload = v.start_upload(target, {"mount": random_digest(), "from": source})
    with v.check("end-11.fallback"):
        want_status(reply, 202)
        want_header(reply, "Location")
    v.cancel(upload)


# end-7 / end-3: manifests -------------------------------------------------------------
@scenario(
    check("end-7.put-tag", MUST, f"{SPEC} §Pushing Manifests (end-7): 201",
          "PUT /manifests/<tag> answers 201"),
    check("end-7.location", MUST, f"{SPEC} §Pushing Manifests: MUST have Location",
          "the 201 carries a Location"),
    check("end-7.digest-header", MUST, f"{SPEC} §Pushing Manifests: Docker-Content-Digest "
          "MUST equal the client's digest", "the 201 Docker-Content-Digest is the digest of "
          "the bytes sent"),
    check("end-3.get-tag", MUST, f"{SPEC} §Pushing Manifests: MUST store the exact bytes; "
          "§Pulling manifests (end-3)", "GET by tag answers 200 with the exact bytes pushed"),
    check("end-3.content-type", SHOULD, f"{SPEC} §Pulling manifests: Content-Type SHOULD match "
          "what was pushed", "Content-Type is the pushed media type"),
    check("end-3.digest-header", SHOULD, f"{SPEC} §Pulling manifests: Docker-Content-Digest "
          "(MUST match if present)", "GET carries the manifest's Docker-Content-Digest"),
    check("end-3.get-digest", MUST, f"{SPEC} §Pulling manifests (end-3)",
          "GET by digest answers 200 with the exact bytes"),
    check("end-3.head", MUST, f"{SPEC} §Checking if content exists: 200, SHOULD "
          "Docker-Content-Digest and Content-Length", "HEAD by tag and by digest answer 200 "
          "with the headers of GET"),
    check("end-7.put-digest", MUST, f"{SPEC} §Pushing Manifests: <reference> MUST be a digest "
          "or a tag", "PUT /manifests/<digest> answers 201 and GET by digest serves it"),
    check("end-7.digest-mismatch", CHECKLIST, f"{SPEC} §Pushing Manifests: "
          f"Docker-Content-Digest MUST equal the client's digest; {DETAIL} DIGEST_INVALID",
          "PUT /manifests/<digest> of other bytes answers 400 DIGEST_INVALID"),
    check("end-7.retag", CHECKLIST, f"{SPEC} §Definitions: a tag is a pointer to a manifest",
          "PUT of another manifest under an existing tag moves the tag"),
    check("end-3.accept", CHECKLIST, f"{PROTOCOL} §Manifests: Content negotiation",
          "GET by tag with an Accept that excludes the stored type answers 404 "
          "MANIFEST_UNKNOWN (or 406)"),
    check("end-3.manifest-unknown", MUST, f"{SPEC} §Pulling manifests: 404; {DETAIL} "
          "MANIFEST_UNKNOWN", "GET of an absent tag answers 404 MANIFEST_UNKNOWN"),
    check("end-3.manifest-unknown-digest", MUST, f"{SPEC} §Pulling manifests: 404; {DETAIL} "
          "MANIFEST_UNKNOWN", "GET of an absent digest answers 404 MANIFEST_UNKNOWN"),
    check("end-3.repo-unknown", MUST, f"{SPEC} §Pushing Manifests: pulling a nonexistent "
          "repository MUST be 404", "GET of a manifest in an absent repository answers 404 "
          "NAME_UNKNOWN or MANIFEST_UNKNOWN"),
)
def manifests(v: Verifier) -> None:
    repo = v.repo("images")
    body = v.image_body(repo, "image")
    digest = sha256(body)
    put = v.put_manifest(repo, "v1", body, OCI_MANIFEST)
    if put.status == 201:
        v._cache["image"] = (repo, body, digest)
    with v.check("end-7.put-tag"):
        want_status(put, 201)
    with v.check("end-7.location"):
        want_header(put, "Location")
    with v.check("end-7.digest-header"):
        want_header(put, "Docker-Content-Digest", digest)
    if put.status != 201:
        raise SkipError(f"the manifest was not stored: {put.describe()}")
    by_tag = v.send("GET", url_for("manifest", name=repo, reference="v1"), repo=repo,
                    headers={"Accept": OCI_MANIFEST})
    with v.check("end-3.get-tag"):
        want_status(by_tag, 200)
        want(by_tag.body == body, f"the {len(body)} bytes pushed",
             f"{len(by_tag.body)} bytes hashing to {sha256(by_tag.body)[:19]}")
    with v.check("end-3.content-type"):
        want(media(by_tag.header("Content-Type")) == OCI_MANIFEST,
             f"Content-Type: {OCI_MANIFEST}", f"Content-Type: {by_tag.header('Content-Type')}")
    with v.check("end-3.digest-header"):
        want_header(by_tag, "Docker-Content-Digest", digest)
    by_digest = v.send("GET", url_for("manifest", name=repo, reference=digest), repo=repo,
                       headers={"Accept": OCI_MANIFEST})
    with v.check("end-3.get-digest"):
        want_status(by_digest, 200)
        want(by_digest.body == body, "the exact bytes", f"{len(by_digest.body)} other bytes")
    with v.check("end-3.head"):
        for reference in ("v1", digest):
            head = v.send("HEAD", url_for("manifest", name=repo, reference=reference),
                          repo=repo, headers={"Accept": OCI_MANIFEST})
            want(head.status == 200, f"HEAD {reference[:19]} 200", head.describe())
            want_header(head, "Content-Length", str(len(body)))
            want_header(head, "Docker-Content-Digest", digest)
            want(media(head.header("Content-Type")) == media(by_tag.header("Content-Type")),
                 f"the Content-Type of GET ({by_tag.header('Content-Type')})",
                 f"{head.header('Content-Type')}")

    second = v.image_body(repo, "by-digest")
    second_digest = sha256(second)
    put_digest = v.put_manifest(repo, second_digest, second, OCI_MANIFEST)
    with v.check("end-7.put-digest"):
        want_status(put_digest, 201)
        want_header(put_digest, "Docker-Content-Digest", second_digest)
        got = v.send("GET", url_for("manifest", name=repo, reference=second_digest), repo=repo,
                     headers={"Accept": OCI_MANIFEST})
        want(got.status == 200 and got.body == second, "GET by digest serves the bytes",
             got.describe())
    wrong = v.put_manifest(repo, sha256(second + b" "), second, OCI_MANIFEST)
    with v.check("end-7.digest-mismatch"):
        want_error(wrong, 400, "DIGEST_INVALID")
    moved = v.put_manifest(repo, "v1-moved", body, OCI_MANIFEST)
    moved_again = v.put_manifest(repo, "v1-moved", second, OCI_MANIFEST)
    now = v.send("GET", url_for("manifest", name=repo, reference="v1-moved"), repo=repo,
                 headers={"Accept": OCI_MANIFEST})
    with v.check("end-7.retag"):
        want(moved.status == 201 and moved_again.status == 201, "201 for both pushes",
             f"{moved.describe()}, {moved_again.describe()}")
        want(now.status == 200 and now.body == second, "the second manifest under the tag",
             f"{now.describe()} with {sha256(now.body)[:19]}")

    refused = v.send("GET", url_for("manifest", name=repo, reference="v1"), repo=repo,
                     headers={"Accept": DOCKER_MANIFEST})
    with v.check("end-3.accept"):
        if refused.status != 406:
            want_error(refused, 404, "MANIFEST_UNKNOWN")
    unknown_tag = v.send("GET", url_for("manifest", name=repo, reference="no-such-tag"),
                         repo=repo, headers={"Accept": OCI_MANIFEST})
    with v.check("end-3.manifest-unknown"):
        want_error(unknown_tag, 404, "MANIFEST_UNKNOWN")
    unknown_digest = v.send("GET", url_for("manifest", name=repo, reference=random_digest()),
                            repo=repo, headers={"Accept": OCI_MANIFEST})
    with v.check("end-3.manifest-unknown-digest"):
        want_error(unknown_digest, 404, "MANIFEST_UNKNOWN")
    absent = v.repo("absent")
    no_repo = v.send("GET", url_for("manifest", name=absent, reference="v1"), repo=absent,
                     headers={"Accept": OCI_MANIFEST})
    with v.check("end-3.repo-unknown"):
        want_error(no_repo, 404, "NAME_UNKNOWN", "MANIFEST_UNKNOWN")


# manifest validation ---------------------------------------------------------------------
@scenario(
    check("manifest.blob-unknown", MUST, f"{SPEC} §Push: a rejected manifest MUST result in "
          "MANIFEST_BLOB_UNKNOWN errors", "a manifest naming absent blobs answers 400 "
          "MANIFEST_BLOB_UNKNOWN"),
    check("manifest.blob-unknown-each", CHECKLIST, f"{PROTOCOL} §Manifests: one "
          "MANIFEST_BLOB_UNKNOWN per missing digest", "one MANIFEST_BLOB_UNKNOWN per absent "
          "blob, each naming its digest"),
    check("manifest.invalid-json", CHECKLIST, f"{DETAIL} MANIFEST_INVALID",
          "a body that is not JSON answers 400 MANIFEST_INVALID"),
    check("manifest.ambiguous", CHECKLIST, f"{PROTOCOL} §Manifests (CVE-2021-41190); image-spec "
          "manifest.md", "a manifest with both manifests and layers answers 400 "
          "MANIFEST_INVALID"),
    check("manifest.mediatype-mismatch", CHECKLIST, f"{PROTOCOL} §Manifests; {SPEC} §Pushing "
          "Manifests: Content-Type is the mediaType", "a body mediaType that disagrees with "
          "Content-Type answers 400 MANIFEST_INVALID"),
    check("manifest.too-large", SHOULD, f"{SPEC} §Pushing Manifests: over the limit SHOULD be "
          "413", "a manifest over 4 MiB answers 413"),
    check("manifest.subject-missing", MUST, f"{SPEC} §Push: MUST accept a subject that does "
          "not exist", "a manifest whose subject is absent answers 201"),
)
def manifest_validation(v: Verifier) -> None:
    repo = v.repo("images")
    config, layer = v.base(repo)
    missing_config, missing_layer = random_digest(), random_digest()
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {**config, "digest": missing_config},
           "layers": [{**layer, "digest": missing_layer}]}
    reply = v.put_manifest(repo, "missing-blobs", json.dumps(doc).encode(), OCI_MANIFEST)
    with v.check("manifest.blob-unknown"):
        want_error(reply, 400, "MANIFEST_BLOB_UNKNOWN")
        others = [c for c in reply.codes() if c != "MANIFEST_BLOB_UNKNOWN"]
        want(not others, "only MANIFEST_BLOB_UNKNOWN", reply.describe())
    with v.check("manifest.blob-unknown-each"):
        want_error(reply, 400, "MANIFEST_BLOB_UNKNOWN")
        errors = parse_envelope(reply.body)
        named = [d for d in (missing_config, missing_layer)
                 if any(d in json.dumps(e.get("detail")) for e in errors)]
        want(len(errors) == 2 and len(named) == 2, "2 errors naming both missing digests",
             f"{len(errors)} error(s) naming {len(named)}")

    bad_json = v.put_manifest(repo, "bad-json", b'{"schemaVersion": 2, "config": ',
                              OCI_MANIFEST)
    with v.check("manifest.invalid-json"):
        want_error(bad_json, 400, "MANIFEST_INVALID")
    ambiguous = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                 "layers": [layer], "manifests": []}
    amb = v.put_manifest(repo, "ambiguous", json.dumps(ambiguous).encode(), OCI_MANIFEST)
    with v.check("manifest.ambiguous"):
        want_error(amb, 400, "MANIFEST_INVALID")
    plain = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]}
    mismatch = v.put_manifest(repo, "mismatch", json.dumps(plain).encode(), OCI_INDEX)
    with v.check("manifest.mediatype-mismatch"):
        want_error(mismatch, 400, "MANIFEST_INVALID")
    big = dict(doc, annotations={"org.cargohold.verify.padding": "x" * (MAX_MANIFEST + 64)})
    too_large = v.put_manifest(repo, "too-large", json.dumps(big).encode(), OCI_MANIFEST)
    with v.check("manifest.too-large"):
        want_status(too_large, 413)

    dangling = random_digest()
    artifact = artifact_body(v, repo, SBOM_TYPE, {"mediaType": OCI_MANIFEST,
                                                  "digest": dangling, "size": 1234}, "dangling")
    reply = v.put_manifest(repo, sha256(artifact), artifact, OCI_MANIFEST)
    with v.check("manifest.subject-missing"):
        want_status(reply, 201)


def artifact_body(v: Verifier, repo: str, artifact_type: str, subject: dict[str, Any],
                  label: str) -> bytes:
    """An OCI artifact manifest (empty config and layer) with a subject."""
    empty = v.empty_blob(repo)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
           "config": empty, "layers": [empty], "subject": subject,
           "annotations": {"org.cargohold.verify.run": v.nonce,
                           "org.cargohold.verify.label": label}}
    return json.dumps(doc, separators=(",", ":")).encode()


# end-12: referrers ------------------------------------------------------------------------
@scenario(
    check("end-7.oci-subject", MUST, f"{SPEC} §Pushing Manifests with Subject: a registry "
          "with the referrers API MUST answer OCI-Subject", "PUT of a manifest with a subject "
          "answers OCI-Subject: <subject digest>"),
    check("end-12.empty", MUST, f"{SPEC} §Listing Referrers (end-12a): no referrers is an "
          "empty list, never 404", "referrers of a digest with none answer 200 with an empty "
          "image index"),
    check("end-12.listing", MUST, f"{SPEC} §Listing Referrers: descriptors with artifactType "
          "and annotations", "referrers list each referrer with mediaType, digest, size, "
          "artifactType and annotations"),
    check("end-12.content-type", MUST, f"{SPEC} §Listing Referrers: Content-Type MUST be the "
          "image index type", f"Content-Type: {OCI_INDEX}"),
    check("end-12.filter", SHOULD, f"{SPEC} §Listing Referrers (end-12b): SHOULD filter; MUST "
          "send OCI-Filters-Applied when it does", "?artifactType= lists only matching "
          "referrers, with OCI-Filters-Applied: artifactType"),
    check("end-12.bad-digest", MUST, f"{SPEC} §Listing Referrers: invalid digest MUST be 400",
          "referrers of a malformed digest answer 400"),
)
def referrers(v: Verifier) -> None:
    repo, subject_body, subject = v.image()
    subject_desc = {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(subject_body)}
    probe = v.send("GET", url_for("referrers", name=repo, digest=subject), repo=repo)
    api = probe.status == 200
    absent = "" if api else f"no referrers API ({probe.describe()}; clients fall back to " \
                            "the referrers tag schema)"
    sbom = artifact_body(v, repo, SBOM_TYPE, subject_desc, "sbom")
    signature = artifact_body(v, repo, SIGNATURE_TYPE, subject_desc, "signature")
    put_sbom = v.put_manifest(repo, sha256(sbom), sbom, OCI_MANIFEST)
    put_signature = v.put_manifest(repo, sha256(signature), signature, OCI_MANIFEST)
    with v.check("end-7.oci-subject"):
        want_status(put_sbom, 201)
        if put_sbom.header("OCI-Subject") is None and not api:
            raise UnsupportedError(absent)
        want_header(put_sbom, "OCI-Subject", subject)
    if put_sbom.status != 201 or put_signature.status != 201:
        raise SkipError(f"artifacts not stored: {put_sbom.describe()}, {put_signature.describe()}")

    def unsupported_unless(reply: Reply) -> None:
        if reply.status == 404 and not api:
            raise UnsupportedError(absent)

    empty = v.send("GET", url_for("referrers", name=repo, digest=random_digest()), repo=repo)
    with v.check("end-12.empty"):
        unsupported_unless(empty)
        want_status(empty, 200)
        index = empty.json() or {}
        want(index.get("manifests") == [] and index.get("schemaVersion") == 2,
             "an image index with manifests: []", empty.body[:80].decode("utf-8", "replace"))
    listing = v.send("GET", url_for("referrers", name=repo, digest=subject), repo=repo)
    with v.check("end-12.listing"):
        unsupported_unless(listing)
        want_status(listing, 200)
        entries = {d.get("digest"): d for d in (listing.json() or {}).get("manifests", [])
                   if isinstance(d, dict)}
        for body, kind, label in ((sbom, SBOM_TYPE, "sbom"), (signature, SIGNATURE_TYPE,
                                                               "signature")):
            expected = {"mediaType": OCI_MANIFEST, "digest": sha256(body), "size": len(body),
                        "artifactType": kind,
                        "annotations": {"org.cargohold.verify.run": v.nonce,
                                        "org.cargohold.verify.label": label}}
            entry = entries.get(sha256(body))
            want(entry is not None, f"a descriptor for the {label} referrer",
                 f"digests {sorted(entries)}")
            got = {k: entry.get(k) for k in expected}  # type: ignore[union-attr]
            want(got == expected, json.dumps(expected), json.dumps(got))
    with v.check("end-12.content-type"):
        unsupported_unless(listing)
        want(media(listing.header("Content-Type")) == OCI_INDEX, f"Content-Type: {OCI_INDEX}",
             f"Content-Type: {listing.header('Content-Type')}")
    filtered = v.send("GET", url_for("referrers", name=repo, digest=subject,
                                     query={"artifactType": SBOM_TYPE}), repo=repo)
    with v.check("end-12.filter"):
        unsupported_unless(filtered)
        want_status(filtered, 200)
        kinds = sorted({d.get("artifactType") for d in (filtered.json() or {}).get(
            "manifests", []) if isinstance(d, dict)})
        applied = filtered.header("OCI-Filters-Applied")
        if applied is None and kinds == sorted({SBOM_TYPE, SIGNATURE_TYPE}):
            raise UnsupportedError("artifactType filter not applied (no OCI-Filters-Applied)")
        want(kinds == [SBOM_TYPE], f"only {SBOM_TYPE}", str(kinds))
        want_header(filtered, "OCI-Filters-Applied", "artifactType")
    bad = v.send("GET", f"/v2/{repo}/referrers/sha256:{'z' * 64}", repo=repo)
    with v.check("end-12.bad-digest"):
        if not api and bad.status == 404:
            raise UnsupportedError(absent)
        want_status(bad, 400)


# end-8: tags --------------------------------------------------------------------------
TAGS = ["b", "a", "c10", "c2", "d"]


@scenario(
    check("end-8.list", MUST, f"{SPEC} §Listing Tags (end-8a)",
          'GET /tags/list answers 200 {"name", "tags"} with every tag'),
    check("end-8.order", MUST, f"{SPEC} §Listing Tags: tags MUST be in lexical order",
          "tags come in lexical order"),
    check("end-8.n", MUST, f"{SPEC} §Listing Tags (end-8b): MUST include <n> results unless "
          "fewer remain or Link is sent", "?n=2 answers the first two tags"),
    check("end-8.link", CHECKLIST, f"{PROTOCOL} end-8: Link when more remain; {SPEC} "
          "§Listing Tags: Link MAY be included, clients should prefer it",
          '?n=2 answers Link: <…>; rel="next"'),
    check("end-8.last", MUST, f"{SPEC} §Listing Tags: last is exclusive",
          "?n=2&last=b answers the two tags after b"),
    check("end-8.last-without-n", MUST, f"{SPEC} §Listing Tags: with last, n is OPTIONAL",
          "?last=b answers every tag after b"),
    check("end-8.link-follow", MUST, f"{SPEC} §Listing Tags: Link per RFC 5988 rel=next",
          "following Link from ?n=2 yields every tag once, in order"),
    check("end-8.n-zero", MUST, f"{SPEC} §Listing Tags: n=0 MUST be an empty list without Link",
          "?n=0 answers an empty list and no Link"),
    check("end-8.n-invalid", CHECKLIST, f"{PROTOCOL} catalog/end-8: PAGINATION_NUMBER_INVALID",
          "?n=-1 answers 400 PAGINATION_NUMBER_INVALID"),
    check("end-8.name-unknown", MUST, f"{SPEC} end-8a failure 404; {DETAIL} NAME_UNKNOWN",
          "tags of an absent repository answer 404 NAME_UNKNOWN"),
)
def tags(v: Verifier) -> None:
    repo = v.repo("tags")
    body = v.image_body(repo, "tags")
    for tag in TAGS:
        reply = v.put_manifest(repo, tag, body, OCI_MANIFEST)
        if reply.status != 201:
            raise SkipError(f"could not tag {tag}: {reply.describe()}")
    expected = sorted(TAGS)
    listed = v.send("GET", url_for("tags", name=repo), repo=repo)
    data = listed.json() or {}
    with v.check("end-8.list"):
        want_status(listed, 200)
        want(data.get("name") == repo, f'"name": "{repo}"', f'"name": {data.get("name")!r}')
        want(sorted(data.get("tags") or []) == expected, str(expected), str(data.get("tags")))
    with v.check("end-8.order"):
        want(data.get("tags") == expected, str(expected), str(data.get("tags")))
    page = v.send("GET", url_for("tags", name=repo, query={"n": "2"}), repo=repo)
    with v.check("end-8.n"):
        want_status(page, 200)
        want((page.json() or {}).get("tags") == expected[:2], str(expected[:2]),
             str((page.json() or {}).get("tags")))
    with v.check("end-8.link"):
        want_header(page, "Link")
        want(next_link(page) is not None, 'Link: <…>; rel="next"', str(page.header("Link")))
    after = v.send("GET", url_for("tags", name=repo, query={"n": "2", "last": "b"}), repo=repo)
    with v.check("end-8.last"):
        want_status(after, 200)
        want((after.json() or {}).get("tags") == expected[2:4], str(expected[2:4]),
             str((after.json() or {}).get("tags")))
    rest = v.send("GET", url_for("tags", name=repo, query={"last": "b"}), repo=repo)
    with v.check("end-8.last-without-n"):
        want_status(rest, 200)
        want((rest.json() or {}).get("tags") == expected[2:], str(expected[2:]),
             str((rest.json() or {}).get("tags")))
    with v.check("end-8.link-follow") as note:
        seen: list[str] = list((page.json() or {}).get("tags") or [])
        link = next_link(page)
        if link is None and len(seen) == 2:
            link = url_for("tags", name=repo, query={"n": "2", "last": seen[-1]})
            note.append("no Link: paged with last=")
        pages = 1
        while link and pages < 10:
            reply = v.send("GET", link, repo=repo)
            want(reply.status == 200, f"200 for {link}", reply.describe())
            chunk = (reply.json() or {}).get("tags") or []
            seen.extend(chunk)
            pages += 1
            link = next_link(reply)
            if link is None and note and len(chunk) == 2:
                link = url_for("tags", name=repo, query={"n": "2", "last": chunk[-1]})
        want(seen == expected, str(expected), str(seen))
        note.insert(0, f"{pages} pages")
    zero = v.send("GET", url_for("tags", name=repo, query={"n": "0"}), repo=repo)
    with v.check("end-8.n-zero"):
        want_status(zero, 200)
        want((zero.json() or {}).get("tags") in ([], None), "tags: []",
             str((zero.json() or {}).get("tags")))
        want_no_header(zero, "Link")
    invalid = v.send("GET", url_for("tags", name=repo, query={"n": "-1"}), repo=repo)
    with v.check("end-8.n-invalid"):
        want_error(invalid, 400, "PAGINATION_NUMBER_INVALID")
    absent = v.repo("absent")
    unknown = v.send("GET", url_for("tags", name=absent), repo=absent)
    with v.check("end-8.name-unknown"):
        want_error(unknown, 404, "NAME_UNKNOWN")


# catalog ---------------------------------------------------------------------------------
@scenario(
    check("catalog.paginate", CHECKLIST, f"{DETAIL} §Catalog pagination; {PROTOCOL} catalog",
          "?n=2&last= pages in lexical order with Link rel=next"),
    check("catalog.list", MAY, f"{DETAIL} §Catalog (not in OCI v1.1); {PROTOCOL} catalog",
          'GET /v2/_catalog answers 200 {"repositories"} including the repositories pushed'),
    check("catalog.n-invalid", CHECKLIST, f"{PROTOCOL} catalog: PAGINATION_NUMBER_INVALID",
          "?n=-1 answers 400 PAGINATION_NUMBER_INVALID"),
)
def catalog(v: Verifier) -> None:
    v.image()
    own = v.repo("catalog")
    reply = v.put_manifest(own, "c", v.image_body(own, "catalog"), OCI_MANIFEST)
    if reply.status != 201:
        raise SkipError(f"could not push a manifest to {own}: {reply.describe()}")
    # repositories holding a manifest: every registry lists those (blob-only
    # repositories are listed by some registries and not others)
    pushed = sorted({repo for repo, _ in v.manifests})
    first = v.send("GET", url_for("catalog", query={"n": "2", "last": v.prefix}))
    if first.status in (401, 403, 404, 405):
        for check_id in ("catalog.list", "catalog.paginate", "catalog.n-invalid"):
            v.mark(check_id, UNSUPPORTED, f"no catalog ({first.describe()})")
        return
    with v.check("catalog.paginate"):
        want_status(first, 200)
        names = (first.json() or {}).get("repositories")
        want(isinstance(names, list) and len(names) == 2, "2 repositories", str(names))
        want(names == sorted(names) and all(n.startswith(v.prefix + "/") for n in names),
             f"two names under {v.prefix}/ in order", str(names))
        want(next_link(first) is not None, 'Link: <…>; rel="next"', str(first.header("Link")))
    with v.check("catalog.list") as note:
        want_status(first, 200)
        seen = list((first.json() or {}).get("repositories") or [])
        names = seen
        link, pages = next_link(first), 1
        while pages < 20 and all(n.startswith(v.prefix + "/") for n in seen):
            if link is None and len(names) == 2:  # no Link: page on with last=
                link = url_for("catalog", query={"n": "2", "last": names[-1]})
            if link is None:
                break
            reply = v.send("GET", link)
            want(reply.status == 200, f"200 for {link}", reply.describe())
            names = (reply.json() or {}).get("repositories") or []
            want(all(n > seen[-1] for n in names) if seen else True,
                 f"names after {seen[-1] if seen else ''}", str(names))
            seen.extend(names)
            link, pages = next_link(reply), pages + 1
        missing = [r for r in pushed if r not in seen]
        want(not missing, f"{pushed} listed", f"{missing} missing from {seen[:6]}")
        note.append(f"{len([n for n in seen if n.startswith(v.prefix)])} verify repositories "
                    f"in {pages} pages")
    invalid = v.send("GET", url_for("catalog", query={"n": "-1"}))
    with v.check("catalog.n-invalid"):
        want_error(invalid, 400, "PAGINATION_NUMBER_INVALID")


# end-9 / end-10: deletes --------------------------------------------------------------
def _deletes_disabled(reply: Reply, what: str) -> None:
    if reply.status in (400, 405) and not any(
            c in reply.codes() for c in ("DIGEST_INVALID", "TAG_INVALID", "NAME_INVALID")):
        raise UnsupportedError(f"{what} deletion disabled ({reply.describe()})")


@scenario(
    check("end-9.delete-tag", MAY, f"{SPEC} §Deleting tags (end-9): 202, then GET is 404",
          "DELETE /manifests/<tag> answers 202; the tag is gone, the manifest stays"),
    check("end-9.delete-digest", MAY, f"{SPEC} §Deleting Manifests (end-9): 202, then the "
          "digest and its tags are 404", "DELETE /manifests/<digest> answers 202; digest and "
          "tags are gone"),
    check("end-9.delete-unknown", MUST, f"{SPEC} end-9 failure 404; {DETAIL} MANIFEST_UNKNOWN",
          "DELETE of an absent manifest answers 404 MANIFEST_UNKNOWN"),
    check("end-10.delete", MAY, f"{SPEC} §Deleting Blobs (end-10): 202",
          "DELETE /blobs/<digest> answers 202 and the blob is gone"),
    check("end-10.delete-unknown", MUST, f"{SPEC} §Deleting Blobs: not found MUST be 404; "
          f"{DETAIL} BLOB_UNKNOWN", "DELETE of an absent blob answers 404 BLOB_UNKNOWN"),
)
def deletes(v: Verifier) -> None:
    repo = v.repo("images")
    keep_body = v.image_body(repo, "delete-tag")
    keep_digest = sha256(keep_body)
    tagged = v.put_manifest(repo, "delete-tag", keep_body, OCI_MANIFEST)
    if tagged.status != 201:
        raise SkipError(f"could not push a manifest to delete: {tagged.describe()}")
    deleted = v.send("DELETE", url_for("manifest", name=repo, reference="delete-tag"), repo=repo)
    with v.check("end-9.delete-tag"):
        _deletes_disabled(deleted, "tag")
        want_status(deleted, 202)
        tag_gone = v.send("GET", url_for("manifest", name=repo, reference="delete-tag"),
                          repo=repo, headers={"Accept": OCI_MANIFEST})
        want(tag_gone.status == 404, "GET of the deleted tag 404", tag_gone.describe())
        kept = v.send("HEAD", url_for("manifest", name=repo, reference=keep_digest), repo=repo,
                      headers={"Accept": OCI_MANIFEST})
        want(kept.status == 200, "the manifest still there by digest (200)", kept.describe())

    body = v.image_body(repo, "delete-digest")
    digest = sha256(body)
    pushed = v.put_manifest(repo, "delete-digest", body, OCI_MANIFEST)
    if pushed.status != 201:
        raise SkipError(f"could not push a manifest to delete: {pushed.describe()}")
    removed = v.send("DELETE", url_for("manifest", name=repo, reference=digest), repo=repo)
    with v.check("end-9.delete-digest"):
        _deletes_disabled(removed, "manifest")
        want_status(removed, 202)
        for reference in (digest, "delete-digest"):
            gone = v.send("GET", url_for("manifest", name=repo, reference=reference), repo=repo,
                          headers={"Accept": OCI_MANIFEST})
            want(gone.status == 404, f"GET {reference[:19]} 404 after the delete",
                 gone.describe())
    unknown = v.send("DELETE", url_for("manifest", name=repo, reference=random_digest()),
                     repo=repo)
    with v.check("end-9.delete-unknown"):
        _deletes_disabled(unknown, "manifest")
        want_error(unknown, 404, "MANIFEST_UNKNOWN")

    blobs = v.repo("blobs")
    blob = v.push_blob(blobs, os.urandom(300))
    dropped = v.send("DELETE", url_for("blob", name=blobs, digest=blob), repo=blobs)
    with v.check("end-10.delete"):
        _deletes_disabled(dropped, "blob")
        want_status(dropped, 202)
        head = v.send("HEAD", url_for("blob", name=blobs, digest=blob), repo=blobs)
        want(head.status == 404, "HEAD 404 after the delete", head.describe())
    unknown_blob = v.send("DELETE", url_for("blob", name=blobs, digest=random_digest()),
                          repo=blobs)
    with v.check("end-10.delete-unknown"):
        _deletes_disabled(unknown_blob, "blob")
        want_error(unknown_blob, 404, "BLOB_UNKNOWN")


# grammar -----------------------------------------------------------------------------
@scenario(
    check("grammar.name-uppercase", CHECKLIST, f"{SPEC} §Pulling manifests: <name> MUST match "
          f"[a-z0-9]+…; {DETAIL} NAME_INVALID", "POST /v2/<prefix>/Upper/blobs/uploads/ answers "
          "400 NAME_INVALID"),
    check("grammar.name-traversal", CHECKLIST, f"{SPEC} <name> grammar; {DETAIL} NAME_INVALID",
          "a name with a '..' component answers 400 NAME_INVALID"),
    check("grammar.name-too-long", CHECKLIST, f"{PROTOCOL} §Grammar: at most 255 characters; "
          f"{DETAIL} NAME_INVALID", "a 256-character name answers 400 NAME_INVALID"),
    check("grammar.tag-invalid", CHECKLIST, f"{SPEC} §Pulling manifests: a tag MUST match "
          f"[a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}; {DETAIL} TAG_INVALID", "PUT of a manifest "
          "under the tag '-bad' answers 400 TAG_INVALID"),
    check("grammar.tag-too-long", CHECKLIST, f"{SPEC} §Pulling manifests: a tag MUST be at "
          f"most 128 characters; {DETAIL} TAG_INVALID", "PUT under a 129-character tag answers "
          "400 TAG_INVALID"),
    check("grammar.digest-invalid", CHECKLIST, f"{PROTOCOL} §Grammar: digest; {DETAIL} "
          "DIGEST_INVALID", "GET /blobs/sha256:<not hex> answers 400 DIGEST_INVALID"),
)
def grammar(v: Verifier) -> None:
    cases = (
        ("grammar.name-uppercase", f"/v2/{v.prefix}/Upper/blobs/uploads/"),
        ("grammar.name-traversal", f"/v2/{v.prefix}/%2E%2E/escape/blobs/uploads/"),
    )
    for check_id, path in cases:
        reply, upload = v.start_upload(v.repo("grammar"), path=path)
        v.cancel(upload)
        with v.check(check_id):
            want_error(reply, 400, "NAME_INVALID")
    if len(v.prefix) > 250:
        v.mark("grammar.name-too-long", SKIPPED, "--repo prefix too long to build the name")
    else:
        long_name = v.prefix + "/" + "n" * (256 - len(v.prefix) - 1)
        reply, upload = v.start_upload(long_name)
        v.cancel(upload)
        with v.check("grammar.name-too-long"):
            want_error(reply, 400, "NAME_INVALID")
    repo = v.repo("images")
    body = v.image_body(repo, "grammar")
    for check_id, tag in (("grammar.tag-invalid", "-bad"), ("grammar.tag-too-long", "t" * 129)):
        reply = v.put_manifest(repo, tag, body, OCI_MANIFEST)
        with v.check(check_id):
            want_error(reply, 400, "TAG_INVALID")
    bad = v.send("GET", f"/v2/{repo}/blobs/sha256:{'z' * 64}", repo=repo)
    with v.check("grammar.digest-invalid"):
        want_error(bad, 400, "DIGEST_INVALID")


# error envelopes ----------------------------------------------------------------------
@scenario(
    check("errors.envelope", MUST, f"{SPEC} §Error Codes: a JSON 4xx body MUST be "
          '{"errors":[{"code","message","detail"}]}, code uppercase and underscores',
          "every JSON 4xx body seen in the run is an OCI error envelope"),
)
def error_envelopes(v: Verifier) -> None:
    bad: list[str] = []
    count = 0
    for reply in v.replies:
        if not 400 <= reply.status < 500 or reply.method == "HEAD" or not reply.body:
            continue
        try:
            data = json.loads(reply.body)
        except ValueError:
            continue  # "a 4XX response MAY return a body in any format"
        count += 1
        errors = data.get("errors") if isinstance(data, dict) else None
        fine = isinstance(errors, list) and errors and all(
            isinstance(e, dict) and isinstance(e.get("code"), str) and _CODE.match(e["code"])
            and isinstance(e.get("message", ""), str) for e in errors)
        if not fine:
            bad.append(f"{reply.method} {urlsplit(reply.url).path[-40:]} {reply.status}: "
                       f"{reply.body[:60]!r}")
    with v.check("errors.envelope") as note:
        want(not bad, "OCI error envelopes", "; ".join(bad[:3]))
        note.append(f"{count} JSON error bodies, all envelopes")


# -- output ----------------------------------------------------------------------------
LABELS = {PASS: "PASS", FAIL: "FAIL", UNSUPPORTED: "UNSUP", SKIPPED: "SKIP"}


def summary(results: list[CheckResult]) -> str:
    counts = {s: sum(1 for r in results if r.status == s) for s in LABELS}
    line = (f"verify: {counts[PASS]} passed, {counts[FAIL]} failed, "
            f"{counts[UNSUPPORTED]} unsupported")
    if counts[SKIPPED]:
        line += f", {counts[SKIPPED]} skipped"
    return line


def format_line(result: CheckResult) -> str:
    return f"{LABELS[result.status]:<5} {result.id:<30} {result.message}"


def junit_xml(results: list[CheckResult], name: str = "cargohold-verify") -> bytes:
    """JUnit XML: one testcase per check; fail → <failure>, unsupported and
    skipped → <skipped>."""
    suite = ET.Element("testsuite", {
        "name": name, "tests": str(len(results)),
        "failures": str(sum(r.status == FAIL for r in results)), "errors": "0",
        "skipped": str(sum(r.status in (UNSUPPORTED, SKIPPED) for r in results)),
        "time": f"{sum(r.seconds for r in results):.3f}"})
    for result in results:
        case = ET.SubElement(suite, "testcase", {
            "classname": f"verify.{result.id.split('.')[0]}", "name": result.id,
            "time": f"{result.seconds:.3f}"})
        if result.status == FAIL:
            failure = ET.SubElement(case, "failure", {"message": result.message,
                                                      "type": result.level or "check"})
            failure.text = f"{result.message}\nrule: {result.rule}"
        elif result.status in (UNSUPPORTED, SKIPPED):
            ET.SubElement(case, "skipped", {"message": f"{result.status}: {result.message}"})
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", {"name": "level", "value": result.level})
        ET.SubElement(props, "property", {"name": "rule", "value": result.rule})
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


# -- entry points ----------------------------------------------------------------------
def run_checks(client: RegistryClient, prefix: str, *, only: Iterable[str] | None = None,
               keep: bool = False, progress: Callable[[CheckResult], None] | None = None,
               ) -> list[CheckResult]:
    """Run the suite against the registry behind ``client``, creating
    everything under ``prefix`` (a repository name) and deleting it after."""
    return Verifier(client, prefix, only=only, keep=keep, progress=progress).run()


def normalise_url(text: str) -> str:
    """``host:port`` → ``http://`` for loopback, ``https://`` otherwise."""
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported scheme {scheme!r}: use http:// or https://")
        return text.rstrip("/")
    host = urlsplit("//" + text).hostname or ""
    scheme = "http" if host in ("127.0.0.1", "localhost", "::1") else "https"
    return f"{scheme}://{text.rstrip('/')}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cargohold verify",
        description="Black-box verification of an OCI Distribution registry.")
    parser.add_argument("registry", nargs="?", help="registry URL (http:// or https://; "
                        "host:port alone means http for 127.0.0.1/localhost, else https)")
    parser.add_argument("--repo", metavar="PREFIX", help="repository prefix to create content "
                        "under (default: cargohold-verify/<random>)")
    parser.add_argument("--junit", metavar="FILE", help="write a JUnit XML report")
    parser.add_argument("--json", action="store_true", help="print results as a JSON list")
    parser.add_argument("--only", metavar="PATTERN", action="append", help="run only checks "
                        "matching PATTERN (glob, or an id prefix such as end-2); repeatable")
    parser.add_argument("--keep", action="store_true", help="do not delete what was created")
    parser.add_argument("--list", action="store_true", help="list the checks and exit")
    parser.add_argument("-u", "--username", help="registry username")
    parser.add_argument("--password-stdin", action="store_true",
                        help="read the password from standard input")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for info in CHECKS.values():
            print(f"{info.id:<30} {info.level:<9} {info.title}")
        return 0
    if not args.registry:
        parser.error("the registry URL is required")
    try:
        base = normalise_url(args.registry)
    except ValueError as exc:
        parser.error(str(exc))
    password = None
    if args.password_stdin:
        if not args.username:
            parser.error("--password-stdin needs --username")
        password = sys.stdin.readline().rstrip("\r\n")
    prefix = args.repo or f"cargohold-verify/{os.urandom(4).hex()}"
    try:
        validate_name(prefix)
    except RegistryError:
        parser.error(f"--repo {prefix!r} is not a valid repository name")
    only = [p for item in args.only or () for p in item.split(",")]
    client = RegistryClient(base, transport=HttpTransport(timeout=120.0),
                            username=args.username, password=password)
    printer = None if args.json else (lambda r: print(format_line(r), flush=True))
    results = run_checks(client, prefix, only=only, keep=args.keep, progress=printer)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        cleanup = next((r for r in results if r.id == "cleanup"), None)
        if cleanup is not None:
            print(format_line(cleanup))
    if args.junit:
        with open(args.junit, "wb") as handle:
            handle.write(junit_xml(results))
    print(summary(results), file=sys.stderr if args.json else sys.stdout)
    return 1 if any(r.status == FAIL for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
