"""The `// Roles: ...` line of every RPC's comment in the protos, written from the access
table (services/runtime/access.py), so the contract says who may call what and the two
cannot drift: `python -m membership_cli.proto_roles --write` rewrites the lines, and
tests/unit/test_proto_roles.py fails when a proto and the table disagree."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from services.runtime.access import METHOD_SCOPES, ROLE_SCOPES, SCOPE_READ_PII

PROTO_ROOT = Path(__file__).parents[1] / "protos"
ROLES_PREFIX = "// Roles: "
_PACKAGE = re.compile(r"^package ([\w.]+);")
_SERVICE = re.compile(r"^service (\w+) \{")
_RPC = re.compile(r"^(\s*)rpc (\w+)\(")


def roles_line(method: str) -> str:
    """`Roles: a, b.` in the table's role order; `none` for a method no role may call."""
    scope = METHOD_SCOPES.get(method)
    roles = [role for role, scopes in ROLE_SCOPES.items() if scope and scope in scopes]
    text = ", ".join(f"`{role}`" for role in roles) or "none"
    if method.endswith("/GetMember") and "accounts." in method:
        readers = [r for r, scopes in ROLE_SCOPES.items() if SCOPE_READ_PII in scopes]
        text += " (the FULL view: " + ", ".join(f"`{r}`" for r in readers) + ")"
    return f"{ROLES_PREFIX}{text}."


def _methods(lines: list[str]) -> Iterator[tuple[int, str, str]]:
    """(line index, indentation, full method name) of every rpc."""
    package = service = ""
    for index, line in enumerate(lines):
        if found := _PACKAGE.match(line):
            package = found.group(1)
        elif found := _SERVICE.match(line):
            service = found.group(1)
        elif found := _RPC.match(line):
            yield index, found.group(1), f"/{package}.{service}/{found.group(2)}"


def with_roles(text: str) -> str:
    """The proto text with each rpc's roles line written (replaced, or added last)."""
    lines = text.split("\n")
    for index, indent, method in reversed(list(_methods(lines))):
        above = index - 1
        if lines[above].strip().startswith(ROLES_PREFIX):
            lines[above] = indent + roles_line(method)
        else:
            lines.insert(index, indent + roles_line(method))
    return "\n".join(lines)


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    return sorted(root.glob("membership/**/*.proto"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the protos in place")
    args = parser.parse_args(argv)
    stale = []
    for path in proto_files():
        text = path.read_text(encoding="utf-8")
        wanted = with_roles(text)
        if wanted != text:
            stale.append(path)
            if args.write:
                path.write_text(wanted, encoding="utf-8")
    for path in stale:
        print(f"{'rewrote' if args.write else 'stale'}: {path}", file=sys.stderr)
    return 0 if args.write or not stale else 1


if __name__ == "__main__":
    raise SystemExit(main())
