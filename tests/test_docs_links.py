"""The docs hold together: every relative link resolves, every #anchor names a heading, the README stays short.

A moved or renamed page, or a heading reworded, breaks links silently on GitHub; this reads the
Markdown the way GitHub renders it (headings → anchors) and checks each link in README.md,
CONTRIBUTING.md, docs/*.md and the examples' READMEs. The README is the front door and stays at most
400 lines; the details live in docs/.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 400
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
#: [text](target) and ![alt](target); the target ends at whitespace or the closing parenthesis
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def doc_files() -> list[Path]:
    """The pages whose links are checked."""
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    pages += sorted((ROOT / "examples").rglob("README.md"))
    return [p for p in pages if p.exists()]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, which GitHub renders as code, not links or headings."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lower-cased, punctuation dropped, spaces → '-'."""
    text = INLINE_CODE.sub(lambda m: m.group(2), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    kept = (c for c in text if c in " -_" or c.isalnum() or unicodedata.category(c).startswith("M"))
    return "".join(kept).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a page has: its headings' slugs, a repeated one numbered -1, -2, … as GitHub does."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link on a page, code spans and fenced blocks left out."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        line = INLINE_CODE.sub("", line)
        found.extend((number, m.group(1)) for m in LINK.finditer(line))
    return found


def broken(path: Path, target: str, root: Path = ROOT) -> str | None:
    """Why a link does not resolve, or None. Links to the web and mail are not followed."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
        return None
    file_part, _, anchor = target.partition("#")
    dest = (path.parent / file_part).resolve() if file_part else path
    if file_part and not dest.exists():
        return f"{file_part} does not exist"
    if file_part and root not in dest.parents and dest != root:
        return f"{file_part} leaves the repository"
    if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
        return f"{dest.relative_to(root)} has no heading with the anchor #{anchor}"
    return None


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    problems = [
        f"{page.relative_to(ROOT)}:{number}: ({target}) {why}"
        for number, target in links(page)
        if (why := broken(page, target))
    ]
    assert not problems, "\n".join(problems)


def test_readme_is_a_front_door_of_at_most_400_lines():
    lines = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to docs/"


def test_the_pages_are_linked_from_the_readme():
    """A page nobody links to is a page nobody finds: every docs/*.md is reachable from README.md."""
    targets = {(ROOT / t.partition("#")[0]).resolve() for _, t in links(ROOT / "README.md") if t.partition("#")[0]}
    orphans = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in targets]
    assert not orphans, f"not linked from README.md: {', '.join(orphans)}"


@pytest.mark.parametrize(
    "heading, expected",
    [
        ("2. Adapter sites and the fold", "2-adapter-sites-and-the-fold"),
        ("4. AdaRing — cross-layer tensor-ring adapters", "4-adaring--cross-layer-tensor-ring-adapters"),
        (
            "Open vocabulary on the device: `classify --classes`, `relabel`",
            "open-vocabulary-on-the-device-classify---classes-relabel",
        ),
        ("Preprocessing geometry: what nvinfer's resize costs", "preprocessing-geometry-what-nvinfers-resize-costs"),
        ("Set-up (two commands)", "set-up-two-commands"),
        ("4.3 Generalization-aware objective", "43-generalization-aware-objective"),
    ],
)
def test_slug_follows_github(heading, expected):
    assert slug(heading) == expected


def test_a_broken_link_and_a_missing_anchor_are_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n\n## A section\n\n[ok](#a-section) [gone](other.md) [no anchor](#nowhere) "
        "[web](https://example.com) `[code](missing.md)`\n\n```\n[fenced](missing.md)\n```\n"
    )
    found = {target: broken(page, target, root=tmp_path) for _, target in links(page)}
    assert found == {
        "#a-section": None,
        "other.md": "other.md does not exist",
        "#nowhere": "page.md has no heading with the anchor #nowhere",
        "https://example.com": None,
    }
