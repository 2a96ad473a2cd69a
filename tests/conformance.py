"""Run the OCI distribution-spec conformance suite against cargohold.

``python -m tests.conformance`` (what ``make conformance`` runs) starts the
registry exactly as ``make run`` does -- ``python -m chalicelib.devserver``,
which starts moto in its own process -- on a free loopback port, runs the
pinned suite (``.tools/bin/conformance.test``, a ``go test -c`` binary of
github.com/opencontainers/distribution-spec/conformance) against it over
plain HTTP, and stops the server again whatever happens.

``--door lambda`` serves the registry the way it is deployed instead:
``python -m chalicelib.devserver --door lambda``, i.e. app.py behind the
local API Gateway stand-in (base64 event bodies, 6 MB payloads, 29 s), with
app.py's defaults of that door: function limits on (bodies of at most
4 MiB) and blob GETs redirected to presigned S3 URLs; only the advertised
minimum chunk is lowered (see LAMBDA_CHUNK_MIN_LENGTH).

The suite's own reports (``junit.xml``, ``report.html``, ``results.yaml``)
plus its console output and the registry's log are kept in
``test-results/conformance/`` (``test-results/conformance-lambda/`` for the
lambda door). The last line printed is
``conformance: N passed, M failed[, K skipped]``, counted from the junit
report; the exit status is non-zero when anything failed or errored, when a
test was skipped that EXPECTED_SKIPS does not explain, or when the suite
could not run at all. ``--filter`` narrows the run, ``--verbose`` shows all
of the suite's output (it is always kept in ``suite.log``).
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
RESULTS_DIRS = {"local": RESULTS_DIR, "lambda": ROOT / "test-results" / "conformance-lambda"}
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


# The suite turns a feature the registry reports as unsupported into a skip,
# so a regression in something cargohold does implement would pass silently.
# Only these skips (keyed by the last part of the test name) are expected;
# any other one fails the run.
EXPECTED_SKIPS: dict[str, str] = {
    "blob-mount-anonymous": "a mount without from= starts a plain upload (202), "
                            "which the spec allows",
    "range 500-0": "only with CARGOHOLD_BLOB_REDIRECTS: S3 ignores a malformed Range "
                   "and answers 200 with the whole blob",
}


@dataclass
class Summary:
    """The suite's tally, as read from its junit report."""

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


# The suite sizes the blobs of its bad-digest tests as three times the
# advertised OCI-Chunk-Min-Length and sends them in one body (POST, PUT, a
# streamed PATCH) or in chunks of a third plus one byte; it never reads
# OCI-Chunk-Max-Length. With app.py's default (minimum = maximum = 4 MiB)
# those are 12 MiB bodies and 4 MiB + 1 chunks, which a function behind API
# Gateway cannot receive: 413 SIZE_INVALID, by design, 10 failures. So the
# lambda door advertises a 1 MiB minimum here (3 MiB bodies fit) unless
# CARGOHOLD_CHUNK_MIN_LENGTH is set; tests/test_lambda_door.py covers the
# 4 MiB default with real clients.
LAMBDA_CHUNK_MIN_LENGTH = 1024 * 1024


def registry_env(door: str) -> dict[str, str]:
    """Our environment for the registry process, per door."""
    # The devserver points boto3 at its own moto; a service-specific endpoint
    # left in our environment (AWS_ENDPOINT_URL_S3...) would win over it.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    if door == "lambda" and not env.get("CARGOHOLD_CHUNK_MIN_LENGTH"):
        env["CARGOHOLD_CHUNK_MIN_LENGTH"] = str(LAMBDA_CHUNK_MIN_LENGTH)
    return env


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


def start_registry(port: int, log: IO[bytes], door: str = "local") -> subprocess.Popen:
    """The registry as ``make run`` starts it (``--door``), in its own process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "chalicelib.devserver", "--host", "127.0.0.1",
         "--port", str(port), "--door", door],
        cwd=ROOT, env=registry_env(door), stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True)


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


def blob_redirects(door: str) -> bool:
    """Will the registry answer blob GETs with a 307?

    Read as ``chalicelib.config`` reads ``CARGOHOLD_BLOB_REDIRECTS``, with
    each door's default: on for app.py (the lambda door), off for the
    devserver's local door.
    """
    value = os.environ.get("CARGOHOLD_BLOB_REDIRECTS")
    if value is None or value == "":
        return door == "lambda"
    return value.strip().lower() in ("1", "true", "yes", "on")


def suite_env(registry: str, filter_test: str | None, door: str = "local",
              results_dir: Path = RESULTS_DIR) -> dict[str, str]:
    """The suite's environment: ours minus any stray OCI_* settings, plus the config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OCI_")}
    env.update(SUITE_CONFIG)
    env["OCI_REGISTRY"] = registry
    env["OCI_RESULTS_DIR"] = str(results_dir)
    if blob_redirects(door):
        # The suite follows the 307 and checks the storage's answer, which
        # cannot carry Docker-Content-Digest (the 307 itself does).
        env["OCI_API_BLOBS_DIGEST_HEADER"] = "false"
    if filter_test:
        env["OCI_FILTER_TEST"] = filter_test
    return env


# Console lines worth seeing without --verbose: the suite's log lines (one
# per failed test), its own errors, and the block of totals.
_NOTABLE = (b"time=", b"failed to", b"panic:", b"--- FAIL", b"***")


def _pump(source: IO[bytes], log: IO[bytes], console: IO[bytes] | None,
          verbose: bool) -> None:
    """Copy the suite's output to the log, and all or the notable part to the console."""
    in_totals = False
    for line in iter(source.readline, b""):
        log.write(line)
        log.flush()
        if console is None:
            continue
        if line.startswith(b"OCI Conformance Result:"):
            in_totals = True
        elif in_totals and not line.strip():
            in_totals = False
        if verbose or in_totals or line.startswith(_NOTABLE):
            console.write(line)
            console.flush()


def run_suite(env: dict[str, str], log: IO[bytes], deadline: float, output: str,
              results_dir: Path = RESULTS_DIR) -> int:
    """Run the suite, copying its output to ``log`` and (per ``output``) the console.

    ``output`` is "quiet", "summary" or "verbose". Returns the suite's exit
    status; raises TimeoutError when the deadline passes.
    """
    go_timeout = max(int(_remaining(deadline)) - 10, 30)
    proc = subprocess.Popen(
        [str(SUITE), "-test.v", f"-test.timeout={go_timeout}s"],
        cwd=results_dir,  # so no stray oci-conformance.yaml is ever picked up
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, start_new_session=True)
    assert proc.stdout is not None
    console = None if output == "quiet" else sys.stdout.buffer
    pump = threading.Thread(target=_pump, args=(proc.stdout, log, console, output == "verbose"),
                            daemon=True)
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
    """Counts of the suite's junit report.

    The ``<testsuite>`` attributes are the suite's own tally (what it prints
    under "OCI Conformance Result"; a test case may count several checks);
    a failing ``<testcase>`` is counted as a failure even if they disagree.
    """
    root = ET.parse(junit).getroot()  # noqa: S314 - the suite's own file
    summary = Summary()
    tests = 0
    for suite in root.iter("testsuite"):
        tests += int(suite.get("tests", 0))
        summary.failed += int(suite.get("failures", 0))
        summary.errors += int(suite.get("errors", 0))
        summary.skipped += int(suite.get("skipped", 0)) + int(suite.get("disabled", 0))
    failing = len(failed_names(junit))
    if failing > summary.failed + summary.errors:
        summary.failed = failing - summary.errors
    summary.passed = max(tests - summary.failed - summary.errors - summary.skipped, 0)
    return summary


def failed_names(junit: Path) -> list[str]:
    """Names of the test cases that failed or errored, in report order."""
    root = ET.parse(junit).getroot()  # noqa: S314 - the suite's own file
    return [case.get("name", "?") for case in root.iter("testcase")
            if case.get("status") in ("failure", "error")
            or case.find("failure") is not None or case.find("error") is not None]


def unexpected_skips(junit: Path) -> list[tuple[str, str]]:
    """Skipped test cases not in EXPECTED_SKIPS, with the suite's reason."""
    root = ET.parse(junit).getroot()  # noqa: S314 - the suite's own file
    found = []
    for case in root.iter("testcase"):
        name = case.get("name", "?")
        skipped = case.get("status") == "skipped" or case.find("skipped") is not None
        if skipped and name.rsplit("/", 1)[-1] not in EXPECTED_SKIPS:
            reason = (case.findtext("system-out") or "").strip().splitlines()
            found.append((name, reason[0] if reason else "no reason given"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.conformance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=TOTAL_TIMEOUT,
                        help="seconds for the whole run (default %(default)s)")
    parser.add_argument("--door", choices=sorted(RESULTS_DIRS), default="local",
                        help="local: the streaming server (default); lambda: app.py behind "
                             "the API Gateway stand-in, function limits and blob redirects on "
                             "(reports in test-results/conformance-lambda/)")
    parser.add_argument("--filter", default=None,
                        help='only tests under this name prefix, e.g. "OCI Conformance Test/'
                             'sha256 blobs" (sets OCI_FILTER_TEST)')
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument("--quiet", dest="output", action="store_const", const="quiet",
                       default="summary", help="show none of the suite's output")
    shown.add_argument("--verbose", dest="output", action="store_const", const="verbose",
                       help="show all of the suite's output (always in suite.log)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    deadline = started + args.timeout
    if not os.access(SUITE, os.X_OK):
        print(f"conformance: {SUITE} is missing: run `make tools`", file=sys.stderr)
        print("conformance: 0 passed, 0 failed (suite not installed)")
        return 2
    results_dir = RESULTS_DIRS[args.door]
    shutil.rmtree(results_dir, ignore_errors=True)  # never count a stale report
    results_dir.mkdir(parents=True)
    junit = results_dir / "junit.xml"

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    status = 0
    problem = ""
    with open(results_dir / "registry.log", "wb") as registry_log, \
            open(results_dir / "suite.log", "wb") as suite_log:
        registry = start_registry(port, registry_log, args.door)
        try:
            wait_ready(registry, base_url, min(deadline, time.monotonic() + START_TIMEOUT))
            note = args.door + " door"
            if args.door == "lambda":
                minimum = registry_env(args.door)["CARGOHOLD_CHUNK_MIN_LENGTH"]
                note += f", OCI-Chunk-Min-Length {minimum}"
            print(f"conformance: registry ({note}) ready at {base_url} after "
                  f"{time.monotonic() - started:.1f} s", flush=True)
            status = run_suite(suite_env(f"127.0.0.1:{port}", args.filter, args.door,
                                         results_dir), suite_log, deadline, args.output,
                               results_dir)
        except (RuntimeError, TimeoutError, OSError) as exc:
            problem = str(exc)
        except KeyboardInterrupt:
            problem = "interrupted"
        finally:
            stop_process(registry)

    elapsed = time.monotonic() - started
    print(f"conformance: reports in {results_dir.relative_to(ROOT)}/ "
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
    surprises = unexpected_skips(junit)
    for name, reason in surprises:
        print(f"conformance: UNEXPECTED SKIP {name}: {reason}", flush=True)
    print(summary.line() + (f" ({len(surprises)} unexpected)" if surprises else ""), flush=True)
    if (problem or status != 0 or summary.failed or summary.errors or surprises
            or summary.total == 0):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
