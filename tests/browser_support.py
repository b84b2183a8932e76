"""What the console's browser tests share: Debian's Chromium under Selenium, asking for
French, logging what the page's CSP refuses (:func:`chromium`), and :class:`Browser`, which
finds form controls by their label's text and buttons by theirs, presses them and waits for
the next page, runs axe-core, measures a page against a phone's width and takes whole-page
screenshots into ``artifacts/screenshots/`` (or ``$MAILER_TEST_ARTIFACTS``). :class:`Walk`
gathers what each page visited showed (:func:`visit` a path, :func:`look` at the page the
browser is on): axe's violations, the CSP's refusals, how much wider than a phone it is.
The campaigns' pages of the tour: :func:`research_day` (a campaign's data, whose paths name
the form's fields), :func:`campaign_pages` (campaigns in each state) and
:func:`campaign_forms` (the pages a form leads to).

Words are the console's own (``templates/console/strings/*.toml``): a test says
``say("import_apply")``, never a copy of the French, so a reworded button does not break it.
The Chromium paths and the screenshot folder are ``tests/test_browser.py``'s, the CSP log
reader and the vendored axe-core ``tests/test_vendored.py``'s.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from mailer.campaigns import from_data
from mailer.settings import Settings
from mailer.storage import Store
from mailer.web.console.views import read_words
from mailer.workflow import approval
from mailer.workflow.scheduling import create_from_file
from tests.console_support import PASSWORD
from tests.test_browser import CHROMEDRIVER, CHROMIUM, SHOTS
from tests.test_vendored import VENDOR, refused

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = SHOTS.parent
WIDE, PHONE = 1280, 375
HEIGHT = 900
TALLEST = 6000  # px of a page's screenshot at most
BLOCKING = ("serious", "critical")  # axe's impacts that fail a page


@cache
def words() -> dict[str, str]:
    """The console's French words (the browser asks for French)."""
    return read_words(ROOT / "templates" / "console")["fr"]


def say(key: str, **values: Any) -> str:
    return words()[key].format(**values)


def worded(key: str, text: str, **known: str) -> re.Match[str] | None:
    """Where ``text`` says the words ``key`` with the ``known`` values and anything for its
    other placeholders (each a named group); whitespace compared loosely."""
    parts = re.split(r"\{(\w+)\}", " ".join(words()[key].split()))
    pattern = "".join(
        re.escape(part) if i % 2 == 0
        else re.escape(" ".join(known[part].split())) if part in known
        else f"(?P<{part}>.+?)"
        for i, part in enumerate(parts)
    )  # fmt: skip
    return re.search(pattern, " ".join(text.split()))


def literal(text: str) -> str:
    """``text`` as an XPath string literal, whatever quotes it holds."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    return "concat(" + ', "\'", '.join(f"'{part}'" for part in text.split("'")) + ")"


def chromium() -> Iterator[Any]:
    """A headless Chromium asking for French, its console log kept; skipped without
    Chromium on a workstation, a failure under CI."""
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
        "--disable-component-update", "--disable-sync", f"--window-size={WIDE},{HEIGHT}",
        "--lang=fr-FR", "--hide-scrollbars",
    ):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": "fr-FR,fr"})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    browser.set_page_load_timeout(30)
    browser.set_script_timeout(30)
    try:
        yield browser
    finally:
        browser.quit()


class Browser:
    """The module's Chromium on one test's site. Its methods block (Selenium): call them
    through ``tests.test_browser.in_thread`` so the server in the test's loop can answer."""

    def __init__(self, driver: Any, base: str) -> None:
        self.driver, self.base = driver, base

    def reset(self) -> None:
        """Nobody signed in, a wide screen, nothing left in the browser's log."""
        self.driver.delete_all_cookies()
        self.width(WIDE)
        self.driver.get_log("browser")

    def wait(self, condition: Callable[[Any], Any], seconds: float = 20) -> Any:
        """``condition(driver)`` once it is true; a page being replaced meanwhile (Chromium
        then answers with one error or another) counts as not yet."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        waiting = WebDriverWait(
            self.driver, seconds, poll_frequency=0.1, ignored_exceptions=(WebDriverException,)
        )
        return waiting.until(condition)

    def leave(self, element: Any) -> None:
        """Click ``element`` and wait until the next page has replaced this one."""
        from selenium.common.exceptions import WebDriverException

        def gone(_: Any) -> bool:
            try:
                element.is_enabled()
            except WebDriverException:  # stale, or no longer in the document
                return True
            return False

        element.click()
        self.wait(gone)
        self.wait(lambda d: d.execute_script("return document.readyState") == "complete")

    def find(self, xpath: str, seconds: float = 10) -> Any:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By

        try:
            return self.wait(lambda d: next(iter(d.find_elements(By.XPATH, xpath)), False), seconds)
        except TimeoutException:
            raise AssertionError(f"{self.path}: nothing matches {xpath}\n{self.text()}") from None

    def go(self, path: str) -> None:
        self.driver.get(self.base + path)

    @property
    def path(self) -> str:
        url: str = self.driver.current_url
        return url.removeprefix(self.base)

    def field(self, label: str) -> Any:
        """The form control a ``<label>`` of this text names."""
        from selenium.webdriver.common.by import By

        found = self.find(f"//label[normalize-space()={literal(label)}]")
        target = found.get_attribute("for")
        if target:
            return self.driver.find_element(By.ID, target)
        return found.find_element(By.XPATH, ".//input|.//select|.//textarea")

    def control(self, text: str) -> Any:
        """A button, or a link shown as one, of this text."""
        t = literal(text)
        return self.find(
            f"//button[normalize-space()={t}] | //a[@role='button'][normalize-space()={t}]"
            f" | //input[@type='submit'][@value={t}]"
        )

    def press(self, text: str) -> None:
        """Press the button (or button-link) of this text and wait for the next page."""
        self.leave(self.control(text))

    def follow(self, text: str) -> None:
        """Follow the link of this text and wait for the next page."""
        self.leave(self.find(f"//a[normalize-space()={literal(text)}]"))

    def named(self, name: str) -> Any:
        """The form control of this ``name`` (the campaign form's are the model's paths,
        ``event.start``, ``content.en.subject``, where one label, "Titre", names three)."""
        return self.find(
            f"//*[self::input or self::select or self::textarea][@name={literal(name)}]"
        )

    def fill(self, control: Any, value: str) -> None:
        """``value`` in a text control, emptied first. A date or time input gets it as its
        value, with the events typing sends (what typing one takes depends on the locale)."""
        if control.get_attribute("type") in ("date", "datetime-local", "time"):
            self.driver.execute_script(
                "const c = arguments[0]; c.value = arguments[1];"
                "for (const e of ['input', 'change']) c.dispatchEvent(new Event(e, {bubbles: true}))",
                control,
                value,
            )
            assert control.get_attribute("value") == value, f"{value!r} refused by the input"
            return
        control.clear()
        control.send_keys(value)

    def tick(self, name: str, value: str, on: bool = True) -> None:
        """The checkbox (or radio) ``name`` of this ``value`` ticked, or unticked."""
        box = self.find(f"//input[@name={literal(name)}][@value={literal(value)}]")
        if box.is_selected() != on:
            box.click()

    def choose(self, label: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.field(label)).select_by_value(value)

    def main(self) -> str:
        from selenium.webdriver.common.by import By

        text: str = self.driver.find_element(By.TAG_NAME, "main").text
        return text

    def text(self) -> str:
        """The page's text, for a failure's message."""
        text: str = self.driver.execute_script(
            "return document.body ? document.body.innerText : ''"
        )
        return text

    def sign_in(self, email: str, password: str = PASSWORD) -> None:
        self.go("/admin/login")
        self.field(say("login_email")).send_keys(email)
        self.field(say("login_password")).send_keys(password)
        self.press(say("login_button"))
        assert not self.path.startswith("/admin/login"), self.main()

    def sign_out(self) -> None:
        self.driver.delete_all_cookies()

    # -- what the page is like ------------------------------------------------------------

    def width(self, width: int, height: int = HEIGHT) -> None:
        """Emulate a screen ``width`` px wide (a phone below 600 px: touch, viewport meta)."""
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600},
        )

    def overflow(self) -> int:
        """How many px the page is wider than the screen (0: no horizontal scroll). A phone
        zooms out on a page wider than itself, which widens ``innerWidth``: the layout
        viewport's ``clientWidth`` is compared too."""
        found: int = self.driver.execute_script(
            "const root = document.documentElement;"
            "return root.scrollWidth - Math.min(window.innerWidth, root.clientWidth)"
        )
        return found

    def sticking_out(self) -> list[str]:
        """The elements that make the page too wide: past the screen's right edge, inside
        a parent that is not, and not inside a box that scrolls (unless positioned out of
        it): at most five, as ``parent > tag#id.class``."""
        found: list[str] = self.driver.execute_script(
            """const edge = document.documentElement.clientWidth + 1;
            const name = (e) => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
              + [...e.classList].map((c) => "." + c).join("");
            const out = (e) => e.getBoundingClientRect().right > edge;
            const scrolled = (e) => {  // inside a box that scrolls or clips it: no page overflow
              if (["absolute", "fixed"].includes(getComputedStyle(e).position)) return false;
              for (let a = e.parentElement; a && a !== document.body; a = a.parentElement)
                if (getComputedStyle(a).overflowX !== "visible") return true;
              return false;
            };
            return [...document.body.querySelectorAll("*")]
              .filter((e) => out(e) && !scrolled(e))
              .filter((e, _, all) => !all.includes(e.parentElement))
              .slice(0, 5).map((e) => name(e.parentElement) + " > " + name(e));"""
        )
        return found

    def shoot(self, name: str, width: int) -> Path:
        """The whole page, ``width`` px wide, as ``artifacts/screenshots/<name>.png``."""
        tall = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.width(width, min(max(int(tall), HEIGHT), TALLEST))
        SHOTS.mkdir(parents=True, exist_ok=True)
        target = SHOTS / f"{name}.png"
        try:
            assert self.driver.save_screenshot(str(target))
        finally:
            self.width(width)
        return target

    def axe(self) -> list[dict[str, Any]]:
        """axe-core's violations on this page: rule, impact, help and the elements."""
        found = self.driver.execute_async_script(
            axe_source()
            + """;
            const done = arguments[arguments.length - 1];
            axe.run(document, {resultTypes: ["violations"]}).then(
              (r) => done({violations: r.violations.map((v) => ({
                  id: v.id, impact: v.impact, help: v.help,
                  nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 10)}))}),
              (e) => done({error: String(e)}));"""
        )
        assert found.get("error") is None, found
        violations: list[dict[str, Any]] = found["violations"]
        return violations

    def refusals(self) -> list[tuple[str, str]]:
        """What Chromium refused under the CSP since the last call."""
        return refused(self.driver)


def research_day(name: str, lists: Sequence[str], *, day: date) -> dict[str, Any]:
    """The research day as a campaign's data (a campaign file's tables, whose paths name the
    console's form fields): an event in French and English on ``day``, 09:00 to 17:00 in
    Paris, its invitation sent when it is scheduled, reminders 7 days and 1 day before."""
    return {
        "name": name, "kind": "event", "lists": list(lists), "timezone": "Europe/Paris",
        "content": {
            "fr": {"subject": "Journée de la recherche",
                   "body": "Le programme de la journée et l’inscription sont en ligne."},
            "en": {"subject": "Research day", "event": {"title": "The network's research day"},
                   "body": "The programme of the day and the registration are online."},
        },
        "event": {"title": "Journée de la recherche du réseau", "start": f"{day}T09:00",
                  "end": f"{day}T17:00", "place": "Hôpital Pitié-Salpêtrière, Paris",
                  "announce": "now", "reminders": ["7d", "1d"]},
    }  # fmt: skip


# --- campaigns in each state, for the tour ---------------------------------------------------


async def campaign_pages(store: Store, settings: Settings, editor: str) -> dict[str, str]:
    """On a site with the lists "chercheurs" and "lettre": a research day scheduled (by
    ``campaign create``: its timeline, its event's form), one submitted by ``editor`` (to
    approve) and one approved (to schedule); the paths of the campaigns' pages."""
    now = datetime.now(UTC)
    day, sender = date(now.year + 1, 1, 15), "simon.sender@cri.example.org"
    days = {name: from_data(research_day(name, [slug], day=day), source=Path(name))
            for name, slug in (("journee", "chercheurs"), ("colloque", "lettre"),
                               ("seminaire", "lettre"))}  # fmt: skip
    await create_from_file(store, settings, days["journee"], now=now, actor="cli:tour")
    for name in ("colloque", "seminaire"):
        saved = await store.campaigns.save_draft(
            days[name].content, spec=days[name].spec(), list_slugs=["lettre"], sender_name=None,
            sender_address=None, options={}, expected_version=None, actor=editor, now=now,
        )  # fmt: skip
        await store.campaigns.submit(saved.id, version=saved.version, actor=editor, now=now)
    snapshot = approval.snapshot(
        days["seminaire"], templates_dir=ROOT / "templates", version=saved.version, by=sender,
        now=now, audience=await approval.audience(store, ["lettre"]),
    )  # fmt: skip
    await store.campaigns.approve(saved.id, version=saved.version, snapshot=snapshot,
                                  actor=sender, now=now)  # fmt: skip
    journee = "/admin/campaigns/journee"
    return {
        "campaigns": "/admin/campaigns", "campaign": journee,
        "compose": "/admin/compose?kind=event", "edit": "/admin/campaigns/colloque/edit",
        "preview": f"{journee}/preview?as=marc.lefebvre@example.org&width=phone",
        "preflight": f"{journee}/preflight", "test-send": f"{journee}/test",
        "approve": "/admin/campaigns/colloque/approve",
        "schedule": "/admin/campaigns/seminaire/schedule", "event": f"{journee}/event",
    }  # fmt: skip


def campaign_forms(browser: Browser, walk: Walk, pages: dict[str, str]) -> None:
    """The pages a form leads to: the compose form's errors after a save the browser lets
    through (what it checks itself filled in) and the server refuses, the review of an
    event moved by a week."""
    browser.go(pages["compose"])
    browser.fill(browser.named("name"), "journee-sans-date")
    browser.fill(browser.named("event.title"), "Journée")
    browser.fill(browser.named("event.reminders"), "7 jours")
    browser.press(say("compose_save_new"))
    browser.find("//*[@aria-invalid='true']")
    look(browser, walk, "compose-errors")
    browser.go(pages["event"])
    for name in ("event.start", "event.end"):
        moment = browser.named(name)
        later = datetime.fromisoformat(moment.get_attribute("value")) + timedelta(days=7)
        browser.fill(moment, later.isoformat(timespec="minutes"))
    browser.press(say("camp_event_review_button"))
    browser.find("//form[.//input[@name='step'][@value='apply']]")
    look(browser, walk, "event-review")


@cache
def axe_source() -> str:
    return (VENDOR / "axe.min.js").read_text(encoding="utf-8")


# --- what the pages visited showed -----------------------------------------------------------


@dataclass
class Walk:
    """What every page showed: axe's violations, CSP refusals, px wider than a phone."""

    violations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    refusals: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    overflow: dict[str, tuple[int, list[str]]] = field(default_factory=dict)
    lost: dict[str, str] = field(default_factory=dict)  # page: where the browser ended up

    def problems(self) -> dict[str, Any]:
        found: dict[str, Any] = {f"{page}: redirected": path for page, path in self.lost.items()}
        for page, violations in self.violations.items():
            if blocking := [v for v in violations if v["impact"] in BLOCKING]:
                found[f"{page}: axe"] = blocking
        found |= {f"{page}: CSP": seen for page, seen in self.refusals.items() if seen}
        found |= {
            f"{page}: {PHONE} px": f"{px} px too wide: {', '.join(culprits)}"
            for page, (px, culprits) in self.overflow.items()
            if px > 1
        }
        return found

    def report(self) -> str:
        """Every violation axe found, minor ones included, one line each."""
        lines = [
            f"{page}: {v['id']} ({v['impact']}) {v['help']} - {', '.join(v['nodes'])}"
            for page, violations in self.violations.items()
            for v in violations
        ]
        return "\n".join(lines) or "axe found nothing on any page"

    def write(self, name: str) -> Path:
        """Every violation, as ``artifacts/<name>.json``; the report printed."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / f"{name}.json"
        text = json.dumps(self.violations, indent=2, ensure_ascii=False)
        target.write_text(text, encoding="utf-8")
        print(self.report())
        return target


def look(browser: Browser, walk: Walk, name: str) -> None:
    """The page the browser is on: axe and the CSP at 1280 px, then its width at 375 px;
    both screenshots (``console-<name>-1280.png``, ``console-<name>-375.png``)."""
    browser.wait(lambda d: d.execute_script("return document.readyState") == "complete")
    browser.width(WIDE)
    walk.violations[name] = browser.axe()
    walk.refusals[name] = browser.refusals()
    browser.shoot(f"console-{name}-{WIDE}", WIDE)
    browser.width(PHONE)
    walk.overflow[name] = (browser.overflow(), browser.sticking_out())
    browser.shoot(f"console-{name}-{PHONE}", PHONE)
    browser.width(WIDE)


def visit(browser: Browser, walk: Walk, name: str, path: str) -> None:
    """One page by its path (a redirect elsewhere is noted), then :func:`look` at it."""
    browser.go(path)
    browser.wait(lambda d: d.execute_script("return document.readyState") == "complete")
    if browser.path.split("?")[0] != path.split("?")[0]:
        walk.lost[name] = browser.path
    look(browser, walk, name)
