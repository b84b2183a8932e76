"""Property tests: address normalisation and CSV rows survive every round trip."""

from __future__ import annotations

import csv
import io
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mailer.addresses import BIDI_CONTROLS, MAX_NAME, check_name, normalize
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
