"""The console's campaign form read into the one campaign model (web/console/campaign_form.py):
the same words as a campaign file, each beside its field; a stored spec spread back into the
form reads into the same campaign. And the limits around the form: a wider body limit for it
only, a 413 page, the CSP of the pages that show a mail in a frame."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import FormData

from mailer.web.console.campaign_form import (
    GENERAL,
    MAX_BODY,
    blank,
    read,
    split_error,
    values_of,
)

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def form(**fields: Any) -> FormData:
    items: list[tuple[str, str]] = []
    for name, value in fields.items():
        key = name.replace("__", ".")
        for one in value if isinstance(value, list) else [value]:
            items.append((key, one))
    return FormData(items)


def event_form(**extra: Any) -> FormData:
    fields: dict[str, Any] = {
        "name": "journee-2027",
        "kind": "event",
        "lists": ["researchers"],
        "languages": ["fr", "en"],
        "content__fr__subject": "Journée de recherche",
        "content__fr__body": "Bonjour {{ name }}",
        "content__en__body": "Hello {{ name }}",
        "content__en__event__title": "Research day",
        "event__title": "Journée de recherche",
        "event__start": "2027-01-15T09:00",
        "event__end": "2027-01-15T17:30",
        "event__place": "Hôpital Pitié-Salpêtrière, Paris",
        "event__reminders": "7d, 1d",
        "event__invite": "request",
    }
    fields.update(extra)
    return form(**fields)


def reading_of(data: FormData, templates: bool = True) -> Any:
    return read(
        data,
        now=NOW,
        domain="lists.test",
        default_zone="Europe/Paris",
        templates_dir=ROOT / "templates" if templates else None,
    )


def test_an_event_form_reads_into_the_campaign_a_file_would_be() -> None:
    reading = reading_of(event_form())
    assert reading.errors == {}
    campaign = reading.campaign
    assert campaign is not None
    assert campaign.languages == ("fr", "en")
    assert [p.key for p in reading.planned] == ["invitation", "reminder:P7D", "reminder:P1D"]
    event = campaign.event(domain="lists.test")
    assert event is not None
    assert event.start == datetime(2027, 1, 15, 8, 0, tzinfo=UTC)  # 09:00 in Paris, winter
    assert campaign.event_texts[0].title == "Research day"


def test_a_stored_spec_fills_the_form_that_reads_into_the_same_campaign() -> None:
    first = reading_of(event_form()).campaign
    assert first is not None
    values = values_of(first.spec(), version=3)
    assert values["event.start"] == "2027-01-15T09:00"
    assert values["event.reminders"] == "7d, 1d"
    assert values["version"] == "3"
    again = reading_of(form(**{k.replace(".", "__"): v for k, v in values.items()})).campaign
    assert again is not None
    assert again.spec() == first.spec()


@pytest.mark.parametrize("kind", ["announcement", "event", "newsletter"])
def test_a_blank_form_of_each_kind_says_what_is_missing_beside_its_field(kind: str) -> None:
    values = blank(kind)
    values["languages"] = ["fr"]
    reading = reading_of(form(**{k.replace(".", "__"): v for k, v in values.items()}))
    assert reading.campaign is None
    assert "name" in reading.errors
    assert "lists" in reading.errors
    if kind == "event":
        assert "event.start" in reading.errors
        assert "event.title" in reading.errors
    if kind == "newsletter":
        assert "newsletter.cron" in reading.errors


def test_a_time_in_the_spring_gap_names_the_nearest_valid_times() -> None:
    reading = reading_of(event_form(event__start="2027-03-28T02:30", event__end=""))
    assert list(reading.errors) == ["event.start"]
    (message,) = reading.errors["event.start"]
    assert message.endswith("the nearest valid times are 01:59 and 03:00")


def test_a_time_in_the_autumn_fold_says_which_instant_was_chosen() -> None:
    reading = reading_of(
        event_form(event__start="2027-10-31T02:30", event__end="", event__announce="")
    )
    assert reading.errors == {}
    assert reading.notes == [
        "event.start: 2027-10-31 02:30 happens twice in Europe/Paris; using the first "
        "(02:30 CEST, 00:30 UTC), not 02:30 CET"
    ]


def test_end_before_start_and_a_bad_time_are_said_beside_their_fields() -> None:
    reading = reading_of(event_form(event__end="2027-01-15T08:00"))
    assert reading.errors == {"event.end": ["end must be after start"]}
    bad = reading_of(event_form(event__start="15/01/2027 9h"))
    assert "is not a date and time" in bad.errors["event.start"][0]


def test_a_body_over_the_limit_is_refused_beside_it() -> None:
    reading = reading_of(event_form(content__en__body="x" * (MAX_BODY + 1)))
    assert reading.campaign is None
    assert reading.errors["content.en.body"] == [
        "the body has 1,000,001 characters; at most 1,000,000"
    ]


def test_a_language_without_its_template_is_named() -> None:
    reading = reading_of(event_form(template="nope"))
    assert "template" in reading.errors


def test_an_error_line_goes_to_the_longest_field_it_names() -> None:
    known = ["event.reminders", "event", "lists"]
    assert split_error("x: event.reminders.0: bad", "x", known=known) == (
        "event.reminders",
        "bad",
    )
    assert split_error("x: lists.0: bad", "x", known=known) == ("lists", "bad")
    assert split_error("x: (file): odd", "x", known=known) == (GENERAL, "(file): odd")
    assert split_error("x: nowhere: odd", "x", known=known) == (GENERAL, "nowhere: odd")
    assert split_error("x: event: end must be after start", "x", known=["event.end"]) == (
        "event.end",
        "end must be after start",
    )


async def test_the_campaign_form_may_be_larger_than_other_forms_and_a_413_is_a_page(
    console: Any,
) -> None:
    client = await console.client("editor")
    big = {"csrf": await console.csrf(client), "content.fr.body": "é" * 200_000}
    small_path = await client.post("/admin/users", data=big)
    assert small_path.status_code == 413
    assert "trop volumineuse" in small_path.text or "too large" in small_path.text.lower()
    assert small_path.headers["content-type"].startswith("text/html")
    wide = await client.post("/admin/compose", data=big)
    assert wide.status_code != 413
    huge = await client.post("/admin/compose", content=b"x" * (9 << 20))
    assert huge.status_code == 413


async def test_only_the_pages_that_frame_a_mail_allow_inline_styles(console: Any) -> None:
    client: httpx.AsyncClient = await console.client("editor")
    framed = await client.get("/admin/compose")
    other = await client.get("/admin/")
    assert "style-src 'self' 'unsafe-inline'" in framed.headers["content-security-policy"]
    assert "script-src 'self';" in framed.headers["content-security-policy"]
    assert "unsafe-inline" not in other.headers["content-security-policy"]


def test_a_stored_time_with_an_offset_is_shown_at_the_campaigns_local_time() -> None:
    """A file's (or a moved event's) time with a UTC offset shows in the campaign's zone, so
    saving the form unchanged keeps the instant (it was cut to its digits: an hour early)."""
    first = reading_of(event_form()).campaign
    assert first is not None
    spec = first.spec()
    spec["event"]["start"] = "2027-01-15T08:00:00Z"
    spec["event"]["end"] = "2027-01-15T17:30:00+01:00"
    values = values_of(spec)
    assert (values["event.start"], values["event.end"]) == ("2027-01-15T09:00", "2027-01-15T17:30")
    again = reading_of(form(**{k.replace(".", "__"): v for k, v in values.items()})).campaign
    assert again is not None
    event = again.event(domain="lists.test")
    assert event is not None
    assert event.start == datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


def test_a_time_zone_too_long_to_be_one_is_said_beside_its_field() -> None:
    reading = reading_of(event_form(timezone="Europe/" + "A" * 300))
    assert reading.campaign is None
    assert "timezone" in reading.errors, reading.errors
