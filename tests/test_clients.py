"""Real outside clients (skopeo, crane, oras, regctl) against the local server.

Each test builds its own data in Python (``tests/oci_layout.py``), so the
digests it checks are computed independently of the client under test and
of the registry. Every client gets a private HOME/config under ``tmp_path``
so no user configuration is read or written elsewhere.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

import pytest

from chalicelib.config import Settings
from chalicelib.core.http import Request, Response
from chalicelib.devserver import local_app
from chalicelib.server import serve_in_thread

from .conftest import tool
from .oci_layout import (
    OCI_INDEX,
    OCI_MANIFEST,
    LayoutWriter,
    closure,
    random_layer,
    read_blob,
    resolve,
    sha256,
    tar_of,
)

pytestmark = pytest.mark.clients

ACCEPT_ALL = ", ".join([OCI_MANIFEST, OCI_INDEX,
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json"])
MIB = 1024 * 1024


# -- a server that remembers what it was asked ------------------------------
@dataclass(frozen=True)
class Seen:
    """One request as the server saw it, for asserting *how* a client talked."""

    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    content_length: int | None
    content_range: str | None


@dataclass
class Served:
    host: str
    seen: list[Seen] = field(default_factory=list)

    def requests(self, method: str, path_part: str = "") -> list[Seen]:
        return [s for s in self.seen if s.method == method and path_part in s.path]


def _serve_recording(app) -> Iterator[Served]:
    served = Served("")

    def recording(request: Request) -> Response:
        length = request.content_length()
        content_range = request.headers.get("Content-Range")
        response = app(request)
        served.seen.append(Seen(request.method, request.path, dict(request.query),
                                response.status, length, content_range))
        return response

    httpd, thread = serve_in_thread(recording)
    host, port = httpd.server_address[:2]
    served.host = f"{host}:{port}"
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def served(app) -> Iterator[Served]:
    """Like ``server``, but records every request (method, path, status…)."""
    yield from _serve_recording(app)


# -- clients with private configuration -------------------------------------
@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An environment in which no client reads or writes config outside tmp."""
    home = tmp_path / "home"
    dirs = {name: home / sub for name, sub in [
        ("HOME", ""), ("DOCKER_CONFIG", ".docker"), ("XDG_CONFIG_HOME", ".config"),
        ("XDG_DATA_HOME", ".local/share"), ("XDG_CACHE_HOME", ".cache"),
        ("XDG_RUNTIME_DIR", "run"), ("TMPDIR", "tmp")]}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    (home / "registries.conf").write_text("")
    (home / "policy.json").write_text(json.dumps(
        {"default": [{"type": "insecureAcceptAnything"}]}))
    result = {name: str(path) for name, path in dirs.items()}
    result.update({
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "REGISTRY_AUTH_FILE": str(home / "auth.json"),
        "CONTAINERS_REGISTRIES_CONF": str(home / "registries.conf"),
        "CONTAINERS_POLICY": str(home / "policy.json"),
        "REGCTL_CONFIG": str(home / ".regctl" / "config.json"),
        "NO_COLOR": "1",
    })
    return result


def run(env: dict[str, str], *args: str | Path, cwd: Path | None = None,
        timeout: float = 90) -> str:
    """Run a client; on failure the assertion shows its output."""
    argv = [str(a) for a in args]
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, timeout=timeout,
                          check=False)
    assert proc.returncode == 0, (
        f"{' '.join(argv)} exited {proc.returncode}\nstdout: {proc.stdout.decode()[-3000:]}"
        f"\nstderr: {proc.stderr.decode()[-3000:]}")
    return proc.stdout.decode()


def fails(env: dict[str, str], *args: str | Path) -> str:
    """Run a client that must fail; returns its stderr."""
    proc = subprocess.run([str(a) for a in args], env=env, capture_output=True, timeout=60,
                          check=False)
    assert proc.returncode != 0, f"{args} unexpectedly succeeded: {proc.stdout.decode()}"
    return proc.stderr.decode()


@functools.cache
def _user_namespace_works() -> bool:
    probe = subprocess.run(["unshare", "--user", "--map-user=1000", "--map-group=1000", "true"],
                           capture_output=True, check=False) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


def skopeo(env: dict[str, str], *args: str | Path) -> str:
    """skopeo with a private policy; as root it would keep its blob-info cache in
    /var/lib/containers, so when possible it runs as a mapped non-root user,
    which keeps the cache in the tmp XDG_DATA_HOME."""
    prefix: list[str] = []
    if os.geteuid() == 0 and _user_namespace_works():
        prefix = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    return run(env, *prefix, tool("skopeo"), "--policy", env["CONTAINERS_POLICY"], *args)


# -- plain HTTP against the registry ----------------------------------------
@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(host: str, path: str, method: str = "GET", accept: str = ACCEPT_ALL,
          data: bytes | None = None, content_type: str | None = None) -> Fetched:
    headers = {"Accept": accept}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(f"http://{host}{path}", data=data, method=method,
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Fetched(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Fetched(error.code, dict(error.headers), error.read())


def push_blob(host: str, repo: str, data: bytes) -> str:
    """A monolithic POST upload, independent of every client under test."""
    digest = sha256(data)
    got = fetch(host, f"/v2/{repo}/blobs/uploads/?digest={digest}", "POST", data=data,
                content_type="application/octet-stream")
    assert got.status == 201, got.body
    return digest


def push_layout(host: str, repo: str, tag: str, layout: LayoutWriter, digest: str) -> None:
    """Push one image manifest of ``layout`` (blobs, then the manifest)."""
    manifest = json.loads(layout.blobs[digest])
    for descriptor in [manifest["config"], *manifest["layers"]]:
        push_blob(host, repo, layout.blobs[descriptor["digest"]])
    got = fetch(host, f"/v2/{repo}/manifests/{tag}", "PUT", data=layout.blobs[digest],
                content_type=manifest["mediaType"])
    assert got.status == 201, got.body
    assert got.headers["Docker-Content-Digest"] == digest


def tags_of(host: str, repo: str) -> list[str]:
    got = fetch(host, f"/v2/{repo}/tags/list")
    assert got.status == 200, got.body
    return json.loads(got.body)["tags"]


# -- skopeo ------------------------------------------------------------------
def test_skopeo_oci_layout_round_trip_keeps_every_digest(
        served: Served, env: dict[str, str], tmp_path: Path) -> None:
    rng = random.Random(1)
    src = tmp_path / "src"
    layout = LayoutWriter(src)
    multi = layout.image([random_layer(rng, 150_000 + i, f"layer{i}.bin") for i in range(4)])
    layout.tag(multi, "multi")
    shared = random_layer(rng, 100_000, "shared.bin")
    platforms = [{"os": "linux", "architecture": "amd64"},
                 {"os": "linux", "architecture": "arm64", "variant": "v8"}]
    children = [layout.image([shared, random_layer(rng, 50_000, f"{p['architecture']}.bin")],
                             platform=p) for p in platforms]
    index = layout.index(children)
    layout.tag(index, "multiarch")
    layout.close()
    host = served.host
    dst = tmp_path / "dst"
    manifest_digests = {d["digest"] for d in [multi, index, *children]}

    for tag, top in [("multi", multi), ("multiarch", index)]:
        skopeo(env, "copy", "--all", "--preserve-digests", "--dest-tls-verify=false",
               f"oci:{src}:{tag}", f"docker://{host}/skopeo/image:{tag}")

        served_manifest = fetch(host, f"/v2/skopeo/image/manifests/{tag}")
        assert served_manifest.status == 200
        assert served_manifest.headers["Docker-Content-Digest"] == top["digest"]
        assert served_manifest.headers["Content-Type"] == top["mediaType"]
        assert served_manifest.body == layout.blobs[top["digest"]]

        raw = skopeo(env, "inspect", "--raw", "--tls-verify=false",
                     f"docker://{host}/skopeo/image:{tag}").encode()
        assert raw == served_manifest.body
        assert sha256(raw) == served_manifest.headers["Docker-Content-Digest"]

        skopeo(env, "copy", "--all", "--preserve-digests", "--src-tls-verify=false",
               f"docker://{host}/skopeo/image:{tag}", f"oci:{dst}:{tag}")
        assert resolve(dst, tag)["digest"] == top["digest"]
        original = closure(src, top["digest"])
        assert closure(dst, top["digest"]) == original
        for digest, data in original.items():
            if digest not in manifest_digests:
                blob = fetch(host, f"/v2/skopeo/image/blobs/{digest}")
                assert blob.status == 200 and blob.body == data

    # index + 2 × (manifest, config, own layer) + the shared layer
    assert len(closure(src, index["digest"])) == 8
    for child in children:  # the index's children are stored by digest
        got = fetch(host, f"/v2/skopeo/image/manifests/{child['digest']}")
        assert got.status == 200 and got.body == layout.blobs[child["digest"]]
    assert sorted(tags_of(host, "skopeo/image")) == ["multi", "multiarch"]
    listed = json.loads(skopeo(env, "list-tags", "--tls-verify=false",
                               f"docker://{host}/skopeo/image"))
    assert sorted(listed["Tags"]) == ["multi", "multiarch"]


# -- crane ---------------------------------------------------------------------
def test_crane_push_pull_list_copy_catalog_delete(
        served: Served, env: dict[str, str], tmp_path: Path) -> None:
    crane = tool("crane")
    host = served.host
    rng = random.Random(2)
    layout = LayoutWriter(tmp_path / "layout")
    layers = [random_layer(rng, 120_000, f"c{i}.bin") for i in range(3)]
    image = layout.image(layers)
    layout.tag(image, "v2")
    layout.close()

    # crane append: crane builds the image (gzips our tar) on an empty base.
    appended_files = {"etc/appended.txt": b"appended by crane\n", "bin/tool": rng.randbytes(5000)}
    (tmp_path / "layer.tar").write_bytes(tar_of(appended_files))
    run(env, crane, "append", "--insecure", "-f", tmp_path / "layer.tar",
        "-t", f"{host}/crane/app:v1")
    # crane push of an OCI layout keeps our manifest bytes, hence our digest.
    run(env, crane, "push", "--insecure", tmp_path / "layout", f"{host}/crane/app:v2")

    assert sorted(run(env, crane, "ls", "--insecure", f"{host}/crane/app").split()) == [
        "v1", "v2"]
    assert run(env, crane, "digest", "--insecure",
               f"{host}/crane/app:v2").strip() == image["digest"]
    manifest_bytes = run(env, crane, "manifest", "--insecure", f"{host}/crane/app:v2").encode()
    assert manifest_bytes == layout.blobs[image["digest"]]
    assert manifest_bytes == fetch(host, "/v2/crane/app/manifests/v2").body

    v1_digest = run(env, crane, "digest", "--insecure", f"{host}/crane/app:v1").strip()
    v1_served = fetch(host, "/v2/crane/app/manifests/v1")
    assert v1_served.headers["Docker-Content-Digest"] == v1_digest == sha256(v1_served.body)
    assert run(env, crane, "manifest", "--insecure",
               f"{host}/crane/app@{v1_digest}").encode() == v1_served.body

    # Pull as an OCI layout: every blob is ours, byte for byte.
    run(env, crane, "pull", "--insecure", "--format", "oci", f"{host}/crane/app:v2",
        tmp_path / "pulled")
    pulled_top = resolve(tmp_path / "pulled")
    assert pulled_top["digest"] == image["digest"]
    assert closure(tmp_path / "pulled", image["digest"]) == closure(
        tmp_path / "layout", image["digest"])

    # Pull the appended image as a tarball: the file crane added comes back.
    run(env, crane, "pull", "--insecure", f"{host}/crane/app:v1", tmp_path / "v1.tar")
    with tarfile.open(tmp_path / "v1.tar") as outer:
        tar_manifest = json.load(outer.extractfile("manifest.json"))
        (layer_name,) = tar_manifest[0]["Layers"]
        with tarfile.open(fileobj=outer.extractfile(layer_name), mode="r:*") as inner:
            got_files = {m.name: inner.extractfile(m).read() for m in inner.getmembers()
                         if m.isfile()}
    assert got_files == appended_files

    # crane copy within one registry mounts blobs instead of re-uploading them.
    before = len(served.seen)
    run(env, crane, "copy", "--insecure", f"{host}/crane/app:v2", f"{host}/crane/copy:v2")
    copy_requests = served.seen[before:]
    mounts = [s for s in copy_requests if s.method == "POST" and "mount" in s.query]
    assert {s.query["mount"][0] for s in mounts if s.status == 201} == set(
        closure(tmp_path / "layout", image["digest"])) - {image["digest"]}
    assert mounts and all(s.query["from"] == ["crane/app"] for s in mounts)
    assert not [s for s in copy_requests if s.method in ("PATCH",)
                or (s.method == "PUT" and "/blobs/uploads/" in s.path)]
    assert run(env, crane, "digest", "--insecure",
               f"{host}/crane/copy:v2").strip() == image["digest"]

    catalog = run(env, crane, "catalog", "--insecure", host).split()
    assert {"crane/app", "crane/copy"} <= set(catalog)
    assert catalog == sorted(catalog)

    # Delete v1 by digest: the manifest and its tag are gone, v2 untouched.
    run(env, crane, "delete", "--insecure", f"{host}/crane/app@{v1_digest}")
    assert "MANIFEST_UNKNOWN" in fails(env, crane, "manifest", "--insecure",
                                       f"{host}/crane/app@{v1_digest}")
    fails(env, crane, "manifest", "--insecure", f"{host}/crane/app:v1")
    assert run(env, crane, "ls", "--insecure", f"{host}/crane/app").split() == ["v2"]
    assert run(env, crane, "digest", "--insecure",
               f"{host}/crane/app:v2").strip() == image["digest"]
    # Deleting a tag only removes the tag.
    run(env, crane, "tag", "--insecure", f"{host}/crane/app:v2", "extra")
    run(env, crane, "delete", "--insecure", f"{host}/crane/app:extra")
    assert run(env, crane, "ls", "--insecure", f"{host}/crane/app").split() == ["v2"]


# -- oras ----------------------------------------------------------------------
def test_oras_artifact_push_pull_attach_discover_referrers(
        served: Served, env: dict[str, str], tmp_path: Path) -> None:
    oras = tool("oras")
    host = served.host
    common = ["--plain-http", "--registry-config", Path(env["DOCKER_CONFIG"]) / "config.json"]
    work = tmp_path / "work"
    work.mkdir()
    files = {"readme.txt": b"a cargohold artifact\n", "payload.bin": random.Random(3).randbytes(
        300_000)}
    for name, data in files.items():
        (work / name).write_bytes(data)
    artifact_type = "application/vnd.cargohold.test.bundle.v1"
    pushed = json.loads(run(env, oras, "push", *common, "--format", "json",
                            "--artifact-type", artifact_type, f"{host}/oras/bundle:v1",
                            "readme.txt:text/plain", "payload.bin:application/octet-stream",
                            cwd=work))
    served_manifest = fetch(host, "/v2/oras/bundle/manifests/v1")
    assert served_manifest.headers["Docker-Content-Digest"] == pushed["digest"]
    manifest = json.loads(served_manifest.body)
    assert manifest["artifactType"] == artifact_type
    assert {layer["digest"] for layer in manifest["layers"]} == {
        sha256(data) for data in files.values()}

    out = tmp_path / "out"
    run(env, oras, "pull", *common, "-o", out, f"{host}/oras/bundle:v1")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files

    # A subject image pushed over plain HTTP, then a signature attached to it.
    rng = random.Random(4)
    layout = LayoutWriter(tmp_path / "layout")
    image = layout.image([random_layer(rng, 20_000)])
    push_layout(host, "oras/image", "v1", layout, image["digest"])
    (work / "signature.json").write_text(json.dumps({"signed": image["digest"]}))
    signature_type = "application/vnd.cargohold.signature.v1+json"
    attached = json.loads(run(
        env, oras, "attach", *common, "--format", "json", "--distribution-spec",
        "v1.1-referrers-api", "--artifact-type", signature_type,
        "-a", "org.example.signer=tests", f"{host}/oras/image:v1",
        "signature.json:application/json", cwd=work))
    referrer = attached["digest"]
    assert [s.status for s in served.requests("PUT", f"/oras/image/manifests/{referrer}")
            ] == [201]
    # The referrers API was used, not the fallback tag schema.
    assert tags_of(host, "oras/image") == ["v1"]

    discovered = json.loads(run(env, oras, "discover", *common, "--format", "json",
                                f"{host}/oras/image:v1"))
    assert discovered["digest"] == image["digest"]
    (found,) = discovered["referrers"]
    assert found["digest"] == referrer
    assert found["artifactType"] == signature_type
    assert found["annotations"]["org.example.signer"] == "tests"
    filtered = json.loads(run(env, oras, "discover", *common, "--format", "json",
                              "--artifact-type", "application/vnd.other",
                              f"{host}/oras/image:v1"))
    assert not filtered.get("referrers")

    got = fetch(host, f"/v2/oras/image/referrers/{image['digest']}")
    assert got.status == 200
    assert got.headers["Content-Type"] == OCI_INDEX
    listing = json.loads(got.body)
    (descriptor,) = listing["manifests"]
    referrer_manifest = fetch(host, f"/v2/oras/image/manifests/{referrer}")
    assert descriptor == {
        "mediaType": OCI_MANIFEST, "digest": referrer, "size": len(referrer_manifest.body),
        "artifactType": signature_type,
        "annotations": json.loads(referrer_manifest.body)["annotations"]}
    assert json.loads(referrer_manifest.body)["subject"]["digest"] == image["digest"]
    by_type = fetch(host, f"/v2/oras/image/referrers/{image['digest']}"
                          f"?artifactType={quote(signature_type, safe='')}")
    assert by_type.headers.get("OCI-Filters-Applied") == "artifactType"
    assert [d["digest"] for d in json.loads(by_type.body)["manifests"]] == [referrer]

    # And the signature's own file can be pulled back by digest.
    sig_out = tmp_path / "sig"
    run(env, oras, "pull", *common, "-o", sig_out, f"{host}/oras/image@{referrer}")
    assert json.loads((sig_out / "signature.json").read_text()) == {"signed": image["digest"]}


# -- regctl --------------------------------------------------------------------
CHUNK = 2 * MIB


@pytest.fixture
def chunky(settings: Settings) -> Iterator[Served]:
    """A recording server whose advertised minimum chunk is 2 MiB and whose S3
    part is 5 MiB, so a 6 MiB blob pushed in chunks fills one part and leaves
    a tail: both staging paths, with a few MB of data."""
    yield from _serve_recording(local_app(replace(
        settings, chunk_min_length=CHUNK, part_size=5 * MIB)))


def test_regctl_copy_tag_ls_and_chunked_push(
        chunky: Served, env: dict[str, str], tmp_path: Path) -> None:
    regctl, crane = tool("regctl"), tool("crane")
    host = chunky.host
    # Chunk size 1 MiB below the server's minimum: regctl must raise it to 2 MiB.
    run(env, regctl, "registry", "set", "--tls", "disabled", "--blob-chunk", str(MIB),
        "--blob-max", str(MIB), host)
    config = json.loads(Path(env["REGCTL_CONFIG"]).read_text())
    assert config["hosts"][host]["tls"] == "disabled"

    # An image built by crane, copied between repositories by regctl.
    (tmp_path / "layer.tar").write_bytes(tar_of({"hello.txt": b"hello from crane\n"}))
    run(env, crane, "append", "--insecure", "-f", tmp_path / "layer.tar",
        "-t", f"{host}/crane/base:v1")
    crane_digest = run(env, crane, "digest", "--insecure", f"{host}/crane/base:v1").strip()
    before = len(chunky.seen)
    run(env, regctl, "image", "copy", f"{host}/crane/base:v1", f"{host}/regctl/copy:v1")
    run(env, regctl, "image", "copy", f"{host}/regctl/copy:v1", f"{host}/regctl/copy:v2")
    mounted = [s for s in chunky.seen[before:] if s.method == "POST" and "mount" in s.query]
    assert mounted and all(s.status == 201 for s in mounted)
    assert run(env, regctl, "image", "digest", f"{host}/regctl/copy:v1").strip() == crane_digest
    assert fetch(host, "/v2/regctl/copy/manifests/v2").headers[
        "Docker-Content-Digest"] == crane_digest
    assert run(env, regctl, "tag", "ls", f"{host}/regctl/copy").split() == ["v1", "v2"]

    # A 6 MiB layer from an OCI layout, pushed in chunks.
    rng = random.Random(5)
    big = random_layer(rng, 6 * MIB, "big.bin")
    layout = LayoutWriter(tmp_path / "layout")
    image = layout.image([big, random_layer(rng, 10_000, "small.bin")])
    layout.tag(image, "v1")
    layout.close()
    before = len(chunky.seen)
    run(env, regctl, "image", "copy", f"ocidir://{tmp_path / 'layout'}:v1",
        f"{host}/regctl/chunked:v1", timeout=120)
    pushed = chunky.seen[before:]
    (finished,) = [s for s in pushed if s.method == "PUT" and s.query.get("digest") == [
        big.digest]]
    assert finished.status == 201
    patches = [s for s in pushed if s.method == "PATCH" and s.path == finished.path]
    sizes = [s.content_length or 0 for s in patches]
    assert [s.status for s in patches] == [202] * len(patches)
    # ceil(size / 2 MiB) chunks of exactly the server's minimum, in order.
    assert len(patches) == -(-len(big.blob) // CHUNK) >= 3, sizes
    assert sizes[:-1] == [CHUNK] * (len(patches) - 1) and sum(sizes) == len(big.blob), sizes
    assert [s.content_range for s in patches] == [
        f"{i * CHUNK}-{i * CHUNK + size - 1}" for i, size in enumerate(sizes)]
    assert not finished.content_length  # the closing PUT carried no data

    blob = fetch(host, f"/v2/regctl/chunked/blobs/{big.digest}")
    assert blob.status == 200 and blob.headers["Docker-Content-Digest"] == big.digest
    assert sha256(blob.body) == big.digest
    assert blob.body == big.blob
    assert fetch(host, "/v2/regctl/chunked/manifests/v1").body == layout.blobs[image["digest"]]

    # And back out through regctl into a fresh layout, blob for blob.
    run(env, regctl, "image", "copy", f"{host}/regctl/chunked:v1",
        f"ocidir://{tmp_path / 'back'}:v1", timeout=120)
    assert resolve(tmp_path / "back", "v1")["digest"] == image["digest"]
    assert closure(tmp_path / "back", image["digest"]) == closure(
        tmp_path / "layout", image["digest"])
    assert read_blob(tmp_path / "back", big.digest) == big.blob
    assert run(env, regctl, "tag", "ls", f"{host}/regctl/chunked").split() == ["v1"]
