"""The finishing of a rendered message: French typography (when asked), its CSS inlined
and, when it has no text template, its text part derived from the HTML.

All cost hundreds of microseconds per recipient, and the HTML and text of most recipients
differ only by their own values (links, address, full name). A :class:`Finisher` swaps those
for private-use markers, finishes the marked HTML (or the text template's output) once, or
finds it in a small cache, and puts the values back, so the typography never touches a
recipient's value and the markers (letters to it) come through it whole. What the cache
keeps is already split at the markers (:class:`_Split`), so that putting the values back is
one join, not a replacement per value. One finisher per compiled send: its cache holds that
send's texts only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

from markupsafe import escape

from mailer.models import Links, Recipient
from mailer.render.plaintext import html_to_text
from mailer.render.plaintext import text_config as text_config
from mailer.render.typography import french_html, french_text

if TYPE_CHECKING:  # imported when a message is first finished (see Finisher)
    import css_inline
    from inscriptis.model.config import ParserConfig

# What finishing imports on first use (see Finisher): a render pool's fork server preloads it.
FINISHING_LIBRARIES = ("css_inline", "inscriptis", "lxml.html")
_CACHE_SIZE = 64
_PRIVATE = "\ue000"  # marks recipient values while HTML is finished once for many recipients
_FIRST = 0xE001  # the marker of value i is _PRIVATE + chr(_FIRST + i)


def inliner() -> css_inline.CSSInliner:
    """The CSS inliner of a renderer: no remote stylesheet, @-rules kept, <style> dropped."""
    import css_inline

    return css_inline.CSSInliner(
        load_remote_stylesheets=False, keep_at_rules=True, keep_style_tags=False
    )


class _Split:
    """A finished text cut at its markers: the pieces between them and which value goes
    after each, so that :meth:`fill` is one join."""

    __slots__ = ("_pieces", "_slots")

    def __init__(self, marked: str, count: int) -> None:
        head, *rest = marked.split(_PRIVATE)
        self._pieces = [head] + [piece[1:] for piece in rest]
        self._slots = [ord(piece[0]) - _FIRST if piece else -1 for piece in rest]
        if any(not 0 <= slot < count for slot in self._slots):  # pragma: no cover - defensive
            raise ValueError("a marker lost its index")  # the finishing broke a marker up

    def fill(self, values: list[str]) -> str:
        pieces, out = self._pieces, [self._pieces[0]]
        for n, slot in enumerate(self._slots, 1):
            out.append(values[slot])
            out.append(pieces[n])
        return "".join(out)


def _marked(text: str, values: list[str]) -> str:
    """``text`` with each of ``values`` swapped for its marker."""
    for i, value in enumerate(values):
        text = text.replace(value, f"{_PRIVATE}{chr(_FIRST + i)}")
    return text


class Finisher:
    """Typography, CSS inlining and text derivation for one send, with its cache of marked
    HTML and text. The inliner and the text's layout are made when the first message is
    finished, unless given: a sending process whose render pool composes every message
    never loads their libraries (css_inline, inscriptis, lxml: about 6 MiB)."""

    __slots__ = ("_cache", "_inliner", "_text_config", "_texts")

    def __init__(
        self,
        inliner: css_inline.CSSInliner | None = None,
        text_config: ParserConfig | None = None,
    ) -> None:
        self._inliner = inliner
        self._text_config = text_config
        self._cache: OrderedDict[tuple[str, bool], tuple[_Split, _Split | None]] = OrderedDict()
        self._texts: OrderedDict[tuple[str, tuple[str, ...]], _Split] = OrderedDict()

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
        values, kept = _values(recipient, links)
        if _PRIVATE in html or any(_PRIVATE in v for v in values):
            return self._finish(html, need_text=need_text, french=french, keep=(*values, *kept))
        escaped = [str(escape(value)) for value in values]
        key = (_marked(html, escaped), french)
        cached = self._cache.get(key)
        if cached is None or (need_text and cached[1] is None):
            html_out, text_out = self._finish(key[0], need_text=need_text, french=french, keep=kept)
            try:
                n = len(values)
                cached = (_Split(html_out, n), None if text_out is None else _Split(text_out, n))
            except ValueError:  # pragma: no cover - defensive: finished without the cache
                return self._finish(html, need_text=need_text, french=french, keep=(*values, *kept))
            self._cache[key] = cached
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        html_split, text_split = cached
        return html_split.fill(escaped), None if text_split is None else text_split.fill(values)

    def french_text(self, text: str, recipient: Recipient, links: Links) -> str:
        """A text template's output with French typography, never on the recipient's own
        values (as ``french_text(text, keep=their values)``), from the cache when the
        text differs from one seen before by those values only."""
        values, kept = _values(recipient, links)
        if _PRIVATE in text or any(_PRIVATE in v for v in values):
            return french_text(text, keep=(*values, *kept))
        key = (_marked(text, values), kept)
        cached = self._texts.get(key)
        if cached is None:
            try:
                cached = _Split(french_text(key[0], keep=kept), len(values))
            except ValueError:  # pragma: no cover - defensive: without the cache
                return french_text(text, keep=(*values, *kept))
            self._texts[key] = cached
            if len(self._texts) > _CACHE_SIZE:
                self._texts.popitem(last=False)
        else:
            self._texts.move_to_end(key)
        return cached.fill(values)

    def _finish(
        self, html: str, *, need_text: bool, french: bool, keep: tuple[str, ...]
    ) -> tuple[str, str | None]:
        """Typography (never on the recipient's values in ``keep``), inlining, derivation:
        what the cache keeps."""
        if french:
            html = french_html(html, keep=[str(escape(value)) for value in keep])
        if self._inliner is None:
            self._inliner = inliner()
        inlined = self._inliner.inline(html)
        if not need_text:
            return inlined, None
        if self._text_config is None:
            self._text_config = text_config()
        text = html_to_text(inlined, self._text_config)
        return inlined, french_text(text, keep=keep) if french else text


def _values(recipient: Recipient, links: Links) -> tuple[list[str], tuple[str, ...]]:
    """The recipient's values to mark (links, address, a name with a space in it) and those
    kept as they are from the typography but not marked (a one-word name, attributes: the
    subscriber's own, as typed: "Yahoo!" stays so)."""
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
    attributes = tuple(v for v in recipient.attributes.values() if v and len(v) > 1)
    if " " in recipient.name.strip():
        values.append(recipient.name)
        return values, attributes
    return values, (recipient.name, *attributes)
