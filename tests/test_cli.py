"""The ``cargohold`` command line, end to end.

Every command runs against a real local server (``main([...])`` in-process,
output captured), the transfer commands also against the CNCF distribution
registry, and images cross over to and from crane with identical digests.
Test images are built here (``tests/oci_layout.py``, a hand-made ``docker
save`` tarball), so every digest compared is computed by the test, not by
the CLI under test.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import time
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

import chalicelib.client
from chalicelib import cli
from chalicelib.config import Settings
from chalicelib.core.http import Request, Response
from chalicelib.devserver import local_app
from chalicelib.server import serve_in_thread

from .conftest import ROOT, tool
from .distribution import distribution  # noqa: F401 - the fixture
from .oci_layout import (
    OCI_INDEX,
    OCI_MANIFEST,
    LayoutWriter,
    canonical_json,
    closure,
    random_layer,
    resolve,
    sha256,
    tar_of,
)

MIB = 1024 * 1024
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST,
                    "application/vnd.docker.distribution.manifest.list.v2+json"])


# -- running the CLI -----------------------------------------------------------
@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def private_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads or writes credentials outside its tmp dir."""
    config = tmp_path / "docker-config"
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("CARGOHOLD_USERNAME", raising=False)
    monkeypatch.delenv("CARGOHOLD_PASSWORD", raising=False)
    return config


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):
    """``run(*args)``: the CLI in-process; returns exit code, stdout, stderr."""

    def _run(*args: str | Path) -> Ran:
        capsys.readouterr()
        code = cli.main([str(a) for a in args])
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return _run


def ok(ran: Ran) -> Ran:
    assert ran.code == 0, f"exit {ran.code}\nstdout: {ran.out}\nstderr: {ran.err}"
    return ran


# -- a server that remembers what it was asked ----------------------------------
@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int
    content_length: int | None
    range: str | None


@dataclass
class Served:
    host: str = ""
    seen: list[Seen] = field(default_factory=list)

    def requests(self, method: str, path_part: str = "") -> list[Seen]:
        return [s for s in self.seen if s.method == method and path_part in s.path]


@pytest.fixture
def serve():
    """``serve(app)``: a recording local server for ``app``; stopped after the test."""
    running = []

    def _serve(app) -> Served:
        served = Served()

        def recording(request: Request) -> Response:
            length = request.content_length()
            response = app(request)
            served.seen.append(Seen(request.method, request.path, dict(request.query),
                                    response.status, length, request.headers.get("Range")))
            return response

        httpd, thread = serve_in_thread(recording)
        running.append((httpd, thread))
        host, port = httpd.server_address[:2]
        served.host = f"{host}:{port}"
        return served

    yield _serve
    for httpd, thread in running:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture
def served(app, serve) -> Served:
    return serve(app)


# -- plain HTTP checks, independent of the CLI --------------------------------------
@dataclass
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes


def fetch(host: str, path: str, method: str = "GET") -> Fetched:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://{host}{path}", method=method,
                                     headers={"Accept": ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Fetched(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Fetched(error.code, dict(error.headers), error.read())


# -- test images ------------------------------------------------------------------
@dataclass
class Images:
    root: Path
    layout: LayoutWriter
    single: dict[str, Any]
    index: dict[str, Any]
    children: list[dict[str, Any]]


def build_images(root: Path, seed: int = 1) -> Images:
    """A layout with ``single`` (3 layers) and ``multi`` (an index of two
    platform images that share a layer)."""
    rng = random.Random(seed)
    layout = LayoutWriter(root)
    single = layout.image([random_layer(rng, 40_000 + i, f"l{i}.bin") for i in range(3)])
    layout.tag(single, "single")
    shared = random_layer(rng, 30_000, "shared.bin")
    children = [layout.image([shared, random_layer(rng, 20_000, f"{arch}.bin")],
                             platform={"os": "linux", "architecture": arch})
                for arch in ("amd64", "arm64")]
    index = layout.index(children)
    layout.tag(index, "multi")
    layout.close()
    return Images(root, layout, single, index, children)


@pytest.fixture
def images(tmp_path: Path) -> Images:
    return build_images(tmp_path / "src")


@dataclass
class Archive:
    path: Path
    config: bytes
    layers: list[tuple[bytes, str]]  # (file as stored, media type)
    files: dict[str, bytes]


def docker_save(path: Path, repo_tag: str, seed: int = 7, *, modern: bool = False) -> Archive:
    """A tarball in ``docker save``'s legacy format: ``manifest.json``, the
    config as ``<hex>.json`` and ``<id>/layer.tar`` per layer (``modern``:
    Docker 25's ``blobs/sha256/<hex>`` names instead); the second layer is
    stored gzip'd (as some tools write them)."""
    rng = random.Random(seed)
    files = {"etc/hello.txt": b"hello from a docker archive\n",
             "bin/data": rng.randbytes(50_000)}
    tar1 = tar_of({"etc/hello.txt": files["etc/hello.txt"]})
    tar2 = tar_of({"bin/data": files["bin/data"]})
    stored = [(tar1, "application/vnd.docker.image.rootfs.diff.tar"),
              (gzip.compress(tar2, mtime=0), "application/vnd.docker.image.rootfs.diff.tar.gzip")]
    config = canonical_json({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(tar1), sha256(tar2)]}})
    config_name = sha256(config).split(":")[1] + ".json"
    if modern:
        config_name = "blobs/sha256/" + sha256(config).split(":")[1]
    members: dict[str, bytes] = {config_name: config}
    layer_names = []
    for i, (data, _) in enumerate(stored):
        layer_id = hashlib.sha256(f"layer{i}".encode()).hexdigest()
        name = f"blobs/sha256/{sha256(data).split(':')[1]}" if modern else \
            f"{layer_id}/layer.tar"
        members[name] = data
        layer_names.append(name)
    members["manifest.json"] = json.dumps([{"Config": config_name, "RepoTags": [repo_tag],
                                            "Layers": layer_names}]).encode()
    members["repositories"] = b"{}"
    path.write_bytes(tar_of(members))
    return Archive(path, config, stored, files)


# -- push, pull, copy against the local server ----------------------------------------
def test_push_and_pull_layout_round_trip_with_index(
        served: Served, images: Images, run, tmp_path: Path) -> None:
    host = served.host
    pushed = ok(run("push", f"{images.root}:single", f"{host}/cli/app:v1", "-q"))
    assert pushed.out.strip() == images.single["digest"]
    assert pushed.err == ""
    got = fetch(host, "/v2/cli/app/manifests/v1")
    assert got.headers["Docker-Content-Digest"] == images.single["digest"]
    assert got.body == images.layout.blobs[images.single["digest"]]

    # The index: children by digest before the index, every blob present.
    multi = ok(run("push", f"{images.root}:multi", f"{host}/cli/app:multi", "--json")).json()
    assert multi["digest"] == images.index["digest"]
    assert multi["mediaType"] == OCI_INDEX
    assert multi["manifests"] == 3
    # 2 configs, 2 own layers, 1 shared layer
    assert (multi["uploaded"], multi["skipped"], multi["mounted"]) == (5, 0, 0)
    for child in images.children:
        assert fetch(host, f"/v2/cli/app/manifests/{child['digest']}").body == \
            images.layout.blobs[child["digest"]]
    index_put = [i for i, s in enumerate(served.seen)
                 if s.method == "PUT" and s.path.endswith("/manifests/multi")]
    child_puts = [i for i, s in enumerate(served.seen) if s.method == "PUT"
                  and any(s.path.endswith(c["digest"]) for c in images.children)]
    assert len(index_put) == 1 and len(child_puts) == 2 and max(child_puts) < index_put[0]

    # Pushing again moves nothing: every blob is found by HEAD.
    again = ok(run("push", f"oci:{images.root}:multi", f"{host}/cli/app:multi", "--json"))
    assert (again.json()["uploaded"], again.json()["skipped"]) == (0, 5)

    # Pull into a fresh layout: same digests, every blob verified by the test.
    out = tmp_path / "pulled"
    for tag, top in [("v1", images.single), ("multi", images.index)]:
        pulled = ok(run("pull", f"{host}/cli/app:{tag}", out, "-q"))
        assert pulled.out.strip() == top["digest"]
        assert resolve(out, tag)["digest"] == top["digest"]
        assert closure(out, top["digest"]) == closure(images.root, top["digest"])
    assert json.loads((out / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}

    # Pull by digest into a named entry of another layout.
    by_digest = tmp_path / "by-digest"
    ok(run("pull", f"{host}/cli/app@{images.children[1]['digest']}", f"{by_digest}:arm",
           "-q"))
    assert resolve(by_digest, "arm")["digest"] == images.children[1]["digest"]
    assert closure(by_digest, images.children[1]["digest"]) == closure(
        images.root, images.children[1]["digest"])


def test_copy_mounts_within_a_registry_and_between_layouts(
        served: Served, images: Images, run, tmp_path: Path) -> None:
    host = served.host
    ok(run("push", f"{images.root}:multi", f"{host}/cli/src:multi", "-q"))
    before = len(served.seen)
    copied = ok(run("copy", f"{host}/cli/src:multi", f"{host}/cli/dst", "--json")).json()
    assert copied["digest"] == images.index["digest"]
    assert copied["tag"] == "multi"  # the source's tag, when the target names none
    assert (copied["mounted"], copied["uploaded"]) == (5, 0)
    requests = served.seen[before:]
    mounts = [s for s in requests if s.method == "POST" and "mount" in s.query]
    assert len(mounts) == 5 and all(s.status == 201 and s.query["from"] == ["cli/src"]
                                    for s in mounts)
    assert not [s for s in requests if s.method == "PATCH"
                or (s.method == "PUT" and "/blobs/uploads/" in s.path)]
    assert fetch(host, "/v2/cli/dst/manifests/multi").headers[
        "Docker-Content-Digest"] == images.index["digest"]

    # Layout to layout (no registry at all), and a layout to a registry digest.
    ok(run("cp", f"oci:{images.root}:single", f"oci:{tmp_path / 'copy'}:renamed", "-q"))
    assert closure(tmp_path / "copy", images.single["digest"]) == closure(
        images.root, images.single["digest"])
    assert resolve(tmp_path / "copy", "renamed")["digest"] == images.single["digest"]
    ok(run("copy", f"oci:{tmp_path / 'copy'}", f"{host}/cli/bydigest@{images.single['digest']}",
           "-q"))
    assert fetch(host, f"/v2/cli/bydigest/manifests/{images.single['digest']}").status == 200
    assert ok(run("tags", f"{host}/cli/bydigest")).out == ""  # pushed untagged
    # A digest that does not match what is copied is refused after the copy.
    wrong = ok(run("inspect", f"{host}/cli/dst:multi", "--json")).json()["digest"]
    mismatch = run("copy", f"oci:{images.root}:single", f"{host}/cli/other@{wrong}")
    assert mismatch.code == 4 and "digest mismatch" in mismatch.err
    assert fetch(host, f"/v2/cli/other/blobs/{images.single['digest']}", "HEAD").status == 404


def test_docker_archive_push_and_pull(served: Served, run, tmp_path: Path) -> None:
    host = served.host
    archive = docker_save(tmp_path / "image.tar", "example/app:1.0")
    pushed = ok(run("push", archive.path, f"{host}/cli/docker", "--json")).json()
    assert pushed["tag"] == "1.0"  # from the archive's RepoTags
    assert pushed["mediaType"] == DOCKER_MANIFEST
    got = fetch(host, "/v2/cli/docker/manifests/1.0")
    assert got.headers["Docker-Content-Digest"] == pushed["digest"] == sha256(got.body)
    assert got.headers["Content-Type"] == DOCKER_MANIFEST
    manifest = json.loads(got.body)
    assert manifest["config"] == {"mediaType": DOCKER_CONFIG, "size": len(archive.config),
                                  "digest": sha256(archive.config)}
    assert [(layer["digest"], layer["size"], layer["mediaType"]) for layer in
            manifest["layers"]] == [(sha256(data), len(data), media_type)
                                    for data, media_type in archive.layers]
    for data, _ in archive.layers:
        assert fetch(host, f"/v2/cli/docker/blobs/{sha256(data)}").body == data

    # The docker-archive: form, naming the image, to another tag.
    ok(run("copy", f"docker-archive:{archive.path}:example/app:1.0", f"{host}/cli/docker:v2",
           "-q"))
    assert fetch(host, "/v2/cli/docker/manifests/v2").body == got.body

    # Back out into a layout: the files of both layers come back.
    ok(run("pull", f"{host}/cli/docker:1.0", tmp_path / "out", "-q"))
    blobs = closure(tmp_path / "out", pushed["digest"])
    found: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(blobs[layer["digest"]]), mode="r:*") as tar:
            found.update({m.name: tar.extractfile(m).read() for m in tar.getmembers()})
    assert found == archive.files
    inspected = ok(run("inspect", f"docker-archive:{archive.path}")).json()
    assert inspected["digest"] == pushed["digest"]
    assert inspected["config"]["rootfs"]["diff_ids"] == json.loads(archive.config)[
        "rootfs"]["diff_ids"]

    # Docker 25+ names members blobs/sha256/<hex>: same image, same digest.
    modern = docker_save(tmp_path / "modern.tar", "example/app:1.0", modern=True)
    assert ok(run("push", modern.path, f"{host}/cli/modern", "-q")).out.strip() == \
        pushed["digest"]
    # A gzip'd archive cannot be read in place: a clear usage error.
    (tmp_path / "image.tar.gz").write_bytes(gzip.compress(archive.path.read_bytes()))
    zipped = run("push", tmp_path / "image.tar.gz", f"{host}/cli/zipped:v1")
    assert zipped.code == 2 and "gunzip it first" in zipped.err


# -- listing, inspecting, deleting ---------------------------------------------------------
def test_catalog_tags_inspect_rm(served: Served, images: Images, run) -> None:
    host = served.host
    for repo, tag in [("cli/b", "v1"), ("cli/a", "v1"), ("cli/a", "v2"), ("cli/a", "v3")]:
        ok(run("push", f"{images.root}:single", f"{host}/{repo}:{tag}", "-q"))
    assert ok(run("ls", host)).out.split() == ["cli/a", "cli/b"]
    assert ok(run("catalog", f"http://{host}", "-n", "1", "--json")).json() == {
        "repositories": ["cli/a", "cli/b"]}
    assert ok(run("tags", f"{host}/cli/a")).out.split() == ["v1", "v2", "v3"]
    paged = [s for s in served.seen if s.path == "/v2/cli/a/tags/list"]
    assert ok(run("tags", f"{host}/cli/a", "-n", "2", "--json")).json() == {
        "name": "cli/a", "tags": ["v1", "v2", "v3"]}
    assert len([s for s in served.seen if s.path == "/v2/cli/a/tags/list"]) == len(paged) + 2

    inspected = ok(run("inspect", f"{host}/cli/a:v2")).json()
    manifest_bytes = images.layout.blobs[images.single["digest"]]
    assert inspected["digest"] == images.single["digest"]
    assert inspected["mediaType"] == OCI_MANIFEST
    assert inspected["size"] == len(manifest_bytes)
    assert inspected["manifest"] == json.loads(manifest_bytes)
    config = json.loads(images.layout.blobs[inspected["manifest"]["config"]["digest"]])
    assert inspected["config"] == config
    raw = ok(run("inspect", f"{host}/cli/a:v2", "--raw"))
    assert raw.out.encode() == manifest_bytes
    ok(run("push", f"{images.root}:multi", f"{host}/cli/a:multi", "-q"))
    index = ok(run("inspect", f"{host}/cli/a:multi", "--json")).json()
    assert index["mediaType"] == OCI_INDEX and "config" not in index
    assert [m["digest"] for m in index["manifest"]["manifests"]] == [
        c["digest"] for c in images.children]
    assert ok(run("inspect", f"oci:{images.root}:single")).json()["config"] == config

    # rm a tag: only the tag goes; rm a digest: the manifest goes.
    assert ok(run("rm", f"{host}/cli/a:v3")).out.strip() == f"deleted {host}/cli/a:v3"
    assert ok(run("tags", f"{host}/cli/a")).out.split() == ["multi", "v1", "v2"]
    ok(run("rm", f"{host}/cli/b@{images.single['digest']}", "-q"))
    gone = run("inspect", f"{host}/cli/b:v1")
    assert gone.code == 1
    assert "MANIFEST_UNKNOWN: manifest unknown to registry" in gone.err


def test_registry_errors_exit_1_with_the_error_registrys_words(
        served: Served, images: Images, run) -> None:
    host = served.host
    ok(run("push", f"{images.root}:single", f"{host}/cli/app:v1", "-q"))
    missing = run("rm", f"{host}/cli/app:nope")
    assert missing.code == 1 and missing.out == ""
    assert missing.err.startswith("cargohold: error: MANIFEST_UNKNOWN: ")
    # the core's description of the code, and the request that failed
    assert "No manifest with this tag or digest in the repository" in missing.err
    assert "DELETE http://" in missing.err and "answered 404" in missing.err

    unknown = run("tags", f"{host}/cli/none", "--json")
    assert unknown.code == 1
    error = unknown.json()["error"]
    assert error["exit"] == 1 and [e["code"] for e in error["errors"]] == ["NAME_UNKNOWN"]
    assert "NAME_UNKNOWN: repository name not known to registry" in unknown.err

    pull = run("pull", f"{host}/cli/app:nope", "/nonexistent-cargohold-dir")
    assert pull.code == 1 and "MANIFEST_UNKNOWN" in pull.err
    assert not os.path.exists("/nonexistent-cargohold-dir")


def test_usage_transport_and_digest_exit_codes(
        served: Served, images: Images, run, tmp_path: Path) -> None:
    host = served.host
    # 2: usage errors
    assert run("frobnicate").code == 2
    assert run("push", images.root).code == 2
    assert run("rm", f"{host}/cli/app").code == 2  # neither tag nor digest
    assert run("push", tmp_path / "absent", f"{host}/cli/app:v1").code == 2
    bad_tag = run("pull", f"{host}/cli/app:-bad", tmp_path / "x")
    assert bad_tag.code == 2 and "bad tag" in bad_tag.err
    assert run("pull", f"{host}/Upper/Case:v1", tmp_path / "x").code == 2
    assert run("pull", f"{host}/cli/app@sha256:abc", tmp_path / "x").code == 2
    no_image = run("push", images.root, f"{host}/cli/app:v1")  # two images, none named
    assert no_image.code == 2 and "single" in no_image.err and "multi" in no_image.err
    assert run("tags", f"{host}/cli/app", "-j", "0").code == 2
    assert run("tags", f"{host}/cli/app", "--password-stdin").code == 2  # no -u

    # 3: nothing listens there
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{sock.getsockname()[1]}"
    refused = run("tags", f"{closed}/cli/app")
    assert refused.code == 3 and refused.err.startswith("cargohold: error: GET http://")

    # 4: a layout blob whose bytes no longer match its name (same size)
    layer = json.loads(images.layout.blobs[images.single["digest"]])["layers"][0]["digest"]
    path = images.root / "blobs" / "sha256" / layer.split(":")[1]
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    pushed = run("push", f"{images.root}:single", f"{host}/cli/corrupt:v1")
    assert pushed.code == 4 and "digest mismatch" in pushed.err
    assert fetch(host, "/v2/cli/corrupt/manifests/v1").status == 404
    copied = run("copy", f"oci:{images.root}:single", f"oci:{tmp_path / 'copy'}")
    assert copied.code == 4
    assert not (tmp_path / "copy" / "blobs" / "sha256" / layer.split(":")[1]).exists()


def test_progress_bar_only_on_a_terminal(
        served: Served, images: Images, run, monkeypatch: pytest.MonkeyPatch) -> None:
    host = served.host
    quiet_when_piped = ok(run("push", f"{images.root}:single", f"{host}/cli/p:v1"))
    assert "%" not in quiet_when_piped.err and "4 blobs copied" in quiet_when_piped.err
    monkeypatch.setattr(cli, "_stderr_is_tty", lambda: True)
    shown = ok(run("push", f"{images.root}:multi", f"{host}/cli/p:multi"))
    assert "100%" in shown.err and "(5 blobs)" in shown.err
    assert shown.out.strip() == images.index["digest"]
    assert ok(run("push", f"{images.root}:multi", f"{host}/cli/q:multi", "-q")).err == ""
    assert "%" not in ok(run("push", f"{images.root}:multi", f"{host}/cli/r:multi",
                             "--json")).err


# -- login ---------------------------------------------------------------------------------
def guarded(app, username: str, password: str):
    """The registry behind HTTP Basic auth (what a proxy in front would do)."""
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def handle(request: Request) -> Response:
        if request.headers.get("Authorization") != expected:
            request.body.read()
            return Response.json(401, {"errors": [{
                "code": "UNAUTHORIZED", "message": "authentication required", "detail": {}}]},
                {"WWW-Authenticate": 'Basic realm="cargohold-test"'})
        return app(request)

    return handle


def test_login_checks_and_stores_credentials(
        app, serve, images: Images, run, private_config: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    host = serve(guarded(app, "alice", "s3cret:pw")).host
    config = private_config / "config.json"

    def stdin(text: str) -> None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))

    anonymous = run("tags", f"{host}/cli/app")
    assert anonymous.code == 3 and "authentication required" in anonymous.err

    stdin("wrong\n")
    refused = run("login", host, "-u", "alice", "--password-stdin")
    assert refused.code == 3 and "refused" in refused.err
    assert not config.exists()

    private_config.mkdir()
    config.write_text(json.dumps({"auths": {"other.example": {"auth": "eDp5"}},
                                  "psFormat": "table"}))
    stdin("s3cret:pw\n")
    logged_in = ok(run("login", host, "-u", "alice", "--password-stdin"))
    assert logged_in.out.strip() == "Login Succeeded"
    assert "s3cret" not in logged_in.out + logged_in.err
    stored = json.loads(config.read_text())
    assert stored["psFormat"] == "table"
    assert stored["auths"]["other.example"] == {"auth": "eDp5"}
    assert base64.b64decode(stored["auths"][host]["auth"]) == b"alice:s3cret:pw"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    # Later commands find the credentials in the docker config.
    ok(run("push", f"{images.root}:single", f"{host}/cli/app:v1", "-q"))
    assert ok(run("tags", f"{host}/cli/app")).out.split() == ["v1"]
    # -u with --password-stdin overrides them.
    stdin("nope\n")
    assert run("tags", f"{host}/cli/app", "-u", "alice", "--password-stdin").code == 3
    stdin("s3cret:pw\n")
    ok(run("tags", f"{host}/cli/app", "-u", "alice", "--password-stdin"))


def test_login_to_an_open_registry_writes_a_private_config(
        served: Served, run, private_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("pa55word"))
    result = ok(run("login", served.host, "-u", "bob", "--password-stdin", "--json")).json()
    config = private_config / "config.json"
    assert result == {"registry": served.host, "username": "bob", "config": str(config)}
    assert json.loads(config.read_text()) == {"auths": {served.host: {
        "auth": base64.b64encode(b"bob:pa55word").decode()}}}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(private_config.stat().st_mode) == 0o700
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert run("login", served.host, "--password-stdin").code == 2  # no -u
    assert run("login", served.host, "-u", "bob", "--password-stdin").code == 2  # empty


# -- verify is delegated --------------------------------------------------------------------
def test_verify_passes_everything_after_it_to_the_verify_module(
        run, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        calls.append(argv)
        if "--bad" in argv:
            raise SystemExit(2)  # what its argparse does on a usage error
        return 7

    fake = types.ModuleType("chalicelib.client.verify")
    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "chalicelib.client.verify", fake)
    monkeypatch.setattr(chalicelib.client, "verify", fake, raising=False)
    assert run("verify", "http://127.0.0.1:1", "--json", "-x").code == 7
    assert run("-q", "verify", "http://127.0.0.1:2").code == 7
    assert run("verify", "--bad").code == 2
    assert calls == [["http://127.0.0.1:1", "--json", "-x"], ["http://127.0.0.1:2"], ["--bad"]]


# -- the command as installed -----------------------------------------------------------------
def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
            "DOCKER_CONFIG": str(home / ".docker"), "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT)}


def test_module_entry_point_in_a_subprocess(served: Served, images: Images,
                                            tmp_path: Path) -> None:
    host = served.host
    command = [sys.executable, "-m", "chalicelib.cli"]
    pushed = subprocess.run([*command, "push", f"{images.root}:multi", f"{host}/cli/sub:v1",
                             "--json"], env=_env(tmp_path), cwd=tmp_path, capture_output=True,
                            timeout=120, check=False)
    assert pushed.returncode == 0, pushed.stderr.decode()
    assert json.loads(pushed.stdout)["digest"] == images.index["digest"]
    assert pushed.stderr == b""  # not a terminal: no bar; --json: no summary
    listed = subprocess.run([*command, "tags", f"{host}/cli/sub"], env=_env(tmp_path),
                            capture_output=True, timeout=60, check=False)
    assert (listed.returncode, listed.stdout) == (0, b"v1\n")
    missing = subprocess.run([*command, "rm", f"{host}/cli/sub:nope"], env=_env(tmp_path),
                             capture_output=True, timeout=60, check=False)
    assert missing.returncode == 1 and b"MANIFEST_UNKNOWN" in missing.stderr
    usage = subprocess.run([*command, "push"], env=_env(tmp_path), capture_output=True,
                           timeout=60, check=False)
    assert usage.returncode == 2 and b"usage: cargohold" in usage.stderr


def test_installed_console_script(served: Served, images: Images, tmp_path: Path) -> None:
    script = shutil.which("cargohold", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("cargohold is not installed next to this python (`make venv` does that)")
    env = _env(tmp_path)
    del env["PYTHONPATH"]
    pushed = subprocess.run([script, "push", f"{images.root}:single",
                             f"{served.host}/cli/script:v1", "-q"], env=env, cwd=tmp_path,
                            capture_output=True, timeout=120, check=False)
    assert pushed.returncode == 0, pushed.stderr.decode()
    assert pushed.stdout.decode().strip() == images.single["digest"]


# -- the distribution registry ------------------------------------------------------------------
def test_push_pull_copy_tags_inspect_against_distribution(
        distribution: str, served: Served, images: Images, run,  # noqa: F811
        tmp_path: Path) -> None:
    peer = distribution
    for tag in ("single", "multi"):
        pushed = ok(run("push", f"{images.root}:{tag}", f"{peer}/cli/app:{tag}", "--json"))
        top = images.single if tag == "single" else images.index
        assert pushed.json()["digest"] == top["digest"]
        got = fetch(peer, f"/v2/cli/app/manifests/{tag}")
        assert got.headers["Docker-Content-Digest"] == top["digest"]
        assert got.body == images.layout.blobs[top["digest"]]
    assert ok(run("tags", f"{peer}/cli/app")).out.split() == ["multi", "single"]
    inspected = ok(run("inspect", f"{peer}/cli/app:single")).json()
    assert inspected["digest"] == images.single["digest"]
    assert inspected["config"]["rootfs"]["type"] == "layers"

    out = tmp_path / "from-distribution"
    ok(run("pull", f"{peer}/cli/app:multi", out, "-q"))
    assert closure(out, images.index["digest"]) == closure(images.root, images.index["digest"])

    # distribution → cargohold and back, streamed registry to registry.
    copied = ok(run("copy", f"{peer}/cli/app:multi", f"{served.host}/cli/copied",
                    "--json")).json()
    assert (copied["digest"], copied["uploaded"], copied["mounted"]) == (
        images.index["digest"], 5, 0)
    assert fetch(served.host, "/v2/cli/copied/manifests/multi").body == \
        images.layout.blobs[images.index["digest"]]
    ok(run("copy", f"{served.host}/cli/copied:multi", f"{peer}/cli/back:v9", "-q"))
    assert fetch(peer, "/v2/cli/back/manifests/v9").headers[
        "Docker-Content-Digest"] == images.index["digest"]
    # within distribution, blobs are mounted from the source repository
    mounted = ok(run("copy", f"{peer}/cli/back:v9", f"{peer}/cli/mounted:v1", "--json")).json()
    assert (mounted["mounted"], mounted["uploaded"]) == (5, 0)
    ok(run("rm", f"{peer}/cli/mounted@{images.index['digest']}", "-q"))
    assert run("inspect", f"{peer}/cli/mounted@{images.index['digest']}").code == 1


# -- crane interop ----------------------------------------------------------------------------
def crane(tmp_path: Path, *args: str | Path) -> str:
    proc = subprocess.run([tool("crane"), *[str(a) for a in args]], env=_env(tmp_path),
                          capture_output=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


@pytest.mark.clients
def test_crane_reads_what_the_cli_pushed_and_the_cli_reads_what_crane_pushed(
        served: Served, images: Images, run, tmp_path: Path) -> None:
    host = served.host
    ok(run("push", f"{images.root}:multi", f"{host}/cli/interop:multi", "-q"))
    ok(run("push", f"{images.root}:single", f"{host}/cli/interop:single", "-q"))
    assert crane(tmp_path, "digest", "--insecure",
                 f"{host}/cli/interop:multi").strip() == images.index["digest"]
    assert crane(tmp_path, "manifest", "--insecure", f"{host}/cli/interop:single").encode() \
        == images.layout.blobs[images.single["digest"]]
    crane(tmp_path, "pull", "--insecure", "--format", "oci", f"{host}/cli/interop:single",
          tmp_path / "crane-pulled")
    assert resolve(tmp_path / "crane-pulled")["digest"] == images.single["digest"]
    assert closure(tmp_path / "crane-pulled", images.single["digest"]) == closure(
        images.root, images.single["digest"])

    # A docker archive pushed by the CLI is one crane can read back.
    archive = docker_save(tmp_path / "image.tar", "example/app:1.0")
    digest = ok(run("push", archive.path, f"{host}/cli/archive:1.0", "-q")).out.strip()
    assert crane(tmp_path, "digest", "--insecure", f"{host}/cli/archive:1.0").strip() == digest
    assert crane(tmp_path, "config", "--insecure", f"{host}/cli/archive:1.0").encode() == \
        archive.config

    # crane builds an image (gzips our tar) on an empty base; the CLI pulls it.
    files = {"etc/crane.txt": b"appended by crane\n", "bin/tool": random.Random(9).randbytes(
        20_000)}
    (tmp_path / "layer.tar").write_bytes(tar_of(files))
    crane(tmp_path, "append", "--insecure", "-f", tmp_path / "layer.tar",
          "-t", f"{host}/crane/made:v1")
    crane_digest = crane(tmp_path, "digest", "--insecure", f"{host}/crane/made:v1").strip()
    pulled = ok(run("pull", f"{host}/crane/made:v1", tmp_path / "cli-pulled", "-q"))
    assert pulled.out.strip() == crane_digest
    blobs = closure(tmp_path / "cli-pulled", crane_digest)  # verifies every blob
    manifest = json.loads(blobs[crane_digest])
    (layer,) = manifest["layers"]
    with tarfile.open(fileobj=io.BytesIO(blobs[layer["digest"]]), mode="r:*") as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar.getmembers()} == files
    # and the CLI's copy of crane's image keeps crane's digest
    ok(run("copy", f"oci:{tmp_path / 'cli-pulled'}:v1", f"{host}/cli/recopied:v1", "-q"))
    assert crane(tmp_path, "digest", "--insecure",
                 f"{host}/cli/recopied:v1").strip() == crane_digest


# -- registry to registry through the direct-to-S3 extension (ranged reads) ------------------------
def test_registry_to_registry_copy_streams_ranged_parts(
        settings: Settings, served: Served, serve, run, tmp_path: Path) -> None:
    """A 20 MiB layer copied into a function-limits registry goes through the
    direct-to-S3 extension in 16 MiB parts: part 2 is read from the source
    with a ranged GET, never spooled to disk."""
    limited = serve(local_app(replace(settings, function_limits=True, part_size=5 * MIB)))
    rng = random.Random(11)
    layout = LayoutWriter(tmp_path / "src")
    big = layout.blob(rng.randbytes(20 * MIB), "application/vnd.oci.image.layer.v1.tar")
    config = layout.blob(canonical_json({"architecture": "amd64", "os": "linux"}),
                         "application/vnd.oci.image.config.v1+json")
    image = layout.blob(canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                        "config": config, "layers": [big]}), OCI_MANIFEST)
    layout.tag(image, "v1")
    layout.close()
    ok(run("push", f"{tmp_path / 'src'}:v1", f"{served.host}/cli/big:v1", "-q",
           "--no-extensions"))
    before = len(served.seen)
    # (both servers share one storage: the copy goes to another repository)
    ok(run("copy", f"{served.host}/cli/big:v1", f"{limited.host}/cli/copy:v1", "-q"))
    gets = [s for s in served.seen[before:] if s.method == "GET" and big["digest"] in s.path]
    assert sorted(s.range or "" for s in gets) == ["", f"bytes={16 * MIB}-{20 * MIB - 1}"]
    assert [s.status for s in limited.requests("POST", "/_cargohold/uploads/")] == [200]
    assert not limited.requests("PATCH")
    got = fetch(limited.host, f"/v2/cli/copy/blobs/{big['digest']}", "HEAD")
    assert got.status == 200 and got.headers["Docker-Content-Digest"] == big["digest"]
    assert int(got.headers["Content-Length"]) == 20 * MIB


# -- a 200 MiB layer into a function-limits registry ---------------------------------------------
def write_random_file(path: Path, size: int) -> str:
    """``size`` random bytes streamed to disk (never in memory); their digest."""
    hasher = hashlib.sha256()
    with path.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(MIB, left))
            hasher.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    return "sha256:" + hasher.hexdigest()


def test_push_200_mib_layer_through_the_extension_and_through_chunks(
        settings: Settings, serve, run, tmp_path: Path) -> None:
    limited = serve(local_app(replace(settings, function_limits=True, part_size=5 * MIB)))
    size = 200 * MIB
    root = tmp_path / "big"
    layout = LayoutWriter(root)
    blob_dir = root / "blobs" / "sha256"
    temp = blob_dir / "layer.tmp"
    digest = write_random_file(temp, size)
    temp.rename(blob_dir / digest.split(":")[1])
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
             "size": size}
    config = layout.blob(canonical_json({"architecture": "amd64", "os": "linux",
                                         "rootfs": {"type": "layers", "diff_ids": [digest]}}),
                         "application/vnd.oci.image.config.v1+json")
    image = layout.blob(canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                                        "config": config, "layers": [layer]}), OCI_MANIFEST)
    layout.tag(image, "v1")
    layout.close()
    host = limited.host

    started = time.monotonic()
    direct = ok(run("push", f"{root}:v1", f"{host}/big/direct:v1", "--json")).json()
    assert direct["digest"] == image["digest"]
    parts = limited.requests("POST", "/big/direct/_cargohold/uploads/")
    assert [s.status for s in parts] == [200]
    assert parts[0].query["count"] == [str(-(-size // (16 * MIB)))]
    assert not limited.requests("PATCH", "/big/direct/")
    direct_seconds = time.monotonic() - started

    started = time.monotonic()
    chunked = ok(run("push", f"{root}:v1", f"{host}/big/chunked:v1", "--no-extensions",
                     "--json")).json()
    assert chunked["digest"] == image["digest"] and chunked["uploaded"] == 2
    patches = limited.requests("PATCH", "/big/chunked/")
    assert len(patches) >= 50 and all(s.status == 202 for s in patches)
    assert all((s.content_length or 0) <= 4 * MIB for s in patches)
    assert sum(s.content_length or 0 for s in patches) == size
    assert not limited.requests("POST", "/big/chunked/_cargohold/")
    chunked_seconds = time.monotonic() - started

    for repo in ("direct", "chunked"):
        got = fetch(host, f"/v2/big/{repo}/blobs/{digest}", "HEAD")
        assert got.status == 200 and int(got.headers["Content-Length"]) == size
        assert fetch(host, f"/v2/big/{repo}/manifests/v1").headers[
            "Docker-Content-Digest"] == image["digest"]
    print(f"200 MiB push: direct {direct_seconds:.1f} s, chunked {chunked_seconds:.1f} s")
