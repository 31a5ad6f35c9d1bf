"""The documentation's links, checked without mkdocs (issue #42): every relative link of the README, of docs/ and of
the checkpoints' READMEs names a file that exists, and every anchor a heading of its target (GitHub's anchors, which
mkdocs.yml also uses); the README links each task page of docs/. `mkdocs build --strict` in scripts/test.sh checks
the built site (the API reference included) on top of this."""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# the pages a newcomer reads (docs/*.md); history/ and data/ are linked from them
TASK_PAGES = sorted(p.name for p in DOCS.glob("*.md"))

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)[^`].*?\1", re.S)
_LINK = re.compile(r"!?\[(?:[^\[\]\n]|\[[^\]\n]*\])*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.M)


def _pages() -> list[Path]:
    pages = [ROOT / "README.md", *sorted(DOCS.rglob("*.md")), *sorted((ROOT / "checkpoints").glob("*/README.md"))]
    return [p for p in pages if p.is_file()]


def _prose(text: str) -> str:
    """The text without fenced code blocks (whose lines may start with '#') and code spans."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading (mkdocs.yml's toc slugify is pymdownx's, the same rule): the text as
    rendered, lower case, characters other than letters, digits, '_', '-' and spaces dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags
    text = unicodedata.normalize("NFC", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor of a Markdown file; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    out = set()
    for m in _HEADING.finditer(_FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(m.group(2))
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    return frozenset(out)


def has_anchor(path: Path, anchor: str) -> bool:
    """A heading's anchor, or in a page of mkdocstrings' ``::: module`` blocks the module's or a member's id
    (mkdocs' own anchor check covers those exactly)."""
    if anchor in anchors(path):
        return True
    modules = re.findall(r"^:::\s+([\w.]+)\s*$", path.read_text(encoding="utf-8"), re.M)
    return any(anchor == m or anchor.startswith(m + ".") for m in modules)


def links(path: Path) -> list[str]:
    return [m.group("target") for m in _LINK.finditer(_prose(path.read_text(encoding="utf-8")))]


def test_slug_is_githubs() -> None:
    assert slug("Real occlusion: the realistic test (issue #39) — 2026-12-07") == \
        "real-occlusion-the-realistic-test-issue-39--2026-12-07"
    assert slug("The `dlib_resnet-ftc` pair, α chosen on held-out CelebA") == \
        "the-dlib_resnet-ftc-pair-α-chosen-on-held-out-celeba"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    bad = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
            continue  # another site, mailto:
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if path.startswith("/") or not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and not has_anchor(dest, anchor):
            bad.append(f"{target}: no heading with that anchor in {dest.relative_to(ROOT)}")
    assert not bad, f"{page.relative_to(ROOT)}: dead links:\n" + "\n".join(bad)


def test_readme_links_each_task_page() -> None:
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    missing = [name for name in TASK_PAGES if (DOCS / name).resolve() not in linked]
    assert TASK_PAGES and not missing, f"README.md does not link these docs pages: {missing}"


def test_every_task_page_is_in_the_site_navigation() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    missing = [name for name in TASK_PAGES if not re.search(rf":\s*{re.escape(name)}\s*$", nav, re.M)]
    assert not missing, f"mkdocs.yml's nav lacks: {missing}"
