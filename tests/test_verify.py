"""``cargohold verify`` against cargohold (every check must pass) and the
CNCF distribution registry (its deviations must be exactly the ones
``docs/verify.md`` records), plus the suite's outputs and cleanup.

The suite's sensitivity is tested too: an in-process cargohold with a few
protocol headers stripped must fail exactly the checks that look at them.
"""

from __future__ import annotations

import base64
import io
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chalicelib.client import AppTransport, RegistryClient, verify
from chalicelib.client.verify import CHECKS, FAIL, PASS, SKIPPED, UNSUPPORTED, Verifier
from chalicelib.core.http import Request, Response
from chalicelib.server import serve_in_thread

from .conftest import ROOT
from .distribution import distribution  # noqa: F401 - fixture

DOC = ROOT / "docs" / "verify.md"
ANY = tuple(range(100, 600))


def doc_table(heading: str) -> set[str]:
    """The check ids in the first column of the table under ``heading``."""
    text = DOC.read_text()
    start = text.index(heading)
    end = text.find("\n#", start + len(heading))
    section = text[start:end if end != -1 else None]
    return set(re.findall(r"^\| `([a-z0-9.-]+)` \|", section, re.MULTILINE))


def by_status(results: list[verify.CheckResult], status: str) -> set[str]:
    return {r.id for r in results if r.status == status}


def report(results: list[verify.CheckResult]) -> str:
    return "\n".join(verify.format_line(r) for r in results if r.status != PASS)


def repos_under(client: RegistryClient, prefix: str) -> list[str]:
    return [name for name in client.catalog(page_size=100) if name.startswith(prefix + "/")]


def assert_no_tags(client: RegistryClient, repos: list[str]) -> None:
    for repo in repos:
        reply = client.request("GET", f"/v2/{repo}/tags/list", expect=ANY)
        body = json.loads(reply.read() or b"{}")
        if reply.status == 404:
            assert [e["code"] for e in body["errors"]] == ["NAME_UNKNOWN"], body
        else:
            assert reply.status == 200 and body.get("tags") in ([], None), (repo, body)


# -- cargohold ----------------------------------------------------------------
def test_cargohold_passes_every_check_and_cleans_up(server: str) -> None:
    client = RegistryClient(f"http://{server}")
    prefix = "verify-test/cargohold"
    verifier = Verifier(client, prefix)
    results = verifier.run()
    assert [r.id for r in results] == list(CHECKS) + ["cleanup"]
    assert by_status(results, PASS) == set(CHECKS) | {"cleanup"}, report(results)
    assert verify.summary(results) == f"verify: {len(CHECKS) + 1} passed, 0 failed, " \
                                      "0 unsupported"
    # cleanup: no tags, manifests or blob links left under the prefix
    assert verifier.blobs and verifier.manifests and verifier.tags
    assert_no_tags(client, sorted({repo for repo, _ in verifier.manifests + verifier.blobs}))
    assert_no_tags(client, repos_under(client, prefix))
    for repo, digest in verifier.blobs:
        assert client.blob_size(repo, digest) is None, (repo, digest)
    for repo, digest in verifier.manifests:
        assert client.manifest_digest(repo, digest) is None, (repo, digest)


def test_cli_only_json_and_junit(server: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    junit = tmp_path / "verify.xml"
    code = verify.main([server, "--only", "end-1", "--only", "end-8.n,end-8.n-*,grammar.tag-*",
                        "--json", "--junit", str(junit)])
    assert code == 0
    out, err = capsys.readouterr()
    results = json.loads(out)
    ids = [r["id"] for r in results]
    # "end-1" is the prefix end-1.*, never end-10/end-13/end-14
    assert ids == ["end-1.status", "end-1.version-header", "end-8.n", "end-8.n-zero",
                   "end-8.n-invalid", "grammar.tag-invalid", "grammar.tag-too-long", "cleanup"]
    assert all(r["status"] == PASS and r["level"] and r["rule"] for r in results), results
    assert err.strip() == "verify: 8 passed, 0 failed, 0 unsupported"
    suite = ET.parse(junit).getroot().find("testsuite")  # noqa: S314 - our own file
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("8", "0", "0")
    assert [case.get("name") for case in suite.iter("testcase")] == ids


def test_human_report_and_keep(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = verify.main([f"http://{server}", "--only", "end-2.head", "--keep",
                        "--repo", "verify-test/keep"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("PASS  end-2.head ")
    assert lines[1].startswith("SKIP  cleanup ") and "--keep" in lines[1]
    assert lines[-1] == "verify: 1 passed, 0 failed, 0 unsupported, 1 skipped"
    # --keep left the pushed blob in place
    client = RegistryClient(f"http://{server}")
    assert "verify-test/keep/blobs" in client.catalog()


def strip_headers(app: Callable[[Request], Response], names: set[str],
                  statuses: dict[int, int]) -> Callable[[Request], Response]:
    """cargohold with some response headers removed and some statuses changed."""

    def broken(request: Request) -> Response:
        response = app(request)
        response.headers = {k: v for k, v in response.headers.items()
                            if k.lower() not in names}
        response.status = statuses.get(response.status, response.status)
        return response

    return broken


def test_the_suite_notices_a_broken_registry(app) -> None:
    """Without Docker-Content-Digest, OCI-Filters-Applied and Link, and with
    413 turned into 400, exactly the checks about them fail."""
    broken = strip_headers(app, {"docker-content-digest", "oci-filters-applied", "link"},
                           {413: 400})
    client = RegistryClient("http://registry.local", transport=AppTransport(broken))
    results = verify.run_checks(client, "verify-test/broken")
    assert by_status(results, FAIL) == {
        "end-6.digest-header", "end-2.head", "end-2.get", "end-7.digest-header",
        "end-3.digest-header", "end-3.head", "end-7.put-digest", "manifest.too-large",
        "end-12.filter", "end-8.link", "catalog.paginate",
    }, report(results)
    assert not by_status(results, SKIPPED) | by_status(results, UNSUPPORTED), report(results)
    failed = {r.id: r.message for r in results if r.status == FAIL}
    assert failed["manifest.too-large"].startswith("expected 413, got 400")
    assert "no Docker-Content-Digest header" in failed["end-2.head"]


@pytest.fixture
def basic_auth_server(app) -> Iterator[str]:
    """cargohold behind HTTP Basic auth (alice / s3cret), on a free loopback port."""
    expected = "Basic " + base64.b64encode(b"alice:s3cret").decode()

    def guarded(request: Request) -> Response:
        if request.headers.get("Authorization") != expected:
            return Response(401, {"WWW-Authenticate": 'Basic realm="verify-test"',
                                  "Content-Type": "application/json"},
                            b'{"errors":[{"code":"UNAUTHORIZED","message":"auth"}]}')
        return app(request)

    httpd, thread = serve_in_thread(guarded)
    host, port = httpd.server_address[:2]
    yield f"{host}:{port}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


def test_credentials_from_password_stdin(basic_auth_server: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    argv = [basic_auth_server, "--only", "end-1,end-2.head", "--json"]
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert verify.main(argv + ["-u", "alice", "--password-stdin"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert {r["status"] for r in results} == {PASS}, results
    # the same run without credentials fails every check instead of passing
    monkeypatch.setenv("DOCKER_CONFIG", "/nonexistent")
    monkeypatch.delenv("CARGOHOLD_USERNAME", raising=False)
    assert verify.main(argv) == 1
    results = json.loads(capsys.readouterr().out)
    assert results[0]["status"] == FAIL and "authentication required" in results[0]["message"]
    assert all(r["status"] == SKIPPED and "cannot use the registry" in r["message"]
               for r in results[2:-1]), results


def test_registry_url_and_arguments() -> None:
    assert verify.normalise_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert verify.normalise_url("localhost:5000/") == "http://localhost:5000"
    assert verify.normalise_url("registry.example.com") == "https://registry.example.com"
    assert verify.normalise_url("HTTP://10.0.0.1:80") == "HTTP://10.0.0.1:80"
    with pytest.raises(ValueError, match="scheme"):
        verify.normalise_url("ftp://example.com")
    for argv in (["127.0.0.1:1", "--password-stdin"], ["127.0.0.1:1", "--repo", "Bad/Name"],
                 []):
        with pytest.raises(SystemExit) as exit_info:
            verify.main(argv)
        assert exit_info.value.code == 2


def test_every_check_is_documented() -> None:
    assert doc_table("## The checks") == set(CHECKS)
    for info in CHECKS.values():
        assert info.level in (verify.MUST, verify.SHOULD, verify.MAY, verify.CHECKLIST)
        assert info.rule and info.title


# -- distribution -----------------------------------------------------------------
def test_distribution_deviations_are_the_documented_ones(
        distribution: str, tmp_path: Path,  # noqa: F811 - the fixture
        capsys: pytest.CaptureFixture[str]) -> None:
    prefix = "verify-test/distribution"
    junit = tmp_path / "verify.xml"
    code = verify.main([distribution, "--repo", prefix, "--json", "--junit", str(junit)])
    out, err = capsys.readouterr()
    results = [verify.CheckResult(**r) for r in json.loads(out)]
    assert code == 1
    assert [r.id for r in results] == list(CHECKS) + ["cleanup"]

    deviations = doc_table("### Where distribution v3.1.2 deviates")
    unsupported = doc_table("### Optional features distribution v3.1.2 lacks")
    assert by_status(results, FAIL) == deviations, report(results)
    assert by_status(results, UNSUPPORTED) == unsupported, report(results)
    assert not by_status(results, SKIPPED), report(results)
    assert {CHECKS[i].level for i in deviations} <= {verify.SHOULD, verify.CHECKLIST}
    passed = len(CHECKS) + 1 - len(deviations) - len(unsupported)
    assert err.strip() == (f"verify: {passed} passed, {len(deviations)} failed, "
                           f"{len(unsupported)} unsupported")

    suite = ET.parse(junit).getroot().find("testsuite")  # noqa: S314 - our own file
    assert suite is not None
    assert suite.get("tests") == str(len(results))
    assert suite.get("failures") == str(len(deviations))
    assert suite.get("skipped") == str(len(unsupported))
    failures = {case.get("name"): case.find("failure") for case in suite.iter("testcase")}
    assert {name for name, failure in failures.items() if failure is not None} == deviations
    message = failures["manifest.too-large"].get("message")  # type: ignore[union-attr]
    assert message == "expected 413, got 400 MANIFEST_INVALID"

    # cleanup: distribution cannot delete repositories, so the ones that held a
    # manifest stay in the catalog, but with no tags left in any of them
    cleanup = next(r for r in results if r.id == "cleanup")
    assert cleanup.status == PASS, cleanup.message
    client = RegistryClient(f"http://{distribution}")
    left = repos_under(client, prefix)
    assert left == [f"{prefix}/catalog", f"{prefix}/images", f"{prefix}/tags"]
    assert_no_tags(client, left + [f"{prefix}/blobs", f"{prefix}/mount"])
