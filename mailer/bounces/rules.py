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
from collections.abc import Iterable
from email.message import Message

from flufl.bounce import all_failures

from mailer.bounces.classify import classify, clean_diagnostic, find_reply, find_status
from mailer.bounces.mime import addresses_in
from mailer.bounces.model import BounceKind, Finding

# flufl.bounce logs one INFO line per detector and message; only its warnings matter to us.
logging.getLogger("flufl.bounce").setLevel(logging.WARNING)

# Where a bounce's text stops and the returned message (or its headers) starts.
_CUT = re.compile(
    r"^.{0,40}(original message(?! was received)|returned message|unsent message|"
    r"message headers follow|copy of the (original )?message|below this line is a copy|"
    r"headers of the (original|returned|undelivered)|original message follows|"
    r"message was originally|"
    r"the original mail headers|undelivered message headers|rfc822 headers)",
    re.IGNORECASE | re.MULTILINE,
)
# Lines whose addresses are never the failed recipient.
_NOISE_LINE = re.compile(
    r"^\s*(from|reply-to|sender|return-path|message-id|in-reply-to|references|mail from|"
    r"envelope-from|x-[\w-]+|date|subject|received|by|with|id)\s*:|envelope sender|"
    r"\bmail from\b|^\s*(was )?received .{0,40}\bfrom\b|please (send|contact|write)|"
    r"for further assistance|helpdesk|webmaster",
    re.IGNORECASE,
)
_FAILURE = re.compile(
    r"\b[45]\d\d\b|[45]\.\d{1,3}\.\d{1,3}|unknown|no such|not exist|rejected|refused|"
    r"full|quota|invalid|denied|blocked|failed|failure|error|unable|could not|cannot|"
    r"undeliver|expired|timed? ?out|exceed|problem|not delivered|non-delivered",
    re.IGNORECASE,
)
_RCPT_LINE = re.compile(r"\brcpt to\b", re.IGNORECASE)  # a transcript's recipient
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
    fields = sum(1 for line in lines if re.match(r"^[A-Za-z][\w-]*:\s", line))
    return len(lines) >= 3 and fields >= 3


def noise(text: str) -> set[str]:
    """The addresses of ``text`` that sit on header-like or contact lines."""
    return {a for line in text.splitlines() if _NOISE_LINE.search(line) for a in addresses_in(line)}


def flufl_recipients(msg: Message) -> tuple[list[str], set[str]]:
    """The recipients flufl.bounce's detectors find, and which of them it calls temporary.

    Its detectors raise on some hostile input: then they found nothing."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector's own bug on odd input: no answer from it
        return [], set()
    found = [_decoded(a) for a in sorted(permanent | temporary)]
    return found, {_decoded(a) for a in temporary}


def _decoded(raw: bytes) -> str:
    return raw.decode("utf-8", "replace").strip("<>").lower()


def rule_recipients(text: str, excluded: set[str]) -> list[str]:
    """The addresses of a bounce's text that may be its failed recipients."""
    lines = text.splitlines()
    found: list[str] = []
    for number, line in enumerate(lines):
        if _NOISE_LINE.search(line):
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
    picked = [line for line in text.splitlines() if line.strip() and _FAILURE.search(line)]
    return "\n".join(picked[:4])


__all__ = [
    "bounce_text",
    "finding_for",
    "flufl_recipients",
    "noise",
    "rule_recipients",
]
