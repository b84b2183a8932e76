"""The campaign body: its Markdown, HTML or plain text turned into the sources of two
templates, once per send and language: the HTML one and the text one.

Markdown is rendered with its Jinja placeholders (``{{ ... }}``, ``{% ... %}``, ``{# ... #}``)
kept as they are, so that both results are still templates filled per recipient; raw HTML
in Markdown is not passed through. The text of a Markdown body is real plain text
(:func:`~mailer.render.plaintext.markdown_to_text`: no ``**``, no ``#``, links as
``text <url>``), that of an HTML body is derived from it, that of a text body is itself.
This module makes source text only: the renderer compiles it.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markupsafe import escape

from mailer.errors import TemplateError
from mailer.models import Content
from mailer.render.plaintext import html_to_text, keep_placeholders, markdown_to_text

FORMATS = ("markdown", "html", "text")


def markdown() -> MarkdownIt:
    """The Markdown parser of a renderer: CommonMark, raw HTML not passed through."""
    return MarkdownIt("commonmark", {"html": False})


def _check(body_format: str) -> None:
    if body_format not in FORMATS:
        raise TemplateError(f"body format {body_format!r}: expected markdown, html or text")


def body_html_source(source: str, body_format: str, parser: MarkdownIt) -> str:
    """The HTML template source of a body; TemplateError for an unknown format."""
    _check(body_format)
    if body_format == "markdown":
        kept, restore = keep_placeholders(source)
        return restore(parser.render(kept))
    if body_format == "html":
        return source
    return "".join(f"<p>{escape(p)}</p>\n" for p in source.split("\n\n") if p.strip())


def body_text(source: str, body_format: str, parser: MarkdownIt) -> str:
    """The text template source of a body; TemplateError for an unknown format."""
    _check(body_format)
    if body_format == "markdown":
        return markdown_to_text(source, parser)
    if body_format == "html":
        kept, restore = keep_placeholders(source)
        return restore(html_to_text(kept))
    return source


def body_html(content: Content, parser: MarkdownIt) -> str:
    """The HTML template source of ``content``'s body; TemplateError for an unknown format."""
    return body_html_source(content.body, content.body_format, parser)
