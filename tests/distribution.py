"""The CNCF distribution registry (built by ``make tools``), as a peer to
compare against, on a free loopback port: filesystem storage in a temp dir,
or its ``s3`` driver against a given S3 endpoint.

Use ``running_distribution(tmp_dir)`` as a context manager, or the
``distribution`` fixture (``from .distribution import distribution``).
``running_distribution_s3(tmp_dir, endpoint, bucket)`` stores in S3 instead
(point it at ``bench/s3proxy.py`` in front of moto to count its requests);
blob GETs answer 307 to presigned URLs on that endpoint, as cargohold does
with blob redirects on.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import boto3
import pytest

from chalicelib.devserver import stop_process

from .conftest import tool

CONFIG = """version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: cargohold-test-secret
"""


# The s3 driver's keys (registry/storage/driver/s3-aws/s3.go, FromParameters)
# and ``storage.redirect.disable`` (registry/handlers/app.go) of distribution
# v3.1.2. Upload purging is off so that start-up makes no S3 request.
S3_CONFIG = """version: 0.1
log:
  level: {log_level}
  accesslog:
    disabled: true
storage:
  s3:
    region: {region}
    regionendpoint: {endpoint}
    forcepathstyle: true
    bucket: {bucket}
    accesskey: testing
    secretkey: testing
    secure: false
    v4auth: true
{extra}  delete:
    enabled: true
  redirect:
    disable: {redirect_disabled}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: cargohold-test-secret
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _serve(work: Path, config_text: str, address: str) -> Iterator[str]:
    """Run ``registry serve`` on a written config until /v2/ answers; stop it on exit."""
    config = work / "distribution.yml"
    config.write_text(config_text)
    log = (work / "distribution.log").open("wb")
    proc = subprocess.Popen([tool("registry"), "serve", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{address}/v2/", timeout=1):
                    break
            except (urllib.error.URLError, OSError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("distribution did not start: see "
                                       f"{work / 'distribution.log'}") from None
                time.sleep(0.1)
        yield address
    finally:
        stop_process(proc)
        log.close()


@contextmanager
def running_distribution(work: Path) -> Iterator[str]:
    """Start distribution; yields ``host:port``; stops it on exit."""
    port = _free_port()
    root = work / "distribution-data"
    root.mkdir(parents=True, exist_ok=True)
    with _serve(work, CONFIG.format(root=root, port=port), f"127.0.0.1:{port}") as address:
        yield address


def create_bucket(endpoint: str, bucket: str, region: str = "us-east-1") -> None:
    """Create ``bucket`` at ``endpoint`` (an existing one is kept)."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    with suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)


@contextmanager
def running_distribution_s3(work: Path, endpoint: str, bucket: str, *,
                            region: str = "us-east-1", create: bool = True,
                            redirect: bool = True, log_level: str = "error",
                            driver: dict[str, Any] | None = None) -> Iterator[str]:
    """Start distribution on its ``s3`` driver at ``endpoint`` (``http://host:port``,
    path-style); yields ``host:port``; stops it on exit.

    ``create`` makes the bucket first (through ``endpoint``: a counting proxy
    sees that CreateBucket, so reset it after). ``redirect`` False serves
    blobs through the registry instead of 307 to presigned URLs. ``driver``
    adds or overrides s3 driver keys (``chunksize``, ``rootdirectory``…).
    """
    if create:
        create_bucket(endpoint, bucket, region)
    port = _free_port()
    extra = "".join(f"    {key}: {value}\n" for key, value in (driver or {}).items())
    text = S3_CONFIG.format(region=region, endpoint=endpoint, bucket=bucket, extra=extra,
                            redirect_disabled=str(not redirect).lower(), port=port,
                            log_level=log_level)
    with _serve(work, text, f"127.0.0.1:{port}") as address:
        yield address


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[str]:
    with running_distribution(tmp_path) as address:
        yield address
