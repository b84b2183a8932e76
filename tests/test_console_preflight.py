"""A campaign's pre-flight and test send in the console, on SQLite and PostgreSQL, through the
real app: the pre-flight over every member (one whose name cannot go in a header named with
why), its progress fragment polled while it runs and no more once finished, one run per version
at a time, its result for the approval; the test send ([TEST] subject, inert links, to the
staff member's address) recorded by the daemon's side, a target outside the allowed ones
refused, ten a minute, no daemon said; and one test through the real transport to aiosmtpd."""

from __future__ import annotations

import asyncio
import html
import re
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.app import _test_mail
from mailer.models import SubscriberRow
from mailer.storage import Store
from mailer.tokens import Purpose, Signer
from mailer.transport import open_transport
from mailer.web import create_app
from mailer.web.console import preflight
from tests.conftest import make_settings
from tests.console_support import KEY, ROOT, Console, now
from tests.smtpd import SmtpServer
from tests.test_console_preview import people, save, spec

pytestmark = pytest.mark.timeout(60)
EDITOR = "editor@staff.example.org"


async def finished(client: httpx.AsyncClient, name: str = "nouvelles") -> str:
    """The pre-flight fragment once the run has finished (polled as htmx does)."""
    for _ in range(400):
        fragment = await client.get(
            f"/admin/campaigns/{name}/preflight", headers={"HX-Request": "1"}
        )
        assert fragment.status_code == 200
        if 'data-stage="done"' in fragment.text or 'data-stage="failed"' in fragment.text:
            return fragment.text
        await asyncio.sleep(0.02)
    raise AssertionError("the pre-flight did not finish")


async def start(console: Console, client: httpx.AsyncClient, name: str = "nouvelles") -> None:
    token = await console.csrf(client)
    answer = await client.post(f"/admin/campaigns/{name}/preflight", data={"csrf": token})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == f"/admin/campaigns/{name}/preflight"


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Each chunk of a pre-flight waits for the test to let it go (no sleeping)."""
    gate = threading.Event()
    real = preflight.check_chunk

    def waiting(*args: Any) -> Any:
        assert gate.wait(20)
        return real(*args)

    monkeypatch.setattr(preflight, "check_chunk", waiting)
    yield gate
    gate.set()


# --- the pre-flight ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ("Pré-vol de nouvelles", "Impossibles à composer\u202f:", "Terminé")),
     ("en", ("Pre-flight of nouvelles", "Cannot be composed:", "Finished"))],
)  # fmt: skip
async def test_the_preflight_names_a_member_who_cannot_be_composed(
    console: Console, lang: str, words: tuple[str, ...]
) -> None:
    """Four members, one whose name holds a line break: the run finishes, 4 composed, 1
    failed with its address and why, the languages counted; audited; kept for the version."""
    store = console.store
    await people(store)
    bad = SubscriberRow(0, "bad@example.org", "bad@example.org", False, name="Eve\nBcc: x@y.org")
    await store.subscribers.add(bad, slug="researchers", source="cli", now=now())
    await save(store, spec())
    client = await console.client("editor")
    page = await client.get(
        "/admin/campaigns/nouvelles/preflight", headers={"accept-language": lang}
    )
    assert page.status_code == 200
    assert 'data-stage="none"' in page.text
    await start(console, client)
    text = await finished(client)
    assert 'data-stage="done"' in text
    assert "hx-trigger" not in text  # no more polling
    assert re.search(r'data-figure="failed">1<', text)
    assert "bad@example.org" in text
    assert "the recipient name contains a control character" in html.unescape(text)
    assert re.search(r"4 (composés sur|composed of) 4", text)
    shown = (
        await client.get("/admin/campaigns/nouvelles/preflight", headers={"accept-language": lang})
    ).text
    for word in words:
        assert word in shown
    audit = await store.audit.page(action="campaign.preflight")
    assert [(a.actor, a.target) for a in audit] == [(EDITOR, "nouvelles")]


async def test_a_running_preflight_is_polled_and_not_started_twice(
    console: Console, held: threading.Event
) -> None:
    store = console.store
    await people(store)
    await save(store, spec())
    client = await console.client("editor")
    await start(console, client)
    running = await client.get("/admin/campaigns/nouvelles/preflight", headers={"HX-Request": "1"})
    assert 'hx-trigger="every 1s"' in running.text
    assert "<html" not in running.text
    page = await client.get("/admin/campaigns/nouvelles/preflight")
    assert 'action="/admin/campaigns/nouvelles/preflight"' not in page.text  # no second start
    await start(console, client)  # shows the one running
    assert len(await store.audit.page(action="campaign.preflight")) == 1
    late = SubscriberRow(0, "late@example.org", "late@example.org", False)
    await store.subscribers.add(late, slug="researchers", source="cli", now=now())  # not blocked
    held.set()
    text = await finished(client)
    assert re.search(r'data-figure="failed">0<', text)
    assert "Tous les messages ont pu être composés." in text


async def test_a_template_error_stops_the_preflight_with_its_line(console: Console) -> None:
    await people(console.store)
    await save(console.store, spec(fr={"body": "{% if %}"}))
    client = await console.client("editor")
    await start(console, client)
    text = html.unescape(await finished(client))
    assert 'data-stage="failed"' in text
    assert "syntax error" in text


async def test_the_preflight_result_is_kept_per_version() -> None:
    """What the approval page reads: None before, then total/failed/finished of that version
    only; a newer version's start drops the older one; close() stops what runs."""
    from mailer.render import CheckReport
    from mailer.web.console.preflight_runs import PreflightRun, PreflightRuns

    runs = PreflightRuns()
    assert runs.result(1, 1) is None
    gate = asyncio.Event()

    async def work(run: PreflightRun) -> None:
        run.total = 3
        run.add(CheckReport(total=3, failed=1, reasons=[("a@example.org", "why")]))
        await gate.wait()

    first, new = runs.start(PreflightRun(1, 1, "n", started_by="e", started_at=now()), work)
    assert new
    await asyncio.sleep(0)
    again, new = runs.start(PreflightRun(1, 1, "n", started_by="f", started_at=now()), work)
    assert (again, new) == (first, False)
    assert runs.result(1, 1) == preflight_result(3, 1, False)
    gate.set()
    assert first.task is not None
    await first.task
    assert runs.result(1, 1) == preflight_result(3, 1, True)
    assert runs.result(1, 2) is None
    gate.clear()
    newer, _ = runs.start(PreflightRun(1, 2, "n", started_by="e", started_at=now()), work)
    assert runs.result(1, 1) is None
    await runs.close()
    assert newer.task is not None
    assert newer.task.cancelled()


def preflight_result(total: int, failed: int, done: bool) -> Any:
    from mailer.web.console.preflight_runs import PreflightResult

    return PreflightResult(total, failed, done)


# --- the test send -----------------------------------------------------------------------------


async def send_test(
    console: Console, client: httpx.AsyncClient, lang: str = "en", **fields: str
) -> httpx.Response:
    token = await console.csrf(client)
    return await client.post(
        "/admin/campaigns/nouvelles/test", data={"csrf": token, **fields},
        headers={"accept-language": lang},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("lang", "words", "sent"),
    [("fr", ("Envoyer un test de nouvelles", "Destinataire du test", "(vous)"), "Envoyé à"),
     ("en", ("Send a test of nouvelles", "Send the test to", "(you)"), "Sent to")],
)  # fmt: skip
async def test_a_test_send_goes_to_the_staff_address_marked_and_inert(
    console: Console, lang: str, words: tuple[str, ...], sent: str
) -> None:
    await people(console.store)
    await save(console.store, spec())
    client = await console.client("editor")
    form = await client.get("/admin/campaigns/nouvelles/test", headers={"accept-language": lang})
    assert form.status_code == 200
    for word in words:
        assert word in form.text
    answer = await send_test(console, client, lang, to=EDITOR, **{"as": "bob@example.org"})
    assert answer.status_code == 200, answer.text
    assert f"{sent} {EDITOR}" in answer.text
    assert "250 2.0.0 queued as TEST" in answer.text
    assert len(console.mailed) == 1
    built = console.mailed[0]
    assert built.recipient == EDITOR
    message = message_from_bytes(built.data, policy=policy.default)
    assert str(message["Subject"]) == "[TEST] Lab news"  # Bob reads English
    assert EDITOR in str(message["To"])
    unsubscribe = re.search(r"/u/([^>\s]+)>", str(message["List-Unsubscribe"]))
    assert unsubscribe is not None
    assert Signer([KEY]).read(Purpose.TEST, unsubscribe.group(1))[0] == "test"  # inert
    audit = await console.store.audit.page(action="campaign.test")
    assert len(audit) == 1
    assert (audit[0].details or {})["to"] == EDITOR
    assert (audit[0].details or {})["as"] == "bob@example.org"


async def test_a_test_goes_nowhere_else_and_ten_a_minute(console: Console) -> None:
    await people(console.store)
    await save(console.store, spec())
    client = await console.client("editor")
    outside = await send_test(console, client, to="someone@elsewhere.org")
    assert outside.status_code == 400
    assert "A test goes only to your own address or the seed list" in outside.text
    assert 'aria-invalid="true" aria-describedby="test-to-error"' in outside.text
    stranger = await send_test(console, client, to=EDITOR, **{"as": "eve@example.org"})
    assert stranger.status_code == 400
    assert console.mailed == []
    for _ in range(10):
        assert (await send_test(console, client, to=EDITOR)).status_code == 200
    too_many = await send_test(console, client, "fr", to=EDITOR)
    assert too_many.status_code == 429
    assert "Au plus 10 tests par minute" in too_many.text
    assert len(console.mailed) == 10
    viewer = await console.client("viewer")
    assert (await viewer.get("/admin/campaigns/nouvelles/test")).status_code == 403


async def test_the_seed_list_and_no_daemon(store: Store, tmp_path: Path, database_url: str) -> None:
    """A seed address is offered and taken; without the daemon's test_mail, nothing is sent
    and the page says why."""
    from tests.console_support import console_settings

    settings = console_settings(tmp_path, database_url, test_recipients="seed@example.org")
    app = create_app(settings, store, signer=Signer([KEY]), test_mail=None)
    found = Console(store, settings, app)
    await people(store)
    await save(store, spec())
    client = await found.client("editor")
    form = await client.get("/admin/campaigns/nouvelles/test")
    assert '<option value="seed@example.org">' in form.text
    answer = await send_test(found, client, "fr", to="seed@example.org")
    assert answer.status_code == 503
    assert "Les envois de test passent par le démon" in answer.text
    for opened in found.clients:
        await opened.aclose()


async def test_a_test_send_through_the_real_transport(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    """The daemon's own transport (mailer.app._test_mail) hands the test to the relay."""
    from tests.console_support import console_settings

    smtp = smtp_server.settings().model_dump(mode="json", exclude_none=True)
    transport = open_transport(
        make_settings(tmp_path, smtp=smtp, paths={"templates_dir": ROOT / "templates"})
    )
    settings = console_settings(tmp_path, database_url)
    await people(store)
    await save(store, spec())
    async with transport:
        app = create_app(settings, store, signer=Signer([KEY]), test_mail=_test_mail(transport))
        found = Console(store, settings, app)
        client = await found.client("editor")
        answer = await send_test(found, client, to=EDITOR)
        assert answer.status_code == 200, answer.text
        assert "Sent to editor@staff.example.org: 250" in answer.text
    assert len(smtp_server.received) == 1
    received = smtp_server.received[0]
    assert received.rcpt_tos == (EDITOR,)
    message = message_from_bytes(received.data, policy=policy.default)
    assert str(message["Subject"]).startswith("[TEST] ")
    for opened in found.clients:
        await opened.aclose()
