"""The subscriber side of events (issue 13): the ".ics" link of an event mail (``/e/TOKEN.ics``)
gives the event as it stands, in the mail's language, and changes nothing; the Google and
Outlook.com links carry the event; the preferences page sets the reader's time zone, and the
next event mail shows the event's time in it too. Links are taken from real mail sent over
SMTP, as in the trust tests."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from icalendar import Calendar

from mailer.addresses import normalize
from mailer.models import Content, EventInfo, EventStatus, EventText, LocaleText
from mailer.storage import SubscriberRow
from tests.test_web_trust import CLAIRE, Lab, dump, lab, links, now, to_of

__all__ = ["lab"]  # the fixture, used by name

pytestmark = pytest.mark.timeout(90)


async def event_send(lab: Lab, *, title_en: str = "Research day") -> tuple[int, int]:
    """An event campaign in French and English to the researchers; (campaign id, send id)."""
    start = (now() + timedelta(days=30)).replace(microsecond=0)
    event = EventInfo(
        uid="journee@lists.test", title="Journée de recherche", start=start,
        end=start + timedelta(hours=8), timezone="Europe/Paris", place="Pitié-Salpêtrière",
        texts=(EventText("en", title=title_en),),
    )  # fmt: skip
    texts = (LocaleText("fr", body="Venez."), LocaleText("en", body="Do come."))
    campaign_id = await lab.store.campaigns.save(
        Content(name="journee", kind="event", texts=texts), list_slugs=["researchers"],
        sender_name=None, sender_address=None, event=event, now=now(),
    )  # fmt: skip
    send_id, _ = await lab.store.sends.create(
        campaign_id, key="invitation", action="invitation", due_at=now(), now=now()
    )
    return campaign_id, send_id


def calendar_links(html: str) -> dict[str, str]:
    found = {
        kind: url.replace("&amp;", "&")
        for kind, url in (
            ("google", re.search(r'href="(https://calendar\.google\.com/[^"]+)"', html)),
            ("outlook", re.search(r'href="(https://outlook\.live\.com/[^"]+)"', html)),
            ("ics", re.search(r'href="https://lists\.test(/e/[^"]+\.ics)"', html)),
        )
        if url is not None
        for url in [url[1]]
    }
    return found


async def test_the_ics_link_gives_the_event_and_changes_nothing(lab: Lab) -> None:
    _, send_id = await event_send(lab)
    mails = await lab.deliver(send_id)
    html = to_of(mails, CLAIRE).get_body(("html",)).get_content()  # type: ignore[union-attr]
    found = calendar_links(html)
    assert set(found) == {"google", "outlook", "ics"}
    google = parse_qs(urlsplit(found["google"]).query)
    assert google["text"] == ["Journée de recherche"]
    assert google["location"] == ["Pitié-Salpêtrière"]
    assert parse_qs(urlsplit(found["outlook"]).query)["subject"] == ["Journée de recherche"]
    before = await dump(lab.store)
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE"):
        answer = await lab.client.request(method, found["ics"], data={"action": "all"})
        if method == "GET":
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/calendar")
            calendar = Calendar.from_ical(answer.content)
            assert str(calendar["METHOD"]) == "PUBLISH"
            event = calendar.walk("VEVENT")[0]
            assert str(event["SUMMARY"]) == "Journée de recherche"
            assert str(event["UID"]) == "journee@lists.test"
        elif method != "HEAD":
            assert answer.status_code == 405
    assert await dump(lab.store) == before
    forged = found["ics"][:-8] + ("A" if found["ics"][-8] != "A" else "B") + found["ics"][-7:]
    assert (await lab.client.get(forged)).status_code == 404
    assert (await lab.client.get("/e/nothing.ics")).status_code == 404


async def test_a_cancelled_events_link_says_so(lab: Lab) -> None:
    campaign_id, send_id = await event_send(lab)
    html = to_of(await lab.deliver(send_id), CLAIRE).get_body(("html",)).get_content()  # type: ignore[union-attr]
    event = await lab.store.campaigns.event(campaign_id)
    assert event is not None
    await lab.store.campaigns.update_event(
        campaign_id, event, status=EventStatus.CANCELLED, now=now()
    )
    page = await lab.client.get(calendar_links(html)["ics"])
    assert page.status_code == 410
    assert "annulé" in page.text


async def test_the_reader_sets_their_time_zone_and_event_mail_shows_it(lab: Lab) -> None:
    mails = await lab.deliver(await lab.campaign())
    preferences = links(to_of(mails, CLAIRE))["p"]
    page = await lab.client.get(preferences)
    assert 'name="timezone"' in page.text
    assert "Londres (Europe/London)" in page.text
    form = {"list": "1", "locale": "fr", "timezone": "Europe/London"}
    assert (await lab.client.post(preferences, data=form)).status_code == 200
    assert 'Europe/London" selected' in (await lab.client.get(preferences)).text
    bogus = {"list": "1", "locale": "fr", "timezone": "Mars/Olympus"}
    assert (await lab.client.post(preferences, data=bogus)).status_code == 200
    assert 'Europe/London" selected' in (await lab.client.get(preferences)).text  # unchanged

    _, send_id = await event_send(lab)
    text = to_of(await lab.deliver(send_id), CLAIRE).get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "heure de Paris" in text
    assert "à Londres)" in text

    cleared = {"list": "1", "locale": "fr", "timezone": ""}
    assert (await lab.client.post(preferences, data=cleared)).status_code == 200
    assert 'value="" selected' in (await lab.client.get(preferences)).text


async def test_whoever_a_reminder_reached_gets_the_cancellation(lab: Lab) -> None:
    """A member who joined after the invitation gets the reminder (an iTIP REQUEST: the event
    is in their calendar too), so the cancellation reaches them as well, once each."""
    campaign_id, invitation = await event_send(lab)
    first = await lab.deliver(invitation)
    late = normalize("late@example.org")
    row = SubscriberRow(1, late.email, late.key, late.smtputf8, name="Late", locale="en")
    await lab.store.subscribers.add(row, slug="researchers", source="test", now=now())
    reminder, _ = await lab.store.sends.create(
        campaign_id, key="reminder:P7D", action="reminder", due_at=now(), now=now()
    )
    reminded = await lab.deliver(reminder)
    assert "late@example.org" not in {str(m["To"]) for m in first}
    assert any("late@example.org" in str(m["To"]) for m in reminded)
    event = await lab.store.campaigns.event(campaign_id)
    assert event is not None
    sequence = await lab.store.campaigns.update_event(
        campaign_id, event, status=EventStatus.CANCELLED, now=now()
    )
    cancel, _ = await lab.store.sends.create(
        campaign_id, key=f"cancellation:{sequence}", action="cancellation", due_at=now(),
        now=now(), audience_send_id=invitation,
    )  # fmt: skip
    cancelled = await lab.deliver(cancel)
    to = sorted(str(m["To"]) for m in cancelled)
    assert any("late@example.org" in t for t in to)
    assert len(to) == len(set(to)) == len(reminded)  # once each
    calendar = next(p for p in cancelled[0].walk() if p.get_content_type() == "text/calendar")
    assert calendar.get_param("method") == "CANCEL"
