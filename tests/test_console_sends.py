"""The console's dashboard and a send's page, on SQLite and PostgreSQL, through the real app:
what the dashboard lists (scheduled, running with its figures, paused and why), the progress
fragment htmx polls, the report's filter, search and keyset pages, the CSV export, and the
actions (pause, resume, cancel, retry failed): a sender's work and is audited, a role below or
a POST without CSRF changes nothing."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.lifecycle import SendMove
from mailer.lists import import_file
from mailer.models import Content, DeliveryResult, DeliveryStatus, SendStatus
from mailer.storage import Store
from tests.console_support import Console, now

pytestmark = pytest.mark.timeout(60)

FIGURE = re.compile(r'data-figure="(\w+)">([^<]*)<')


async def a_list(store: Store, tmp_path: Path, count: int, slug: str = "researchers") -> None:
    path = tmp_path / f"{slug}.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name\n")
        for i in range(count):
            handle.write(f"person{i}@example.org,Personne {i}\n")
    assert (await import_file(store, path, now=now())).ok


async def a_send(
    store: Store, name: str, *, slug: str = "researchers", due: timedelta = timedelta(0)
) -> int:
    content = Content(name=name, kind="announcement", subject="Nouvelles", body="Bonjour.")
    campaign = await store.campaigns.save(
        content, list_slugs=[slug], sender_name=None, sender_address=None, event=None,
        now=now(),
    )  # fmt: skip
    send_id, _ = await store.sends.create(
        campaign, key="announce", action="announcement", due_at=now() + due, now=now()
    )
    return send_id


async def start(store: Store, send_id: int) -> None:
    """Claim the send and materialise its deliveries, as a daemon's first pass does."""
    assert await store.sends.start(await store.sends.spec(send_id), node="test", now=now())


async def record(store: Store, send_id: int, *statuses: DeliveryStatus, **extra: Any) -> None:
    """Results for the next deliveries of a send, one status each (what dispatch records)."""
    due = await store.deliveries.due(send_id, after=0, limit=len(statuses), now=now())
    assert len(due) == len(statuses)
    await store.deliveries.record(
        [
            DeliveryResult(d.id, s, message_id=f"<{d.id}@test>", **extra)
            for d, s in zip(due, statuses, strict=True)
        ],
        now=now(),
    )


def figures(html: str) -> dict[str, str]:
    return dict(FIGURE.findall(html))


async def confirm_and_post(
    console: Console, client: httpx.AsyncClient, send_id: int, action: str
) -> httpx.Response:
    page = await client.get(f"/admin/sends/{send_id}/{action}")
    assert page.status_code == 200, page.text
    assert f'action="/admin/sends/{send_id}/{action}"' in page.text
    return await client.post(
        f"/admin/sends/{send_id}/{action}",
        data={"csrf": await console.csrf(client), "confirm": "yes"},
    )


async def audited(store: Store, action: str) -> list[Any]:
    return await store.audit.page(action=action)


# --- the dashboard ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "words", "send_words"),
    [("fr", ("Envois à venir", "Envois en cours", "À surveiller", "Derniers envois"),
      ("Avancement", "Destinataires")),
     ("en", ("Coming up", "Running sends", "Needs attention", "Last sends"),
      ("Progress", "Recipients"))],
)  # fmt: skip
async def test_the_dashboard_lists_scheduled_running_and_paused_sends(
    console: Console,
    tmp_path: Path,
    lang: str,
    words: tuple[str, ...],
    send_words: tuple[str, ...],
) -> None:
    """A scheduled send with its audience, a running one with its figures and the polling
    fragment, a halted one with its reason, a missed one, an ended one with its counts; in
    the staff member's language. A viewer's send page offers no action and no export."""
    store = console.store
    await a_list(store, tmp_path, 12)
    scheduled = await a_send(store, "lettre-a-venir", due=timedelta(days=2))
    running = await a_send(store, "annonce-en-cours")
    await start(store, running)
    await record(store, running, DeliveryStatus.SENT, DeliveryStatus.SENT, DeliveryStatus.FAILED)
    halted = await a_send(store, "annonce-arretee")
    await start(store, halted)
    assert await store.sends.move(halted, SendMove.HALT, now=now(), reason="relay says no")
    missed = await a_send(store, "annonce-manquee")
    assert await store.sends.move(missed, SendMove.EXPIRE, now=now(), reason="past the grace")
    ended = await a_send(store, "annonce-finie")
    await start(store, ended)
    await record(store, ended, *[DeliveryStatus.SENT] * 11, DeliveryStatus.FAILED)
    await store.sends.finish(ended, now=now())
    client = await console.client("viewer")
    page = await client.get("/admin/", headers={"accept-language": lang})
    assert page.status_code == 200
    html = page.text
    assert f'<html lang="{lang}">' in html
    for word in words:
        assert word in html
    assert "lettre-a-venir" in html
    assert f"/admin/sends/{scheduled}" in html
    upcoming = html.split('id="dash-upcoming"')[1].split("</section>")[0]
    assert '<td class="numbers">12</td>' in upcoming  # its audience: the list's 12 members
    assert f'hx-get="/admin/sends/{running}/progress" hx-trigger="every 2s"' in html
    assert 'aria-live="polite"' in html
    assert figures(html)["failed"] == "1"
    assert "relay says no" in html
    assert "annonce-arretee" in html
    assert "past the grace" in html
    recent = html.split('id="dash-recent"')[1].split("</section>")[0]
    assert "annonce-finie" in recent
    assert '<td class="numbers">12</td><td class="numbers">11</td><td class="numbers">1</td>' in (
        recent.replace("\n", "")
    )
    send_page = await client.get(f"/admin/sends/{running}", headers={"accept-language": lang})
    for word in send_words:
        assert word in send_page.text
    assert f"/admin/sends/{running}/pause" not in send_page.text
    assert "report.csv" not in send_page.text


async def test_the_progress_fragment_follows_the_deliveries(
    console: Console, tmp_path: Path
) -> None:
    """The fragment's figures change when results are recorded, and it stops polling once
    the send is done."""
    store = console.store
    await a_list(store, tmp_path, 6)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    client = await console.client("viewer")
    before = await client.get(f"/admin/sends/{send_id}/progress")
    assert before.status_code == 200
    assert "<html" not in before.text
    assert 'hx-trigger="every 2s"' in before.text
    assert figures(before.text)["queued"] == "6"
    await record(store, send_id, DeliveryStatus.SENT, DeliveryStatus.SENT, DeliveryStatus.SENT)
    await record(store, send_id, DeliveryStatus.FAILED)
    after = figures((await client.get(f"/admin/sends/{send_id}/progress")).text)
    assert (after["queued"], after["failed"]) == ("2", "1")
    assert after["rate"] == "3 messages/s"  # 3 sent within the last second: over 1 s
    assert figures(before.text)["rate"] == "0 messages/s"
    await record(store, send_id, DeliveryStatus.SENT, DeliveryStatus.SKIPPED)
    await store.sends.finish(send_id, now=now())
    done = await client.get(f"/admin/sends/{send_id}/progress")
    assert "hx-trigger" not in done.text
    assert (await client.get("/admin/sends/999999/progress")).status_code == 404


# --- the actions --------------------------------------------------------------------------------


async def test_a_sender_pauses_resumes_and_cancels_and_each_is_audited(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path, 4)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    client = await console.client("sender")

    answer = await confirm_and_post(console, client, send_id, "pause")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/admin/sends/{send_id}?done=paused"
    assert await store.sends.status(send_id) == SendStatus.PAUSED
    assert (await store.sends.spec(send_id)).reason == "paused by staff"
    page = await client.get(answer.headers["location"], headers={"accept-language": "en"})
    assert "The send is paused." in page.text
    [entry] = await audited(store, "send.pause")
    assert (entry.actor, entry.target) == ("sender@staff.example.org", f"send {send_id}")

    assert (await confirm_and_post(console, client, send_id, "resume")).status_code == 303
    assert await store.sends.status(send_id) == SendStatus.RUNNING
    assert console.queued == [send_id]  # handed to the daemon
    assert len(await audited(store, "send.resume")) == 1

    assert (await confirm_and_post(console, client, send_id, "cancel")).status_code == 303
    assert await store.sends.status(send_id) == SendStatus.CANCELLED
    assert (await store.figures.counts(send_id)).skipped == 4
    assert len(await audited(store, "send.cancel")) == 1


async def test_a_send_paused_before_it_started_waits_for_its_time_again(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path, 2)
    send_id = await a_send(store, "plus-tard", due=timedelta(days=1))
    assert await store.sends.move(send_id, SendMove.PAUSE, now=now(), reason="paused by staff")
    client = await console.client("sender")
    answer = await confirm_and_post(console, client, send_id, "resume")
    assert answer.headers["location"].endswith("?done=scheduled")
    assert await store.sends.status(send_id) == SendStatus.SCHEDULED
    assert console.queued == []  # not due yet: the scheduler fires it at its time


async def test_a_sender_retries_the_failed_of_a_done_send(console: Console, tmp_path: Path) -> None:
    store = console.store
    await a_list(store, tmp_path, 3)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    await record(store, send_id, DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.FAILED)
    await store.sends.finish(send_id, now=now())
    assert await store.sends.status(send_id) == SendStatus.DONE
    client = await console.client("sender")
    page = await client.get(f"/admin/sends/{send_id}")
    assert f'href="/admin/sends/{send_id}/retry"' in page.text
    answer = await confirm_and_post(console, client, send_id, "retry")
    assert answer.headers["location"] == f"/admin/sends/{send_id}?done=retried&queued=2"
    assert await store.sends.status(send_id) == SendStatus.RUNNING
    assert (await store.figures.counts(send_id)).queued == 2
    assert console.queued == [send_id]
    [entry] = await audited(store, "send.retry")
    assert entry.details["queued"] == 2


async def test_a_refused_move_says_why_and_changes_nothing(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path, 2)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    client = await console.client("sender")
    answer = await client.post(
        f"/admin/sends/{send_id}/resume",
        data={"csrf": await console.csrf(client), "confirm": "yes"},
        headers={"accept-language": "en"},
    )
    assert answer.status_code == 409
    assert "the send is “running”, and this action goes from paused only" in answer.text
    assert await store.sends.status(send_id) == SendStatus.RUNNING
    assert await audited(store, "send.resume") == []
    assert console.queued == []


@pytest.mark.parametrize("action", ["pause", "resume", "cancel", "retry"])
async def test_an_editor_cannot_act_on_a_send(
    console: Console, tmp_path: Path, action: str
) -> None:
    """An editor's GET of the confirmation and POST are 403, as is a sender's POST without
    the CSRF token: the send stays as it was, nothing is audited."""
    store = console.store
    await a_list(store, tmp_path, 2)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    await record(store, send_id, DeliveryStatus.FAILED)
    if action == "resume":
        assert await store.sends.move(send_id, SendMove.PAUSE, now=now(), reason="paused by staff")
    status = await store.sends.status(send_id)
    editor = await console.client("editor")
    assert (await editor.get(f"/admin/sends/{send_id}/{action}")).status_code == 403
    refused = await editor.post(
        f"/admin/sends/{send_id}/{action}",
        data={"csrf": await console.csrf(editor), "confirm": "yes"},
    )
    assert refused.status_code == 403
    sender = await console.client("sender")
    no_csrf = await sender.post(f"/admin/sends/{send_id}/{action}", data={"confirm": "yes"})
    assert no_csrf.status_code == 403
    assert await store.sends.status(send_id) == status
    assert (await store.figures.counts(send_id)).failed == 1
    assert await audited(store, f"send.{action}") == []
    assert console.queued == []


# --- the report ---------------------------------------------------------------------------------


async def test_the_report_filters_searches_and_pages(console: Console, tmp_path: Path) -> None:
    store = console.store
    await a_list(store, tmp_path, 120)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    await record(store, send_id, *[DeliveryStatus.SENT] * 10, *[DeliveryStatus.FAILED] * 5)
    client = await console.client("viewer")
    row = re.compile(r'<th scope="row">([^<]+@example\.org)</th>')

    seen: list[str] = []
    url: str | None = f"/admin/sends/{send_id}"
    while url:
        page = (await client.get(url)).text
        found = row.findall(page)
        assert 0 < len(found) <= 50
        seen += found
        following = re.search(r'<a href="([^"]+)" rel="next">', page)
        url = following.group(1).replace("&amp;", "&") if following else None
    assert sorted(seen) == sorted(f"person{i}@example.org" for i in range(120))

    failed = (await client.get(f"/admin/sends/{send_id}?status=failed")).text
    assert len(row.findall(failed)) == 5
    assert 'rel="next"' not in failed

    searched = row.findall((await client.get(f"/admin/sends/{send_id}?q=PERSON11")).text)
    assert sorted(searched) == sorted(
        ["person11@example.org", *(f"person11{i}@example.org" for i in range(10))]
    )
    bad = await client.get(f"/admin/sends/{send_id}?status=lost", headers={"accept-language": "fr"})
    assert "Le filtre «\u202fstatut\u202f» ne connaît pas «\u202flost\u202f»" in bad.text
    assert (await client.get("/admin/sends/999999")).status_code == 404


async def test_the_csv_export_is_for_editors_and_formula_safe(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path, 3)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    await record(store, send_id, DeliveryStatus.FAILED, code=550, reply='=HYPERLINK("http://x")')
    viewer = await console.client("viewer")
    assert (await viewer.get(f"/admin/sends/{send_id}/report.csv")).status_code == 403
    editor = await console.client("editor")
    answer = await editor.get(f"/admin/sends/{send_id}/report.csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == 3
    [failed] = [r for r in rows if r["status"] == "failed"]
    assert failed["smtp_reply"] == '\'=HYPERLINK("http://x")'
    assert len(await audited(store, "send.export")) == 1
