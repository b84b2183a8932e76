"""Bounces in a server's own form (Exchange, qmail, Yahoo, Japanese carriers...): the
recipients from flufl.bounce's detectors or from our own rules, and each one's code and words
from the lines around it.

Our rules: the bounce's text is cut where the returned message starts; the addresses left,
minus the bounce's own (its sender, its addressee, the returned message's sender) and those of
header-like lines (``From:``, ``Message-ID:``...), are the recipients. When the text names
none, the returned message's ``To`` is. Each recipient's status, SMTP reply and diagnostic
come from its lines (the line naming it and those after, up to a blank line), else from the
first lines of the text that carry a code or the words of a failure.

Pure: text in, findings out.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from email.iterators import body_line_iterator
from email.message import Message
from itertools import accumulate

from flufl.bounce._detectors import exchange, qmail
from flufl.bounce._detectors.simplematch import VALID, SimpleMatch, _quopri_decode
from flufl.bounce._detectors.simplewarning import SimpleWarning
from flufl.bounce._scan import _DETECTORS

from mailer.bounces.classify import Words, classify, clean_diagnostic, find_reply, find_status
from mailer.bounces.mime import addresses_in
from mailer.bounces.model import BounceKind, Finding

# flufl.bounce logs one INFO line per detector and message; only its warnings matter to us.
logging.getLogger("flufl.bounce").setLevel(logging.WARNING)
_log = logging.getLogger(__name__)

# Where a bounce's text stops and the returned message (or its headers) starts.
_CUT = Words(
    r"^.{0,40}(original message(?! was received)|returned message|unsent message|"
    r"message headers follow|copy of the (original )?message|below this line is a copy|"
    r"headers of the (original|returned|undelivered)|original message follows|"
    r"message was originally|"
    r"the original mail headers|undelivered message headers|rfc822 headers)",
    re.MULTILINE,
)
# Lines whose addresses are never the failed recipient.
_NOISE_LINE = Words(
    r"^\s*(from|reply-to|sender|return-path|message-id|in-reply-to|references|mail from|"
    r"envelope-from|x-[\w-]+|date|subject|received|by|with|id)\s*:|envelope sender|"
    r"\bmail from\b|^\s*(was )?received .{0,40}\bfrom\b|please (send|contact|write)|"
    r"for further assistance|helpdesk|webmaster",
)
_FAILURE = Words(
    r"\b[45]\d\d\b|[45]\.\d{1,3}\.\d{1,3}|unknown|no such|not exist|rejected|refused|"
    r"full|quota|invalid|denied|blocked|failed|failure|error|unable|could not|cannot|"
    r"undeliver|expired|timed? ?out|exceed|problem|not delivered|non-delivered",
)
_HEADER_LINE = re.compile(r"^[A-Za-z][\w-]*:\s")
_RCPT_LINE = Words(r"\brcpt to\b")  # a transcript's recipient
_WINDOW = 6  # lines read after the one naming the recipient


def bounce_text(texts: Iterable[str]) -> str:
    """The text parts of a bounce joined, each cut where the returned message starts."""
    kept: list[str] = []
    for text in texts:
        if _looks_like_headers(text):
            continue
        match = _CUT.search(text)
        kept.append(text[: match.start()] if match else text)
    return "\n\n".join(kept)


def _looks_like_headers(text: str) -> bool:
    """Whether a text part is a returned message's headers rather than the bounce's words."""
    lines = [line for line in text.lstrip().splitlines()[:4] if line.strip()]
    fields = sum(1 for line in lines if _HEADER_LINE.match(line))
    return len(lines) >= 3 and fields >= 3


def noise(text: str) -> set[str]:
    """The addresses of ``text`` that sit on header-like or contact lines."""
    return {
        a
        for line in text.splitlines()
        if "@" in line and _NOISE_LINE.search(line)  # no "@", no address to look at
        for a in addresses_in(line)
    }


LONG_LINE = 4096  # characters: no mail server writes a bounce line this long; a forger might


def flufl_recipients(msg: Message) -> tuple[list[str], set[str]]:
    """The recipients flufl.bounce's detectors find, and which of them it calls temporary.

    Its ``all_failures``, run here detector by detector in its order (the first that finds
    someone answers), with the same answers, cheaper: the body's lines are taken once
    (:class:`_Body`), ``SimpleMatch`` and ``SimpleWarning`` read them as their ``process``
    does but only from where their start pattern can match, and the detectors whose start
    words the body does not hold are not run (they would find nobody). Its detectors raise
    on some hostile input: then they found nothing, as when ``all_failures`` raised."""
    temporary: frozenset[bytes] = frozenset()
    permanent: frozenset[bytes] = frozenset()
    body = _Body(msg)
    if any(len(line) > LONG_LINE for line in body.lines()):
        return [], set()  # its patterns take the square of a line's length: seconds at 20 KB
    try:
        for detector in _DETECTORS:
            if detector is SimpleMatch:
                temporary, permanent = frozenset(), body.simple(SimpleMatch.PATTERNS)
            elif detector is SimpleWarning:
                temporary, permanent = body.simple(SimpleWarning.PATTERNS), frozenset()
            elif (needs := _NEEDS.get(detector)) is not None and not needs(body.text()):
                continue
            else:
                temporary, permanent = detector().process(msg)
            if temporary or permanent:
                break
    except Exception:  # a detector's own bug on odd input: no answer from it
        _log.debug("a flufl.bounce detector failed", exc_info=True)
        return [], set()
    found = [_decoded(a) for a in sorted(permanent | temporary)]
    return found, {_decoded(a) for a in temporary}


# What a detector needs to find in the body's text to find anyone: qmail's intro words, the
# Exchange start line (literal words, which a line holds only if the text does; searched in
# linear time, whatever the text)
_NEEDS: dict[type[object], Callable[[str], bool]] = {
    qmail.Qmail: lambda text: any(tag in text for tag in qmail.introtags),
}
if not set(exchange.scre.pattern) & set("\\.^$*+?{}[]|()") and not exchange.scre.flags & (
    re.IGNORECASE | re.VERBOSE
):  # its start pattern is plain words (flufl.bounce 6.0.0)
    _NEEDS[exchange.Exchange] = lambda text: exchange.scre.pattern in text
_Patterns = Sequence[tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]]
# the characters other than ASCII letters that an ASCII letter matches when case is ignored
_FOLDING = frozenset("\u0130\u0131\u017f\u212a")


class _Body:
    """A message's body lines as flufl.bounce's detectors read them (``body_line_iterator``),
    taken once, their text, and what ``SimpleMatch.process`` makes of them."""

    def __init__(self, msg: Message) -> None:
        self._msg = msg
        self._lines: list[str] | None = None
        self._text = ""
        self._lowered: str | None = None  # the text lower-cased, when the needles hold for it
        self._starts: list[int] = []  # where each line starts in the text

    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = list(body_line_iterator(self._msg))
            self._text = "".join(self._lines)
            lowered = self._text.lower()
            # a needle holds for a text in which ignoring case keeps letters ASCII
            if not _FOLDING.intersection(self._text) and len(lowered) == len(self._text):
                self._lowered = lowered
            self._starts = list(accumulate((len(line) for line in self._lines), initial=0))
        return self._lines

    def text(self) -> str:
        self.lines()
        return self._text

    def simple(self, patterns: _Patterns) -> frozenset[bytes]:
        """The valid addresses of the first pattern set that finds any, as ``process``."""
        lines = self.lines()
        addresses: set[bytes] = set()
        for scre, ecre, acre in patterns:
            start = 0
            if (needle := _needle(scre)) is not None and self._lowered is not None:
                if (at := self._lowered.find(needle)) < 0:
                    continue  # no line can match scre: the loop would find nobody
                start = bisect_right(self._starts, at) - 1  # no line before it can match
            seen = next((n for n in range(start, len(lines)) if scre.search(lines[n])), None)
            for line in lines[seen:] if seen is not None else ():
                if mo := acre.search(line):
                    if address := mo.group("addr"):
                        addresses.add(_quopri_decode(address))
                elif ecre.search(line):
                    break
            if addresses:
                break
        return frozenset(a for a in addresses if VALID.match(a))


_NEEDLES: dict[str, str | None] = {}
_CLASS_ESCAPES = frozenset("sSdDwWbBAZ")


def _needle(pattern: re.Pattern[str]) -> str | None:
    """The longest run of plain characters that every match of ``pattern`` holds,
    lower-cased; None when it cannot tell (alternatives, classes, counted repeats, escapes it
    does not know)."""
    if pattern.pattern not in _NEEDLES:
        _NEEDLES[pattern.pattern] = _longest_run(pattern)
    return _NEEDLES[pattern.pattern]


def _longest_run(pattern: re.Pattern[str]) -> str | None:
    text = pattern.pattern
    if pattern.flags & re.VERBOSE or not text.isascii():
        return None
    runs: list[str] = []
    run, depth, index = "", 0, 0
    while index < len(text):
        char = text[index]
        index += 1
        if char == "\\" and index < len(text):
            escaped = text[index]
            index += 1
            if escaped.isalnum() and escaped not in _CLASS_ESCAPES:
                return None  # \x41, \1...: not read here
            if depth == 0 and not escaped.isalnum():
                run += escaped
                continue
        elif char in "[{" or (char == "|" and depth == 0):
            return None
        elif char == "(":
            if text.startswith("?", index) and not text.startswith(("?P<", "?:"), index):
                return None  # inline flags, look-arounds
            depth += 1
        elif char == ")":
            depth -= 1
        elif char in "?*+" and depth == 0:
            run = run[:-1]  # the character repeated or optional is not needed
        elif depth == 0 and char not in "^$.":
            run += char
            continue
        runs.append(run)
        run = ""
    runs.append(run)
    longest = max(runs, key=len)
    return longest.lower() if longest and depth == 0 else None


def _decoded(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").strip("<>").lower()


def rule_recipients(text: str, excluded: set[str]) -> list[str]:
    """The addresses of a bounce's text that may be its failed recipients."""
    lines = text.splitlines()
    found: list[str] = []
    for number, line in enumerate(lines):
        if "@" not in line or _NOISE_LINE.search(line):  # no "@", no address
            continue
        for address in addresses_in(line):
            if address in excluded or address in found:
                continue
            # the address must stand near the words or code of a failure
            near = "\n".join(lines[max(0, number - 3) : number + _WINDOW + 1])
            if _FAILURE.search(near) or _RCPT_LINE.search(line):
                found.append(address)
    return found


def finding_for(
    recipient: str, text: str, *, temporary: bool = False, subject: str = ""
) -> Finding:
    """One recipient's finding, from the lines of ``text`` about it (else the text's first
    code and failure lines, and its subject)."""
    window = _window(recipient, text)
    failure = _failure_lines(text)
    if not window or not _FAILURE.search(window.replace(recipient, "")):
        window = "\n".join(x for x in (window, failure) if x)
    status = find_status(window)
    if status is None and (status := find_status(text[:8000])):  # the code stands apart
        window += "\n" + next((line for line in text.splitlines() if status in line), "")
    diagnostic = clean_diagnostic(window if _FAILURE.search(window) else subject or window)
    kind = classify(status, diagnostic)
    if kind is BounceKind.UNKNOWN:  # the words may stand elsewhere in the text
        kind = classify(status, clean_diagnostic(f"{subject}\n{text[:4000]}"))
    if temporary and kind in (BounceKind.HARD, BounceKind.UNKNOWN):
        kind = BounceKind.SOFT
    return Finding(
        recipient=recipient,
        status=status,
        kind=kind,
        diagnostic=diagnostic,
        reply_code=find_reply(window),
    )


def _window(recipient: str, text: str) -> str:
    """The line of ``text`` naming ``recipient``, with the one before when it introduces it
    and those after up to a blank line."""
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if recipient in line.lower() and not _NOISE_LINE.search(line):
            taken = [line]
            for after in lines[number + 1 : number + 1 + _WINDOW]:
                if not after.strip() and len(taken) > 1 and not taken[-1].endswith(":"):
                    break
                if after.strip():
                    taken.append(after)
            return "\n".join(taken)
    return ""


def _failure_lines(text: str) -> str:
    """The first lines of ``text`` that carry a code or the words of a failure."""
    picked: list[str] = []
    for line in text.splitlines():
        if line.strip() and _FAILURE.search(line):
            picked.append(line)
            if len(picked) == 4:
                break
    return "\n".join(picked)


__all__ = [
    "bounce_text",
    "finding_for",
    "flufl_recipients",
    "noise",
    "rule_recipients",
]
