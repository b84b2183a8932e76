"""The REST API's campaigns through httpx against the real app, on SQLite and PostgreSQL: a draft
created from the one campaign model (Idempotency-Key: the same answer and one campaign;
another body 422), its validation problems naming each field in the words of ``mailer
campaign check`` (a DST gap refused, the autumn fold noted), read and listed in pages,
replaced with If-Match (412 "changed by" on a lost update), the console's approval rules (a
key that saved or submitted a version may not approve it; with approval not required a
draft is scheduled directly, recorded so), pause, resume and cancel, the scopes of each
move, and each write audited as ``api:<key name>``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.models import CampaignStatus, Scope
from mailer.storage import Store
from mailer.tokens import Signer
from mailer.web import create_app
from mailer.workflow.approval import NOTE_NOT_REQUIRED
from tests.api_support import KEY, Api, api_fixture, api_settings, now  # noqa: F401
from tests.test_console_campaigns import announcement_raw, event_raw
from tests.test_console_sends import a_list

pytestmark = pytest.mark.timeout(60)
CAMPAIGNS = "/api/v1/campaigns"
WRITE, SEND, READ = Scope.CAMPAIGNS_WRITE, Scope.CAMPAIGNS_SEND, Scope.CAMPAIGNS_READ


async def open_with(
    store: Store, tmp_path: Path, database_url: str, *, webhooks: dict[str, Any] | None = None,
    **console: Any,
) -> AsyncIterator[Api]:  # fmt: skip
    """The app with these ``MAILER_CONSOLE__*`` settings (the approval rules), and these
    ``MAILER_WEBHOOKS__*``."""
    settings = api_settings(tmp_path, database_url)
    settings = settings.model_copy(
        update={
            "console": settings.console.model_copy(update=console),
            "webhooks": settings.webhooks.model_copy(update=webhooks or {}),
        }
    )
    queued: list[int] = []
    app = create_app(settings, store, signer=Signer([KEY]), on_send=queued.append)
    found = Api(store, settings, app, queued)
    try:
        yield found
    finally:
        for client in found.clients:
            await client.aclose()


@pytest.fixture(name="relaxed")
async def relaxed_fixture(store: Store, tmp_path: Path, database_url: str) -> AsyncIterator[Api]:
    """Approval not required, self-approval allowed."""
    async for found in open_with(
        store, tmp_path, database_url, require_approval=False, allow_self_approval=True
    ):
        yield found


def march_gap(year: int) -> str:
    """02:30 on the last Sunday of March: a time Paris skips."""
    day = datetime(year, 3, 31)
    while day.weekday() != 6:
        day -= timedelta(days=1)
    return day.strftime("%Y-%m-%dT02:30")


def october_fold(year: int) -> str:
    """02:30 on the last Sunday of October: a time Paris has twice."""
    day = datetime(year, 10, 31)
    while day.weekday() != 6:
        day -= timedelta(days=1)
    return day.strftime("%Y-%m-%dT02:30")


def errors_of(answer: httpx.Response) -> dict[str, str]:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    return {e["field"]: e["message"] for e in answer.json()["errors"]}


async def test_a_draft_is_created_once_read_and_listed(api: Api, tmp_path: Path) -> None:
    await a_list(api.store, tmp_path, 2)
    client = api.client_for(await api.key(WRITE, READ, name="crm"))
    body = event_raw("journee")
    once = {"Idempotency-Key": "create-journee-1"}
    first = await client.post(CAMPAIGNS, json=body, headers=once)
    assert first.status_code == 201, first.text
    assert (first.headers["etag"], first.headers["location"]) == ('"v1"', f"{CAMPAIGNS}/journee")
    made = first.json()["campaign"]
    assert (made["status"], made["version"], made["updated_by"]) == ("draft", 1, "api:crm")
    assert made["spec"]["content"]["en"]["subject"] == "Research day"
    again = await client.post(CAMPAIGNS, json=body, headers=once)
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    other = await client.post(CAMPAIGNS, json={**body, "place": "x"}, headers=once)
    assert other.status_code == 422
    taken = await client.post(CAMPAIGNS, json=body)
    assert taken.status_code == 409
    assert "a campaign named journee exists" in taken.json()["detail"]
    one = await client.get(f"{CAMPAIGNS}/journee")
    assert one.headers["etag"] == '"v1"'
    assert one.json()["lists"] == ["researchers"]
    [saved] = await api.store.audit.page(action="campaign.save")
    assert (saved.actor, saved.target, saved.details["via"]) == ("api:crm", "journee", "api")
    assert (await client.get(f"{CAMPAIGNS}/nothing-here")).status_code == 404
    assert (await client.get(f"{CAMPAIGNS}/Not%20A%20Name")).status_code == 404


async def test_the_list_is_paged_and_filtered(api: Api, tmp_path: Path) -> None:
    await a_list(api.store, tmp_path, 1)
    client = await api.client(WRITE, READ)
    for name in ("alpha", "beta", "gamma"):
        assert (await client.post(CAMPAIGNS, json=announcement_raw(name))).status_code == 201
    page = await client.get(CAMPAIGNS, params={"limit": 2})
    assert [c["name"] for c in page.json()["data"]] == ["alpha", "beta"]
    assert 'rel="next"' in page.headers["link"]
    rest = await client.get(CAMPAIGNS, params={"limit": 2, "cursor": page.json()["next"]})
    assert ([c["name"] for c in rest.json()["data"]], rest.json()["next"]) == (["gamma"], None)
    assert (await client.get(CAMPAIGNS, params={"kind": "event"})).json()["data"] == []
    bad = await client.get(CAMPAIGNS, params={"status": "sleeping"})
    assert "query.status" in errors_of(bad)
    assert "query.cursor" in errors_of(await client.get(CAMPAIGNS, params={"cursor": "nope"}))


async def test_a_bad_campaign_names_each_field_in_the_cli_words(api: Api, tmp_path: Path) -> None:
    await a_list(api.store, tmp_path, 1)
    client = await api.client(WRITE)
    year = now().year + 1
    zone = errors_of(await client.post(CAMPAIGNS, json=announcement_raw("a", timezone="Mars/X")))
    assert "timezone" in zone
    lists = errors_of(await client.post(CAMPAIGNS, json=announcement_raw("a", lists=["nobody"])))
    assert lists == {"lists": "no list is named 'nobody'"}
    given_file = announcement_raw("a", content={"fr": {"body_file": "a.md"}})
    assert errors_of(await client.post(CAMPAIGNS, json=given_file)) == {
        "content.fr.body_file": "give the body itself, not a file name"
    }
    gap = event_raw("gap")
    gap["event"] = {**gap["event"], "start": march_gap(year), "end": None}
    del gap["event"]["end"]
    said = errors_of(await client.post(CAMPAIGNS, json=gap))
    assert "does not exist in Europe/Paris (the clocks go forward" in said["event.start"]
    broken = announcement_raw("a", content={"fr": {"subject": "Nouvelles", "body": "{{ oops"}})
    assert "content.fr.body" in errors_of(await client.post(CAMPAIGNS, json=broken))
    extra = errors_of(await client.post(CAMPAIGNS, json=announcement_raw("a", colour="red")))
    assert extra == {"colour": "is not a field of this resource; remove it"}
    assert await api.store.campaigns.listing() == []
    fold = event_raw("fold")
    fold["event"] = {**fold["event"], "start": october_fold(year)}
    del fold["event"]["end"]
    noted = await client.post(CAMPAIGNS, json=fold)
    assert noted.status_code == 201, noted.text
    assert "happens twice in Europe/Paris; using the first" in " ".join(noted.json()["notes"])


async def test_a_draft_replaced_with_if_match_and_a_lost_update_refused(
    api: Api, tmp_path: Path
) -> None:
    await a_list(api.store, tmp_path, 1)
    client = await api.client(WRITE, READ, name="editor")
    path = f"{CAMPAIGNS}/journee"
    assert (await client.post(CAMPAIGNS, json=event_raw("journee"))).status_code == 201
    moved = event_raw("journee", days=40)
    second = await client.put(path, json=moved, headers={"If-Match": '"v1"'})
    assert second.status_code == 200, second.text
    assert (second.headers["etag"], second.json()["campaign"]["version"]) == ('"v2"', 2)
    lost = await client.put(path, json=event_raw("journee", days=50), headers={"If-Match": '"v1"'})
    assert lost.status_code == 412
    assert "changed by api:editor at" in lost.json()["detail"]
    assert lost.headers["etag"] == '"v2"'
    assert (await api.store.campaigns.record("journee")).version == 2
    renamed = errors_of(await client.put(path, json=event_raw("autre")))
    assert "a campaign keeps its name" in renamed["name"]
    blind = await client.put(path, json=event_raw("journee", days=45))
    assert (blind.status_code, blind.headers["etag"]) == (200, '"v3"')
    assert (await client.put(f"{CAMPAIGNS}/nobody", json=event_raw("nobody"))).status_code == 404


async def test_approval_needs_a_second_key_and_the_schedule_is_planned(
    api: Api, tmp_path: Path
) -> None:
    await a_list(api.store, tmp_path, 3)
    editor = await api.client(WRITE, READ, SEND, name="editor")
    boss = await api.client(SEND, READ, name="boss")
    path = f"{CAMPAIGNS}/journee"
    assert (await editor.post(CAMPAIGNS, json=event_raw("journee"))).status_code == 201
    refused = await boss.post(f"{path}/submit")
    assert (refused.status_code, refused.json()["scope"]) == (403, "campaigns:write")
    early = await boss.post(f"{path}/approve")
    assert early.status_code == 409
    assert "draft" in early.json()["detail"]
    submitted = await editor.post(f"{path}/submit", headers={"If-Match": '"v1"'})
    assert (submitted.status_code, submitted.json()["status"]) == (200, "submitted")
    own = await editor.post(f"{path}/approve")
    assert (own.status_code, own.json()["type"].rsplit("/", 1)[1]) == (403, "self-approval")
    assert (await api.store.campaigns.record("journee")).status == CampaignStatus.SUBMITTED
    stale = await boss.post(f"{path}/approve", headers={"If-Match": '"v7"'})
    assert stale.status_code == 412
    approved = await boss.post(f"{path}/approve", headers={"If-Match": '"v1"'})
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert (body["status"], body["approved_by"]) == ("approved", "api:boss")
    assert (body["approval"]["lists"], body["approval"]["by"]) == ({"researchers": 3}, "api:boss")
    dry = await boss.post(f"{path}/schedule", params={"dry_run": "true"})
    assert dry.status_code == 200, dry.text
    planned = [p["key"] for p in dry.json()["planned"]]
    assert planned == ["invitation", "reminder:P7D", "reminder:P1D"]
    assert not dry.json()["applied"]
    assert not await api.store.sends.overview()
    done = await boss.post(f"{path}/schedule")
    assert done.status_code == 200, done.text
    assert done.json()["applied"]
    assert done.json()["campaign"]["status"] == "scheduled"
    assert sorted(done.json()["created"]) == sorted(planned)
    [invitation] = [s for s in await api.store.sends.overview() if s.key == "invitation"]
    assert api.queued == [invitation.id]  # due now: handed to the daemon
    again = await boss.post(f"{path}/schedule")
    assert again.status_code == 409
    actors = {e.action: e.actor for e in await api.store.audit.page()}
    assert actors["campaign.submit"] == "api:editor"
    assert actors["campaign.approve"] == actors["campaign.schedule"] == "api:boss"
    timeline = (await boss.get(f"{path}/timeline")).json()["data"]
    assert [t["key"] for t in timeline] == ["invitation", "reminder:P7D", "reminder:P1D"]
    assert timeline[0]["counts"]["sent"] == 0


async def test_without_required_approval_a_draft_is_scheduled_by_its_key(
    relaxed: Api, tmp_path: Path
) -> None:
    await a_list(relaxed.store, tmp_path, 1)
    client = await relaxed.client(WRITE, READ, SEND, name="solo")
    assert (await client.post(CAMPAIGNS, json=announcement_raw("news"))).status_code == 201
    done = await client.post(f"{CAMPAIGNS}/news/schedule")
    assert done.status_code == 200, done.text
    campaign = done.json()["campaign"]
    assert (campaign["status"], campaign["approved_by"]) == ("scheduled", "api:solo")
    assert campaign["approval"]["note"] == NOTE_NOT_REQUIRED
    assert (await client.post(CAMPAIGNS, json=announcement_raw("self"))).status_code == 201
    assert (await client.post(f"{CAMPAIGNS}/self/submit")).status_code == 200
    mine = await client.post(f"{CAMPAIGNS}/self/approve")  # self-approval allowed here
    assert (mine.status_code, mine.json()["approved_by"]) == (200, "api:solo")


async def test_pause_resume_and_cancel_as_the_console_does(relaxed: Api, tmp_path: Path) -> None:
    await a_list(relaxed.store, tmp_path, 1)
    client = await relaxed.client(WRITE, READ, SEND)
    reader = await relaxed.client(READ)
    path = f"{CAMPAIGNS}/journee"
    assert (await client.post(CAMPAIGNS, json=event_raw("journee"))).status_code == 201
    assert (await client.post(f"{path}/resume")).status_code == 409  # a draft
    assert (await client.post(f"{path}/schedule")).status_code == 200
    assert (await reader.post(f"{path}/pause")).status_code == 403
    paused = await client.post(f"{path}/pause")
    assert paused.status_code == 200, paused.text
    assert (paused.json()["sends"], paused.json()["campaign"]["status"]) == (3, "paused")
    assert (await client.post(f"{path}/pause")).status_code == 409
    resumed = await client.post(f"{path}/resume")
    assert (resumed.json()["sends"], resumed.json()["campaign"]["status"]) == (3, "scheduled")
    cancelled = await client.post(f"{path}/cancel")
    assert (cancelled.json()["sends"], cancelled.json()["campaign"]["status"]) == (3, "cancelled")
    assert {t["status"] for t in (await reader.get(f"{path}/timeline")).json()["data"]} == {
        "cancelled"
    }
    assert (await client.post(f"{path}/cancel")).status_code == 409
    moves = [e.action for e in await relaxed.store.audit.page() if e.target == "journee"]
    assert {"campaign.pause", "campaign.resume", "campaign.cancel"} <= set(moves)
