"""MkDocs hook: Sphinx cross-reference roles in docstrings shown as plain code.

The package's docstrings use Sphinx roles (``:class:`EventBus```); mkdocstrings renders
their markup but leaves the role name in front of the code span. This hook drops it, and
shortens ``~package.module.Name`` to ``Name`` as Sphinx would.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|mod|func|meth|attr|data|exc|obj|const):<code>(~?)([^<]*)</code>")


def _code(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"<code>{target.rsplit('.', 1)[-1] if short else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub(_code, html)
