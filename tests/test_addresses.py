"""Property tests: address normalisation and CSV rows survive every round trip."""

from __future__ import annotations

import csv
import io
import string
import tempfile
from pathlib import Path

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import assume, given
from hypothesis import strategies as st

from mailer.addresses import BIDI_CONTROLS, MAX_NAME, Address, check_name, normalize
from mailer.errors import AddressError
from mailer.lists import ListFile, RowError, neutralise
from mailer.storage import SubscriberRow

local_parts = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=30).filter(
    lambda s: not s.startswith(".") and not s.endswith(".") and ".." not in s
)
labels = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12)
domains = st.lists(labels, min_size=1, max_size=3).map(lambda parts: ".".join([*parts, "org"]))
addresses = st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains)


@given(addresses)
def test_normalising_is_idempotent(raw: str) -> None:
    """Normalising a normalised address changes nothing."""
    once = normalize(raw)
    assert normalize(once.email) == once


@given(addresses, st.data())
def test_case_never_makes_two_subscribers(raw: str, data: st.DataObject) -> None:
    """Any mix of upper and lower case gives the same comparison key."""
    flips = data.draw(st.lists(st.booleans(), min_size=len(raw), max_size=len(raw)))
    mixed = "".join(c.upper() if flip else c for c, flip in zip(raw, flips, strict=True))
    assert normalize(mixed).key == normalize(raw).key
    assert normalize(mixed).email.split("@")[1] == normalize(raw).email.split("@")[1]


@given(addresses, st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=10))
def test_plus_tags_stay_distinct(raw: str, tag: str) -> None:
    """``name+tag@domain`` is somebody else's inbox rule, not a duplicate of ``name@domain``."""
    local, domain = raw.split("@")
    assume(len(local) + len(tag) < 60)
    assert normalize(f"{local}+{tag}@{domain}").key != normalize(raw).key


@given(
    addresses,
    st.characters(categories=["Cc", "Cf", "Zl", "Zp"]),
    st.integers(min_value=1, max_value=200),
)
def test_invisible_and_control_characters_are_refused(raw: str, char: str, where: int) -> None:
    """CR, LF, NUL, zero-width and other invisible characters never get into an address."""
    position = where % (len(raw) - 1) + 1  # inside, not at the ends where strip() applies
    with pytest.raises(AddressError):
        normalize(raw[:position] + char + raw[position:])


@pytest.mark.parametrize(
    "raw",
    ["a@b", "plain", "@example.org", "two@@example.org", "a@-example.org", "x" * 65 + "@e.org"],
)
def test_classic_bad_addresses_are_refused(raw: str) -> None:
    with pytest.raises(AddressError):
        normalize(raw)


cell_text = st.text(
    st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\x00"),
    max_size=40,
).map(str.strip)


@given(
    addresses,
    cell_text,
    st.dictionaries(st.sampled_from(["organisation", "role", "city"]), cell_text, max_size=3),
)
def test_csv_rows_round_trip(email: str, name: str, attributes: dict[str, str]) -> None:
    """A row written by a spreadsheet (quotes, commas, accents, formula-like cells) reads back."""
    header = ["email", "name", "organisation", "role", "city"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerow(
        [neutralise(c) for c in [email, name, *(attributes.get(k, "") for k in header[2:])]]
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "list.csv"
        path.write_text(out.getvalue(), encoding="utf-8", newline="")
        with ListFile(path) as rows:
            parsed = list(rows)
    assert len(parsed) == 1
    row = parsed[0]
    assert not isinstance(row, RowError), row
    assert isinstance(row, SubscriberRow)
    assert row.email == normalize(email).email
    assert row.name == (name or None)
    assert row.attributes == {k: v for k, v in attributes.items() if v}


@pytest.mark.parametrize(
    "bad",
    [
        "\r",
        "\n",
        "\u2028",
        "\u2029",
        "\x85",
        "\x0b",
        "\x0c",
        "\x00",
        "\x1b",
        "\x7f",
        "\x9b",
        "\u202e",
        "\u2066",
    ],
)
def test_check_name_refuses_every_line_break_and_control(bad: str) -> None:
    """One rule for display names: no C0/C1 control, no Unicode line or paragraph separator."""
    with pytest.raises(AddressError, match="control character"):
        check_name(f"Léa{bad}Moreau")


def test_check_name_refuses_names_longer_than_the_column() -> None:
    """A name longer than the 200-character column is refused, not cut."""
    assert check_name("x" * MAX_NAME) == "x" * MAX_NAME
    with pytest.raises(AddressError, match=f"longer than {MAX_NAME} characters"):
        check_name("x" * (MAX_NAME + 1))


@given(
    st.text(
        st.characters(
            blacklist_categories=("Cc", "Zl", "Zp", "Cs"),
            blacklist_characters="".join(BIDI_CONTROLS),
        ),
        max_size=200,
    )
)
def test_check_name_accepts_printable_text_as_given(name: str) -> None:
    """Accents, emoji, joiners and right-to-left text are names too, kept as given (the
    bidirectional override and isolate controls are not: they make a name misread)."""
    assert check_name(name) == name


def _reference(raw: str) -> Address | str:
    """What normalize answered before it kept domains' answers: every address through
    email-validator (the error's text when it refuses)."""
    text = raw.strip()
    if len(text) > 254:
        return "the address is longer than 254 characters"
    try:
        valid = validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    if len(valid.local_part.encode("utf-8")) > 64:
        return "the part before the @ is longer than 64 octets (RFC 5321)"
    return Address(valid.normalized, valid.normalized.casefold(), bool(valid.smtputf8))


def _answer(raw: str) -> Address | str:
    try:
        return normalize(raw)
    except AddressError as exc:
        return str(exc)


_ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
tricky_locals = st.one_of(
    st.text(_ATEXT + ".", min_size=1, max_size=70),
    st.text(_ATEXT + '."@\\()<>,;: éß', min_size=0, max_size=12),
    st.sampled_from(["postmaster", "PostMaster", "Abuse", "info", "www", "WWW.x", "a" * 64]),
    st.builds(lambda n: "x" * n, st.integers(60, 70)),
)
_LABELS = string.ascii_letters + string.digits + "-é"
tricky_domains = st.one_of(
    st.sampled_from(
        [
            "example.org",
            "EXAMPLE.org",
            "aphp.fr",
            "münchen.de",
            "xn--mnchen-3ya.de",
            "xn--bad.de",
            "localhost",
            "host.test",
            "onion.onion",
            "a.invalid",
            "x.local",
            "192.168.0.1",
            "[192.168.0.1]",
            "a.123",
            "ab--cd.org",
            "-a.org",
            "a-.org",
            "a..org",
            "a.org.",
            ".a.org",
            "a_b.org",
            "ＡＢＣ.org",
            "a.b",
            "exa mple.org",
            "",
            ("l" * 63 + ".") * 3 + "org",
            "l" * 64 + ".org",
            ("d" * 60 + ".") * 4 + "fr",
            "straße.de",
            "STRASSE.de",
            "aaaaaaaaaé." * 11 + "org",  # longer as IDNA ASCII
        ]
    ),
    st.lists(st.text(_LABELS, min_size=1, max_size=8), min_size=1, max_size=3).map(
        lambda labels: ".".join([*labels, "org"])
    ),
)


@given(tricky_locals, tricky_domains)
def test_a_domain_already_accepted_answers_as_email_validator_would(
    local: str, domain: str
) -> None:
    """normalize keeps the answer of each domain it accepted for a plain local part, so
    that the next address at that domain skips email-validator: every answer, the first
    and the next (kept), is still email-validator's."""
    raw = f"{local}@{domain}"
    assume(raw.isprintable() and " " not in raw and len(raw) <= 254)
    expected = _reference(raw)
    assert _answer(raw) == expected  # the first answer: the domain may be kept now
    assert _answer(raw) == expected  # the next: from what was kept, where it applies
    for other in ("a.b-c", "Q" * 63, local.upper()):  # others at the same domain
        assert _answer(f"{other}@{domain}") == _reference(f"{other}@{domain}")
