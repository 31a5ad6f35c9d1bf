"""mkdocs hook: links from the docs to repository files outside ``docs/`` (a checkpoint's README, a script).

Those links are right on a repository browser, but the site holds only ``docs/``. Each one is checked on disk
(a missing target is a warning, so ``mkdocs build --strict`` fails) and rendered as the file's repository path
in code, or as a link to it under ``repo_url`` where mkdocs.yml sets one. Links inside ``docs/`` are left to
mkdocs' own validation. Code blocks and code spans are left alone.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

log = logging.getLogger(f"mkdocs.plugins.{__name__}")

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)[^`].*?\1", re.S)
_LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]+)\]\((?P<target>[^)\s]+)\)")


def _rewrite(text: str, page_src: str, docs: Path, repo: Path, repo_url: str | None) -> str:
    def one(m: re.Match[str]) -> str:
        target = m.group("target")
        if re.match(r"^[a-z][a-z0-9+.-]*:|^/|^#", target):  # a scheme, an absolute path or an anchor
            return m.group(0)
        path = target.split("#", 1)[0].split("?", 1)[0]
        inside = posixpath.normpath(posixpath.join(posixpath.dirname(page_src), path))
        if not inside.startswith("../"):
            return m.group(0)  # inside docs/: mkdocs validates it
        rel = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_src), path))
        if rel.startswith("../") or not (repo / rel).exists():
            log.warning("Doc file '%s' links to '%s': no such file in the repository (%s)", page_src, target, rel)
            return m.group(0)
        if repo_url:
            return f"[{m.group('text')}]({repo_url.rstrip('/')}/blob/main/{rel})"
        label = m.group("text").strip("`")
        return f"`{rel}`" if label.rstrip("/") in (rel, posixpath.dirname(rel)) else f"{m.group('text')} (`{rel}`)"

    out, last = [], 0
    for span in _CODE_SPAN.finditer(text):
        out.append(_LINK.sub(one, text[last : span.start()]))
        out.append(span.group(0))
        last = span.end()
    out.append(_LINK.sub(one, text[last:]))
    return "".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    docs = Path(config["docs_dir"]).resolve()
    repo = docs.parent
    src = page.file.src_uri
    out, last = [], 0
    for fence in _FENCE.finditer(markdown):
        out.append(_rewrite(markdown[last : fence.start()], src, docs, repo, config.get("repo_url")))
        out.append(fence.group(0))
        last = fence.end()
    out.append(_rewrite(markdown[last:], src, docs, repo, config.get("repo_url")))
    return "".join(out)
