"""The REST API's event changes through httpx against the real app, on SQLite and PostgreSQL:
a move planned first (``dry_run``: which reminders move and who gets the update, nothing
written), then applied by ``workflow.events`` (reminders re-planned, SEQUENCE one more, the
update handed to the daemon), a move made from an older SEQUENCE refused with 412, a new
start in a DST gap or in the past refused naming ``event.start``, and the cancellation
(who gets it, the sends that stop), each audited as ``api:<key name>``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from mailer.models import CampaignStatus, Scope, SendStatus
from tests.api_support import Api, now
from tests.test_api_campaigns import CAMPAIGNS, march_gap, relaxed_fixture  # noqa: F401
from tests.test_console_campaigns import announcement_raw, event_raw, invite_everyone, local
from tests.test_console_sends import a_list

pytestmark = pytest.mark.timeout(60)
PATH = f"{CAMPAIGNS}/journee"
EVENT = f"{PATH}/event"


async def scheduled_and_invited(api: Api, tmp_path: Path, invited: int = 3) -> int:
    await a_list(api.store, tmp_path, 3)
    client = await api.client()
    assert (await client.post(CAMPAIGNS, json=event_raw("journee"))).status_code == 201
    assert (await client.post(f"{PATH}/schedule")).status_code == 200
    record = await api.store.campaigns.record("journee")
    if invited:
        await invite_everyone(api.store, record.id, invited)
    return record.id


async def test_a_move_is_planned_then_applied_and_an_older_one_refused(
    relaxed: Api, tmp_path: Path
) -> None:
    campaign_id = await scheduled_and_invited(relaxed, tmp_path)
    client = await relaxed.client(Scope.CAMPAIGNS_SEND, Scope.CAMPAIGNS_READ, name="desk")
    shown = await client.get(EVENT)
    tag = shown.headers["etag"]
    assert shown.json()["place"] == "Paris"
    start = local(now() + timedelta(days=45))
    change = {"start": start, "end": start.replace("T09:00", "T17:30"), "place": "Lyon"}
    plan = await client.patch(EVENT, json=change, params={"dry_run": "true"})
    assert plan.status_code == 200, plan.text
    planned = plan.json()
    assert (planned["applied"], planned["update_to"], planned["update_send"]) == (False, 3, None)
    assert sorted(m["key"] for m in planned["moved"]) == ["reminder:P1D", "reminder:P7D"]
    unmoved = await relaxed.store.campaigns.event(campaign_id)
    assert unmoved is not None
    assert unmoved.place == "Paris"
    done = await client.patch(EVENT, json=change, headers={"If-Match": tag})
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["applied"]
    assert body["event"]["place"] == "Lyon"
    assert body["sequence"] == planned["sequence"] == shown.json()["sequence"] + 1
    assert body["update_send"] in relaxed.queued
    assert done.headers["etag"] != tag
    sends = {s.key: s for s in await relaxed.store.sends.of_campaign(campaign_id)}
    assert sends[f"update:{body['sequence']}"].status == SendStatus.SCHEDULED
    moved_to = {m["key"]: m["due_at"] for m in body["moved"]}
    assert sends["reminder:P7D"].due_at == datetime.fromisoformat(moved_to["reminder:P7D"])
    again = await client.patch(EVENT, json={"place": "Nantes"}, headers={"If-Match": tag})
    assert again.status_code == 412
    [entry] = await relaxed.store.audit.page(action="event.update")
    assert (entry.actor, entry.details["update_to"]) == ("api:desk", 3)


async def test_a_bad_move_names_the_field_and_changes_nothing(relaxed: Api, tmp_path: Path) -> None:
    campaign_id = await scheduled_and_invited(relaxed, tmp_path, invited=0)
    client = await relaxed.client()
    gap = await client.patch(EVENT, json={"start": march_gap(now().year + 1), "end": None})
    assert gap.status_code == 422, gap.text
    [error] = gap.json()["errors"]
    assert error["field"] == "event.start"
    assert "does not exist in Europe/Paris" in error["message"]
    past = local(now() - timedelta(days=2))
    late = await client.patch(EVENT, json={"start": past, "end": None})
    assert late.json()["errors"][0]["field"] == "event.start"
    assert "has passed" in late.json()["errors"][0]["message"]
    cleared = await client.patch(EVENT, json={"title": None})
    assert cleared.json()["errors"] == [
        {"field": "title", "message": "cannot be cleared; leave it out to keep it"}
    ]
    assert (await client.patch(EVENT, json={"colour": "red"})).status_code == 422
    reader = await relaxed.client(Scope.CAMPAIGNS_READ)
    assert (await reader.patch(EVENT, json={"place": "Lyon"})).status_code == 403
    event = await relaxed.store.campaigns.event(campaign_id)
    assert event is not None
    assert (event.place, event.sequence) == ("Paris", 0)
    assert (await client.post(CAMPAIGNS, json=announcement_raw("news"))).status_code == 201
    assert (await client.post(f"{CAMPAIGNS}/news/schedule")).status_code == 200
    not_event = await client.patch(f"{CAMPAIGNS}/news/event", json={"place": "Lyon"})
    assert not_event.status_code == 409
    assert "not an event campaign" in not_event.json()["detail"]
    assert (await client.get(f"{CAMPAIGNS}/news/event")).status_code == 404


async def test_a_cancellation_says_who_gets_it_then_stops_the_sends(
    relaxed: Api, tmp_path: Path
) -> None:
    campaign_id = await scheduled_and_invited(relaxed, tmp_path)
    client = await relaxed.client(name="desk")
    plan = await client.post(f"{EVENT}/cancel", params={"dry_run": "true"})
    assert plan.status_code == 200, plan.text
    assert plan.json()["cancellation_to"] == 3
    assert not plan.json()["applied"]
    assert sorted(plan.json()["stopping"]) == ["reminder:P1D", "reminder:P7D"]
    assert (await relaxed.store.campaigns.record("journee")).status == CampaignStatus.SCHEDULED
    done = await client.post(f"{EVENT}/cancel")
    assert done.status_code == 200, done.text
    assert (done.json()["stopped"], done.json()["notice_send"] in relaxed.queued) == (2, True)
    assert (await relaxed.store.campaigns.record("journee")).status == CampaignStatus.CANCELLED
    event = await relaxed.store.campaigns.event(campaign_id)
    assert event is not None
    assert event.status == "cancelled"
    assert (await client.patch(EVENT, json={"place": "Lyon"})).status_code == 409
    assert (await client.post(f"{EVENT}/cancel")).status_code == 409
    [entry] = await relaxed.store.audit.page(action="event.cancel")
    assert (entry.actor, entry.details["cancellation_to"]) == ("api:desk", 3)
