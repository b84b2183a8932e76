"""The finishing of a rendered message: its CSS inlined and, when it has no text template,
its text part derived from the HTML.

Both cost hundreds of microseconds per recipient, and the HTML of most recipients differs
only by their own values (links, address, full name). A :class:`Finisher` swaps those for
private-use markers, finishes the marked HTML once (or finds it in a small cache) and puts
the values back. One finisher per compiled send: its cache holds that send's HTML only.
"""

from __future__ import annotations

from collections import OrderedDict

import css_inline
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from markupsafe import escape

from mailer.models import Links, Recipient

_CACHE_SIZE = 64
_PRIVATE = "\ue000"  # marks recipient values while HTML is finished once for many recipients


def inliner() -> css_inline.CSSInliner:
    """The CSS inliner of a renderer: no remote stylesheet, @-rules kept, <style> dropped."""
    return css_inline.CSSInliner(
        load_remote_stylesheets=False, keep_at_rules=True, keep_style_tags=False
    )


def text_config() -> ParserConfig:
    """How the text part is derived from the HTML: links shown."""
    return ParserConfig(display_links=True)


class Finisher:
    """CSS inlining and text derivation for one send, with its cache of marked HTML."""

    __slots__ = ("_cache", "_inliner", "_text_config")

    def __init__(self, inliner: css_inline.CSSInliner, text_config: ParserConfig) -> None:
        self._inliner = inliner
        self._text_config = text_config
        self._cache: OrderedDict[str, tuple[str, str | None]] = OrderedDict()

    def finish(
        self, html: str, recipient: Recipient, links: Links, *, need_text: bool
    ) -> tuple[str, str | None]:
        """The inlined HTML and, when ``need_text``, the text derived from it.

        Only values that cannot be mistaken for HTML syntax are marked: links, the address
        (it has an @), a name with a space in it; anything else stays and is part of the key.
        """
        values = [
            v
            for v in (
                links.unsubscribe,
                links.preferences,
                links.web_version,
                links.confirm,
                recipient.email,
            )
            if v
        ]
        if " " in recipient.name.strip():
            values.append(recipient.name)
        if _PRIVATE in html or any(_PRIVATE in v for v in values):
            inlined = self._inliner.inline(html)
            text = _tidy(get_text(inlined, self._text_config)) if need_text else None
            return inlined, text
        marked = html
        for i, value in enumerate(values):
            marked = marked.replace(str(escape(value)), f"{_PRIVATE}{chr(0xE001 + i)}")
        cached = self._cache.get(marked)
        if cached is None or (need_text and cached[1] is None):
            inlined = self._inliner.inline(marked)
            derived = _tidy(get_text(inlined, self._text_config)) if need_text else None
            cached = (inlined, derived)
            self._cache[marked] = cached
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(marked)
        html_out, text_out = cached
        for i, value in enumerate(values):
            marker = f"{_PRIVATE}{chr(0xE001 + i)}"
            html_out = html_out.replace(marker, str(escape(value)))
            if text_out is not None:
                text_out = text_out.replace(marker, value)
        return html_out, text_out


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n") + "\n"
