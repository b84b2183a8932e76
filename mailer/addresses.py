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

import re
import unicodedata
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES

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


# A local part email-validator keeps as written: an ASCII dot-atom (RFC 5322 atext), none of
# the mailbox names it lower-cases (postmaster, abuse...). For those, its answer depends on
# the domain alone, which a list repeats (a million addresses, a few thousand domains).
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_CASE_FOLDED = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_DOMAINS: dict[str, tuple[str, str]] = {}  # domain as written -> (normalised, IDNA ASCII)
_DOMAINS_KEPT = 4096


def normalize(raw: str) -> Address:
    """Validate ``raw`` and return its normalised form; raise :class:`AddressError` if bad.

    email-validator checks each address; for a plain local part (see ``_PLAIN_LOCAL``) at a
    domain it has already accepted, its answer is the local part, "@" and that domain's
    normalised form (the lengths checked again): that domain's answer is kept.
    """
    text = raw.strip()
    if not text:
        raise AddressError("the address is empty")
    if not text.isprintable() or " " in text:  # printable: no Cc, Cf, Zl, Zp nor other space
        _refuse_invisible(text)
    if len(text) > MAX_LENGTH:
        raise AddressError(f"the address is longer than {MAX_LENGTH} characters")
    local, at, domain = text.rpartition("@")
    known = _DOMAINS.get(domain) if at else None
    if known is not None and _plain(local):
        email, ascii_email = f"{local}@{known[0]}", f"{local}@{known[1]}"
        if max(len(text.encode()), len(email.encode()), len(ascii_email)) <= MAX_LENGTH:
            return Address(email=email, key=email.casefold(), smtputf8=False)
    return _validated(text, local, domain)


def _plain(local: str) -> bool:
    return (
        len(local) <= MAX_LOCAL
        and _PLAIN_LOCAL.fullmatch(local) is not None
        and local.lower() not in _CASE_FOLDED
    )


def _refuse_invisible(text: str) -> None:
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Zl", "Zp"):
            name = unicodedata.name(char, f"U+{ord(char):04X}")
            raise AddressError(f"the address contains an invisible or control character ({name})")
        if char.isspace():
            raise AddressError("the address contains a space")


def _validated(text: str, local: str, domain: str) -> Address:
    """``text`` through email-validator; its domain's answer kept when the local part is
    plain (so that the next address at that domain need not go through it)."""
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(str(exc)) from None
    if len(valid.local_part.encode("utf-8")) > MAX_LOCAL:
        raise AddressError(f"the part before the @ is longer than {MAX_LOCAL} octets (RFC 5321)")
    if valid.ascii_domain and _plain(local) and valid.local_part == local:
        if len(_DOMAINS) >= _DOMAINS_KEPT:
            _DOMAINS.clear()
        _DOMAINS[domain] = (valid.domain, valid.ascii_domain)
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
