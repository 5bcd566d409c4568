"""Every relative link in the documentation points to a file of this repository.

Checked: README.md, docs/**/*.md, deploy/README.md and tests/bench/README.md. A link with a
scheme (https:, mailto:) is not checked; a relative one must resolve to an existing file or
folder inside the repository (the repository carries its own design, nothing points outside
it). An anchor into a Markdown file must name one of its headings, as GitHub spells them.
Links inside code (fenced blocks, `spans`) are not links.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]


def documents() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "deploy" / "README.md", ROOT / "tests/bench/README.md"]
    found += sorted((ROOT / "docs").rglob("*.md"))
    return [path for path in found if path.is_file()]


FENCE = re.compile(r"^ {0,3}(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]"  # [text], one level of [nested] brackets allowed
    r"\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"  # (target "optional title")
)
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")
AREAS = ("identity", "accounts", "points", "privacy", "gateway", "operations")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")


def prose_lines(text: str, *, blank_code: bool = True) -> list[str]:
    """The lines outside fenced code blocks, with code spans blanked unless told not to."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(CODE_SPAN.sub("", line) if blank_code else line)
    return lines


def links(text: str) -> list[str]:
    found = []
    for line in prose_lines(text):
        found += INLINE_LINK.findall(line)
        found += REFERENCE.findall(line)
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower-cased, punctuation dropped, spaces as -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    found: set[str] = set()
    repeats: dict[str, int] = {}
    for line in prose_lines(path.read_text(), blank_code=False):
        match = HEADING.match(line)
        if match:
            base = slug(match.group(1))
            count = repeats.get(base, 0)
            repeats[base] = count + 1
            found.add(f"{base}-{count}" if count else base)
    return found


def problems(document: Path, root: Path = ROOT) -> list[str]:
    found = []
    for target in links(document.read_text()):
        if SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        path_part = unquote(path_part.partition("?")[0])
        resolved = (document.parent / path_part).resolve() if path_part else document
        where = f"{document.relative_to(root)}: {target}"
        if not resolved.is_relative_to(root):
            found.append(f"{where} points outside the repository")
        elif not resolved.exists():
            found.append(f"{where} does not exist")
        elif anchor and resolved.suffix == ".md" and unquote(anchor) not in anchors(resolved):
            found.append(f"{where} names no heading of {resolved.relative_to(root)}")
    return found


@pytest.mark.parametrize("document", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(document: Path) -> None:
    assert problems(document) == []


def test_the_documents_are_found() -> None:
    names = {str(path.relative_to(ROOT)) for path in documents()}
    assert {"README.md", "docs/design.md", "docs/decisions.md"} <= names
    assert {f"docs/decisions/{area}.md" for area in AREAS} <= names
    assert sum(len(links(path.read_text())) for path in documents()) > len(names)


def test_the_checker_sees_links_and_not_code(tmp_path: Path) -> None:
    text = (
        "# A `coded` title — with *marks*\n\n"
        'See [one](a.md), ![img](b.png "title") and [ref]: c.md\n'
        "Not `[code](x.md)`.\n\n"
        "```\n[fenced](y.md)\n```\n"
        "[external](https://example.com) [here](#a-coded-title--with-marks)\n"
    )
    assert links(text) == ["a.md", "b.png", "https://example.com", "#a-coded-title--with-marks"]
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    assert anchors(doc) == {"a-coded-title--with-marks"}


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs").mkdir(parents=True)
    (repo / "docs" / "there.md").write_text("# Here it is\n")
    doc = repo / "docs" / "doc.md"
    doc.write_text(
        "[ok](there.md#here-it-is) [dir](.) [self](#title) [gone](missing.md)\n"
        "[anchor](there.md#elsewhere) [outside](../../shared/DESIGN.md)\n\n# Title\n"
    )
    assert problems(doc, repo) == [
        "docs/doc.md: missing.md does not exist",
        "docs/doc.md: there.md#elsewhere names no heading of docs/there.md",
        "docs/doc.md: ../../shared/DESIGN.md points outside the repository",
    ]
