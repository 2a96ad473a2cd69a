"""``cargohold``: push, pull, copy, list, inspect and delete images on any
OCI Distribution registry, built on the client library and the protocol core.

Image references:

* ``[http(s)://]host[:port]/repo[:tag|@digest]``: an image in a registry;
  plain HTTP by default for 127.0.0.1/localhost, HTTPS elsewhere
  (``--plain-http`` forces HTTP);
* ``oci:<dir>[:tag]``: an OCI image layout directory;
* ``docker-archive:<file>[:name:tag]``: a ``docker save`` tarball (read only).

stdout carries results (a digest, a listing, JSON); progress bars and
summaries go to stderr. Exit codes: 0 ok, 1 registry error, 2 usage error,
3 transport or authentication error, 4 digest mismatch.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import getpass
import json
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .client.auth import docker_config_path
from .client.errors import (
    AuthenticationError,
    ClientError,
    DigestMismatchError,
    ProtocolError,
    RegistryResponseError,
    TransportError,
)
from .client.layout import DockerArchive, LayoutError, OciLayout
from .client.registry import RegistryClient
from .client.transfer import (
    ArchiveSource,
    CopyResult,
    LayoutSink,
    LayoutSource,
    RegistrySink,
    RegistrySource,
    Sink,
    Source,
    copy_image,
)
from .client.transport import HttpTransport
from .core.errors import REGISTRY, RegistryError
from .core.grammar import TAG, parse_digest, validate_name
from .core.manifests import IMAGE_TYPES

EXIT_OK, EXIT_REGISTRY, EXIT_USAGE, EXIT_TRANSPORT, EXIT_DIGEST = 0, 1, 2, 3, 4
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
PROG = "cargohold"


class UsageError(Exception):
    """The command line names something that cannot work (exit 2)."""


# -- references ------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryRef:
    """``[scheme://]host/repo[:tag|@digest]``."""

    scheme: str
    host: str
    repo: str
    tag: str | None = None
    digest: str | None = None

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def reference(self) -> str | None:
        return self.digest or self.tag

    def __str__(self) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}" if self.tag else ""
        return f"{self.host}/{self.repo}{suffix}"


@dataclass(frozen=True)
class LayoutRef:
    path: Path
    tag: str | None = None

    def __str__(self) -> str:
        return f"oci:{self.path}" + (f":{self.tag}" if self.tag else "")


@dataclass(frozen=True)
class ArchiveRef:
    path: Path
    name: str | None = None

    def __str__(self) -> str:
        return f"docker-archive:{self.path}" + (f":{self.name}" if self.name else "")


Ref = RegistryRef | LayoutRef | ArchiveRef


def _is_local(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name in LOCAL_HOSTS or name.startswith("127.")


def parse_registry(text: str, plain_http: bool = False) -> tuple[str, str, str]:
    """``(scheme, host, rest)`` of ``[scheme://]host[/rest]``."""
    scheme = None
    for prefix in ("http://", "https://"):
        if text.startswith(prefix):
            scheme, text = prefix[:-3], text[len(prefix):]
    host, _, rest = text.partition("/")
    if not host or any(c.isspace() for c in host):
        raise UsageError(f"no registry host in {text!r}")
    if scheme is None:
        scheme = "http" if plain_http or _is_local(host) else "https"
    return scheme, host, rest.strip("/")


def parse_registry_ref(text: str, plain_http: bool = False, *,
                       need_repo: bool = True) -> RegistryRef:
    scheme, host, rest = parse_registry(text, plain_http)
    digest = tag = None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        _checked(lambda: parse_digest(digest), f"bad digest in {text!r}")
    else:
        head, sep, last = rest.rpartition("/")
        if ":" in last:
            last, _, tag = last.partition(":")
            rest = f"{head}{sep}{last}"
            if not TAG.match(tag):
                raise UsageError(f"bad tag {tag!r} in {text!r}")
    if need_repo:
        if not rest:
            raise UsageError(f"{text!r} names no repository (expected host/repo[:tag])")
        _checked(lambda: validate_name(rest), f"bad repository name {rest!r}")
    return RegistryRef(scheme, host, rest, tag, digest)


def _checked(check: Callable[[], object], message: str) -> None:
    try:
        check()
    except RegistryError as exc:
        raise UsageError(f"{message}: {exc}") from None


def _split_tag(text: str) -> tuple[str, str | None]:
    """``dir[:tag]``: a path that exists wins over a ``:tag`` suffix."""
    if os.path.exists(text):
        return text, None
    path, sep, tag = text.rpartition(":")
    if sep and path and TAG.match(tag):
        return path, tag
    return text, None


def parse_ref(text: str, plain_http: bool = False, *, local_default: bool = False) -> Ref:
    """Any image reference; with ``local_default`` a bare path is a layout
    directory or (if a file) a docker archive."""
    if text.startswith("oci:"):
        path, tag = _split_tag(text[4:])
        return LayoutRef(Path(path), tag)
    if text.startswith("docker-archive:"):
        rest = text[len("docker-archive:"):]
        if os.path.exists(rest):
            return ArchiveRef(Path(rest))
        path, _, name = rest.partition(":")
        return ArchiveRef(Path(path), name or None)
    if local_default:
        path, tag = _split_tag(text)
        if os.path.isfile(path):
            return ArchiveRef(Path(path), tag)
        return LayoutRef(Path(path), tag)
    return parse_registry_ref(text, plain_http)


# -- output ------------------------------------------------------------------------
class Output:
    """stdout for results, stderr for people; ``--json`` makes stdout JSON."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.quiet = bool(args.quiet)
        self.json = bool(args.json)

    def result(self, text: str, data: Any) -> None:
        if self.json:
            print(json.dumps(data, indent=None, sort_keys=True))
        elif text:
            print(text)

    def note(self, text: str) -> None:
        if not self.quiet and not self.json:
            print(text, file=sys.stderr)

    def progress_enabled(self) -> bool:
        return not self.quiet and not self.json and _stderr_is_tty()


def _stderr_is_tty() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class Bar:
    """A tqdm byte counter on stderr, shared by the copy's worker threads."""

    def __init__(self, description: str, enabled: bool, stream: TextIO | None = None) -> None:
        self.description = description
        self.enabled = enabled
        self.stream = stream
        self._bar: Any = None
        self._lock = threading.Lock()

    def plan(self, total_bytes: int, blobs: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=f"{self.description} ({blobs} blobs)",
                         file=self.stream or sys.stderr, leave=True, dynamic_ncols=True)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# -- clients ---------------------------------------------------------------------
class Session:
    """Clients per registry (one per host, so copies within a registry mount)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self._clients: dict[str, RegistryClient] = {}
        self._password: str | None = None
        self._transport = HttpTransport(pool_size=max(16, 4 * args.concurrency))
        if args.password_stdin and not args.username:
            raise UsageError("--password-stdin needs -u/--username")

    def password(self) -> str | None:
        if not self.args.password_stdin:
            return None
        if self._password is None:
            self._password = read_password_stdin()
        return self._password

    def client(self, base_url: str) -> RegistryClient:
        if base_url not in self._clients:
            username = self.args.username
            self._clients[base_url] = RegistryClient(
                base_url, transport=self._transport, username=username,
                password=self.password() if username else None,
                concurrency=self.args.concurrency,
                use_extensions=not self.args.no_extensions)
        return self._clients[base_url]

    def source(self, ref: Ref) -> Source:
        if isinstance(ref, RegistryRef):
            return RegistrySource(self.client(ref.base_url), ref.repo, ref.reference or "latest")
        if isinstance(ref, LayoutRef):
            layout = OciLayout(ref.path)
            if not layout.exists():
                raise UsageError(f"{ref.path} is not an OCI image layout (no index.json)")
            return LayoutSource(layout, ref.tag)
        if not ref.path.is_file():
            raise UsageError(f"{ref.path}: no such docker archive")
        return ArchiveSource(DockerArchive(ref.path), ref.name)

    def sink(self, ref: Ref) -> Sink:
        if isinstance(ref, RegistryRef):
            return RegistrySink(self.client(ref.base_url), ref.repo)
        if isinstance(ref, LayoutRef):
            if ref.path.exists() and not ref.path.is_dir():
                raise UsageError(f"{ref.path} exists and is not a directory")
            return LayoutSink(OciLayout(ref.path))
        raise UsageError("a docker archive can only be read, not written")


def read_password_stdin() -> str:
    data = sys.stdin.read()
    return data.rstrip("\r\n")


# -- commands --------------------------------------------------------------------
def _transfer(args: argparse.Namespace, out: Output, src: Ref, dst: Ref, verb: str) -> int:
    session = Session(args)
    source = session.source(src)
    sink = session.sink(dst)
    src_by_digest = isinstance(src, RegistryRef) and src.digest is not None
    if isinstance(dst, RegistryRef) and dst.digest:
        tag = None
    else:
        tag = dst.tag if not isinstance(dst, ArchiveRef) else None
    if tag is None and not (isinstance(dst, RegistryRef) and dst.digest):
        source.resolve()  # learns a layout's ref name
        tag = source.default_tag or (None if src_by_digest or isinstance(dst, LayoutRef)
                                     else "latest")
    if isinstance(dst, RegistryRef) and dst.digest:
        top = source.resolve()[0]["digest"]
        if top != dst.digest:
            raise DigestMismatchError(f"{src} is {top}, not {dst.digest}")
    doing = {"pushed": "pushing", "pulled": "pulling"}.get(verb, "copying")
    bar = Bar(f"{doing} {dst}", out.progress_enabled())
    try:
        result = copy_image(source, sink, tag=tag, concurrency=args.concurrency, reporter=bar)
    finally:
        bar.close()
    _report_copy(out, result, src, dst, verb)
    return EXIT_OK


def _report_copy(out: Output, result: CopyResult, src: Ref, dst: Ref, verb: str) -> None:
    data = {**result.as_dict(), "source": str(src), "destination": str(dst)}
    out.result(result.digest, data)
    target = f"{dst}:{result.tag}" if result.tag and not _has_ref(dst) else str(dst)
    out.note(f"{verb} {src} -> {target}: {result.uploaded} blobs copied "
             f"({_size(result.bytes_moved)}), "
             f"{result.mounted} mounted, {result.skipped} already present, "
             f"{result.manifests} manifest{'s' if result.manifests != 1 else ''}")


def _has_ref(ref: Ref) -> bool:
    """Whether the reference already names a tag or digest."""
    if isinstance(ref, RegistryRef):
        return bool(ref.tag or ref.digest)
    return isinstance(ref, ArchiveRef) or bool(ref.tag)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def cmd_push(args: argparse.Namespace, out: Output) -> int:
    src = parse_ref(args.source, args.plain_http, local_default=True)
    if isinstance(src, RegistryRef):
        raise UsageError("push reads an OCI layout directory or a docker archive")
    dst = parse_registry_ref(args.destination, args.plain_http)
    return _transfer(args, out, src, dst, "pushed")


def cmd_pull(args: argparse.Namespace, out: Output) -> int:
    src = parse_registry_ref(args.source, args.plain_http)
    dst = parse_ref(args.destination, args.plain_http, local_default=True)
    if not isinstance(dst, LayoutRef):
        raise UsageError("pull writes an OCI layout directory")
    return _transfer(args, out, src, dst, "pulled")


def cmd_copy(args: argparse.Namespace, out: Output) -> int:
    src = parse_ref(args.source, args.plain_http)
    dst = parse_ref(args.destination, args.plain_http)
    return _transfer(args, out, src, dst, "copied")


def cmd_catalog(args: argparse.Namespace, out: Output) -> int:
    scheme, host, _ = parse_registry(args.registry, args.plain_http)
    repositories = Session(args).client(f"{scheme}://{host}").catalog(args.page_size)
    out.result("\n".join(repositories), {"repositories": repositories})
    return EXIT_OK


def cmd_tags(args: argparse.Namespace, out: Output) -> int:
    ref = parse_registry_ref(args.repository, args.plain_http)
    tags = Session(args).client(ref.base_url).tags(ref.repo, args.page_size)
    out.result("\n".join(tags), {"name": ref.repo, "tags": tags})
    return EXIT_OK


def cmd_inspect(args: argparse.Namespace, out: Output) -> int:
    ref = parse_ref(args.reference, args.plain_http)
    source = Session(args).source(ref)
    descriptor, body = source.resolve()
    if args.raw:
        sys.stdout.flush()
        sys.stdout.buffer.write(body)
        sys.stdout.flush()
        return EXIT_OK
    manifest = json.loads(body)
    data: dict[str, Any] = {"reference": str(ref), **descriptor, "manifest": manifest}
    config = manifest.get("config") if isinstance(manifest, dict) else None
    if descriptor["mediaType"] in IMAGE_TYPES and isinstance(config, dict) and \
            str(config.get("mediaType", "")).endswith("json"):
        try:
            data["config"] = json.loads(source.read_small(config))
        except ValueError:
            data["config"] = None
    if out.json:
        out.result("", data)
    else:
        print(json.dumps(data, indent=2))
    return EXIT_OK


def cmd_rm(args: argparse.Namespace, out: Output) -> int:
    ref = parse_registry_ref(args.reference, args.plain_http)
    if not ref.reference:
        raise UsageError(f"{args.reference!r}: name the tag or digest to delete")
    Session(args).client(ref.base_url).delete_manifest(ref.repo, ref.reference)
    out.result(f"deleted {ref}", {"deleted": str(ref), "repository": ref.repo,
                                  "reference": ref.reference})
    return EXIT_OK


def cmd_login(args: argparse.Namespace, out: Output) -> int:
    scheme, host, rest = parse_registry(args.registry, args.plain_http)
    if rest:
        raise UsageError("login takes a registry (host[:port]), not a repository")
    username = args.username
    if not username:
        raise UsageError("login needs -u/--username")
    if args.password_stdin:
        password = read_password_stdin()
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {username}@{host}: ")
    else:
        raise UsageError("no terminal to ask for the password: use --password-stdin")
    if not password:
        raise UsageError("empty password")
    client = RegistryClient(f"{scheme}://{host}", username=username, password=password)
    client.ping()  # raises AuthenticationError when the registry refuses them
    path = store_credentials(host, username, password)
    out.result("Login Succeeded", {"registry": host, "username": username,
                                   "config": str(path)})
    return EXIT_OK


def store_credentials(host: str, username: str, password: str,
                      path: Path | None = None) -> Path:
    """Write ``auths[host]`` into the Docker config (``DOCKER_CONFIG``
    respected), keeping every other setting; the file is private (0600)."""
    path = path or docker_config_path()
    config: dict[str, Any] = {}
    if path.exists():
        try:
            config = json.loads(path.read_text() or "{}")
        except ValueError as exc:
            raise UsageError(f"{path} is not JSON ({exc}); not overwriting it") from None
        if not isinstance(config, dict):
            raise UsageError(f"{path} is not a JSON object; not overwriting it")
    auths = config.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise UsageError(f"{path}: auths is not an object; not overwriting it")
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths[host] = {"auth": token}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(prefix=".config-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(config, handle, indent="\t")
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return path


def cmd_verify(argv: list[str]) -> int:
    from .client import verify as _verify

    try:
        code = _verify.main(argv)
    except SystemExit as exc:  # its argparse: --help (0) or a usage error (2)
        code = exc.code if isinstance(exc.code, int) or exc.code is None else EXIT_USAGE
    return int(code or 0)


# -- the parser --------------------------------------------------------------------
def _common(sub: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the command (after wins)."""
    parser = argparse.ArgumentParser(add_help=False)

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if sub else value

    group = parser.add_argument_group("common options")
    group.add_argument("--plain-http", "--insecure", dest="plain_http", action="store_true",
                       default=default(False),
                       help="use http:// (default: http for localhost/127.0.0.1, else https)")
    group.add_argument("-u", "--username", default=default(None),
                       help="registry user (else CARGOHOLD_USERNAME or the docker config)")
    group.add_argument("--password-stdin", action="store_true", default=default(False),
                       help="read the password from standard input")
    group.add_argument("-j", "--concurrency", type=_positive, default=default(4),
                       metavar="N", help="parallel blob transfers (default 4)")
    group.add_argument("--no-extensions", action="store_true", default=default(False),
                       help="do not use cargohold's direct-to-S3 upload extension")
    group.add_argument("-q", "--quiet", action="store_true", default=default(False),
                       help="no progress bars or summaries")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="machine-readable output on stdout")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError("must be between 1 and 64")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[_common(False)],
        description="Push, pull and manage images on OCI Distribution registries.",
        epilog="References: [http(s)://]host[:port]/repo[:tag|@digest], oci:DIR[:tag], "
               "docker-archive:FILE. Exit codes: 0 ok, 1 registry error, 2 usage error, "
               "3 transport/auth error, 4 digest mismatch.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    sub = [_common(True)]

    def add(name: str, handler: Callable[..., int], help_text: str,
            aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
        command = commands.add_parser(name, parents=sub, help=help_text, description=help_text,
                                      aliases=list(aliases))
        command.set_defaults(handler=handler)
        return command

    push = add("push", cmd_push, "push an OCI layout (DIR[:tag]) or a docker archive")
    push.add_argument("source", help="OCI layout DIR[:tag], or a docker-save .tar")
    push.add_argument("destination", help="host/repo[:tag]")
    pull = add("pull", cmd_pull, "pull an image (an index with all its children) into a layout")
    pull.add_argument("source", help="host/repo[:tag|@digest]")
    pull.add_argument("destination", help="OCI layout DIR[:tag]")
    copy = add("copy", cmd_copy, "copy an image between registries and layouts", ("cp",))
    copy.add_argument("source", help="host/repo[:tag|@digest], oci:DIR[:tag], "
                                     "docker-archive:FILE")
    copy.add_argument("destination", help="host/repo[:tag], oci:DIR[:tag]")
    catalog = add("catalog", cmd_catalog, "list the repositories of a registry", ("ls",))
    catalog.add_argument("registry", help="[http(s)://]host[:port]")
    catalog.add_argument("-n", "--page-size", type=_page, default=None, metavar="N")
    tags = add("tags", cmd_tags, "list the tags of a repository")
    tags.add_argument("repository", help="host/repo")
    tags.add_argument("-n", "--page-size", type=_page, default=None, metavar="N")
    inspect = add("inspect", cmd_inspect, "show a manifest and its config as JSON")
    inspect.add_argument("reference", help="host/repo[:tag|@digest], oci:DIR[:tag], "
                                           "docker-archive:FILE")
    inspect.add_argument("--raw", action="store_true", help="the manifest bytes as stored")
    rm = add("rm", cmd_rm, "delete a tag or a manifest (by digest)", ("delete",))
    rm.add_argument("reference", help="host/repo:tag or host/repo@digest")
    login = add("login", cmd_login, "check credentials and store them in the docker config")
    login.add_argument("registry", help="host[:port]")
    verify = add("verify", cmd_verify, "check a registry against the protocol (see "
                                       "`cargohold verify --help`)")
    verify.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def _page(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError("must be a positive number")
    return int(text)


# -- errors ----------------------------------------------------------------------
def describe_registry_error(exc: RegistryResponseError) -> list[str]:
    """Lines for people: each error's code, message and reason, with the
    error registry's explanation of the code."""
    lines = []
    for code, (registered, message, detail) in zip(exc.codes, exc.errors, strict=False):
        reason = detail.get("reason") if isinstance(detail, dict) else None
        line = f"{code}: {message or registered.message}"
        if reason:
            line += f" ({reason})"
        lines.append(line)
        if code in REGISTRY and registered.description:
            lines.append(f"  {registered.description}")
    if not lines:
        lines.append(f"HTTP {exc.status} with no error body")
    lines.append(f"  ({exc.method} {exc.url} answered {exc.status})")
    return lines


def _error_json(code: int, message: str, errors: list[dict[str, Any]] | None = None) -> None:
    print(json.dumps({"error": {"exit": code, "message": message,
                                "errors": errors or []}}, sort_keys=True))


def _fail(out: Output | None, code: int, lines: list[str],
          errors: list[dict[str, Any]] | None = None) -> int:
    print(f"{PROG}: error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(line, file=sys.stderr)
    if out is not None and out.json:
        _error_json(code, lines[0], errors)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "verify":
        return cmd_verify(argv[1:])
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if args.command == "verify":
            return cmd_verify(list(args.rest) + extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(args)
    try:
        return args.handler(args, out)
    except UsageError as exc:
        return _fail(out, EXIT_USAGE, [str(exc)])
    except DigestMismatchError as exc:
        return _fail(out, EXIT_DIGEST, [f"digest mismatch: {exc}"])
    except (AuthenticationError, TransportError) as exc:
        return _fail(out, EXIT_TRANSPORT, [str(exc)])
    except RegistryResponseError as exc:
        errors = [{"code": c, "message": m, "detail": d}
                  for c, (_, m, d) in zip(exc.codes, exc.errors, strict=False)]
        code = EXIT_TRANSPORT if exc.status in (401, 403) else EXIT_REGISTRY
        return _fail(out, code, describe_registry_error(exc), errors)
    except LayoutError as exc:
        return _fail(out, EXIT_USAGE, [str(exc)])
    except ProtocolError as exc:
        return _fail(out, EXIT_REGISTRY, [f"protocol error: {exc}"])
    except ClientError as exc:
        return _fail(out, EXIT_REGISTRY, [str(exc)])
    except RegistryError as exc:  # a malformed digest or name from the core's grammar
        return _fail(out, EXIT_USAGE, [str(exc)])
    except OSError as exc:
        return _fail(out, EXIT_USAGE, [f"{exc.filename or ''}: {exc.strerror or exc}"])
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
