"""accounts: the staff password rules, argon2id hashing and rehash, TOTP codes at a given time."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from argon2 import PasswordHasher, Type

from mailer.accounts import (
    MIN_PASSWORD,
    check_password,
    hash_password,
    needs_rehash,
    new_totp_secret,
    totp_uri,
    verify_password,
    verify_totp,
)
from mailer.errors import AccountError, MailerError

EMAIL = "marie.curie@labo.example.org"
NAME = "Hélène Langevin"
GOOD = "correct horse battery staple"
NOW = datetime(2026, 3, 2, 9, 30, 15, tzinfo=UTC)
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
OTHER_SECRET = "KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU"


def test_a_long_password_of_ones_own_passes() -> None:
    """A passphrase of twelve characters or more that names nobody is accepted."""
    check_password(GOOD, email=EMAIL, name=NAME)
    check_password("x7#Lq9!vR2@m", email=EMAIL, name=None)
    check_password("481593726048", email="jo@example.org", name="Jo")  # digits, not a run


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short pass", "too_short"),
        ("elevenchars", "too_short"),
        ("MarieCurie-Radium1898", "contains_email"),  # the whole local part, dot left out
        ("my-name-is-CURIE-really", "contains_email"),  # one piece of it
        ("Hélène-in-Paris-2026", "contains_name"),
        ("helene-in-paris-2026", "contains_name"),  # accents folded
        ("LANGEVIN!LANGEVIN", "contains_name"),
        ("Password1234!", "too_common"),
        ("motdepasse 2026", "too_common"),
        ("AZERTYuiop123", "too_common"),
        ("qwertyuiop12", "too_common"),
        ("123456789012", "too_common"),
        ("098765432109", "too_common"),
        ("abcdefghijkl", "too_common"),
        ("aaaaaaaaaaaa", "too_common"),
        ("abababababab", "too_common"),
    ],
)
def test_a_password_that_breaks_a_rule_names_the_rule(password: str, reason: str) -> None:
    """Each refusal carries the reason the console words for itself, and an English message."""
    with pytest.raises(AccountError) as caught:
        check_password(password, email=EMAIL, name=NAME)
    assert caught.value.reason == reason
    assert isinstance(caught.value, MailerError)
    assert isinstance(caught.value, ValueError)
    assert password not in str(caught.value)


def test_the_length_rule_counts_characters_and_says_how_many() -> None:
    """Eleven characters fail and twelve pass, accented letters counting once."""
    with pytest.raises(AccountError, match=f"at least {MIN_PASSWORD} characters .*has 11"):
        check_password("é" * 5 + "zq#4r9", email=EMAIL, name=None)
    check_password("é" * 6 + "zq#4r9", email=EMAIL, name=None)


def test_short_names_and_addresses_are_not_looked_for() -> None:
    """A two-letter local part or name would refuse half the passwords: it is not looked for."""
    check_password("jolly good fellow 77", email="jo@example.org", name="Jo Li")
    with pytest.raises(AccountError) as caught:
        check_password("all about ann here", email="ann@example.org", name=None)
    assert caught.value.reason == "contains_email"


def test_a_hash_is_argon2id_and_verifies_only_its_password() -> None:
    """hash_password gives an argon2id PHC string; only the same password verifies."""
    stored = hash_password(GOOD)
    assert stored.startswith("$argon2id$v=19$")
    assert GOOD not in stored
    assert stored != hash_password(GOOD)  # salted
    assert verify_password(stored, GOOD)
    assert not verify_password(stored, GOOD + " ")
    assert not verify_password(stored, "")
    assert not needs_rehash(stored)


def test_the_same_characters_typed_differently_verify() -> None:
    """A password typed decomposed (macOS) matches the one stored composed."""
    composed = "Mot de passe très sûr"
    stored = hash_password(composed)
    decomposed = unicodedata.normalize("NFD", composed)
    assert decomposed != composed
    assert verify_password(stored, decomposed)


def test_no_hash_or_a_broken_one_never_verifies() -> None:
    """None (an account without a password), garbage, or another scheme: False, no exception."""
    assert not verify_password(None, GOOD)
    assert not verify_password("", GOOD)
    assert not verify_password("$argon2id$v=19$m=65536,t=3,p=4$broken", GOOD)
    assert not verify_password("$2b$12$abcdefghijklmnopqrstuuv3kC1FBvZkqmHxXQ0nOQjQa5zzxM8iK", GOOD)


def test_a_hash_made_with_other_parameters_needs_rehash() -> None:
    """A hash from weaker (or older) parameters still verifies, and says it should be replaced."""
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(GOOD)
    assert verify_password(weak, GOOD)
    assert needs_rehash(weak)
    assert not needs_rehash(hash_password(GOOD))
    argon2i = PasswordHasher(type=Type.I).hash(GOOD)
    assert verify_password(argon2i, GOOD)
    assert needs_rehash(argon2i)
    assert needs_rehash("not a hash")


def test_a_totp_code_verifies_at_its_time_and_one_step_either_side() -> None:
    """The code of now, of 30 s before and of 30 s after pass; 60 s away, or another
    secret's code, fails."""
    totp = pyotp.TOTP(SECRET)
    code = totp.at(NOW)
    assert verify_totp(SECRET, code, now=NOW)
    assert verify_totp(SECRET, f"{code[:3]} {code[3:]}", now=NOW)
    assert verify_totp(SECRET, totp.at(NOW - timedelta(seconds=30)), now=NOW)
    assert verify_totp(SECRET, totp.at(NOW + timedelta(seconds=30)), now=NOW)
    assert not verify_totp(SECRET, totp.at(NOW - timedelta(seconds=60)), now=NOW)
    assert not verify_totp(SECRET, totp.at(NOW + timedelta(seconds=60)), now=NOW)
    assert not verify_totp(OTHER_SECRET, code, now=NOW)
    assert verify_totp(SECRET.lower(), code, now=NOW)


def test_a_totp_code_is_six_digits_and_nothing_else() -> None:
    """Letters, other lengths, non-ASCII digits and a broken secret are False, not errors."""
    secret = new_totp_secret()
    code = pyotp.TOTP(secret).at(NOW)
    assert not verify_totp(secret, code[:5], now=NOW)
    assert not verify_totp(secret, code + "0", now=NOW)
    assert not verify_totp(secret, "", now=NOW)
    assert not verify_totp(secret, "abcdef", now=NOW)
    arabic = "".join(chr(0x0660 + int(d)) for d in code)  # ARABIC-INDIC digits, isdigit() True
    assert not verify_totp(secret, arabic, now=NOW)
    assert not verify_totp("not base32 at all!", code, now=NOW)


def test_a_totp_secret_and_its_uri_for_an_authenticator_app() -> None:
    """A fresh 160-bit base32 secret each time, and the otpauth:// URI apps read."""
    secret = new_totp_secret()
    assert len(secret) == 32
    assert set(secret) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    assert secret != new_totp_secret()
    uri = urlsplit(totp_uri(secret, email=EMAIL, issuer="CRI mailer"))
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert unquote(uri.path) == f"/CRI mailer:{EMAIL}"
    query = parse_qs(uri.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["CRI mailer"]
    assert pyotp.parse_uri(totp_uri(secret, email=EMAIL)).issuer == "mailer"


def test_totp_step_names_the_step_of_the_code() -> None:
    """totp_step finds which of the three accepted 30 s steps a code belongs to."""
    from datetime import UTC, datetime

    import pyotp

    from mailer import accounts

    secret = accounts.new_totp_secret()
    moment = datetime(2026, 12, 2, 9, 0, 15, tzinfo=UTC)
    step = int(moment.timestamp()) // 30
    totp = pyotp.TOTP(secret)
    for offset in (-1, 0, 1):
        assert (
            accounts.totp_step(secret, totp.at((step + offset) * 30), now=moment) == step + offset
        )
    assert accounts.totp_step(secret, totp.at((step + 2) * 30), now=moment) is None
