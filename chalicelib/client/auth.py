"""Credentials and the 401 challenge dance (Basic, and the Docker token flow).

The client sends nothing secret until a registry asks: on a 401 it reads
``WWW-Authenticate``; for ``Basic`` it answers with the credentials, for
``Bearer`` it fetches a token from the realm (with the credentials, if any,
as Basic) for the challenged scope and retries. Tokens are cached per scope.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def __repr__(self) -> str:  # never print the password
        return f"Credentials(username={self.username!r}, password=***)"


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker")
    return Path(base) / "config.json"


def from_docker_config(host: str, path: Path | None = None) -> Credentials | None:
    """Credentials for ``host`` from ``~/.docker/config.json`` ``auths``
    (``auth`` as base64 user:password, or ``username``/``password``)."""
    path = path or docker_config_path()
    try:
        auths = json.loads(path.read_text()).get("auths", {})
    except (OSError, ValueError):
        return None
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v2/",
                f"http://{host}/v2/"):
        entry = auths.get(key)
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                continue
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password", ""))
    return None


def resolve_credentials(host: str, username: str | None = None,
                        password: str | None = None) -> Credentials | None:
    """Arguments first, then ``CARGOHOLD_USERNAME``/``CARGOHOLD_PASSWORD``,
    then the Docker config file."""
    if username:
        return Credentials(username, password or "")
    env_user = os.environ.get("CARGOHOLD_USERNAME")
    if env_user:
        return Credentials(env_user, os.environ.get("CARGOHOLD_PASSWORD", ""))
    return from_docker_config(host)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


class Authenticator:
    """Answers challenges; ``fetch`` does a GET for the token endpoint."""

    def __init__(self, credentials: Credentials | None,
                 fetch: Callable[[str, dict[str, str]], tuple[int, bytes]]) -> None:
        self.credentials = credentials
        self.fetch = fetch
        self._tokens: dict[str, str] = {}
        self._basic_ok = False

    def header_for(self, scope_key: str) -> str | None:
        if scope_key in self._tokens:
            return f"Bearer {self._tokens[scope_key]}"
        if self._basic_ok and self.credentials:
            return self.credentials.basic()
        return None

    def answer(self, challenge: str, scope_key: str) -> str | None:
        """The Authorization header to retry with, or None if we cannot answer."""
        from .errors import AuthenticationError

        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.credentials:
                return None
            self._basic_ok = True
            return self.credentials.basic()
        if scheme != "bearer" or "realm" not in params:
            return None
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        url = params["realm"] + ("?" + urlencode(query) if query else "")
        status, body = self.fetch(url, headers)
        if status != 200:
            hint = "" if self.credentials else (
                " (no credentials given: pass a username and password, set CARGOHOLD_USERNAME"
                "/CARGOHOLD_PASSWORD, or log in with docker)")
            raise AuthenticationError(
                f"token endpoint {params['realm']} answered {status}{hint}")
        try:
            data = json.loads(body)
            token = data.get("token") or data.get("access_token")
        except ValueError:
            token = None
        if not token:
            raise AuthenticationError(f"token endpoint {params['realm']} gave no token")
        self._tokens[scope_key] = token
        return f"Bearer {token}"
