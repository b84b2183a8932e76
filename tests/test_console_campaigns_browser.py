"""A campaign's whole story in a real headless Chromium, against a real daemon
(``mailer.app.run`` in the test's loop: the scheduler, the capture transport into the
Maildir, the web pages and the console on one port), on a SQLite file.

An editor composes the research day (an event in French and English, reminders 7 and 1
days before), previews it as the English subscriber at a phone's width, runs the
pre-flight, sends a test to themself (the Maildir holds it, "[TEST]" in its subject) and
submits it; a sender (another session) approves and schedules it, and the two invitations
(``text/calendar; method=REQUEST``) reach the Maildir; the sender then postpones the event
by a week, reviews the change and confirms it, and the campaign's timeline shows the
reminders at their new local times and an update send.

Each page passed through is checked as the console's tour checks its pages
(``tests.browser_support.look``: no serious or critical axe violation, nothing refused by
the CSP, no horizontal scroll at 375 px) and screenshotted at 1280 and 375 px
(``console-story-<page>-*.png``); every violation lands in ``artifacts/axe-story.json``.
"""

from __future__ import annotations

import asyncio
import email
import json
import mailbox
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from mailer.app import run
from mailer.lists import import_file
from mailer.models import Role, SendStatus
from mailer.settings import Settings
from mailer.storage import Store
from mailer.web.console.campaign_form import values_of
from mailer.web.console.views import ConsoleViews
from tests.browser_support import (
    PHONE,
    WIDE,
    Browser,
    Walk,
    chromium,
    look,
    research_day,
    say,
    worded,
)
from tests.conftest import make_settings
from tests.console_support import FAST, KEY, PASSWORD
from tests.test_browser import in_thread

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")
VIEWS = ConsoleViews(ROOT / "templates", zone="Europe/Paris")
NAME = "journee-recherche"
# what the editor types: the research day's form values (the fields are the model's paths)
TYPED = (
    "name", "content.fr.subject", "content.fr.body", "content.en.subject", "content.en.body",
    "content.en.event.title", "event.title", "event.start", "event.end", "event.place",
    "event.reminders",
)  # fmt: skip
EDITOR = "elise.editor@cri.example.org"
SENDER = "samuel.sender@cri.example.org"
FRENCH = "claire.martin@example.org"
ENGLISH = "john.smith@example.org"
MEMBERS = f"""email,name,locale
{FRENCH},Claire Martin,fr
{ENGLISH},John Smith,en
"""

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


def now() -> datetime:
    return datetime.now(UTC)


def free_port() -> int:
    """A port nobody listens on now: the daemon logs the port it bound but says it to no
    caller, so the test chooses one and tells it (settings) with the links' base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    yield from chromium()


@dataclass
class Daemon:
    """The running daemon's settings, the test's own store on its database, its URL."""

    settings: Settings
    store: Store
    url: str

    @property
    def outbox(self) -> Path:
        return self.settings.paths.data_dir / "outbox"

    def mails(self) -> list[EmailMessage]:
        """Every message captured so far, parsed."""
        if not self.outbox.is_dir():
            return []
        found = []
        for message in mailbox.Maildir(self.outbox, factory=None, create=False):
            parsed = email.message_from_bytes(message.as_bytes(), policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
        return found

    async def mail(
        self, wanted: Callable[[list[EmailMessage]], list[EmailMessage]], count: int
    ) -> list[EmailMessage]:
        """Poll the Maildir (20 s at most) until ``wanted(mails)`` picks ``count`` messages."""
        picked: list[EmailMessage] = []
        for _ in range(200):
            picked = wanted(self.mails())
            if len(picked) >= count:
                return picked
            await asyncio.sleep(0.1)
        subjects = [str(m["Subject"]) for m in self.mails()]
        raise AssertionError(f"{len(picked)} of {count} messages; the Maildir holds {subjects}")

    async def done(self, name: str, key: str) -> None:
        """Poll the store (20 s at most) until the send ``key`` of campaign ``name`` is done:
        its deliveries are recorded a moment after the Maildir holds their mail."""
        campaign_id = (await self.store.campaigns.record(name)).id
        for _ in range(200):
            sends = {s.key: s.status for s in await self.store.sends.of_campaign(campaign_id)}
            if sends.get(key) == SendStatus.DONE:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the send {key} of {name} is not done: {sends}")


@pytest.fixture
async def daemon(store: Store, tmp_path: Path, database_url: str) -> AsyncIterator[Daemon]:
    """``mailer run`` in this loop on this test's SQLite file: mail captured (no relay),
    the scheduler syncing every half second; the list "researchers" (a French and an
    English subscriber) and two staff members, an editor and a sender."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    (tmp_path / "lists").mkdir(exist_ok=True)
    settings = make_settings(
        tmp_path,
        database={"url": database_url},
        paths={"templates_dir": ROOT / "templates"},
        secret_keys=KEY,
        web={"port": port, "base_url": url},
        scheduler={"sync_interval": 0.5},
        console={"cache_counts": False},
    )
    members = tmp_path / "researchers.csv"
    members.write_text(MEMBERS, encoding="utf-8")
    assert (await import_file(store, members, now=now())).ok
    for email_, role in ((EDITOR, Role.EDITOR), (SENDER, Role.SENDER)):
        await store.staff.add(
            email_, name=None, role=role, password_hash=FAST.hash(PASSWORD), now=now()
        )
    stop = asyncio.Event()
    running = asyncio.create_task(run(settings, stop=stop), name="daemon")
    try:
        await _started(running, url)
        yield Daemon(settings, store, url)
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


async def _started(running: asyncio.Task[None], url: str) -> None:
    """Wait (20 s at most) until the daemon answers ``/healthz``; its error if it stopped."""
    async with httpx.AsyncClient(base_url=url, timeout=2) as client:
        for _ in range(200):
            if running.done():
                running.result()
                raise AssertionError("the daemon stopped while starting")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"the daemon did not answer on {url}/healthz")


@pytest.fixture
async def browser(driver: Any, daemon: Daemon) -> Browser:
    found = Browser(driver, daemon.url)
    await in_thread(found.reset)
    return found


def the_day() -> date:
    """15 January of next year, well ahead of today (reminders a week before included)."""
    return date(now().year + 1, 1, 15)


def local(day: date, hour: int) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=PARIS)


def flat(text: str) -> str:
    """``text`` with its spaces (no-break ones included) as single plain spaces."""
    return " ".join(text.replace("\u00a0", " ").replace("\u202f", " ").split())


def when(moment: datetime) -> str:
    """A moment as the console shows it to a French reader, in Paris time."""
    return flat(VIEWS.when(moment, "fr", "Europe/Paris"))


def subject(message: EmailMessage) -> str:
    return str(message["Subject"])


def to(message: EmailMessage) -> str:
    return str(message["To"].addresses[0].addr_spec)


def invitation(message: EmailMessage) -> bool:
    """A message to a member carrying an iTIP REQUEST (an invitation card, or its update),
    not a test (which carries one too)."""
    return "[TEST]" not in subject(message) and any(
        part.get_content_type() == "text/calendar" and part.get_param("method") == "REQUEST"
        for part in message.walk()
    )


# --- the story, step by step (each blocks: run through in_thread) -------------------------


def compose(browser: Browser, walk: Walk, day: date) -> str:
    """1. The editor writes the research day, in French and English, and saves the draft."""
    values = values_of(research_day(NAME, ["researchers"], day=day))
    browser.sign_in(EDITOR)
    browser.go("/admin/compose?kind=event")
    look(browser, walk, "story-compose")
    for name in TYPED:
        browser.fill(browser.named(name), values[name])
    browser.tick("lists", "researchers")
    for lang in ("fr", "en"):
        browser.tick("languages", lang)
    browser.press(say("compose_save_new"))
    look(browser, walk, "story-saved")
    return browser.path


def preview(browser: Browser, walk: Walk) -> str:
    """2. The preview as the English subscriber, at a phone's width: the frame's srcdoc."""
    browser.go(f"/admin/campaigns/{NAME}/preview?as={ENGLISH}&width=phone")
    frame = browser.find("//iframe[contains(@class, 'mail-frame')]")
    look(browser, walk, "story-preview")
    browser.width(PHONE)
    browser.shoot("console-story-preview-phone", PHONE)
    browser.width(WIDE)
    srcdoc: str = frame.get_attribute("srcdoc")
    return srcdoc


def preflight(browser: Browser, walk: Walk) -> str:
    """3. The pre-flight, started and waited for (htmx follows it on the same page)."""
    browser.go(f"/admin/campaigns/{NAME}/preflight")
    browser.press(say("preflight_start"))
    browser.wait(lambda _: say("preflight_stage_done") in browser.main(), 20)
    look(browser, walk, "story-preflight")
    return browser.main()


def send_test(browser: Browser, walk: Walk) -> str:
    """4. A test to the editor's own address (the form's default recipient)."""
    browser.go(f"/admin/campaigns/{NAME}/test")
    look(browser, walk, "story-test-send")
    browser.press(say("testsend_button"))
    return browser.main()


def act(browser: Browser, walk: Walk, action: str, confirm: str) -> str:
    """From the campaign's page, an action's link, its confirmation page, its button."""
    browser.go(f"/admin/campaigns/{NAME}")
    browser.follow(say(f"camp_action_{action}"))
    look(browser, walk, f"story-{action}-confirm")
    browser.press(say(confirm))
    return browser.main()


def approve_and_schedule(browser: Browser, walk: Walk) -> tuple[str, str]:
    """6. The sender, in a session of their own, approves then schedules."""
    browser.sign_out()
    browser.sign_in(SENDER)
    approved = act(browser, walk, "approve", "camp_approve_confirm")
    scheduled = act(browser, walk, "schedule", "camp_schedule_confirm")
    look(browser, walk, "story-scheduled")
    return approved, scheduled


def postpone(browser: Browser, walk: Walk, day: date) -> tuple[str, dict[str, str]]:
    """7. The event a week later: the form, the review of what changes, confirmed; the
    campaign's timeline afterwards (send key: its local time as shown)."""
    from selenium.webdriver.common.by import By

    later = day + timedelta(days=7)
    browser.go(f"/admin/campaigns/{NAME}")
    browser.follow(say("camp_action_event"))
    look(browser, walk, "story-event-form")
    browser.fill(browser.named("event.start"), f"{later.isoformat()}T09:00")
    browser.fill(browser.named("event.end"), f"{later.isoformat()}T17:00")
    browser.press(say("camp_event_review_button"))
    review = browser.main()
    look(browser, walk, "story-event-review")
    browser.press(say("camp_event_apply"))
    timeline = browser.find("//table[@id='timeline']")
    look(browser, walk, "story-campaign")
    rows = timeline.find_elements(By.XPATH, ".//tbody/tr")
    return review, {
        str(row.get_attribute("data-key")): flat(row.find_element(By.XPATH, "./td[1]").text)
        for row in rows
    }


async def test_an_event_composed_previewed_checked_tested_approved_sent_then_postponed(
    daemon: Daemon, browser: Browser
) -> None:
    """The research day from its first draft to its postponement, through the pages only,
    against the running daemon: the mail it captures says each step went out."""
    walk, day = Walk(), the_day()

    landed = await in_thread(lambda: compose(browser, walk, day))
    assert landed == f"/admin/campaigns/{NAME}?done=saved"  # nothing to note: its page
    record = await daemon.store.campaigns.record(NAME)
    assert (record.status, record.updated_by, record.lists) == ("draft", EDITOR, ("researchers",))

    srcdoc = await in_thread(lambda: preview(browser, walk))
    words = research_day(NAME, ["researchers"], day=day)["content"]
    assert words["en"]["body"] in srcdoc
    assert words["fr"]["body"] not in srcdoc

    checked = await in_thread(lambda: preflight(browser, walk))
    assert worded("preflight_done_of", checked, done="2", total="2"), checked
    assert say("preflight_ok") in checked, checked

    sent = await in_thread(lambda: send_test(browser, walk))
    assert worded("testsend_sent", sent, to=EDITOR), sent
    (test,) = await daemon.mail(lambda mails: [m for m in mails if "[TEST]" in subject(m)], 1)
    assert to(test) == EDITOR
    assert [subject(m) for m in daemon.mails()] == [subject(test)]  # nothing else: not approved

    submitted = await in_thread(lambda: act(browser, walk, "submit", "camp_submit_confirm"))
    assert say("camp_done_submitted") in submitted, submitted

    approved, scheduled = await in_thread(lambda: approve_and_schedule(browser, walk))
    assert say("camp_done_approved") in approved, approved
    assert say("camp_done_scheduled") in scheduled, scheduled
    invited = await daemon.mail(lambda mails: [m for m in mails if invitation(m)], 2)
    assert sorted(to(m) for m in invited) == sorted([FRENCH, ENGLISH])
    subjects = {to(m): subject(m) for m in invited}
    assert words["en"]["subject"] in subjects[ENGLISH], subjects
    assert words["fr"]["subject"] in subjects[FRENCH], subjects
    await daemon.done(NAME, "invitation")
    record = await daemon.store.campaigns.record(NAME)
    assert (record.status, record.submitted_by, record.approved_by) == (
        "scheduled", EDITOR, SENDER,
    )  # fmt: skip

    review, timeline = await in_thread(lambda: postpone(browser, walk, day))
    assert worded("camp_event_update_to", review, count="2"), review
    later = day + timedelta(days=7)
    assert timeline["reminder:P7D"] == when(local(later - timedelta(days=7), 9)), timeline
    assert timeline["reminder:P1D"] == when(local(later - timedelta(days=1), 9)), timeline
    assert any(key.startswith("update:") for key in timeline), timeline
    updates = await daemon.mail(lambda mails: [m for m in mails if invitation(m)], 4)
    assert sorted(to(m) for m in updates) == sorted([FRENCH, ENGLISH] * 2)

    walk.write("axe-story")
    problems = walk.problems()
    assert problems == {}, json.dumps(problems, indent=1, ensure_ascii=False)
