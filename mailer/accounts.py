"""Staff accounts' secrets: the password rules, argon2id hashes and TOTP codes. Pure.

- :func:`check_password` is the one rule for a staff password, applied by ``mailer users`` and
  the console alike: at least :data:`MIN_PASSWORD` characters, not holding the person's address
  or name (compared case- and accent-insensitively), not one of the passwords everyone tries
  first. It raises :class:`~mailer.errors.AccountError`, whose ``reason`` lets the console say
  it in its own words; the message is English, for the command line.
- :func:`hash_password` makes an argon2id PHC string with argon2-cffi's defaults (RFC 9106's
  low-memory profile); :func:`needs_rehash` says when a stored hash was made with other
  parameters, so that a sign-in can store a new one. Passwords are NFC-normalised first, so
  the same characters typed on two systems give the same hash.
- :func:`verify_password` answers False for a wrong password, an unreadable hash or no hash at
  all, in about the same time: with no hash it verifies a dummy one, so that an unknown account
  takes as long as a wrong password.
- :func:`new_totp_secret`, :func:`totp_uri` and :func:`verify_totp`: RFC 6238 codes (pyotp),
  six digits every 30 seconds, one step of clock drift either way.

Nothing here stores, logs or reads the clock: callers pass ``now`` and keep what is returned.
"""

from __future__ import annotations

import contextlib
import hmac
import itertools
import re
import unicodedata
from datetime import datetime
from functools import cache

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from mailer.errors import AccountError

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # a sign-in form is 64 KiB at most; a passphrase is far shorter
TOTP_DIGITS = 6
# The whole local part or name is looked for when it has this many characters; its pieces
# (marie, curie in marie.curie) when they have PIECE_MIN: shorter ones are everywhere.
WHOLE_MIN = 3
PIECE_MIN = 4
# Fewer distinct characters than this (aaaaaaaaaaaa, abababababab) is as weak as a common word.
MIN_DISTINCT = 5
# What is left of a password once its digits, spaces and punctuation are gone (Password1234!
# -> password), compared with these: the words that top every leaked-password list, in English
# and French, and the keyboard rows.
COMMON_WORDS = frozenset(
    {
        "password",
        "passwort",
        "motdepasse",
        "secret",
        "letmein",
        "welcome",
        "bienvenue",
        "iloveyou",
        "jetaime",
        "admin",
        "administrator",
        "administrateur",
        "changeme",
        "default",
        "login",
        "master",
        "monkey",
        "dragon",
        "football",
        "sunshine",
        "princess",
        "soleil",
        "doudou",
        "loulou",
        "chouchou",
        "mailer",
        "newsletter",
        "qwerty",
        "qwertyuiop",
        "qwertyuiopasdfghjkl",
        "azerty",
        "azertyuiop",
        "azertyuiopqsdfghjklm",
        "asdfgh",
        "asdfghjkl",
        "qsdfghjklm",
        "zxcvbnm",
        "wxcvbn",
    }
)
_PIECES = re.compile(r"[\W_]+")

_hasher = PasswordHasher()


def fold(text: str) -> str:
    """``text`` compared as people read it: compatibility forms merged, accents dropped,
    case-folded (``Hélène`` -> ``helene``)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def check_password(password: str, *, email: str, name: str | None) -> None:
    """Refuse a password that breaks the rules, raising :class:`AccountError` with a reason:
    ``too_short``, ``too_long``, ``contains_email``, ``contains_name`` or ``too_common``."""
    if len(password) > MAX_PASSWORD:
        raise AccountError("too_long", f"the password must have at most {MAX_PASSWORD} characters")
    if len(password) < MIN_PASSWORD:
        raise AccountError(
            "too_short",
            f"the password must have at least {MIN_PASSWORD} characters "
            f"(this one has {len(password)})",
        )
    folded = fold(password)
    local = email.rpartition("@")[0] or email
    if any(part in folded for part in _parts(local)):
        raise AccountError(
            "contains_email", "the password must not contain the address or a part of it"
        )
    if name and any(part in folded for part in _parts(name)):
        raise AccountError("contains_name", "the password must not contain the name or part of it")
    if _too_common(folded):
        raise AccountError(
            "too_common",
            "the password is one of those tried first (a common word, a keyboard row, "
            "a run or a repeated character); choose a longer phrase of your own",
        )


def _parts(text: str) -> set[str]:
    """The whole of ``text`` (an address's local part, a name) and its pieces, folded, each
    long enough to be looked for."""
    whole = fold(text).strip()
    parts = {whole, _PIECES.sub("", whole)} if len(whole) >= WHOLE_MIN else set()
    parts |= {piece for piece in _PIECES.split(whole) if len(piece) >= PIECE_MIN}
    return {part for part in parts if len(part) >= WHOLE_MIN}


def _too_common(folded: str) -> bool:
    if len(set(folded)) < MIN_DISTINCT or _is_run(folded):
        return True
    letters = "".join(c for c in folded if c.isalpha())
    return letters in COMMON_WORDS or (len(letters) >= PIECE_MIN and _is_run(letters))


def _is_run(text: str) -> bool:
    """True for a run of consecutive digits or letters, up or down (``123456789012``,
    ``987654321098``, ``abcdefghijkl``); digits wrap from 9 to 0."""
    if len(text) < 2 or not (text.isdigit() or (text.isalpha() and text.isascii())):
        return False
    modulo = 10 if text.isdigit() else 26
    steps = {(ord(b) - ord(a)) % modulo for a, b in itertools.pairwise(text)}
    return steps in ({1}, {modulo - 1})


def hash_password(password: str) -> str:
    """An argon2id PHC string (``$argon2id$v=19$m=65536,t=3,p=4$...``) for ``password``."""
    return _hasher.hash(_nfc(password))


def verify_password(hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``hash``; False for None, a mismatch or an invalid hash.
    With no hash, a dummy one is verified so that the answer takes as long."""
    if hash is None:
        with contextlib.suppress(VerificationError):
            _hasher.verify(_dummy_hash(), _nfc(password))
        return False
    try:
        return _hasher.verify(hash, _nfc(password))
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(hash: str) -> bool:
    """Whether ``hash`` was made with other parameters (or another algorithm) than
    :func:`hash_password` uses now; an unreadable hash needs replacing too."""
    try:
        return _hasher.check_needs_rehash(hash)
    except (InvalidHashError, ValueError):
        return True


@cache
def _dummy_hash() -> str:
    return _hasher.hash("not a password: the hash verified when there is none")


def _nfc(password: str) -> str:
    return unicodedata.normalize("NFC", password)


def new_totp_secret() -> str:
    """A fresh TOTP secret: 32 base32 characters (160 bits, RFC 4226's recommendation)."""
    return pyotp.random_base32()


def totp_uri(secret: str, *, email: str, issuer: str = "mailer") -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads (often as a QR code)."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS).provisioning_uri(name=email, issuer_name=issuer)


def verify_totp(secret: str, code: str, *, now: datetime) -> bool:
    """Whether ``code`` is the TOTP of ``secret`` at ``now`` (timezone-aware), or of the 30 s
    step just before or after. Spaces are ignored (``123 456``); anything but six digits is
    False, as is a secret that is not base32."""
    return totp_step(secret, code, now=now) is not None


def totp_step(secret: str, code: str, *, now: datetime) -> int | None:
    """The 30 s step (Unix time // 30) whose code ``code`` is, among the one of ``now`` and
    the two beside it; None if none. Sign-in keeps the last step used, so that a code seen
    over someone's shoulder cannot be used a second time."""
    code = "".join(code.split())
    if len(code) != TOTP_DIGITS or not code.isascii() or not code.isdigit():
        return None
    try:
        totp = pyotp.TOTP(secret, digits=TOTP_DIGITS)
        current = int(now.timestamp()) // totp.interval
        for step in (current - 1, current, current + 1):
            if hmac.compare_digest(totp.at(step * totp.interval), code):
                return step
    except ValueError:  # binascii.Error: not base32
        return None
    return None
