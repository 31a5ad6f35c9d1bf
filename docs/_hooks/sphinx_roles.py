"""mkdocs hook: the Sphinx roles of the docstrings (``:func:`name```, ``:data:``, ``:mod:`` ...) in the built pages.

Rendered as Markdown, ``:func:`x``` shows the role's name before the code ``x``. This drops the role and, where
the page documents ``x`` (an element with that id, as mkdocstrings gives every documented object), links the code
to it; a short name (``:meth:`identify```) is linked where exactly one documented object on the page has it.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|data|attr|exc|obj|const|type):<code>~?([\w.]+)(\(\))?</code>")
_ID = re.compile(r'\bid="([\w.]+)"')


def on_page_content(html: str, page: Any, config: Any, files: Any, **kwargs: Any) -> str:
    if ":<code>" not in html:
        return html
    ids = set(_ID.findall(html))
    by_tail: dict[str, str | None] = {}
    for i in ids:
        tail = i.rsplit(".", 1)[-1]
        by_tail[tail] = None if tail in by_tail else i  # a short name is linked only where it is unique on the page

    def one(m: re.Match[str]) -> str:
        name, call = m.group(1), m.group(2) or ""
        target = name if name in ids else by_tail.get(name) if "." not in name else None
        code = f"<code>{name}{call}</code>"
        return f'<a href="#{target}">{code}</a>' if target else code

    return _ROLE.sub(one, html)
