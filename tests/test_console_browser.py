"""The staff console in a real headless Chromium (Debian's chromium and chromedriver, driven
by Selenium), served by a real uvicorn in the test's loop, on SQLite.

- End to end: an admin added by the real ``mailer users add`` (a process of its own) signs in
  through ``/admin/login``, uploads a CSV holding bad rows, reads the dry run's per-line report
  (the CLI's ``file:line: column: reason`` lines), applies it, opens a subscriber and lifts
  their suppression (a confirmation page, a reason typed).
- Live progress: a 20,000-recipient send runs (the real ``Engine.run_send``, throttled to
  300 messages a second into aiosmtpd); the dashboard's sent figure moves while the page stays
  the same document, and a sender pauses the send from its page; the engine stops.
- Every console page at 1280 px (the campaigns' too: the list, a scheduled event's page with
  its timeline, the compose form new, edited and with its errors after a refused save, the
  preview at a phone's width, the pre-flight, the test send, the approve and schedule
  confirmations, the event's form and the review of its move): axe-core (``tests/vendor/axe.min.js``, injected by
  Selenium) finds no serious or critical violation, and Chromium refuses nothing under the
  console's CSP. Everything axe finds, minor included, is written to
  ``artifacts/axe-console.json`` and printed.
- Every page at 375 px (a phone, emulated): no horizontal scroll.

Screenshots ``console-<page>-1280.png`` and ``console-<page>-375.png`` land in
``artifacts/screenshots/`` (or ``$MAILER_TEST_ARTIFACTS``). One browser for the module; each
test has its own database and server. Without Chromium the tests are skipped on a workstation
and fail under CI (as in ``tests/test_browser.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mailer.addresses import normalize
from mailer.dispatch import Engine
from mailer.intake import Intake
from mailer.lifecycle import SendMove
from mailer.lists import import_file
from mailer.models import Content, Role, SendStatus, SuppressionReason
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer
from mailer.transport import CaptureTransport, open_transport
from mailer.web import WebServer, create_app
from tests.browser_support import (
    PHONE,
    WIDE,
    Browser,
    Walk,
    campaign_forms,
    campaign_pages,
    chromium,
    say,
    visit,
    worded,
)
from tests.conftest import make_settings
from tests.console_support import FAST, KEY, PASSWORD
from tests.smtpd import SmtpServer
from tests.test_bounces_parse import block, dsn
from tests.test_browser import in_thread

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


def now() -> datetime:
    return datetime.now(UTC)


# --- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    """One Chromium for the module (each test has its own site)."""
    yield from chromium()


# --- the site -----------------------------------------------------------------------------------


@dataclass
class Site:
    store: Store
    settings: Settings
    url: str
    tmp_path: Path
    database_url: str

    async def user(self, role: Role, email: str | None = None, name: str | None = None) -> str:
        """A staff account with :data:`PASSWORD` (a cheap hash: argon2 at its real cost is
        what ``mailer users add`` gives)."""
        email = email or f"{role}@staff.example.org"
        await self.store.staff.add(
            email, name=name, role=role, password_hash=FAST.hash(PASSWORD), now=now()
        )
        return email

    async def mailer(self, *args: str, stdin: str | None = None) -> str:
        """Run the real ``mailer`` command on this site's database; its standard output."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        env |= {
            "MAILER_DATABASE__URL": self.database_url,
            "MAILER_PATHS__DATA_DIR": str(self.tmp_path / "data"),
            "MAILER_PATHS__LISTS_DIR": str(self.tmp_path / "lists"),
            "MAILER_PATHS__TEMPLATES_DIR": str(ROOT / "templates"),
            "MAILER_LOG__LEVEL": "WARNING",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailer", *args, cwd=self.tmp_path, env=env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(
            process.communicate(None if stdin is None else stdin.encode()), 30
        )
        assert process.returncode == 0, err.decode()
        return out.decode()

    async def import_csv(self, name: str, text: str) -> None:
        path = self.tmp_path / name
        path.write_text(text, encoding="utf-8")
        assert (await import_file(self.store, path, now=now())).ok


@pytest.fixture
async def site(store: Store, tmp_path: Path, database_url: str) -> AsyncIterator[Site]:
    (tmp_path / "lists").mkdir(exist_ok=True)
    settings = make_settings(
        tmp_path,
        database={"url": database_url},
        paths={"templates_dir": ROOT / "templates"},
        secret_keys=KEY,
        web={"port": 0},
    )
    server = WebServer(create_app(settings, store, signer=Signer([KEY])), settings)
    url = await server.start()
    try:
        yield Site(store, settings, url, tmp_path, database_url)
    finally:
        await server.stop()


@pytest.fixture
async def browser(driver: Any, site: Site) -> Browser:
    found = Browser(driver, site.url)
    await in_thread(found.reset)
    return found


async def campaign(store: Store, name: str, slug: str, subject: str) -> int:
    content = Content(name=name, kind="announcement", subject=subject,
                      body="La journée de la recherche aura lieu le 15 janvier.")  # fmt: skip
    return await store.campaigns.save(
        content, list_slugs=[slug], sender_name=None, sender_address=None, event=None, now=now()
    )


async def send(store: Store, campaign_id: int, *, key: str = "announce",
               due: datetime | None = None) -> int:  # fmt: skip
    send_id, created = await store.sends.create(
        campaign_id, key=key, action="announcement", due_at=due or now(), now=now()
    )
    assert created
    return send_id


async def emails(store: Store, slug: str) -> set[str]:
    return {m.email for m in (await store.browse.members(slug, limit=100)).members}


# --- 1. end to end ------------------------------------------------------------------------------

MEMBERS = """email,name,locale
sam.roux@example.org,Sam Roux,fr
lea.garnier@example.org,Léa Garnier,fr
"""
UPLOAD = "nouveaux-chercheurs.csv"
UPLOADED = """email,name,locale,timezone
alice.martin@example.org,Alice Martin,fr,Europe/Paris
bruno.petit@example.org,Bruno Petit,klingon,
chloe.bernard@example.org,Chloé Bernard,fr,Mars/Olympus
david.moreau@example.org,David Moreau
sam.roux@example.org,Sam Roux,fr,
"""
# What `mailer lists import` says of it (mailer.lists.parse_row and report_lines).
REPORT = [
    f"{UPLOAD}:3: locale: 'klingon' is not a language code such as fr or en",
    f"{UPLOAD}:4: timezone: 'Mars/Olympus' is not an IANA time zone such as Europe/Paris",
    f"{UPLOAD}:5: -: 2 cells where the header has 4",
    f"{UPLOAD}:6: sam.roux@example.org is suppressed; not subscribed",
    f"{UPLOAD}: 1 member(s) no longer in the file (kept; --prune removes): lea.garnier@example.org",
]


async def test_an_admin_from_the_cli_imports_a_file_then_lifts_a_suppression(
    site: Site, browser: Browser
) -> None:
    """Through the pages only: sign-in, upload, the dry run's report line by line, apply,
    a subscriber's page, the suppression lifted after its confirmation with a reason."""
    admin = "claire.admin@cri.example.org"
    said = await site.mailer("users", "add", admin, "--role", "admin", "--password-stdin",
                             stdin=PASSWORD + "\n")  # fmt: skip
    assert f"{admin}: staff user added, role admin" in said
    await site.import_csv("chercheurs.csv", MEMBERS)
    sam = normalize("sam.roux@example.org")
    assert await site.store.subscribers.suppress(
        sam.key, reason=SuppressionReason.MANUAL, detail="asked by phone", now=now()
    )

    def upload() -> str:
        browser.sign_in(admin)
        browser.go("/admin/import")
        browser.choose(say("import_list"), "chercheurs")
        upload_file = site.tmp_path / UPLOAD
        upload_file.write_text(UPLOADED, encoding="utf-8")
        browser.field(say("import_file")).send_keys(str(upload_file))
        browser.press(say("import_check"))
        browser.control(say("import_apply"))  # the dry run is over: its report is shown
        return browser.main()

    report = await in_thread(upload)
    for line in REPORT:
        assert line in report, report
    assert await emails(site.store, "chercheurs") == {
        "sam.roux@example.org",
        "lea.garnier@example.org",
    }
    await in_thread(lambda: browser.shoot("console-e2e-dry-run", WIDE))

    def apply() -> str:
        browser.press(say("import_apply"))
        browser.control(say("import_see_list"))
        return browser.main()

    applied = await in_thread(apply)
    assert say("import_notice_applied", slug="chercheurs") in applied
    assert await emails(site.store, "chercheurs") == {
        "sam.roux@example.org", "lea.garnier@example.org", "alice.martin@example.org"
    }  # fmt: skip

    def open_sam() -> str:
        browser.press(say("import_see_list"))
        browser.follow("sam.roux@example.org")
        return browser.main()

    page = await in_thread(open_sam)
    assert "Sam Roux" in page
    assert worded("people_is_suppressed", page, reason=say("people_kind_manual")), page

    def lift() -> tuple[str, str]:
        browser.press(say("people_unsuppress_link"))
        question = browser.main()
        browser.shoot("console-e2e-unsuppress-confirm", WIDE)
        browser.field(say("reason")).send_keys("Confirmed by email: she wants the newsletter")
        browser.press(say("people_unsuppress_button"))
        return question, browser.main()

    question, page = await in_thread(lift)
    assert say("people_unsuppress_question", email="sam.roux@example.org") in question
    assert say("people_done_unsuppressed") in page
    assert say("people_not_suppressed") in page
    await in_thread(lambda: browser.shoot("console-e2e-unsuppressed", WIDE))
    assert (await site.store.browse.suppressions(search="sam.roux")).lines == []
    history = await site.store.browse.history(sam.key)
    assert [(e.action, e.actor, e.detail) for e in history][-1] == (
        "unsuppress",
        f"console:{admin}",
        "Confirmed by email: she wants the newsletter",
    )
    entries = await site.store.audit.page(actor=admin, action="subscriber.unsuppress")
    assert [e.target for e in entries] == ["sam.roux@example.org"]


# --- 2. live progress ---------------------------------------------------------------------------

BIG = 20_000
RATE = 300.0  # messages a second: the send lasts a minute, the test a few seconds of it


async def eventually(read: Callable[[], Awaitable[object]], wanted: object) -> None:
    """Wait (15 s at most) until ``read()`` gives ``wanted``."""
    for _ in range(300):
        if (found := await read()) == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"still {found!r}, not {wanted!r}")


async def big_list(site: Site, slug: str, count: int) -> None:
    path = site.tmp_path / f"{slug}.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name,locale\n")
        handle.writelines(f"membre{i}@example.org,Membre {i},fr\n" for i in range(count))
    assert (await import_file(site.store, path, now=now())).ok


async def test_a_running_send_moves_on_the_dashboard_and_a_sender_pauses_it(
    site: Site, browser: Browser, smtp_server: SmtpServer
) -> None:
    """The dashboard's sent figure of a 20,000-recipient send grows while the page stays the
    same document (htmx swaps the fragment); a sender pauses the send from its page, after
    its confirmation, and the engine's run ends with the send paused."""
    await big_list(site, "reseau", BIG)
    send_id = await send(site.store, await campaign(site.store, "journee", "reseau", "La journée"))
    viewer = await site.user(Role.VIEWER, "vera.viewer@cri.example.org")
    sender = await site.user(Role.SENDER, "simon.sender@cri.example.org")
    delivery = site.settings.delivery.model_copy(update={"rate_per_second": RATE})
    settings = site.settings.model_copy(
        update={"smtp": smtp_server.settings(), "delivery": delivery}
    )
    block = f"progress-{send_id}"

    def sent_shown() -> int | None:
        text = browser.driver.execute_script(
            "const b = document.getElementById(arguments[0]);"
            "return b && b.querySelector('.figures') ? b.querySelector('.figures').textContent : null",
            block,
        )
        found = None if text is None else worded("sends_sent_of", text)
        return None if found is None else int(re.sub(r"\D", "", found["sent"]))

    def watch() -> tuple[int, int]:
        browser.sign_in(viewer)
        browser.go("/admin/")
        browser.find(f"//*[@id='{block}']")
        browser.driver.execute_script("window.consoleMarker = 'same document'")
        first = sent_shown()
        assert first is not None, browser.text()
        later = browser.wait(
            lambda _: (n := sent_shown()) is not None and n > max(first, 0) and n, 20
        )
        browser.shoot("console-live-dashboard", WIDE)
        kept = browser.driver.execute_script(
            "return [window.consoleMarker, performance.getEntriesByType('navigation').length]"
        )
        assert kept == ["same document", 1]
        return first, later

    def pause() -> str:
        browser.sign_out()
        browser.sign_in(sender)
        browser.go(f"/admin/sends/{send_id}")
        browser.press(say("sends_pause_button"))  # the send's page: its actions
        browser.shoot("console-live-pause-confirm", WIDE)
        browser.press(say("sends_pause_confirm"))  # the confirmation page
        return browser.main()

    async with open_transport(settings) as transport:
        engine = Engine(settings, site.store, transport, node="browser", signer=Signer([KEY]))
        running = asyncio.create_task(engine.run_send(send_id))
        try:
            await eventually(lambda: site.store.sends.status(send_id), SendStatus.RUNNING)
            first, later = await in_thread(watch)
            assert 0 <= first < later < BIG
            page = await in_thread(pause)
            summary = await asyncio.wait_for(running, 15)
        finally:
            if not running.done():
                running.cancel()
    assert say("sends_done_paused") in page
    assert summary.status == SendStatus.PAUSED
    assert await site.store.sends.status(send_id) == SendStatus.PAUSED
    assert later <= summary.counts["sent"] < BIG
    entries = await site.store.audit.page(action="send.pause")
    assert [(e.actor, e.target) for e in entries] == [(sender, f"send {send_id}")]


# --- 3 and 4. every page: axe and the CSP at 1280 px, a phone's 375 px --------------------------

PEOPLE = """email,name,locale
lea.garnier@example.org,Léa Garnier,fr
sam.roux@example.org,Sam Roux,fr
marc.lefebvre@example.org,Marc Lefebvre,en
ines.dubois@example.org,Inès Dubois,fr
"""


async def populate(site: Site) -> dict[str, str]:
    """Something on every page: two lists, a suppressed member, a send done, one paused,
    one coming up; the paths of the pages that name them."""
    await site.import_csv("chercheurs.csv", PEOPLE)
    await site.import_csv("lettre.csv", "email,name\nlea.garnier@example.org,Léa Garnier\n")
    sam = normalize("sam.roux@example.org")
    assert await site.store.subscribers.suppress(
        sam.key, reason=SuppressionReason.COMPLAINT, detail="feedback loop", now=now()
    )
    done = await send(
        site.store, await campaign(site.store, "actualites", "chercheurs", "Nouvelles")
    )
    async with CaptureTransport(site.tmp_path / "outbox") as transport:
        engine = Engine(site.settings, site.store, transport, node="browser", signer=Signer([KEY]))
        assert (await engine.run_send(done)).counts["sent"] == 3
    bounce = await bounced(site, done)
    later = await campaign(site.store, "journee", "lettre", "La journée du réseau")
    await send(site.store, later, due=now() + timedelta(days=3))
    paused = await send(site.store, later, key="reminder:P1D", due=now() + timedelta(days=2))
    assert await site.store.sends.move(paused, SendMove.PAUSE, now=now(), reason="paused by staff")
    people = {m.email: m.public_id for m in (await site.store.browse.members("chercheurs")).members}
    lea, sam_id = people["lea.garnier@example.org"], people["sam.roux@example.org"]
    return {
        "dashboard": "/admin/",
        "lists": "/admin/lists",
        "list": "/admin/lists/chercheurs",
        "subscriber": f"/admin/subscribers/{lea}",
        "suppressions": "/admin/suppressions",
        "import": "/admin/import",
        "send": f"/admin/sends/{done}",
        "audit": "/admin/audit",
        "me": "/admin/me",
        "users": "/admin/users",
        "confirm": f"/admin/subscribers/{sam_id}/unsuppress",
        "suppress": f"/admin/subscribers/{lea}/suppress",
        "bounces": "/admin/bounces",
        "bounce": f"/admin/bounces/{bounce}",
    }


async def bounced(site: Site, send_id: int) -> int:
    """Bounces of two of the send's messages, not Léa's (her pages are toured unsuppressed): a
    hard one and a soft one, each with a long raw message, taken in by the real intake; the
    hard one's id."""
    intake = Intake(site.store, site.settings, signer=Signer([KEY]))
    sent = [r async for r in site.store.figures.report(send_id) if not r.email.startswith("lea.")]
    reasons = [("5.1.1", "550 5.1.1 no such user here"), ("4.2.2", "452 4.2.2 mailbox full")]
    found = []
    for row, (status, words) in zip(sent, reasons, strict=False):
        raw = dsn(block(row.email, "failed", status, words), text="Undelivered. " * 400,
                  returned=f"Message-ID: {row.message_id}\n")  # fmt: skip
        found.append((await intake.message(raw, source="smtp")).bounce_id)
    return found[0]


async def test_every_page_passes_axe_under_the_csp_and_fits_a_phone(
    site: Site, browser: Browser
) -> None:
    """Each console page at 1280 px: no serious or critical axe violation, nothing refused by
    the CSP; at 375 px: no horizontal scroll. Screenshots of both widths."""
    pages = await populate(site)
    editor = await site.user(Role.EDITOR, "elise.editor@cri.example.org")
    pages |= await campaign_pages(site.store, site.settings, editor)
    admin = await site.user(Role.ADMIN, "claire.admin@cri.example.org", name="Claire Martin")
    walk = Walk()

    def tour() -> None:
        visit(browser, walk, "login", "/admin/login")
        browser.sign_in(admin)
        browser.go("/admin/import")
        browser.choose(say("import_list"), "chercheurs")
        upload = site.tmp_path / UPLOAD
        upload.write_text(UPLOADED, encoding="utf-8")
        browser.field(say("import_file")).send_keys(str(upload))
        browser.press(say("import_check"))
        browser.control(say("import_apply"))
        report = browser.path
        for name, path in pages.items():
            visit(browser, walk, name, path)
        visit(browser, walk, "import-report", report)
        campaign_forms(browser, walk, pages)
        # The width check can fail: a page made wider than a phone is seen as such.
        browser.width(PHONE)
        browser.driver.execute_script(
            "const d = document.createElement('div'); d.id = 'too-wide';"
            "d.style.width = '600px'; d.style.height = '1px'; document.body.append(d)"
        )
        assert browser.overflow() > 1
        browser.width(WIDE)

    await in_thread(tour)
    walk.write("axe-console")
    assert len(walk.violations) == len(pages) + 4
    problems = walk.problems()
    assert problems == {}, json.dumps(problems, indent=1, ensure_ascii=False)
