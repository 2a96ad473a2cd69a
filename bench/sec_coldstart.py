"""Cold start of the Lambda handler, and where boto3's cost went.

Run: ``python bench/sec_coldstart.py [--quick]``

``app.py`` imports boto3 lazily (``chalicelib/storage/clients.py``), so a
new execution environment pays for importing Chalice and the protocol core
only; boto3 is paid by the first request that touches storage. This
section measures both halves in fresh interpreters (``python -c``, cwd =
repository root), interleaved round by round so that load on the shared
machine hits every kind alike:

* ``bare``: the interpreter alone (startup and ``site``), the floor;
* ``import app``: the handler module, timed in the child with
  ``time.perf_counter`` around the import, and as the subprocess's wall;
* ``import boto3``: boto3 alone, timed the same way;
* ``first requests``: ``import app``, then the handler (``app.app(event,
  None)``, API Gateway proxy events built by ``chalicelib.apigateway``)
  runs a blob HEAD (builds the registry, imports boto3, creates the
  DynamoDB client, one GetItem), then a blob GET (307 to a presigned URL:
  creates the S3 client, presigns locally), then both again warm, five
  times each (their median is the warm figure).

Storage is a stub, not moto: a tiny HTTP server in this process answers
every DynamoDB GetItem with one canned blob link. moto takes seconds to
start and milliseconds per request; the stub answers in microseconds, so
the first-minus-warm difference is the client's one-time cost and nothing
else. Credentials come from the environment (as in Lambda), and
``~/.aws`` is hidden from the children.

Bytecode: the children share a fresh ``PYTHONPYCACHEPREFIX`` that one
warm-up run fills, so every timed run loads cached bytecode, as a
deployment package with ``.pyc`` files does. The warm-up's own ``import
app`` (and, in the full run, two more into other empty caches) is the row
"without cached bytecode": roughly what a package without ``.pyc`` pays on
every cold start, since Lambda's ``/var/task`` is read-only.

Quick mode: three rounds of the import children, the first-request child
once (the contract's 1-2 repetitions), one importtime run.

``-X importtime`` (one run quick, three otherwise; the median per module)
lists the largest imports under ``import app`` and during the first
requests. Memory is VmRSS read from ``/proc/self/status`` in the child.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TITLE = "Cold start of the Lambda handler"
COMMAND = "python bench/sec_coldstart.py"

KINDS = ("bare", "app", "boto3", "first")
REQUESTS = ("first_head", "first_get", "warm_head", "warm_get")
DIGEST = "sha256:" + "ab" * 32
REPO = "bench/cold"
BLOB_SIZE = 1234
WARM_REPEATS = 5  # warm figures are the median of these, within each child

# The child: only builtins (sys, time) before the timed import; json is
# imported after every measurement it could disturb.
CHILD = r"""
import sys, time

def rss_kib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1

mode = sys.argv[1]
out = {}
t0 = time.perf_counter()
if mode == "app" or mode == "first":
    import app
elif mode == "boto3":
    import boto3  # noqa
out["import_ms"] = (time.perf_counter() - t0) * 1000
out["rss_kib"] = rss_kib()
if mode == "first":
    sys.stderr.write("#first-request\n")
    sys.stderr.flush()
    import json
    with open(sys.argv[2]) as handle:
        events = json.load(handle)
    times = {}
    for label, event in events:
        t0 = time.perf_counter()
        reply = app.app(event, None)
        times.setdefault(label, []).append((time.perf_counter() - t0) * 1000)
        out.setdefault(label + "_status", []).append(reply["statusCode"])
        out[label + "_rss_kib"] = rss_kib()
    for label, values in times.items():
        out[label + "_ms"] = sorted(values)[len(values) // 2]
    sys.stderr.write("#end\n")
    sys.stderr.flush()
import json
print("RESULT " + json.dumps(out))
"""


class StubDynamo(BaseHTTPRequestHandler):
    """Answers every DynamoDB GetItem with the blob link of :data:`DIGEST`."""

    protocol_version = "HTTP/1.1"
    # One segment per answer and no Nagle: otherwise keep-alive requests
    # wait out the peer's delayed ACK (~40 ms) and time the stub, not us.
    disable_nagle_algorithm = True
    wbufsize = 64 * 1024

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.headers.get("X-Amz-Target", "").endswith(".GetItem"):
            status, body = 200, json.dumps({"Item": {
                "pk": {"S": f"repo#{REPO}"}, "sk": {"S": f"blob#{DIGEST}"},
                "size": {"N": str(BLOB_SIZE)}, "key": {"S": f"blobs/sha256/ab/{'ab' * 32}"}}})
        else:
            status, body = 400, json.dumps({"__type": "ValidationException",
                                            "message": "stub answers GetItem only"})
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        pass


def _events() -> list[tuple[str, dict[str, Any]]]:
    """Proxy events as API Gateway sends them for the four timed requests."""
    import app
    from chalicelib.apigateway import RestApi, build_event

    api = RestApi.from_chalice(app.app)
    path = f"/v2/{REPO}/blobs/{DIGEST}"
    headers = [("Host", "cargohold.example"), ("User-Agent", "bench"),
               ("Accept", "application/octet-stream")]
    head = build_event(api, "HEAD", path, headers, b"")
    get = build_event(api, "GET", path, headers, b"")
    assert head is not None and get is not None
    warm = [("warm_head", head), ("warm_get", get)] * WARM_REPEATS
    return [("first_head", head), ("first_get", get), *warm]


def _child_env(stub_url: str, cache: str, scratch: str) -> dict[str, str]:
    """boto3 pointed at the stub with env credentials (as in Lambda), no
    ``~/.aws``, bytecode cached under ``cache``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "CARGOHOLD_")) and k not in (
               "PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "PYTHONPROFILEIMPORTTIME")}
    env.update({
        "AWS_ENDPOINT_URL": stub_url, "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.path.join(scratch, "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(scratch, "no-credentials"),
        "CARGOHOLD_BUCKET": "bench-cold", "CARGOHOLD_TABLE": "bench-cold",
        "CARGOHOLD_HMAC_KEY": "bench-cold-start-key",
    })
    env["PYTHONPYCACHEPREFIX"] = cache
    return env


def _run_child(mode: str, env: dict[str, str], events_path: str,
               importtime: bool = False) -> tuple[dict[str, Any], float, str]:
    """One fresh interpreter: (its RESULT, wall ms of the subprocess, stderr)."""
    args = [sys.executable] + (["-X", "importtime"] if importtime else []) + [
        "-c", CHILD, mode, events_path]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    wall = (time.perf_counter() - started) * 1000
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"child {mode} failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    if mode == "first":
        statuses = {label: sorted(set(result[label + "_status"])) for label in REQUESTS}
        wanted = {"first_head": [200], "first_get": [307], "warm_head": [200],
                  "warm_get": [307]}
        if statuses != wanted:
            raise RuntimeError(f"handler answered {statuses}, expected {wanted}")
    return result, wall, done.stderr


def _parse_importtime(lines: list[str]) -> list[tuple[int, str, int, int]]:
    """(depth, module, self µs, cumulative µs) per ``import time:`` line."""
    rows = []
    for line in lines:
        if not line.startswith("import time:") or "[us]" in line:
            continue
        head, cumulative_us, name = line.split("|", 2)
        self_us = head.split(":", 1)[1]
        # CPython writes one space, then two per nesting level, then the name
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        rows.append((depth, name.strip(), int(self_us), int(cumulative_us)))
    return rows


def _importtime_tables(stderr: str) -> tuple[dict[str, tuple[int, int]],
                                             dict[str, tuple[int, int]]]:
    """{module: (self µs, cumulative µs)} under ``import app``, and during
    the first requests (everything imported between the child's markers)."""
    lines = stderr.splitlines()
    marker = lines.index("#first-request")
    end = lines.index("#end")
    app_tree: dict[str, tuple[int, int]] = {}
    segment: list[tuple[int, str, int, int]] = []
    for row in _parse_importtime(lines[:marker]):
        segment.append(row)
        if row[0] == 0:  # a top-level import closes its subtree
            if row[1] == "app":
                app_tree = {name: (s, c) for _, name, s, c in segment}
            segment = []
    request_path = {name: (s, c) for _, name, s, c in _parse_importtime(lines[marker:end])}
    return app_tree, request_path


def _top(runs: list[dict[str, tuple[int, int]]], count: int = 10) -> list[dict[str, Any]]:
    """The ``count`` modules with the largest median cumulative import time."""
    names = set().union(*runs) if runs else set()
    merged = []
    for name in names:
        present = [run[name] for run in runs if name in run]
        merged.append({"module": name,
                       "self_ms": statistics.median(p[0] for p in present) / 1000,
                       "cumulative_ms": statistics.median(p[1] for p in present) / 1000})
    merged.sort(key=lambda row: -row["cumulative_ms"])
    return merged[:count]


def run(quick: bool) -> dict[str, Any]:
    rounds = 3 if quick else 10
    importtime_runs = 1 if quick else 3
    nocache_runs = 1 if quick else 3
    first_runs = 1 if quick else rounds
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubDynamo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stub_url = f"http://127.0.0.1:{server.server_address[1]}"
    samples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}
    walls: dict[str, list[float]] = {kind: [] for kind in KINDS}
    nocache: list[float] = []
    app_trees: list[dict[str, tuple[int, int]]] = []
    request_trees: list[dict[str, tuple[int, int]]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="cargohold-coldstart-") as scratch:
            events_path = os.path.join(scratch, "events.json")
            with open(events_path, "w", encoding="utf-8") as handle:
                json.dump(_events(), handle)
            cache = os.path.join(scratch, "pycache")
            env = _child_env(stub_url, cache, scratch)
            # warm-up: compiles everything into the shared cache; its import
            # of app is the first "without cached bytecode" sample
            warmup, _, _ = _run_child("first", env, events_path)
            nocache.append(warmup["import_ms"])
            for i in range(1, nocache_runs):
                fresh = _child_env(stub_url, os.path.join(scratch, f"pycache-{i}"), scratch)
                nocache.append(_run_child("app", fresh, events_path)[0]["import_ms"])
            for i in range(rounds):
                order = KINDS[i % len(KINDS):] + KINDS[:i % len(KINDS)]
                for kind in order:
                    if kind == "first" and i >= first_runs:
                        continue
                    result, wall, _ = _run_child(kind, env, events_path)
                    samples[kind].append(result)
                    walls[kind].append(wall)
            for _ in range(importtime_runs):
                _, _, stderr = _run_child("first", env, events_path, importtime=True)
                app_tree, request_tree = _importtime_tables(stderr)
                app_trees.append(app_tree)
                request_trees.append(request_tree)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    def med(kind: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[kind])

    result: dict[str, Any] = {
        "rounds": rounds,
        "python": sys.version.split()[0],
        "import_ms": {kind: med(kind, "import_ms") for kind in ("app", "boto3")},
        "wall_ms": {kind: statistics.median(walls[kind]) for kind in KINDS},
        "rss_mib": {kind: med(kind, "rss_kib") / 1024 for kind in ("bare", "app", "boto3")},
        "app_import_nocache_ms": statistics.median(nocache),
        "nocache_runs": nocache_runs,
        "first_runs": first_runs,
        "requests_ms": {label: med("first", label + "_ms") for label in REQUESTS},
        "requests_rss_mib": {label: med("first", label + "_rss_kib") / 1024
                             for label in REQUESTS},
        "first_import_ms": med("first", "import_ms"),
        "importtime_runs": importtime_runs,
        "top_app_imports": _top(app_trees),
        "top_first_request_imports": _top(request_trees),
    }
    return result


def _ms(value: float) -> str:
    return f"{value:.1f} ms"


def markdown(result: dict[str, Any]) -> str:
    imp, wall, rss, req = (result["import_ms"], result["wall_ms"], result["rss_mib"],
                           result["requests_ms"])
    net = {kind: wall[kind] - wall["bare"] for kind in ("app", "boto3")}
    one_time_head = req["first_head"] - req["warm_head"]
    one_time_get = req["first_get"] - req["warm_get"]
    lines = [
        f"Fresh interpreters (Python {result['python']}), median of {result['rounds']} "
        "interleaved runs each; *in-process* is `time.perf_counter` around the import in "
        "the child, *wall* is the whole `python -c` subprocess seen from outside, *net* is "
        "wall minus the bare interpreter's wall. Bytecode cached (see below for without).",
        "",
        "| child | in-process import | wall | net of interpreter | VmRSS after import |",
        "|---|---:|---:|---:|---:|",
        f"| bare interpreter (`python -c` floor) | – | {_ms(wall['bare'])} | – "
        f"| {rss['bare']:.1f} MiB |",
        f"| `import app` (the Lambda handler) | {_ms(imp['app'])} | {_ms(wall['app'])} "
        f"| {_ms(net['app'])} | {rss['app']:.1f} MiB |",
        f"| `import boto3` alone | {_ms(imp['boto3'])} | {_ms(wall['boto3'])} "
        f"| {_ms(net['boto3'])} | {rss['boto3']:.1f} MiB |",
        "",
        f"- `import boto3` − `import app`: {_ms(imp['boto3'] - imp['app'])} in-process, "
        f"{_ms(wall['boto3'] - wall['app'])} wall.",
        f"- `import app` / `import boto3`: {imp['app'] / imp['boto3']:.2f}× in-process, "
        f"{wall['app'] / wall['boto3']:.2f}× wall (net of interpreter: "
        f"{net['app'] / net['boto3']:.2f}×).",
        f"- `import app` without cached bytecode (an empty cache: compiles every module, "
        f"as a deployment package without `.pyc` would on each cold start), median of "
        f"{result['nocache_runs']}: {_ms(result['app_import_nocache_ms'])} "
        f"({result['app_import_nocache_ms'] / imp['app']:.1f}× the cached import).",
        "",
        "**The first requests**, in the same kind of fresh interpreter after `import app` "
        f"({_ms(result['first_import_ms'])} there), through the handler with API Gateway "
        "proxy events, storage a stub HTTP server answering DynamoDB GetItem in "
        f"microseconds; median of {result['first_runs']} child(ren):",
        "",
        "| request | time in handler | VmRSS after |",
        "|---|---:|---:|",
    ]
    names = {
        "first_head": "1st: blob HEAD (builds the registry, imports boto3, DynamoDB client, "
                      "GetItem)",
        "first_get": "2nd: blob GET → 307 (S3 client, presign)",
        "warm_head": f"then blob HEAD, warm (median of {WARM_REPEATS})",
        "warm_get": f"then blob GET → 307, warm (median of {WARM_REPEATS})",
    }
    for label in REQUESTS:
        lines.append(f"| {names[label]} | {_ms(req[label])} | "
                     f"{result['requests_rss_mib'][label]:.1f} MiB |")
    lines += [
        "",
        f"- One-time cost moved into the first request: {_ms(one_time_head)} (first HEAD "
        f"− warm HEAD) = {one_time_head / imp['boto3']:.2f}× `import boto3` alone; the "
        f"first S3 use adds {_ms(one_time_get)} (first GET − warm GET).",
        f"- Cold start up to the first answer (import app + first HEAD): "
        f"{_ms(result['first_import_ms'] + req['first_head'])} vs "
        f"{_ms(imp['app'] + imp['boto3'])} for importing app and boto3 alone; memory "
        f"after the first requests {result['requests_rss_mib']['warm_get']:.1f} MiB vs "
        f"{rss['app']:.1f} MiB after the import.",
        "",
        f"Largest imports (`python -X importtime`, median over {result['importtime_runs']} "
        "run(s); importtime's own overhead inflates them, so compare rows, not totals "
        "with the table above). Cumulative includes the module's own imports.",
        "",
    ]
    for key, title in (("top_app_imports", "under `import app`"),
                       ("top_first_request_imports", "during the first requests")):
        lines += [f"Top 10 {title}:", "", "| module | cumulative | self |", "|---|---:|---:|"]
        lines += [f"| `{row['module']}` | {_ms(row['cumulative_ms'])} | {_ms(row['self_ms'])} |"
                  for row in result[key]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_data(result: dict[str, Any]) -> dict[str, Any]:
    imp, req = result["import_ms"], result["requests_ms"]
    return {"title": "Cold start: imports and first requests (median)", "unit": "ms",
            "labels": ["python -c (wall)", "import app", "import boto3", "1st request (HEAD)",
                       "2nd request (GET→307)", "warm HEAD"],
            "series": {"cargohold": [result["wall_ms"]["bare"], imp["app"], imp["boto3"],
                                     req["first_head"], req["first_get"], req["warm_head"]]}}


if __name__ == "__main__":
    print(markdown(run(quick="--quick" in sys.argv)))
