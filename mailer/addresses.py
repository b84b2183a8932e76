"""E-mail addresses: validation, normalisation and the comparison key. Pure; no DNS.

``normalize`` returns the address as it will be stored and mailed (email-validator's
normalised form: the domain lower-cased and IDNA-checked, the local part as written) and a
``key`` used to find duplicates: the whole address case-folded, as listmonk, Mailman and the
mailbox providers compare them. ``+tag`` addresses stay distinct.

``check_name`` is the one rule for a person's display name, applied by the import, the CLI,
the sign-up form and the message builder alike, so that a name accepted anywhere can go into
a ``To:`` header.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

from mailer.errors import AddressError

MAX_LENGTH = 254  # RFC 5321 path limit less the angle brackets
MAX_LOCAL = 64  # RFC 5321 4.5.3.1.1; email-validator only checks it in strict mode
MAX_NAME = 200  # the size of the subscribers.name column
# Unicode categories one line of header text must not hold: C0 and C1 controls (CR, LF,
# TAB, VT, FF, NEL, ESC, DEL...) and the line and paragraph separators U+2028/U+2029, which
# some mail software takes for line breaks.
_NAME_REFUSED = ("Cc", "Zl", "Zp")
# Bidirectional embeddings, overrides and isolates: they make a name or a subject read
# differently from what it says ("txt.exe"). Right-to-left text needs none of them; other
# format characters (the zero-width joiner of emoji sequences, the soft hyphen) are harmless.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def first_control(text: str) -> str | None:
    """The first character of ``text`` that one line of header text (a name, a subject, a
    title) must not hold, described (``LINE SEPARATOR, U+2028``); None if there is none.
    The one rule of the import, the sign-up form, campaign files and the message builder."""
    if text.isprintable():  # no Cc, Zl, Zp nor Cf (the bidi controls) in it: the usual case
        return None
    for char in text:
        if unicodedata.category(char) in _NAME_REFUSED or char in BIDI_CONTROLS:
            name = unicodedata.name(char, "")
            return f"{name} (U+{ord(char):04X})" if name else f"U+{ord(char):04X}"
    return None


@dataclass(frozen=True, slots=True)
class Address:
    email: str
    key: str
    smtputf8: bool


def normalize(raw: str) -> Address:
    """Validate ``raw`` and return its normalised form; raise :class:`AddressError` if bad."""
    text = raw.strip()
    if not text:
        raise AddressError("the address is empty")
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Zl", "Zp"):
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            raise AddressError(f"the address contains an invisible or control character ({name})")
        if char.isspace():
            raise AddressError("the address contains a space")
    if len(text) > MAX_LENGTH:
        raise AddressError(f"the address is longer than {MAX_LENGTH} characters")
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from None
    if len(valid.local_part.encode("utf-8")) > MAX_LOCAL:
        raise AddressError(f"the part before the @ is longer than {MAX_LOCAL} octets (RFC 5321)")
    email = valid.normalized
    return Address(email=email, key=email.casefold(), smtputf8=bool(valid.smtputf8))


def check_name(text: str, *, what: str = "name") -> str:
    """``text`` unchanged if it can be a display name; :class:`AddressError` saying why if not.

    ``what`` names the value in the message (a list title follows the same rule).

    Refused: any control character (C0, DEL, C1 including NEL), U+2028/U+2029, the
    bidirectional controls (see :func:`first_control`), and more than :data:`MAX_NAME`
    characters. Everything else (accents, emoji, joiners, right-to-left text) is a name.
    """
    label = first_control(text)
    if label is not None:
        raise AddressError(f"the {what} contains a control character ({label})")
    if len(text) > MAX_NAME:
        raise AddressError(f"the {what} is longer than {MAX_NAME} characters")
    return text


def address_key(raw: str) -> str:
    """The comparison key of an address that may or may not be valid (for look-ups)."""
    try:
        return normalize(raw).key
    except AddressError:
        return raw.strip().casefold()
