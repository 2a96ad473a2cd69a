"""The CNCF distribution registry (built by ``make tools``), as a peer to
compare against: filesystem storage in a temp dir, on a free loopback port.

Use ``running_distribution(tmp_dir)`` as a context manager, or the
``distribution`` fixture (``from .distribution import distribution``).
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_distribution(work: Path) -> Iterator[str]:
    """Start distribution; yields ``host:port``; stops it on exit."""
    port = _free_port()
    root = work / "distribution-data"
    root.mkdir(parents=True, exist_ok=True)
    config = work / "distribution.yml"
    config.write_text(CONFIG.format(root=root, port=port))
    log = (work / "distribution.log").open("wb")
    proc = subprocess.Popen([tool("registry"), "serve", str(config)],
                            stdout=log, stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{port}"
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
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def distribution(tmp_path: Path) -> Iterator[str]:
    with running_distribution(tmp_path) as address:
        yield address
