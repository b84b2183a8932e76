"""The database URL check of the settings agrees with SQLAlchemy's own parser, which the
settings package no longer imports (only storage speaks SQL)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailer.settings.values import database_url

SAMPLES = [
    "sqlite+aiosqlite:///data/mailer.sqlite3",
    "sqlite+aiosqlite:////srv/mailer/mailer.sqlite3",
    "sqlite+aiosqlite://",
    "postgresql+asyncpg://user:pa:ss@w@rd@db.example.org:5432/mailer?ssl=require",
    "postgresql+asyncpg://user@[::1]:5432/mailer",
    "postgresql+asyncpg://user:secret@host:port/mailer",
    "postgresql+asyncpg://host:54x2/mailer",
    "postgresql+asyncpg://host:/mailer",
    "not a url",
    "://host/db",
    "postgres ql://host/db",
    "",
    "mailer.sqlite3",
]


def _sqlalchemy_accepts(value: str) -> bool:
    try:
        make_url(value)
    except (ArgumentError, ValueError):
        return False
    return True


def _we_accept(value: str) -> bool:
    try:
        database_url(value)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("value", SAMPLES)
def test_the_same_urls_are_accepted_as_sqlalchemy_accepts(value: str) -> None:
    """Each sample is accepted by the settings exactly when SQLAlchemy can parse it."""
    assert _we_accept(value) == _sqlalchemy_accepts(value)


@given(
    st.text(alphabet="ab+:/@?[]=.%1 \\x", max_size=30).map(lambda s: "pg+x://" + s)
    | st.text(max_size=30)
)
def test_any_text_is_judged_as_sqlalchemy_judges_it(value: str) -> None:
    """No text is accepted by one and refused by the other."""
    assert _we_accept(value) == _sqlalchemy_accepts(value)


def test_a_port_that_is_not_a_number_is_said_so() -> None:
    """The port gets its own message, with the password hidden."""
    with pytest.raises(ValueError, match=r"the port must be a number, got 'pg://u:\*\*\*@h:x/d'"):
        database_url("pg://u:secret@h:x/d")
