"""Signed tokens for the links in every mail (unsubscribe, preferences, confirm). Pure.

Tokens are signed with itsdangerous, one salt per purpose, so a token made for one purpose
is worthless for another. The signer holds a list of keys, newest first: it signs with the
first and accepts any, so an operator rotates the secret without breaking links already
sent. Unsubscribe and preference tokens never expire (RFC 8058 links must keep working);
confirmation tokens carry a timestamp and expire.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from itsdangerous import BadData, URLSafeSerializer, URLSafeTimedSerializer
from pydantic import SecretStr

from mailer.errors import MailerError
from mailer.models import Links

KEY_FILE = "secret.key"


class Purpose(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    CONFIRM = "confirm"


class BadToken(MailerError, ValueError):
    """A token that is tampered, foreign, for another purpose, or expired."""


class Signer:
    """Signs and reads tokens for every purpose with a rotating list of keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one secret key is needed")
        self._keys = list(keys)
        self._plain = {
            p: URLSafeSerializer(self._keys, salt=f"mailer.{p.value}")
            for p in (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES)
        }
        self._timed = URLSafeTimedSerializer(self._keys, salt=f"mailer.{Purpose.CONFIRM.value}")

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys, newest first (a render worker makes its own Signer from them)."""
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


def load_keys(configured: Sequence[str], data_dir: Path) -> list[str]:
    """The configured keys, or a key generated once and kept in the data folder."""
    if configured:
        return list(configured)
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
    key = path.read_text(encoding="utf-8").strip()
    if not key:
        raise MailerError(
            f"{path} is empty: delete it to generate a new key, or set MAILER_SECRET_KEYS"
        )
    return [key]


def load_signer(configured: Sequence[SecretStr], data_dir: Path) -> Signer:
    """The signer of ``MAILER_SECRET_KEYS``, or of the key kept in the data folder."""
    return Signer(load_keys([k.get_secret_value() for k in configured], data_dir))


def links_for(
    signer: Signer, base_url: str, *, subscriber_id: int, list_id: int, confirm: bool = False
) -> Links:
    """The links every mail carries for one subscriber of one list (and, in a double opt-in
    confirmation, the link that confirms the subscription)."""
    payload = [subscriber_id, list_id]
    return Links(
        unsubscribe=f"{base_url}/u/{signer.sign(Purpose.UNSUBSCRIBE, payload)}",
        preferences=f"{base_url}/p/{signer.sign(Purpose.PREFERENCES, payload)}",
        confirm=f"{base_url}/c/{signer.sign(Purpose.CONFIRM, payload)}" if confirm else None,
    )
