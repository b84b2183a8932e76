"""The subscriber pages in a real headless Chromium (Debian's chromium and chromedriver,
driven by Selenium), served by a real uvicorn, with links taken from captured mail.

Screenshots of every page land in ``artifacts/screenshots/`` (or ``$MAILER_TEST_ARTIFACTS``).
Without Chromium the tests are skipped on a workstation and fail under CI, which installs it
(``.ci/run``).
"""

from __future__ import annotations

import asyncio
import email
import mailbox
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select

from mailer.dispatch import Engine
from mailer.lists import import_file
from mailer.models import Content
from mailer.settings import Settings
from mailer.storage import ListMeta, Store
from mailer.storage.tables import subscribers, subscriptions
from mailer.tokens import Signer
from mailer.transport import CaptureTransport
from mailer.web import WebServer, create_app
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = Path(os.environ.get("MAILER_TEST_ARTIFACTS", ROOT / "artifacts")) / "screenshots"
T = TypeVar("T")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "needs Debian's chromium and chromium-driver (apt-get install them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=900,900",
        "--lang=fr-FR",
    ):  # fmt: skip
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    browser.set_page_load_timeout(30)
    browser.implicitly_wait(10)  # elements of a page still loading
    try:
        yield browser
    finally:
        browser.quit()


async def in_thread(fn: Callable[[], T]) -> T:
    """Selenium blocks: drive it from a thread so the server in this loop can answer."""
    return await asyncio.to_thread(fn)


def submit(browser: Any, button: str) -> None:
    """Click a form's button and wait until the next page has replaced this one."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    element = browser.find_element(By.ID, button)
    element.click()
    WebDriverWait(browser, 20).until(expected_conditions.staleness_of(element))


def shot(browser: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SHOTS / f"{name}.png"))


class Site:
    def __init__(self, store: Store, settings: Settings, engine: Engine, outbox: Path) -> None:
        self.store, self.settings, self.engine, self.outbox = store, settings, engine, outbox
        self.queued: list[int] = []

    def mails(self) -> list[EmailMessage]:
        found = []
        for message in mailbox.Maildir(self.outbox, factory=None, create=False):
            parsed = email.message_from_bytes(message.as_bytes(), policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            found.append(parsed)
        return found

    def mail_to(self, address: str, subject: str) -> EmailMessage:
        return next(m for m in self.mails() if m["To"].addresses[0].addr_spec == address
                    and subject in str(m["Subject"]))  # fmt: skip


def html_link(message: EmailMessage, path: str) -> str:
    part = message.get_body(("html",))
    assert part is not None
    match = re.search(rf'href="(http://[^"]+/{path}/[^"]+)"', part.get_content())
    assert match is not None, f"no /{path}/ link in the HTML part"
    return match[1]


@pytest.fixture
async def site(store: Store, tmp_path: Path, database_url: str) -> AsyncIterator[Site]:
    csv_file = tmp_path / "researchers.csv"
    csv_file.write_text(
        "email,name,locale\nclaire.martin@example.org,Claire Martin,fr\n", encoding="utf-8"
    )
    assert (await import_file(store, csv_file, now=now())).ok
    await store.lists.upsert(
        ListMeta("newsletter", "La lettre du réseau CRI-IMIDIATE", public=True), now=now()
    )
    base = make_settings(
        tmp_path,
        database={"url": database_url},
        paths={"templates_dir": ROOT / "templates"},
        secret_keys="browser-key-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU",
        web={"port": 0},
    )
    outbox = tmp_path / "outbox"
    shutil.rmtree(outbox, ignore_errors=True)
    async with CaptureTransport(outbox) as transport:
        signer = Signer(["browser-key-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU"])
        holder: list[Site] = []
        app = create_app(base, store, signer=signer, on_send=lambda i: holder[0].queued.append(i))
        server = WebServer(app, base)
        url = await server.start()
        settings = base.model_copy(update={"web": base.web.model_copy(update={"base_url": url})})
        engine = Engine(settings, store, transport, node="browser", signer=signer)
        holder.append(Site(store, settings, engine, outbox))
        try:
            yield holder[0]
        finally:
            await server.stop()


async def test_unsubscribe_from_a_captured_message(site: Site, driver: Any) -> None:
    from selenium.webdriver.common.by import By

    campaign_id = await site.store.campaigns.save(
        Content(name="actualites", kind="announcement", subject="Les actualités du réseau",
                body="La journée de la recherche aura lieu le 15 janvier."),
        list_slugs=["researchers"], sender_name=None, sender_address=None, event=None,
        now=now(),
    )  # fmt: skip
    send_id, _ = await site.store.sends.create(
        campaign_id, key="announce", action="announcement", due_at=now(), now=now()
    )
    assert (await site.engine.run_send(send_id)).counts["sent"] == 1
    mail = site.mail_to("claire.martin@example.org", "Les actualités du réseau")
    unsubscribe = html_link(mail, "u")
    preferences = html_link(mail, "p")

    await in_thread(lambda: driver.get(unsubscribe))
    page = await in_thread(lambda: driver.find_element(By.TAG_NAME, "main").text)
    assert "claire.martin@example.org" in page
    await in_thread(lambda: shot(driver, "unsubscribe-page"))
    await in_thread(lambda: submit(driver, "unsubscribe"))
    result = await in_thread(lambda: driver.find_element(By.ID, "result").text)
    assert "ne recevra plus les messages de la liste" in result
    await in_thread(lambda: shot(driver, "unsubscribed"))
    async with site.store.engine.connect() as conn:
        row = (
            await conn.execute(select(subscriptions.c.status, subscriptions.c.unsubscribe_source))
        ).one()
    assert row.status == "unsubscribed"
    assert row.unsubscribe_source.startswith("unsubscribe page from 127.0.0.1")

    await in_thread(lambda: driver.get(preferences))
    await in_thread(lambda: shot(driver, "preferences"))
    boxes = await in_thread(lambda: driver.find_elements(By.NAME, "list"))
    assert len(boxes) == 2  # the list she left, and the public one
    assert not any(await in_thread(lambda: [b.is_selected() for b in boxes]))


async def test_subscribe_then_confirm_from_the_captured_mail(site: Site, driver: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    def fill_form() -> None:
        driver.get(f"{site.settings.web.base_url}/s/newsletter")
        shot(driver, "subscribe-form")
        driver.find_element(By.ID, "email").send_keys("jeanne.dupont@example.org")
        driver.find_element(By.ID, "name").send_keys("Jeanne Dupont")
        Select(driver.find_element(By.ID, "locale")).select_by_value("en")
        submit(driver, "subscribe")

    await in_thread(fill_form)
    heading = await in_thread(lambda: driver.find_element(By.TAG_NAME, "h1").text)
    assert heading == "Check your inbox"
    await in_thread(lambda: shot(driver, "subscribe-check-inbox"))
    assert len(site.queued) == 1
    assert (await site.engine.run_send(site.queued[0])).counts["sent"] == 1

    mail = site.mail_to("jeanne.dupont@example.org", "confirm")
    confirm = html_link(mail, "c")
    await in_thread(lambda: driver.get(confirm))
    await in_thread(lambda: shot(driver, "confirm-page"))
    await in_thread(lambda: submit(driver, "confirm"))
    text = await in_thread(lambda: driver.find_element(By.TAG_NAME, "main").text)
    assert "Subscription confirmed" in text
    assert "jeanne.dupont@example.org is subscribed" in text
    await in_thread(lambda: shot(driver, "confirmed"))
    async with site.store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(subscriptions.c.status, subscriptions.c.confirmed_ip, subscribers.c.locale)
                .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
                .where(subscribers.c.email == "jeanne.dupont@example.org")
            )
        ).one()
    assert (row.status, row.confirmed_ip, row.locale) == ("subscribed", "127.0.0.1", "en")
