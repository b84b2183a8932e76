"""Signed tokens for the links in every mail (unsubscribe, preferences, confirm). Pure.

Tokens are signed with itsdangerous, one salt per purpose, so a token made for one purpose
is worthless for another. The signer holds a list of keys, newest first: it signs with the
first and accepts any, so an operator rotates the secret without breaking links already
sent. Unsubscribe and preference tokens never expire (RFC 8058 links must keep working);
confirmation tokens carry a timestamp and expire.

A token names a subscriber by its random ``public_id`` (never the row id, which SQLite
reuses after an erasure) and a list; a confirmation token also carries the nonce of the
sign-up request it was mailed for. Test sends carry tokens of the ``test`` purpose: their
pages say nothing was changed. An event's calendar link names the event's UID and a
language, no subscriber.

A bounce return path (VERP, issue 16) names one delivery: ``b+<id>-<mac>@<bounce domain>``,
the id in base 36 and the mac the first 65 bits of an HMAC-SHA256 of it under the first key,
in lower-case base 32 (mail systems may change a local part's case), accepted under any key.
A forged or mangled one reads as None.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import secrets
import string
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer
from pydantic import SecretStr

from mailer.errors import ConfigError, MailerError
from mailer.models import Links

KEY_FILE = "secret.key"
MIN_KEY_BITS = 256  # 32 bytes of entropy
_HEX = frozenset(string.hexdigits)
_URLSAFE = frozenset(string.ascii_letters + string.digits + "-_=")
_BASE64 = _URLSAFE | frozenset("+/")


class Purpose(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    CONFIRM = "confirm"
    TEST = "test"  # the links of a test send: they show a page and change nothing
    EVENT = "event"  # an event's calendar file (/e/TOKEN.ics): read only, for every reader


class BadToken(MailerError, ValueError):
    """A token that is tampered, foreign, for another purpose, or expired."""


class Signer:
    """Signs and reads tokens for every purpose with a rotating list of keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one secret key is needed")
        self._keys = list(keys)
        # itsdangerous signs with the *last* key of its list and verifies with any: give it
        # ours oldest first, so new links are signed with the newest (first) key.
        ordered = list(reversed(self._keys))
        self._plain = {
            p: URLSafeSerializer(ordered, salt=f"mailer.{p.value}")
            for p in (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.TEST, Purpose.EVENT)
        }
        self._timed = URLSafeTimedSerializer(ordered, salt=f"mailer.{Purpose.CONFIRM.value}")

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys, newest first (each render pool process makes its own Signer from them)."""
        return tuple(self._keys)

    def sign(self, purpose: Purpose, payload: Any) -> str:
        if purpose is Purpose.CONFIRM:
            return str(self._timed.dumps(payload))
        return str(self._plain[purpose].dumps(payload))

    def read(self, purpose: Purpose, token: str, *, max_age: int | None = None) -> Any:
        """The payload of a valid token; :class:`BadToken` for anything else."""
        try:
            if purpose is Purpose.CONFIRM:
                return self._timed.loads(token, max_age=max_age)
            return self._plain[purpose].loads(token)
        except BadData:
            raise BadToken("this link is not valid (or has expired)") from None


VERP_PREFIX = "b+"
_VERP_SALT = b"mailer.verp:"
_BASE36 = string.digits + string.ascii_lowercase


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _BASE36[digit] + digits
        if number == 0:
            return digits


def _verp_mac(key: str, id_text: str) -> str:
    digest = hmac.new(key.encode(), _VERP_SALT + id_text.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest[:10]).decode().lower()[:13]  # 65 bits


def return_path(signer: Signer, delivery_id: int, domain: str) -> str:
    """The envelope sender of one delivery's mail: ``b+<id>-<mac>@domain``."""
    if delivery_id < 0:
        raise ValueError("a delivery id is not negative")
    id_text = _base36(delivery_id)
    return f"{VERP_PREFIX}{id_text}-{_verp_mac(signer.keys[0], id_text)}@{domain}"


def read_return_path(signer: Signer, address: str, domain: str) -> int | None:
    """The delivery a bounce's recipient address names, or None: not of ``domain``, not a
    return path, or a mac that no key made (forged, mangled, or of a retired key)."""
    local, at, host = address.strip().strip("<>").rpartition("@")
    if not at or host.lower().rstrip(".") != domain.lower().rstrip("."):
        return None
    local = local.lower()
    if not local.startswith(VERP_PREFIX):
        return None
    id_text, dash, mac = local[len(VERP_PREFIX) :].partition("-")
    if not dash or not id_text or len(id_text) > 13 or set(id_text) - set(_BASE36):
        return None
    if not any(hmac.compare_digest(mac, _verp_mac(key, id_text)) for key in signer.keys):
        return None
    return int(id_text, 36)


def new_key() -> str:
    """A fresh secret key (256 random bits), for ``mailer config new-key``."""
    return secrets.token_urlsafe(32)


def key_bits(key: str) -> float:
    """A cautious estimate of a key's entropy: its length times the bits of the smallest
    alphabet it is written in (hex, base64, printable); none for a key of few symbols
    ("aaaa...", "abab...")."""
    chars = set(key)
    if len(chars) < 10:
        return 0.0
    if chars <= _HEX:
        per = 4.0
    elif chars <= _BASE64:
        per = 6.0
    else:
        per = math.log2(95)
    return len(key) * per


def check_key(key: str, where: str) -> str:
    """``key`` if it holds at least 256 bits; a ConfigError saying how to make one if not."""
    if key_bits(key) < MIN_KEY_BITS:
        raise ConfigError(
            f"{where}: a secret key must hold at least 32 random bytes (e.g. 43 characters of "
            "base64 or 64 hexadecimal digits); this one is too short or too simple. Make one "
            "with `mailer config new-key`"
        )
    return key


def load_keys(configured: Sequence[str], data_dir: Path) -> list[str]:
    """The configured keys, or a key generated once and kept in the data folder. Each must
    hold 256 bits (a short key is recovered offline from any link)."""
    if configured:
        return [
            check_key(k.strip(), f"MAILER_SECRET_KEYS (key {i} of {len(configured)})")
            for i, k in enumerate(configured, 1)
        ]
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: cannot read the secret key ({exc}); fix its permissions, or set "
            "MAILER_SECRET_KEYS"
        ) from None
    if not key:
        raise MailerError(
            f"{path} is empty: delete it to generate a new key, or set MAILER_SECRET_KEYS"
        )
    return [check_key(key, str(path))]


def load_signer(configured: Sequence[SecretStr], data_dir: Path) -> Signer:
    """The signer of ``MAILER_SECRET_KEYS``, or of the key kept in the data folder."""
    return Signer(load_keys([k.get_secret_value() for k in configured], data_dir))


def links_for(
    signer: Signer,
    base_url: str,
    *,
    public_id: str,
    list_id: int,
    confirm_nonce: str | None = None,
    test: bool = False,
) -> Links:
    """The links every mail carries for one subscriber of one list (and, in a double opt-in
    confirmation, with the nonce of its request, the link that confirms the subscription).

    ``test``: the links of a test send, which name nobody and change nothing."""
    if test:
        token = signer.sign(Purpose.TEST, ["test", list_id])
        return Links(
            unsubscribe=f"{base_url}/u/{token}",
            preferences=f"{base_url}/p/{token}",
            confirm=f"{base_url}/c/{token}" if confirm_nonce is not None else None,
        )
    payload = [public_id, list_id]
    return Links(
        unsubscribe=f"{base_url}/u/{signer.sign(Purpose.UNSUBSCRIBE, payload)}",
        preferences=f"{base_url}/p/{signer.sign(Purpose.PREFERENCES, payload)}",
        confirm=(
            f"{base_url}/c/{signer.sign(Purpose.CONFIRM, [*payload, confirm_nonce])}"
            if confirm_nonce is not None
            else None
        ),
    )


def calendar_url(signer: Signer, base_url: str, *, uid: str, locale: str) -> str:
    """The link to an event's calendar file in one language (``/e/TOKEN.ics``): the same for
    every reader of that language; following it changes nothing."""
    return f"{base_url}/e/{signer.sign(Purpose.EVENT, [uid, locale])}.ics"
