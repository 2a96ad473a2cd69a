"""``make run``: the registry on a laptop, storage emulated by moto.

Starts (unless told to use other endpoints) a moto server for S3 and
DynamoDB, creates the bucket and table, and serves the registry through the
local streaming door. With ``--storage external`` it uses whatever boto3 is
configured for (``AWS_ENDPOINT_URL``…, or real AWS credentials).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import time
import urllib.request

from .config import Settings
from .core.http import Request, Response
from .registry.dispatch import handle
from .registry.service import Registry
from .server import serve
from .storage.provision import provision


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto_process(port: int = 0) -> tuple[subprocess.Popen, str]:
    """moto in its own process, so it never counts towards the registry's memory."""
    port = port or free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()  # noqa: S310 - our own http URL
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("moto server exited at start") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("moto server did not start within 30 s")


LISTENING = re.compile(rb"listening on http://([0-9.]+):([0-9]+)")


def spawn_registry(env: dict[str, str], log_path: str | os.PathLike[str],
                   *extra: str, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """A registry in its own process on a free port, on the storage ``env``
    names; returns the process and ``host:port`` (read from its banner).
    Tests and benchmarks use it to run several instances, or to measure one."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chalicelib.devserver", "--storage", "external",
             "--host", "127.0.0.1", "--port", "0", *extra],
            env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=log,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    seen = b""
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline()
            if not line:
                break  # stdout closed: the process exited
            seen += line
            found = LISTENING.search(line)
            if found:
                return proc, f"{found.group(1).decode()}:{found.group(2).decode()}"
    finally:
        selector.close()
    stop_process(proc)
    raise RuntimeError(f"registry did not start: {seen!r}; see {log_path}")


def stop_process(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; closes its stdout pipe."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    if proc.stdout is not None:
        proc.stdout.close()


def use_emulator(url: str) -> None:
    os.environ["AWS_ENDPOINT_URL"] = url
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


def local_app(settings: Settings | None = None):
    registry = Registry(settings or Settings.from_env(blob_redirects_default=False))

    def app(request: Request) -> Response:
        return handle(registry, request)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cargohold-devserver", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "5000")))
    parser.add_argument("--storage", choices=["moto", "external"],
                        default=os.environ.get("CARGOHOLD_STORAGE", "moto"),
                        help="moto: start an emulator (default); external: use boto3's settings")
    parser.add_argument("--moto-port", type=int, default=0)
    parser.add_argument("--no-provision", action="store_true",
                        help="do not create the bucket and table")
    parser.add_argument("--door", choices=["local", "lambda"],
                        default=os.environ.get("CARGOHOLD_DOOR", "local"),
                        help="local: the streaming server (default); lambda: app.py behind "
                             "the API Gateway emulator (6 MB payloads, 29 s timeout)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(name)s %(message)s")

    moto = None
    if args.storage == "moto":
        moto, url = start_moto_process(args.moto_port)
        use_emulator(url)
        print(f"storage: moto at {url}", flush=True)
    if not os.environ.get("CARGOHOLD_HMAC_KEY"):
        # One key for this process; set CARGOHOLD_HMAC_KEY to share uploads
        # between several registry processes.
        os.environ["CARGOHOLD_HMAC_KEY"] = secrets.token_hex(32)
    settings = Settings.from_env(blob_redirects_default=False)
    if not args.no_provision:
        provision(settings.bucket, settings.table, settings.region)
    if args.door == "lambda":
        from . import apigateway  # app.py reads its settings from the env set above

        server = apigateway.serve(apigateway.lambda_gateway(), args.host, args.port)
    else:
        server = serve(local_app(settings), args.host, args.port)
    host, port = server.server_address[:2]
    print(f"cargohold registry listening on http://{host}:{port}", flush=True)
    print(f"  try: skopeo copy --dest-tls-verify=false docker://docker.io/library/alpine "
          f"docker://{host}:{port}/library/alpine:latest", flush=True)
    print(f"  or:  crane push image.tar {host}:{port}/demo/image:latest --insecure", flush=True)

    def stop(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if moto is not None:
            stop_process(moto)
    return 0


if __name__ == "__main__":
    sys.exit(main())
