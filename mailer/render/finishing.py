"""The finishing of a rendered message: French typography (when asked), its CSS inlined
and, when it has no text template, its text part derived from the HTML.

All cost hundreds of microseconds per recipient, and the HTML of most recipients differs
only by their own values (links, address, full name). A :class:`Finisher` swaps those for
private-use markers, finishes the marked HTML once (or finds it in a small cache) and puts
the values back, so the typography never touches a recipient's value and the markers
(letters to it) come through it whole. One finisher per compiled send: its cache holds
that send's HTML only.
"""

from __future__ import annotations

from collections import OrderedDict

import css_inline
from inscriptis.model.config import ParserConfig
from markupsafe import escape

from mailer.models import Links, Recipient
from mailer.render.plaintext import html_to_text
from mailer.render.plaintext import text_config as text_config
from mailer.render.typography import french_html, french_text

_CACHE_SIZE = 64
_PRIVATE = "\ue000"  # marks recipient values while HTML is finished once for many recipients


def inliner() -> css_inline.CSSInliner:
    """The CSS inliner of a renderer: no remote stylesheet, @-rules kept, <style> dropped."""
    return css_inline.CSSInliner(
        load_remote_stylesheets=False, keep_at_rules=True, keep_style_tags=False
    )


class Finisher:
    """Typography, CSS inlining and text derivation for one send, with its cache of marked
    HTML."""

    __slots__ = ("_cache", "_inliner", "_text_config")

    def __init__(self, inliner: css_inline.CSSInliner, text_config: ParserConfig) -> None:
        self._inliner = inliner
        self._text_config = text_config
        self._cache: OrderedDict[tuple[str, bool], tuple[str, str | None]] = OrderedDict()

    def finish(
        self,
        html: str,
        recipient: Recipient,
        links: Links,
        *,
        need_text: bool,
        french: bool = False,
    ) -> tuple[str, str | None]:
        """The inlined HTML and, when ``need_text``, the text derived from it; with
        ``french``, both with French typography (:mod:`mailer.render.typography`).

        Only values that cannot be mistaken for HTML syntax are marked: links, the address
        (it has an @), a name with a space in it; anything else stays and is part of the key
        (a one-word name: the typography is told to leave it as it is).
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
        # the subscriber's own attributes are theirs as typed too ("Yahoo!" stays so)
        attributes = tuple(v for v in recipient.attributes.values() if v and len(v) > 1)
        if " " in recipient.name.strip():
            values.append(recipient.name)
            kept: tuple[str, ...] = attributes
        else:
            kept = (recipient.name, *attributes)  # not marked: kept from the typography
        if _PRIVATE in html or any(_PRIVATE in v for v in values):
            return self._finish(html, need_text=need_text, french=french, keep=(*values, *kept))
        marked = html
        for i, value in enumerate(values):
            marked = marked.replace(str(escape(value)), f"{_PRIVATE}{chr(0xE001 + i)}")
        key = (marked, french)
        cached = self._cache.get(key)
        if cached is None or (need_text and cached[1] is None):
            cached = self._finish(marked, need_text=need_text, french=french, keep=kept)
            self._cache[key] = cached
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        html_out, text_out = cached
        for i, value in enumerate(values):
            marker = f"{_PRIVATE}{chr(0xE001 + i)}"
            html_out = html_out.replace(marker, str(escape(value)))
            if text_out is not None:
                text_out = text_out.replace(marker, value)
        return html_out, text_out

    def _finish(
        self, html: str, *, need_text: bool, french: bool, keep: tuple[str, ...]
    ) -> tuple[str, str | None]:
        """Typography (never on the recipient's values in ``keep``), inlining, derivation:
        what the cache keeps."""
        if french:
            html = french_html(html, keep=[str(escape(value)) for value in keep])
        inlined = self._inliner.inline(html)
        if not need_text:
            return inlined, None
        text = html_to_text(inlined, self._text_config)
        return inlined, french_text(text, keep=keep) if french else text
