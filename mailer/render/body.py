"""The campaign body: its Markdown, HTML or plain text turned into the HTML source of one
template, once per send.

Markdown is rendered with its Jinja placeholders (``{{ ... }}``, ``{% ... %}``, ``{# ... #}``)
kept as they are, so that the HTML is still a template filled per recipient; raw HTML in
Markdown is not passed through. This module makes source text only: the renderer compiles it.
"""

from __future__ import annotations

import re

from markdown_it import MarkdownIt
from markupsafe import escape

from mailer.errors import TemplateError
from mailer.models import Content

_PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)


def markdown() -> MarkdownIt:
    """The Markdown parser of a renderer: CommonMark, raw HTML not passed through."""
    return MarkdownIt("commonmark", {"html": False})


def body_html(content: Content, parser: MarkdownIt) -> str:
    """The HTML template source of ``content``'s body; TemplateError for an unknown format."""
    source = content.body
    if content.body_format == "markdown":
        kept: list[str] = []

        def _keep(match: re.Match[str]) -> str:
            kept.append(match.group(0))
            return f"mailerkeep{len(kept) - 1}x"

        html = parser.render(_PLACEHOLDER.sub(_keep, source))
        return re.sub(r"mailerkeep(\d+)x", lambda m: kept[int(m.group(1))], html)
    if content.body_format == "html":
        return source
    if content.body_format == "text":
        return "".join(f"<p>{escape(p)}</p>\n" for p in source.split("\n\n") if p.strip())
    raise TemplateError(f"body format {content.body_format!r}: expected markdown, html or text")
