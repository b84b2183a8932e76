"""Real plain text for the text part: from the campaign's Markdown, and from HTML.

- :func:`markdown_to_text`: the Markdown of a body as text a person reads in a text-only
  mail client: headings as their words, emphasis dropped, lists as ``- item`` and
  ``1. item``, links as ``text <url>``, images as their alt text, code as written,
  quotes as ``> `` lines, a line of dashes for a break. Jinja placeholders come out exactly
  as written (the result is still a template), by the keep-and-restore trick of
  :mod:`mailer.render.body`, which lives here so that both modules share it. Lines are not
  wrapped: mail clients wrap text/plain.
- :func:`html_to_text`: the text derived from an HTML message (inscriptis), links as
  ``text <url>`` rather than inscriptis' ``[text](url)``, without runs of blank lines.

Both show a link's address once: alone when its text is the address, ``mailto:`` dropped.
Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode

if TYPE_CHECKING:  # lxml and inscriptis are imported when a text is first derived from HTML:
    # a sending process whose render pool composes never needs them (about 4 MiB)
    from inscriptis.model.config import ParserConfig
    from lxml.html import HtmlElement  # type: ignore[import-untyped]

PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_KEPT = re.compile(r"mailerkeep(\d+)x")
_RULE = "-" * 40
_XML_DECLARATION = re.compile(r"^<\?xml [^>]+?\?>")


def keep_placeholders(source: str) -> tuple[str, Callable[[str], str]]:
    """``source`` with each Jinja placeholder swapped for a plain word, and the function that
    puts them back in a text made from it."""
    kept: list[str] = []

    def _keep(match: re.Match[str]) -> str:
        kept.append(match.group(0))
        return f"mailerkeep{len(kept) - 1}x"

    def restore(text: str) -> str:
        """``text`` with the placeholders back."""
        return _KEPT.sub(lambda m: kept[int(m.group(1))], text) if kept else text

    return PLACEHOLDER.sub(_keep, source), restore


def shown_address(href: str, text: str) -> str:
    """``text <href>``; the address alone when it is the text; ``mailto:`` dropped."""
    address = href[7:] if href.lower().startswith("mailto:") else href
    text = text.strip()
    if not address or text in (href, address):
        return text or address
    if not text:
        return address
    return f"{text} <{address}>"


# --- Markdown ----------------------------------------------------------------------------


def markdown_to_text(source: str, parser: MarkdownIt) -> str:
    """The Markdown ``source`` as plain text (a Jinja template still, when it was one)."""
    kept, restore = keep_placeholders(source)
    root = SyntaxTreeNode(parser.parse(kept))
    text = "\n\n".join(block for block in _blocks(root.children, parser) if block)
    return restore(text) + "\n" if text else ""


def _blocks(nodes: list[SyntaxTreeNode], parser: MarkdownIt) -> list[str]:
    """Each of ``nodes`` as its text."""
    return [_block(node, parser) for node in nodes]


def _block(node: SyntaxTreeNode, parser: MarkdownIt) -> str:
    """One block (a paragraph, a heading, a list...) as lines of text."""
    kind = node.type
    if kind in ("paragraph", "heading"):
        return "".join(_inline(child, parser) for child in _inline_children(node))
    if kind in ("bullet_list", "ordered_list"):
        return _list(node, parser)
    if kind == "blockquote":
        inner = "\n\n".join(b for b in _blocks(node.children, parser) if b)
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))
    if kind in ("fence", "code_block"):
        return node.content.rstrip("\n")
    if kind == "hr":
        return _RULE
    if kind == "html_block":  # pragma: no cover - the parser passes no raw HTML
        return node.content.rstrip("\n")
    return "\n\n".join(b for b in _blocks(node.children, parser) if b)


def _inline_children(node: SyntaxTreeNode) -> list[SyntaxTreeNode]:
    """The inline content of a paragraph or heading."""
    children: list[SyntaxTreeNode] = []
    for child in node.children:
        children.extend(child.children if child.type == "inline" else [child])
    return children


def _list(node: SyntaxTreeNode, parser: MarkdownIt) -> str:
    """A list: ``- `` or ``1. `` before each item, its other lines indented to match."""
    ordered = node.type == "ordered_list"
    number = int(str(node.attrs.get("start", 1))) if ordered else 0
    tight = all(p.hidden for item in node.children for p in item.children if p.type == "paragraph")
    items: list[str] = []
    for item in node.children:
        marker = f"{number}. " if ordered else "- "
        number += 1
        blocks = [b for b in _blocks(item.children, parser) if b]
        body = ("\n" if tight else "\n\n").join(blocks)
        lines = body.split("\n")
        indent = " " * len(marker)
        items.append(
            "\n".join([marker + lines[0]] + [indent + line if line else "" for line in lines[1:]])
        )
    return ("\n" if tight else "\n\n").join(items)


def _inline(node: SyntaxTreeNode, parser: MarkdownIt) -> str:
    """Inline content as text: emphasis dropped, links as ``text <url>``, images' alt."""
    kind = node.type
    if kind == "text":
        return node.content
    if kind in ("softbreak", "hardbreak"):
        return "\n"
    if kind == "code_inline":
        return node.content
    if kind == "link":
        text = "".join(_inline(child, parser) for child in node.children)
        href = str(node.attrs.get("href", ""))
        if node.markup == "autolink" or text == parser.normalizeLinkText(href):
            return text
        return shown_address(href, text)
    if kind == "image":
        return "".join(_inline(child, parser) for child in node.children)
    if kind == "html_inline":  # pragma: no cover - the parser passes no raw HTML
        return ""
    return "".join(_inline(child, parser) for child in node.children)


# --- HTML --------------------------------------------------------------------------------


def text_config() -> ParserConfig:
    """How inscriptis lays the text out: links are not shown by it (see html_to_text)."""
    from inscriptis.model.config import ParserConfig

    return ParserConfig(display_links=False)


def html_to_text(html: str, config: ParserConfig | None = None) -> str:
    """The text of ``html``: what inscriptis shows, each link followed by `` <url>`` (the
    address alone when it is the link's text), no runs of blank lines."""
    tree = _tree(html)
    if tree is None:
        return "\n"
    _show_links(tree)
    from inscriptis import Inscriptis

    return tidy(Inscriptis(tree, config or text_config()).get_text())


def _tree(html: str) -> HtmlElement | None:
    """The lxml tree of ``html`` as inscriptis' own get_text makes it (None when empty)."""
    html = html.strip()
    if not html:
        return None
    if html.startswith("<?xml "):
        html = _XML_DECLARATION.sub("", html, count=1)
    from lxml.etree import ParserError  # type: ignore[import-untyped]
    from lxml.html import document_fromstring

    try:
        return document_fromstring(html)
    except ParserError:  # pragma: no cover - text that lxml will not take as a document
        return document_fromstring("<pre>" + html + "</pre>")


def _show_links(tree: HtmlElement) -> None:
    """Each link's text made ``text <url>`` in the tree itself (inscriptis then lays it out)."""
    for link in tree.iter("a"):
        href = (link.get("href") or "").strip()
        if not href or href.startswith("#"):
            continue
        text = " ".join(link.text_content().split())
        shown = shown_address(href, text)
        if shown == text:
            continue
        suffix = shown[len(text) :] if shown.startswith(text) else f" <{shown}>"
        if len(link):
            last = link[-1]
            last.tail = (last.tail or "") + suffix
        else:
            link.text = (link.text or "") + suffix


def tidy(text: str) -> str:
    """Lines without trailing spaces, no two blank lines in a row, one final line end."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.rstrip()
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n") + "\n"
