"""Run the OCI distribution-spec conformance suite against cargohold.

``python -m tests.conformance`` (what ``make conformance`` runs) starts the
registry exactly as ``make run`` does -- ``python -m chalicelib.devserver``,
which starts moto in its own process -- on a free loopback port, runs the
pinned suite (``.tools/bin/conformance.test``, a ``go test -c`` binary of
github.com/opencontainers/distribution-spec/conformance) against it over
plain HTTP, and stops the server again whatever happens.

The suite's own reports (``junit.xml``, ``report.html``, ``results.yaml``)
plus its console output and the registry's log are kept in
``test-results/conformance/``. The last line printed is
``conformance: N passed, M failed[, K skipped]``, counted from the junit
report; the exit status is non-zero when anything failed or errored, or when
the suite could not run at all.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "test-results" / "conformance"
SUITE = ROOT / ".tools" / "bin" / "conformance.test"

TOTAL_TIMEOUT = 15 * 60  # the whole run: server start, suite, shutdown
START_TIMEOUT = 60  # moto + provisioning + first /v2/ answer
STOP_TIMEOUT = 15  # SIGTERM grace before SIGKILL

REPO1 = "conformance/repo1"
REPO2 = "conformance/repo2"

# Everything cargohold implements is switched on explicitly, so a change of
# the suite's defaults can never silently drop a check. Spec version 1.1 is
# what cargohold claims; the 1.1+dev extras it implements (upload cancel,
# Docker-Content-Digest on every blob and manifest response) are enabled by
# hand, the one it does not (``?tag=`` on a manifest PUT) stays off.
SUITE_CONFIG: dict[str, str] = {
    "OCI_VERSION": "1.1",
    "OCI_TLS": "disabled",  # plain HTTP on 127.0.0.1
    "OCI_REPO1": REPO1,
    "OCI_REPO2": REPO2,  # source repository of cross-repository mounts
    "OCI_LOG": "warn",
    # APIs
    "OCI_API_PULL": "true",
    "OCI_API_PUSH": "true",
    "OCI_API_BLOBS_ATOMIC": "true",  # deletes are visible immediately
    "OCI_API_BLOBS_DELETE": "true",
    "OCI_API_BLOBS_DIGEST_HEADER": "true",
    "OCI_API_BLOBS_MOUNT_ANONYMOUS": "true",  # mount without from= (202 fallback allowed)
    "OCI_API_BLOBS_UPLOAD_CANCEL": "true",
    "OCI_API_MANIFESTS_ATOMIC": "true",
    "OCI_API_MANIFESTS_DELETE": "true",
    "OCI_API_MANIFESTS_DIGEST_HEADER": "true",
    "OCI_API_MANIFESTS_TAG_PARAM": "false",  # not implemented (distribution-spec 1.1+dev)
    "OCI_API_TAGS_ATOMIC": "true",
    "OCI_API_TAGS_DELETE": "true",
    "OCI_API_TAGS_LIST": "true",
    "OCI_API_REFERRER": "true",
    # content
    "OCI_DATA_IMAGE": "true",
    "OCI_DATA_INDEX": "true",
    "OCI_DATA_INDEX_LIST": "true",
    "OCI_DATA_SPARSE": "false",  # cargohold rejects manifests naming absent content
    "OCI_DATA_ARTIFACT": "true",
    "OCI_DATA_SUBJECT": "true",
    "OCI_DATA_SUBJECT_MISSING": "true",
    "OCI_DATA_ARTIFACT_LIST": "true",
    "OCI_DATA_SUBJECT_LIST": "true",
    "OCI_DATA_DATA_FIELD": "true",
    "OCI_DATA_NONDISTRIBUTABLE": "true",
    "OCI_DATA_CUSTOM_FIELDS": "true",
    "OCI_DATA_NO_LAYERS": "true",
    "OCI_DATA_EMPTY_BLOB": "true",
    "OCI_DATA_SHA512": "true",
}


@dataclass
class Summary:
    """Counts of the junit report's test cases."""

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors + self.skipped

    def line(self) -> str:
        text = f"conformance: {self.passed} passed, {self.failed + self.errors} failed"
        if self.skipped:
            text += f", {self.skipped} skipped"
        return text


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _remaining(deadline: float) -> float:
    return max(deadline - time.monotonic(), 0.0)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of the process group we created for ``proc``.

    The registry and the suite each run in a new session whose group id is
    their pid, so this reaches moto (the registry's child) too and nothing
    that we did not start.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop_process(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, wait, then SIGKILL the whole group (idempotent)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"conformance: pid {proc.pid} ignored SIGTERM for {timeout:.0f} s; killing",
                  file=sys.stderr, flush=True)
    _kill_group(proc)
    proc.wait(timeout=timeout)


def start_registry(port: int, log: IO[bytes]) -> subprocess.Popen:
    """The registry as ``make run`` starts it, in its own process group."""
    env = dict(os.environ)
    env.pop("AWS_ENDPOINT_URL", None)  # the devserver points boto3 at its own moto
    return subprocess.Popen(
        [sys.executable, "-m", "chalicelib.devserver", "--host", "127.0.0.1",
         "--port", str(port)],
        cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)


def wait_ready(proc: subprocess.Popen, base_url: str, deadline: float) -> None:
    """Poll ``/v2/`` until it answers 200, the process dies or time is up."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"registry exited with status {proc.returncode} during start")
        try:
            with opener.open(base_url + "/v2/", timeout=2) as reply:
                if reply.status == 200:
                    return
                last_error = f"status {reply.status}"
        except urllib.error.HTTPError as exc:
            last_error = f"status {exc.code}"
        except OSError as exc:
            last_error = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"registry did not answer /v2/ in time ({last_error})")


def suite_env(registry: str, filter_test: str | None) -> dict[str, str]:
    """The suite's environment: ours minus any stray OCI_* settings, plus the config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCI_")}
    env.update(SUITE_CONFIG)
    env["OCI_REGISTRY"] = registry
    env["OCI_RESULTS_DIR"] = str(RESULTS_DIR)
    if filter_test:
        env["OCI_FILTER_TEST"] = filter_test
    return env


def _pump(source: IO[bytes], sinks: list[IO[bytes]]) -> None:
    for line in iter(source.readline, b""):
        for sink in sinks:
            sink.write(line)
            sink.flush()


def run_suite(env: dict[str, str], log: IO[bytes], deadline: float, quiet: bool) -> int:
    """Run the suite, copying its output to ``log`` (and the console unless quiet).

    Returns its exit status; raises TimeoutError when the deadline passes.
    """
    go_timeout = max(int(_remaining(deadline)) - 10, 30)
    proc = subprocess.Popen(
        [str(SUITE), "-test.v", f"-test.timeout={go_timeout}s"],
        cwd=RESULTS_DIR,  # so no stray oci-conformance.yaml is ever picked up
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    sinks: list[IO[bytes]] = [log] if quiet else [log, sys.stdout.buffer]
    pump = threading.Thread(target=_pump, args=(proc.stdout, sinks), daemon=True)
    pump.start()
    try:
        try:
            return proc.wait(timeout=_remaining(deadline))
        except subprocess.TimeoutExpired:
            raise TimeoutError("conformance suite did not finish in time") from None
    finally:
        stop_process(proc, timeout=5)
        pump.join(timeout=5)


def summarize(junit: Path) -> Summary:
    """Count the test cases of the suite's junit report by status."""
    summary = Summary()
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314 - our own file
        if case.find("failure") is not None or case.get("status") == "failure":
            summary.failed += 1
        elif case.find("error") is not None or case.get("status") == "error":
            summary.errors += 1
        elif case.find("skipped") is not None or case.get("status") == "skipped":
            summary.skipped += 1
        else:
            summary.passed += 1
    return summary


def failed_names(junit: Path) -> list[str]:
    names = []
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314 - our own file
        if case.get("status") in ("failure", "error"):
            names.append(case.get("name", "?"))
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=TOTAL_TIMEOUT,
                        help="seconds for the whole run (default %(default)s)")
    parser.add_argument("--filter", default=None,
                        help='only tests under this name prefix, e.g. "OCI Conformance Test/'
                             'sha256 blobs" (sets OCI_FILTER_TEST)')
    parser.add_argument("--quiet", action="store_true",
                        help="do not copy the suite's output to the console")
    args = parser.parse_args(argv)

    started = time.monotonic()
    deadline = started + args.timeout
    if not os.access(SUITE, os.X_OK):
        print(f"conformance: {SUITE} is missing: run `make tools`", file=sys.stderr)
        print("conformance: 0 passed, 0 failed (suite not installed)")
        return 2
    shutil.rmtree(RESULTS_DIR, ignore_errors=True)  # never count a stale report
    RESULTS_DIR.mkdir(parents=True)
    junit = RESULTS_DIR / "junit.xml"

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    status = 0
    problem = ""
    with open(RESULTS_DIR / "registry.log", "wb") as registry_log, \
            open(RESULTS_DIR / "suite.log", "wb") as suite_log:
        registry = start_registry(port, registry_log)
        try:
            wait_ready(registry, base_url, min(deadline, time.monotonic() + START_TIMEOUT))
            print(f"conformance: registry ready at {base_url} after "
                  f"{time.monotonic() - started:.1f} s", flush=True)
            status = run_suite(suite_env(f"127.0.0.1:{port}", args.filter), suite_log,
                               deadline, args.quiet)
        except (RuntimeError, TimeoutError, OSError) as exc:
            problem = str(exc)
        except KeyboardInterrupt:
            problem = "interrupted"
        finally:
            stop_process(registry)

    elapsed = time.monotonic() - started
    print(f"conformance: reports in {RESULTS_DIR.relative_to(ROOT)}/ "
          f"(junit.xml, report.html, results.yaml, suite.log, registry.log); "
          f"{elapsed:.0f} s", flush=True)
    if problem:
        print(f"conformance: {problem}", file=sys.stderr, flush=True)
    if not junit.is_file():
        print(f"conformance: 0 passed, 0 failed (no junit report: "
              f"{problem or f'suite exit status {status}'})", flush=True)
        return 2
    try:
        summary = summarize(junit)
    except ET.ParseError as exc:
        print(f"conformance: 0 passed, 0 failed (unreadable junit report: {exc})", flush=True)
        return 2
    for name in failed_names(junit):
        print(f"conformance: FAILED {name}", flush=True)
    print(summary.line(), flush=True)
    if problem or status != 0 or summary.failed or summary.errors or summary.total == 0:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
