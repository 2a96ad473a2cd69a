"""Render ``docs/api.md`` from the route table and error registry.

``make docs`` writes it; a test fails when the committed file is stale, so
the document can never describe an API the code does not serve.
"""

from __future__ import annotations

from .errors import _WIRE_CODES, REGISTRY
from .routes import ROUTES


def render() -> str:
    lines = [
        "# cargohold HTTP API",
        "",
        "Generated from `chalicelib/core/routes.py` and `chalicelib/core/errors.py` "
        "by `make docs`; do not edit by hand.",
        "",
        "Every response carries `Docker-Distribution-API-Version: registry/2.0`. "
        "Every failure answers `{\"errors\":[{\"code\",\"message\",\"detail\"}]}`.",
        "`{name}` is a repository name: lower-case components joined by `/`, at most "
        "255 characters; paths are matched from the right.",
        "",
        "## Routes",
        "",
    ]
    for route in ROUTES:
        kind = " (extension)" if route.extension else ""
        lines += [f"### `{route.template}`{kind}", "", route.description, "",
                  "| method | what | success | query | headers | errors |",
                  "|---|---|---|---|---|---|"]
        for op in route.operations:
            codes = ", ".join(sorted({_WIRE_CODES.get(e.code, e.code) + f" {e.status}"
                                      for e in op.errors}))
            lines.append(
                f"| {op.method} | {op.summary} | {', '.join(map(str, op.success))} | "
                f"{', '.join(f'`{q}`' for q in op.query) or '-'} | "
                f"{', '.join(f'`{h}`' for h in op.headers) or '-'} | {codes or '-'} |")
        lines.append("")
    lines += ["## Error codes", "", "| code | status | message | when |", "|---|---|---|---|"]
    for error in REGISTRY.values():
        lines.append(f"| `{_WIRE_CODES.get(error.code, error.code)}` | {error.status} | "
                     f"{error.message} | {error.description} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
