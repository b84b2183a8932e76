"""The MIME side of reading bounces, made safe for hostile input: walking a bounce's own parts
(not those of the message it returns), decoding a part's text or a header whatever its
charset claims, the addresses of a header, and the headers of the returned message.

Every function here returns something for any input; a part that cannot be decoded reads as
replacement characters, never as an exception. The text read from one part is capped at
:data:`TEXT_LIMIT` characters: a bounce's words are at its top.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

TEXT_LIMIT = 256 * 1024
RETURNED_TYPES = frozenset({"message/rfc822", "message/global"})
HEADER_TYPES = frozenset({"text/rfc822-headers", "message/global-headers"})
_ADDRESS = re.compile(
    r"(?<![\w.+%=/-])([\w.!#$%&'*+/=?^`{|}~-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63})+)(?![\w-])"
)
_ATOMS = r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*"
_PLAIN_ADDRESS = rf"{_ATOMS}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
# a header value that getaddresses reads as one address ("a.b@c.d", "<a.b@c.d>", "Name
# <a.b@c.d>") or as none, whatever comes next ("<>", "MAILER-DAEMON", "MAILER-DAEMON <>"):
# plain words and atoms, nothing quoted, no comment, no group
_PLAIN = re.compile(
    rf"[ \t]*(?:(?:[A-Za-z0-9]+(?:[ \t]+[A-Za-z0-9]+)*[ \t]*)?<(?P<routed>{_PLAIN_ADDRESS})>"
    rf"|(?P<bare>{_PLAIN_ADDRESS})|(?:{_ATOMS})?(?:[ \t]*<(?:{_ATOMS})?>)?)[ \t]*"
)
_QUOTED = re.compile(r"^(message-id|to|x-mailer-send)[ \t]*:[ \t]*(.+)$", re.I | re.M)


def iter_parts(msg: Message) -> Iterator[Message]:
    """``msg`` and its parts, depth first, without entering a returned message."""
    for part, _ in typed_parts(msg):
        yield part


def typed_parts(msg: Message) -> list[tuple[Message, str]]:
    """:func:`iter_parts` with each part's content type, read once (the stdlib finds a header
    by reading them all, each time it is asked)."""
    found: list[tuple[Message, str]] = []
    stack = [msg]
    while stack:
        part = stack.pop()
        kind = part.get_content_type()
        found.append((part, kind))
        if kind in RETURNED_TYPES:
            continue
        payload = part.get_payload()
        if part.is_multipart() and isinstance(payload, list):
            stack.extend(reversed([p for p in payload if isinstance(p, Message)]))
    return found


def decoded_text(part: Message) -> str:
    """The text of a non-multipart part, its transfer encoding and charset undone."""
    try:
        data = part.get_payload(decode=True)
    except Exception:  # a hostile part: its raw payload, as text
        data = None
    if not isinstance(data, bytes):
        raw = part.get_payload()
        return raw[:TEXT_LIMIT] if isinstance(raw, str) else ""
    charset = str(part.get_content_charset() or "utf-8")
    try:
        text = data[: TEXT_LIMIT * 4].decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
        text = data[: TEXT_LIMIT * 4].decode("utf-8", errors="replace")
    return text[:TEXT_LIMIT]


def part_text(part: Message) -> str:
    """The text of a report part (``message/delivery-status``, ``message/feedback-report``...)
    whatever the stdlib made of it: it splits the first in blocks and parses the others as
    messages."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return decoded_text(part)
    inner = [p for p in payload if isinstance(p, Message)]
    if part.get_content_type() == "message/delivery-status":
        return "\n\n".join(_unsplit(b) for b in inner)
    return "\n\n".join(_as_text(b) for b in inner)


def _unsplit(block: Message) -> str:
    """One block of a split delivery-status: its fields, then what the stdlib took for a body
    (the lines after one it could not read as a field, say a reply's unfolded lines), without
    a blank line between: they belong to the block."""
    fields = "".join(f"{name}: {value}\n" for name, value in block.raw_items())
    rest = block.get_payload()
    text = fields + (rest if isinstance(rest, str) else "")
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _as_text(msg: Message) -> str:
    """A message part as the text it was, raw 8-bit bytes (RFC 6533's UTF-8) read as UTF-8."""
    try:
        data = msg.as_bytes()
    except Exception:  # a header the generator refuses: the text as the stdlib holds it
        return msg.as_string()
    return data[: TEXT_LIMIT * 4].decode("utf-8", errors="replace")[:TEXT_LIMIT]


def header_text(value: object) -> str:
    """A header's value as text, encoded words (RFC 2047) decoded when they decode."""
    text = str(value)
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (LookupError, ValueError, UnicodeError, AssertionError):
        return text


def header_addresses(msg: Message, *names: str) -> list[str]:
    """The addresses of the headers ``names`` of ``msg``, lower-cased, in order."""
    values: list[str] = []
    for name in names:
        values.extend(header_text(v) for v in msg.get_all(name, []))
    if all(plain := [_PLAIN.fullmatch(v) for v in values]):
        # what getaddresses gives for these (the fallback below finds no address either in
        # values without one), without its parser
        plain_addresses = [m["routed"] or m["bare"] for m in plain if m]
        return list(dict.fromkeys(a.lower() for a in plain_addresses if a))
    found: list[str] = []
    try:
        pairs = getaddresses(values)
    except Exception:  # hostile header values
        pairs = []
    for _, address in pairs:
        if "@" in address and not any(c.isspace() for c in address):
            found.append(address.strip("<>").lower())
    if not found:  # what getaddresses could not parse: the addresses in the text
        found = [a.lower() for v in values for a in _ADDRESS.findall(v)]
    return list(dict.fromkeys(found))


def addresses_in(text: str) -> list[str]:
    """The addresses written in ``text``, lower-cased, in order, each once."""
    return list(dict.fromkeys(a.lower().strip(".") for a in _ADDRESS.findall(text)))


def returned_headers(parts: list[tuple[Message, str]]) -> Message | None:
    """The headers of the message a bounce returns (``parts``: its :func:`typed_parts`): its
    ``message/rfc822`` part, else its ``text/rfc822-headers`` part."""
    for part, kind in parts:
        if kind in RETURNED_TYPES:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            if isinstance(payload, str):  # message/global: the stdlib leaves it as text
                return HeaderParser().parsestr(decoded_text(part))
        if kind in HEADER_TYPES:
            return HeaderParser().parsestr(decoded_text(part))
    return None


def quoted_headers(text: str) -> dict[str, str]:
    """``Message-ID``, ``To`` and ``X-Mailer-Send`` of a returned message quoted in a bounce's
    text (the first of each)."""
    found: dict[str, str] = {}
    for name, value in _QUOTED.findall(text):
        found.setdefault(name.lower(), value.strip())
    return found


__all__ = [
    "HEADER_TYPES",
    "RETURNED_TYPES",
    "TEXT_LIMIT",
    "addresses_in",
    "decoded_text",
    "header_addresses",
    "header_text",
    "iter_parts",
    "part_text",
    "quoted_headers",
    "returned_headers",
    "typed_parts",
]
