"""Shared fixtures: an emulated AWS (moto, in its own process), fresh
storage per test, the registry in-process, and a real local server.

Every server a test starts listens on 127.0.0.1 on a free port and is
stopped by the fixture that started it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("CARGOHOLD_HMAC_KEY", "test-hmac-key-shared-by-all-instances")

from chalicelib.config import Settings
from chalicelib.core.http import Request, Response
from chalicelib.devserver import local_app, start_moto_process, stop_process, use_emulator
from chalicelib.server import serve_in_thread
from chalicelib.storage import clients
from chalicelib.storage.provision import provision

ROOT = Path(__file__).resolve().parent.parent
TOOLS_BIN = ROOT / ".tools" / "bin"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    proc, url = start_moto_process()
    use_emulator(url)
    clients.reset()
    yield url
    stop_process(proc)


@pytest.fixture
def settings(moto_url: str) -> Settings:
    """Settings for a brand-new bucket and table, so tests never share state."""
    suffix = uuid.uuid4().hex[:12]
    base = Settings.from_env(blob_redirects_default=False)
    fresh = replace(base, bucket=f"test-{suffix}", table=f"test-{suffix}")
    provision(fresh.bucket, fresh.table, fresh.region)
    return fresh


@pytest.fixture
def app(settings: Settings):
    """The registry as a function of Request → Response (no sockets)."""
    return local_app(settings)


@pytest.fixture
def call(app):
    """``call(method, path, body=b"", headers=None)`` straight into the registry."""

    def _call(method: str, path: str, body: bytes = b"",
              headers: dict[str, str] | None = None) -> Response:
        path, _, query = path.partition("?")
        response = app(Request.build(method, path, query, headers or {}, body))
        response.body = response.read_body()
        return response

    return _call


@pytest.fixture
def server(app) -> Iterator[str]:
    """A real local server on a free loopback port; yields ``host:port``."""
    httpd, thread = serve_in_thread(app)
    host, port = httpd.server_address[:2]
    yield f"{host}:{port}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture
def snapshot(settings: Settings):
    """``snapshot()`` returns every S3 object (key → ETag) and DynamoDB item,
    so a test can assert that a rejected request changed nothing."""

    def _snapshot() -> dict[str, object]:
        s3 = clients.client("s3", settings.region)
        ddb = clients.client("dynamodb", settings.region)
        objects = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket):
            for obj in page.get("Contents", []):
                objects[obj["Key"]] = obj["ETag"]
        items = []
        for page in ddb.get_paginator("scan").paginate(TableName=settings.table):
            items.extend(page["Items"])
        items.sort(key=lambda i: (i["pk"]["S"], i["sk"]["S"]))
        return {"objects": objects, "items": items}

    return _snapshot


def tool(name: str) -> str:
    """Path of an outside tool installed by ``make tools`` (fails loudly if absent)."""
    found = shutil.which(name, path=f"{TOOLS_BIN}:{os.environ.get('PATH', '')}")
    if not found:
        pytest.fail(f"{name} is not installed: run `make tools`")
    return found
