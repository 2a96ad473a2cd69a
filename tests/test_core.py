"""The protocol core on its own: route table, URL building, error registry,
grammar and the generated API document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chalicelib.core import apidoc, errors, routes
from chalicelib.core.errors import RegistryError
from chalicelib.core.grammar import (
    parse_byte_range,
    parse_content_range,
    parse_digest,
    parse_page_size,
    validate_name,
    validate_tag,
)
from chalicelib.core.manifests import accepts

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("path", "route_id", "params"), [
    ("/v2/", "base", {}),
    ("/v2", "base", {}),
    ("/v2/_catalog", "catalog", {}),
    ("/v2/foo/tags/list", "tags", {"name": "foo"}),
    ("/v2/foo/manifests/latest", "manifest", {"name": "foo", "reference": "latest"}),
    ("/v2/foo/manifests/manifests/tags", "manifest",
     {"name": "foo/manifests", "reference": "tags"}),
    ("/v2/foo/bar/tags/list/manifests/x", "manifest",
     {"name": "foo/bar/tags/list", "reference": "x"}),
    ("/v2/a/blobs/uploads/", "uploads", {"name": "a"}),
    ("/v2/a/blobs/uploads", "uploads", {"name": "a"}),
    ("/v2/a/blobs/uploads/abc", "upload", {"name": "a", "session": "abc"}),
    ("/v2/blobs/blobs/uploads/", "uploads", {"name": "blobs"}),
    ("/v2/a/b/c/d/e/blobs/sha256:00", "blob", {"name": "a/b/c/d/e", "digest": "sha256:00"}),
    ("/v2/x/referrers/sha256:00", "referrers", {"name": "x", "digest": "sha256:00"}),
])
def test_routes_match_from_the_right(path: str, route_id: str, params: dict) -> None:
    found = routes.match(path)
    assert found.route.id == route_id
    assert found.params == params


@pytest.mark.parametrize("path", [
    "/v2/../etc/manifests/x", "/v2/a/../b/tags/list", "/v2/A/tags/list",
    "/v2/a//b/tags/list", "/v2/%2e%2e/tags/list", "/v2/" + "a" * 256 + "/tags/list",
    "/v2/-a/tags/list", "/v2/a-/tags/list",
])
def test_bad_names_are_rejected_by_the_router(path: str) -> None:
    with pytest.raises(RegistryError) as caught:
        routes.match(path)
    assert caught.value.errors[0][0] is errors.NAME_INVALID


@pytest.mark.parametrize("path", ["/v3/", "/v2/a/unknown", "/v2/a/tags", "/v2/_catalog/x",
                                  "/other"])
def test_unknown_paths_are_404(path: str) -> None:
    with pytest.raises(RegistryError) as caught:
        routes.match(path)
    assert caught.value.status == 404


def test_url_for_round_trips_through_match() -> None:
    cases = [("manifest", {"name": "a/b", "reference": "v1"}),
             ("blob", {"name": "x/y/z", "digest": "sha256:" + "a" * 64}),
             ("upload", {"name": "n", "session": "id-1"}),
             ("uploads", {"name": "n/m"}), ("tags", {"name": "t"}),
             ("referrers", {"name": "r", "digest": "sha256:" + "b" * 64}),
             ("catalog", {}), ("base", {})]
    for route_id, params in cases:
        found = routes.match(routes.url_for(route_id, **params))
        assert found.route.id == route_id
        assert found.params == params


def test_every_route_operation_has_a_handler(settings) -> None:
    from chalicelib.registry.service import Registry

    registry = Registry(settings)
    declared = {(r.id, op.method) for r in routes.ROUTES for op in r.operations}
    assert declared == set(registry.handlers)


@pytest.mark.parametrize("code", sorted(errors.REGISTRY))
def test_every_error_round_trips_through_json(code: str) -> None:
    error = RegistryError(errors.REGISTRY[code], {"why": code})
    wire = json.loads(errors.envelope_bytes(error))
    parsed = errors.parse_envelope(json.dumps(wire))
    assert len(parsed) == 1
    assert set(parsed[0]) == {"code", "message", "detail"}
    assert parsed[0]["detail"] == {"why": code}
    assert errors.lookup(parsed[0]["code"]).status in (error.status, 400)
    assert parsed[0]["message"] == errors.REGISTRY[code].message


def test_multiple_errors_share_one_envelope() -> None:
    error = RegistryError(errors.MANIFEST_BLOB_UNKNOWN, {"digest": "a"})
    error.add(errors.MANIFEST_BLOB_UNKNOWN, {"digest": "b"})
    parsed = errors.parse_envelope(errors.envelope_bytes(error))
    assert [e["detail"]["digest"] for e in parsed] == ["a", "b"]


def test_parse_envelope_tolerates_garbage() -> None:
    assert errors.parse_envelope(b"not json") == []
    assert errors.parse_envelope(b'{"errors": "x"}') == []
    assert errors.parse_envelope(b"[]") == []


def test_api_document_is_current() -> None:
    committed = (ROOT / "docs" / "api.md").read_text()
    assert committed == apidoc.render(), "docs/api.md is stale: run `make docs`"


def test_names_and_tags() -> None:
    assert validate_name("a" * 255) == "a" * 255
    assert validate_name("a.b_c__d-e---f/g") == "a.b_c__d-e---f/g"
    for bad in ["a" * 256, "", "a/", "/a", "a..b", "a___b", "A", "a b"]:
        with pytest.raises(RegistryError):
            validate_name(bad)
    assert validate_tag("_x." + "a" * 125) == "_x." + "a" * 125
    for bad in ["a" * 129, ".a", "-a", "a/b", "a:b", ""]:
        with pytest.raises(RegistryError):
            validate_tag(bad)


def test_digests() -> None:
    assert str(parse_digest("sha256:" + "a" * 64)) == "sha256:" + "a" * 64
    assert parse_digest("sha512:" + "0" * 128).algorithm == "sha512"
    for bad, code in [("sha256:" + "A" * 64, "DIGEST_INVALID"), ("sha256:abc", "DIGEST_INVALID"),
                      ("nocolon", "DIGEST_INVALID"), ("md5:" + "a" * 32, "UNSUPPORTED")]:
        with pytest.raises(RegistryError) as caught:
            parse_digest(bad)
        assert caught.value.errors[0][0].code == code


def test_ranges() -> None:
    assert parse_content_range("0-9") == (0, 9)
    assert parse_content_range("bytes 5-9") == (5, 9)
    for bad in ["9-0", "a-b", "-5", "0-", "1-2-3"]:
        with pytest.raises(RegistryError) as caught:
            parse_content_range(bad)
        assert caught.value.status == 416
    assert parse_byte_range("bytes=0-9", 100) == (0, 9)
    assert parse_byte_range("bytes=90-", 100) == (90, 99)
    assert parse_byte_range("bytes=-10", 100) == (90, 99)
    assert parse_byte_range("bytes=50-500", 100) == (50, 99)
    for bad in ["bytes=100-", "bytes=5-1", "bytes=-0", "items=0-1", "bytes=0-1,3-4", "bytes=-"]:
        with pytest.raises(RegistryError) as caught:
            parse_byte_range(bad, 100)
        assert caught.value.headers["Content-Range"] == "bytes */100"


def test_page_size() -> None:
    assert parse_page_size(None, 100) is None
    assert parse_page_size("0", 100) == 0
    assert parse_page_size("10", 100) == 10
    assert parse_page_size("100", 100) == 100
    for bad in ["-1", "x", "1e3", "", " 1", "9" * 40, "101", "999999999999999999"]:
        with pytest.raises(RegistryError) as caught:
            parse_page_size(bad, 100)
        assert caught.value.errors[0][0] is errors.PAGINATION_NUMBER_INVALID


def test_content_negotiation() -> None:
    oci = "application/vnd.oci.image.manifest.v1+json"
    assert accepts([], oci)
    assert accepts(["*/*"], oci)
    assert accepts([f"application/json, {oci};q=0.5"], oci)
    assert accepts(["application/*"], oci)
    assert not accepts(["application/vnd.docker.distribution.manifest.v2+json"], oci)
