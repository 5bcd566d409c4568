"""docs/architecture.md in executable form: the layers' imports, SQL only in store/, no
service importing another, no import cycles (tests/support/architecture.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.architecture import ROOT, Module, cycles, modules, report, violations


def test_the_tree_keeps_the_shape() -> None:
    found = report()
    assert found == [], "\n".join(found)


def test_no_module_imports_in_a_circle() -> None:
    assert cycles(modules()) == []


@pytest.mark.parametrize(
    ("layer", "source", "expected"),
    [
        ("domain", "import grpc\n", "pure module imports grpc"),
        ("domain", "import asyncpg\n", "pure module imports asyncpg"),
        ("domain", "from membership.points.v1 import points_pb2\n", "pure module imports"),
        ("domain", "from services.runtime import db\n", "not pure runtime"),
        ("server", "import asyncpg\n", "server module imports asyncpg"),
        ("server", 'Q = "SELECT balance FROM points.balances"\n', "SQL outside store/"),
        ("server", "from services.points.store import ledger\n", "(store)"),
        ("use_case", "from membership.points.v1 import points_pb2\n", "use_case module imports"),
        ("store", "from services.points import server_settlement\n", "(server)"),
        ("use_case", "from services.accounts import members\n", "services talk through stubs"),
        ("use_case", "import os\nLIMIT = os.environ['X']\n", "reads the environment"),
        ("server", "from os import getenv\n", "reads the environment"),
    ],
)
def test_a_planted_violation_is_named(
    tmp_path: Path, layer: str, source: str, expected: str
) -> None:
    path = tmp_path / "planted.py"
    path.write_text(source, encoding="utf-8")
    planted = Module("services.points.planted", path, layer, "points")
    known = {m.name: m for m in modules()}
    found = violations(planted, known)
    assert any(expected in line and "planted.py:" in line for line in found), found


def test_a_planted_cycle_is_found(tmp_path: Path) -> None:
    first, second = tmp_path / "planted_a.py", tmp_path / "planted_b.py"
    first.write_text("from services.points import planted_b\n", encoding="utf-8")
    second.write_text("from services.points import planted_a\n", encoding="utf-8")
    planted = [
        Module("services.points.planted_a", first, "use_case", "points"),
        Module("services.points.planted_b", second, "use_case", "points"),
    ]
    assert cycles([*modules(), *planted]) == [
        ["services.points.planted_a", "services.points.planted_b"]
    ]


def test_runtime_and_the_gateway_import_no_service(tmp_path: Path) -> None:
    path = tmp_path / "planted.py"
    path.write_text("from services.points import settlement\n", encoding="utf-8")
    for service, layer in (("runtime", "runtime"), ("gateway", "gateway")):
        planted = Module(f"{service}.planted", path, layer, service)
        found = violations(planted, {m.name: m for m in modules()})
        assert found and "services talk through stubs" in found[0], found
    assert ROOT.is_dir()


def _mapped_modules() -> set[str]:
    """The paths docs/architecture.md lists under "Every module", relative to the root."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed, folder = set(), ""
    for line in text.split("## Every module", 1)[1].splitlines():
        heading = re.match(r"### (\w+)", line)
        if heading:
            name = heading.group(1)
            folder = "gateway" if name == "gateway" else f"services/{name}"
        entry = re.match(r"- `([\w/]+\.py)`", line)
        if entry:
            listed.add(f"{folder}/{entry.group(1)}")
    return listed


def test_the_map_lists_every_module_and_nothing_else() -> None:
    tree = {m.path.relative_to(ROOT).as_posix() for m in modules()}
    listed = _mapped_modules()
    assert sorted(tree - listed) == [], "modules without a line in docs/architecture.md"
    assert sorted(listed - tree) == [], "docs/architecture.md lists modules that do not exist"


def test_the_docs_name_no_module_that_is_gone() -> None:
    named = re.compile(r"\b((?:services|gateway|tests|membership_cli)/[\w/]+\.py)\b")
    documents = [
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "deploy").rglob("*.md"),
    ]
    gone = sorted(
        f"{doc.relative_to(ROOT)}: {path}"
        for doc in documents
        for path in set(named.findall(doc.read_text(encoding="utf-8")))
        if not (ROOT / path).is_file()
    )
    assert gone == []
