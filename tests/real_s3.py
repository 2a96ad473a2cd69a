"""A real S3 server for the tests that moto cannot serve: presigned URLs.

moto accepts a presigned URL whose signature, expiry or key was changed, so
what a presigned URL is allowed to do can only be tested against a server
that checks SigV4. This module starts versitygw (built by
``tests/tools/install.sh``) with its posix backend on a free 127.0.0.1 port,
a temporary data directory and static credentials, and stops it afterwards.

Use the ``real_s3`` fixture (import it into a test module with
``from .real_s3 import real_s3  # noqa: F401``), or ``running_real_s3()``
where a test needs a server of its own.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chalicelib.devserver import stop_process

from .conftest import tool

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class RealS3:
    """Where a running real S3 server answers and the one account it knows."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    data_dir: Path

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style, SigV4, no retries to
        hide a rejection)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                          retries={"mode": "standard", "max_attempts": 1}))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(endpoint: str) -> bool:
    """True once the server speaks HTTP (an anonymous request gets a 403)."""
    try:
        urllib.request.urlopen(endpoint + "/", timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


def _stop(proc: subprocess.Popen) -> None:
    stop_process(proc, timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def running_real_s3(data_dir: Path | None = None, region: str = "us-east-1",
                    attempts: int = 3) -> Iterator[RealS3]:
    """Start versitygw on a free loopback port; stop it on exit.

    The port is chosen before the server binds it, so another process may
    take it in between: a server that exits at start is retried on a new
    port, at most ``attempts`` times.
    """
    binary = tool("versitygw")
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="real-s3-")))
            data_dir = root / "data"
            data_dir.mkdir()
        log_path = data_dir.parent / f"{data_dir.name}.log"
        access_key = "AKIA" + secrets.token_hex(8).upper()
        secret_key = secrets.token_urlsafe(30)
        for attempt in range(1, attempts + 1):
            port = _free_port()
            endpoint = f"http://127.0.0.1:{port}"
            with log_path.open("ab") as log:
                proc = subprocess.Popen(
                    [binary, "--port", f"127.0.0.1:{port}", "--access", access_key,
                     "--secret", secret_key, "--region", region, "--quiet",
                     "posix", str(data_dir)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(_stop, proc)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and proc.poll() is None:
                if _answers(endpoint):
                    break
                time.sleep(0.05)
            if proc.poll() is None and _answers(endpoint):
                yield RealS3(endpoint, access_key, secret_key, region, data_dir)
                return
            _stop(proc)
            if attempt == attempts:
                output = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"versitygw did not start on 127.0.0.1: {output}")


@pytest.fixture(scope="session")
def real_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealS3]:
    """One real S3 server for the session (tests use buckets of their own)."""
    data_dir = tmp_path_factory.mktemp("real-s3") / "data"
    data_dir.mkdir()
    with running_real_s3(data_dir) as server:
        yield server
