"""French typography: the no-break spaces French text wants, on plain text and on HTML.

- a narrow no-break space (U+202F) before ``;``, ``!``, ``?``, a no-break space (U+00A0)
  before ``:``. Ordinary spaces (a tab, several) already there become that space; one is
  inserted only after a letter, a digit, a closing quote or bracket, when the sign (or its
  run: ``?!``, one space before the first) ends a word, so that ``12:30``, ``a:b``,
  ``?q=1``, ``!important``, ``Hello!!`` stay sensible;
- a no-break space inside French quotes: ``« texte »`` -> ``«\u00a0texte\u00a0»``;
- a narrow no-break space between a number and its unit where a space separates them
  (``10 %``, ``5 km``, ``3 h``, ``30 min``, ``15 €``, ``20 °C``, ``2 Mo``: a short closed
  list); for ``%`` and ``‰`` only, one is inserted when missing (``10%``), as JoliTypo does.

Never inside a URL (a word with ``://``, starting ``www.``, a host with a path), an e-mail
address (a word with ``@``), a ``mailto:``/``tel:`` target, text between backticks or a
Jinja placeholder on the same line. In HTML, only text is changed: never tags, attribute
values, comments, entities (``&nbsp;`` counts as the space, other entities as letters), nor
the elements ``code``, ``pre``, ``kbd``, ``samp``, ``style``, ``script``, ``textarea``.
Line breaks are never added or removed; applying a function twice changes nothing more.
The markers of recipient values (U+E000 to U+E0FF) are letters: nothing goes inside a run.

How, and why so: the rules look only at the few places that can need them (each ``:``,
``;``, ``!``, ``?``, ``«``, ``»``, ``%``, and a space after a digit), found with ``str.find``
or a regular expression with a literal start, and decide by the characters around; a
regular expression scanning every character costs about 10 ns a character in CPython, a
``str.find`` well under one. In HTML the tags (and the code-like elements) are first
swapped for one stand-in character each, in a single split, so the rules see the text
with inline tags (``<strong>``, ``<a>``...) as see-through and block tags as a line end;
the changes are then made on the same text with the tags put back.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from itertools import chain, repeat

NBSP = "\u00a0"
NNBSP = "\u202f"

# Stand-ins, outside the Basic Multilingual Plane: ``in`` is free on text without any.
INLINE = "\U0010fff1"  # an inline tag, in the text the rules read: see-through
BREAK = "\U0010fff2"  # a block tag, comment or code-like element: like a line end
ENTITY = "\U0010fff3"  # an HTML entity: a letter
ENTITY_SPACE = "\U0010fff4"  # &nbsp; and its kin: a no-break space already there
_TAG_SEP = "\U0010fff5"  # a tag, in the text the changes are made on
_ENTITY_SEP = "\U0010fff6"  # an entity, there
_STANDINS = (INLINE, BREAK, ENTITY, ENTITY_SPACE, _TAG_SEP, _ENTITY_SEP)

_SIGNS = ";:!?"
_SPACES = " \t\u00a0\u202f"  # what may stand before a sign (never \n, never a stand-in)
_CLOSERS = frozenset("»”’\"')]")  # a sign may follow them directly
_ENDS_INSERT = frozenset(")»”")  # a sign before these ends its word (else: space or end)
_ENDS_REPLACE = frozenset(")]»”\"'….,")
_BOUNDARY = frozenset((BREAK, ""))

_HOST_PATH = re.compile(r"[\w\-]+(?:\.[\w\-]+)*\.[a-zA-Z]{2,}/")
_CODE = re.compile(rf"`[^`\n{BREAK}]*`")
_PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}")  # on one line
_ADDRESS_ANCHORS = ("/", "@", "www.", "mailto:", "tel:")
_OPENERS = "(«\"'" + INLINE
_WORD_SEPARATORS = (" ", "\n", "\t", "\u00a0", "\u202f", "\r", BREAK)
_WORD_END = re.compile(f"[{''.join(_WORD_SEPARATORS)}]")
_LONGEST_WORD = 2000  # an address longer than this is set aside from its last 2,000 only
_UNIT_NAMES = (
    "km/h|km|cm|mm|m²|m³|m|kg|mg|g|min|ms|s|h|mL|cL|L|kWh|kW|W|"
    "Ko|Mo|Go|To|ko|Kio|Mio|Gio|€|\\$|£|°C|°F|°"
)
_UNITS = tuple(
    re.compile(
        rf"{sep}(?<=[0-9{INLINE}]{sep})[ \t\u00a0]*({INLINE}*)(?=[kcmgshLWKMGT€$£°])"
        rf"(?:{_UNIT_NAMES})(?![\w’'])"
    )
    for sep in (" ", "\u00a0", "\t")
)  # a literal first character: the engine jumps from one to the next

_ATTRS = r"[^>\"']*(?:(?:\"[^\"]*\"|'[^']*')[^>\"']*)*"
_TAG = re.compile(
    rf"(<(/?[A-Za-z][\w:.\-]*|!--|[!?])(?:(?<=--).*?-->|{_ATTRS}>))", re.DOTALL
)  # the tag whole, its name ("!--" for a comment)
_RAW_NAMES = frozenset(("script", "style", "pre", "code", "kbd", "samp", "textarea"))
_INLINE_TAGS = (
    "a", "abbr", "b", "bdi", "bdo", "big", "cite", "data", "del", "dfn", "em", "font", "i",
    "ins", "mark", "q", "s", "small", "span", "strike", "strong", "sub", "sup", "time", "tt",
    "u", "var",
)  # fmt: skip
_KIND = {name: INLINE for tag in _INLINE_TAGS for name in (tag, "/" + tag)}  # others: BREAK
_ENTITY = re.compile(r"(&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);)")
_SPACE_ENTITY = re.compile(r"&(?:nbsp|#0*160|#[xX]0*[aA]0|#0*8239|#[xX]0*202[fF]|thinsp);")


def _solid(char: str) -> bool:
    """Something a space may follow: not a space, not a line end, not the text's edge."""
    return bool(char) and not char.isspace() and char not in _BOUNDARY and char != ENTITY_SPACE


def _wordlike(char: str) -> bool:
    """What a sign may follow directly: a letter, a digit, a marker, an entity, a closer."""
    return char.isalnum() or "\ue000" <= char <= "\ue0ff" or char == ENTITY or char in _CLOSERS


def _left(s: str, i: int) -> int:
    """The index of the last character at or before ``i`` that is not an inline tag."""
    while i >= 0 and s[i] == INLINE:
        i -= 1
    return i


def _right(s: str, i: int) -> int:
    """The index of the first character at or after ``i`` that is not an inline tag."""
    n = len(s)
    while i < n and s[i] == INLINE:
        i += 1
    return i


def _spaces_left(s: str, i: int) -> int:
    """The index before the run of spaces ending at ``i`` (``i`` itself when none)."""
    while i >= 0 and s[i] in _SPACES:
        i -= 1
    return i


def _char(s: str, i: int) -> str:
    """The character at ``i``, or "" past either end."""
    return s[i] if 0 <= i < len(s) else ""


def _word_at(s: str, p: int) -> tuple[int, int]:
    """The word (between whitespace or line ends) holding ``p``; looked for at most
    :data:`_LONGEST_WORD` characters back, ``str.rfind`` for each kind of space."""
    low = max(p - _LONGEST_WORD, 0)
    begin = max(s.rfind(" ", low, p), s.rfind("\n", low, p), low - 1) + 1  # the usual ones
    begin = max(s.rfind(space, begin, p) for space in _WORD_SEPARATORS) + 1 or begin
    found = _WORD_END.search(s, p)
    return begin, found.start() if found else len(s)


Edits = dict[int, tuple[int, str]]  # start -> (end, what replaces s[start:end])


class _Rules:
    """The rules over one text: the changes they make, by where each starts.

    The places never to touch (code, placeholders, addresses) are found once, the first
    time a change is about to be made, from literal anchors (a backtick, a brace, a slash
    in a word with ``://`` or after a host name, ``@``, ``www.``, ``mailto:``, ``tel:``)."""

    __slots__ = ("_ends", "_keep", "_s", "_starts", "edits")

    def __init__(self, s: str, keep: Iterable[str] = ()) -> None:
        self._s = s
        self._keep = keep
        self._starts: list[int] | None = None
        self._ends: list[int] = []
        self.edits: Edits = {}

    def _find_aside(self) -> None:
        """The spans of code, placeholders and address words, sorted and merged."""
        s = self._s
        spans: list[tuple[int, int]] = []
        if "`" in s:
            spans.extend(m.span() for m in _CODE.finditer(s))
        for value in self._keep:
            p = s.find(value) if value.strip() else -1
            while p >= 0:
                spans.append((p, p + len(value)))
                p = s.find(value, p + len(value))
        if "{" in s:
            spans.extend(m.span() for m in _PLACEHOLDER.finditer(s))
        for anchor in _ADDRESS_ANCHORS:  # a URL's word is found once, from its first "/"
            p = s.find(anchor)
            while p >= 0:
                begin, end = _word_at(s, p)
                word = s[begin:end]
                if anchor == "/":
                    if "://" in word or _HOST_PATH.search(word):
                        spans.append((begin, end))
                elif anchor != "www." or word.lstrip(_OPENERS).startswith("www."):
                    spans.append((begin, end))
                p = s.find(anchor, end)
        starts: list[int] = []
        for start, end in sorted(spans):  # overlapping spans merged
            if starts and start <= self._ends[-1]:
                self._ends[-1] = max(self._ends[-1], end)
            else:
                starts.append(start)
                self._ends.append(end)
        self._starts = starts

    def aside(self, p: int) -> bool:
        """Whether ``p`` is in code, a placeholder or an address."""
        if self._starts is None:
            self._find_aside()
            assert self._starts is not None
        i = bisect_right(self._starts, p) - 1
        return i >= 0 and self._ends[i] > p

    def change(self, start: int, end: int, text: str) -> None:
        """Replace ``s[start:end]`` with ``text``, unless it is that already or set aside."""
        if self._s[start:end] != text and not self.aside(start):
            self.edits.setdefault(start, (end, text))

    def sign(self, p: int) -> None:
        """The space before the sign at ``p``: made no-break, or inserted."""
        s = self._s
        if p > 0 and s[p - 1] in _SIGNS:
            return  # one space before a run of signs, before its first
        q = p + 1
        while q < len(s) and s[q] in _SIGNS:
            q += 1
        after = _char(s, _right(s, q))
        ends = not after or after.isspace() or after == BREAK
        space = NBSP if s[p] == ":" else NNBSP
        i = _left(s, p - 1)
        j = _spaces_left(s, i)
        if j < i:
            if (ends or after in _ENDS_REPLACE) and _solid(_char(s, j)):
                self.change(j + 1, i + 1, space)
        elif i >= 0 and (ends or after in _ENDS_INSERT) and _wordlike(s[i]):
            self.change(p, p, space)

    def opening_quote(self, p: int) -> None:
        """The no-break space after the « at ``p``."""
        s, n = self._s, len(self._s)
        k1 = p + 1
        while k1 < n and s[k1] in _SPACES:
            k1 += 1
        k2 = _right(s, k1)
        k3 = k2
        while k3 < n and s[k3] in _SPACES:
            k3 += 1
        if not _solid(_char(s, k3)) or s[k3] in _SIGNS or s[k3] == "»":
            return  # a sign's own space wins; « » stays as it is
        if k1 > p + 1:
            self.change(p + 1, k1, NBSP)
        elif k3 > k2:
            self.change(k2, k3, NBSP)
        else:
            self.change(p + 1, p + 1, NBSP)

    def closing_quote(self, p: int) -> None:
        """The no-break space before the » at ``p``."""
        s = self._s
        j1 = _spaces_left(s, p - 1)
        j2 = _left(s, j1)
        j3 = _spaces_left(s, j2)
        if not _solid(_char(s, j3)) or s[j3] == "«":
            return
        if j1 < p - 1:
            self.change(j1 + 1, p, NBSP)
        elif j3 < j2:
            self.change(j3 + 1, j2 + 1, NBSP)
        else:
            self.change(p, p, NBSP)

    def percent(self, p: int) -> None:
        """The narrow no-break space between a number and the % (or ‰) at ``p``."""
        s = self._s
        after = _char(s, p + 1)
        if after and (after.isalnum() or after in "’'_"):
            return  # %20 in an address, %s...
        i = _left(s, p - 1)
        j = _spaces_left(s, i)
        if j < i:
            if _char(s, _left(s, j)).isdigit():
                self.change(j + 1, i + 1, NNBSP)
        elif _char(s, i).isdigit():
            self.change(p, p, NNBSP)

    def units(self) -> None:
        """The narrow no-break space between a number and its unit."""
        s = self._s
        for unit in _UNITS:
            if unit.pattern[0] in s:
                for match in unit.finditer(s):
                    start = match.start()
                    if _char(s, _left(s, start - 1)).isdigit():
                        self.change(start, match.start(1), NNBSP)


def _edits(s: str, keep: Iterable[str] = ()) -> Edits:
    """Every change the rules make to ``s``, by where it starts; ``keep``: texts set aside."""
    rules = _Rules(s, keep)
    for char, rule in (
        (":", rules.sign),
        (";", rules.sign),
        ("!", rules.sign),
        ("?", rules.sign),
        ("«", rules.opening_quote),
        ("»", rules.closing_quote),
        ("%", rules.percent),
        ("‰", rules.percent),
    ):
        p = s.find(char)
        while p >= 0:
            rule(p)
            p = s.find(char, p + 1)
    rules.units()
    return rules.edits


def _apply(s: str, edits: Edits) -> str:
    """``s`` with the ``edits`` made, in one pass."""
    if not edits:
        return s
    out: list[str] = []
    done = 0
    for start in sorted(edits):
        end, text = edits[start]
        if start < done:
            continue  # two rules on the same spaces: the first wins
        out.append(s[done:start])
        out.append(text)
        done = end
    out.append(s[done:])
    return "".join(out)


def french_text(text: str, *, keep: Iterable[str] = ()) -> str:
    """``text`` with French typography (see the module); its lines kept as they are.

    ``keep``: texts to leave as they are wherever they occur (a recipient's own values)."""
    return _apply(text, _edits(text, keep))


def _interleave(pieces: list[str], tokens: list[str]) -> str:
    """``pieces[0] + tokens[0] + pieces[1] + ...``: what a split on a stand-in took apart."""
    if len(pieces) != len(tokens) + 1:  # pragma: no cover - the rules never drop a stand-in
        raise AssertionError("typography lost a stand-in")
    out: list[str] = [""] * (2 * len(tokens) + 1)
    out[0::2] = pieces
    out[1::2] = tokens
    return "".join(out)


def _tokens(html: str) -> tuple[list[str], list[str], list[str]]:
    """The text between tags, the tags (a code-like element whole) and their kinds."""
    parts = _TAG.split(html)
    texts, tags = parts[0::3], parts[1::3]
    names = "\0".join(parts[2::3]).lower().split("\0") if tags else []
    _join_raw(texts, tags, names)
    return texts, tags, list(map(_KIND.get, names, repeat(BREAK)))


def _indices(names: list[str], name: str) -> list[int]:
    """Where ``name`` is in ``names`` (``list.count`` and ``list.index``: no Python loop over
    every tag, no exception)."""
    found: list[int] = []
    at = -1
    for _ in range(names.count(name)):
        at = names.index(name, at + 1)
        found.append(at)
    return found


def _join_raw(texts: list[str], tags: list[str], names: list[str]) -> None:
    """Each code-like element made one tag, its content with it (to the end if unclosed)."""
    opens = sorted(i for name in _RAW_NAMES.intersection(names) for i in _indices(names, name))
    for i in reversed(opens):  # from the end: the indices before stay right, nested is inside
        try:
            j = names.index("/" + names[i], i + 1)
        except ValueError:
            j = -1
        if j > 0:
            inside = zip(texts[i + 1 : j + 1], tags[i + 1 : j + 1], strict=True)
            tags[i] = tags[i] + "".join(chain.from_iterable(inside))
            del texts[i + 1 : j + 1]
        else:
            j = len(names) - 1
            tags[i] = tags[i] + _interleave(texts[i + 1 :], tags[i + 1 :])
            texts[i + 1 :] = [""]
        del tags[i + 1 : j + 1]
        del names[i + 1 : j + 1]
        names[i] = "!raw"


def french_html(html: str, *, keep: Iterable[str] = ()) -> str:
    """``html`` with French typography on its text only: tags, attribute values, entities,
    comments and the code-like elements stay byte for byte as they were.

    ``keep``: texts to leave as they are wherever they occur in the text, written as in the
    HTML (escaped: ``O&#39;Brien``)."""
    if any(standin in html for standin in _STANDINS):
        return html  # cannot be told from ours: left alone
    texts, tags, kinds = _tokens(html)
    shadow_parts: list[str] = [""] * (2 * len(tags) + 1)
    shadow_parts[0::2] = texts
    shadow_parts[1::2] = kinds
    shadow = "".join(shadow_parts)  # what the rules read
    plain = _TAG_SEP.join(texts)  # where the changes are made: same length
    entities: list[str] = []
    if "&" in shadow:
        shadow = _ENTITY.sub(ENTITY, _SPACE_ENTITY.sub(ENTITY_SPACE, shadow))
        split = _ENTITY.split(plain)
        entities = split[1::2]
        plain = _ENTITY_SEP.join(split[0::2])
    if entities:
        keep = [_ENTITY.sub(ENTITY, _SPACE_ENTITY.sub(ENTITY_SPACE, v)) for v in keep]
    edits = _edits(shadow, keep)
    if not edits:
        return html
    plain = _apply(plain, edits)
    if entities:
        plain = _interleave(plain.split(_ENTITY_SEP), entities)
    return _interleave(plain.split(_TAG_SEP), tags)
