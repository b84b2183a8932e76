"""mailer.workflow on a real store (SQLite and PostgreSQL): ``campaign create`` of a file
saves the spec with the operator's approval and its snapshot; an event's move and
cancellation are planned (nothing written) and then applied exactly as planned, with the
count of those who get the update; a plan gone stale is refused."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailer import campaigns
from mailer.errors import StateError
from mailer.lifecycle import SendMove
from mailer.models import DeliveryResult, DeliveryStatus, ListMeta, SubscriberRow
from mailer.settings import Settings
from mailer.storage import Store
from mailer.workflow import approval, events, scheduling, spec_of

pytestmark = pytest.mark.timeout(60)
PARIS = ZoneInfo("Europe/Paris")
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PEOPLE = ("ada@example.org", "bob@example.org", "cy@example.org")

EVENT = """name = "journee"
kind = "event"
lists = ["researchers", "clinicians"]
[content.fr]
body_file = "journee.fr.md"
[content.en]
body = "Do come."
[event]
title = "Journée de recherche"
start = {start}
place = "Pitié-Salpêtrière"
reminders = ["7d", "1d"]
"""


async def seed(store: Store) -> None:
    """Two lists; bob is on both (one person, two list counts)."""
    for slug, members in (("researchers", PEOPLE[:2]), ("clinicians", PEOPLE[1:])):
        await store.lists.upsert(ListMeta(slug=slug, title=slug.title()), now=T0)
        for email in members:
            row = SubscriberRow(line=0, email=email, key=email, smtputf8=False)
            await store.subscribers.add(row, slug=slug, source="cli", now=T0)


def event_file(folder: Path, start: str = "2027-01-15T09:00:00") -> campaigns.Campaign:
    (folder / "journee.fr.md").write_text("Venez.", encoding="utf-8")
    path = folder / "journee.toml"
    path.write_text(EVENT.format(start=start), encoding="utf-8")
    return campaigns.load(path)


async def created(store: Store, settings: Settings, folder: Path) -> int:
    await seed(store)
    await scheduling.create_from_file(store, settings, event_file(folder), now=T0, actor="cli:ops")
    return (await store.campaigns.record("journee")).id


async def keys(store: Store, campaign_id: int) -> dict[str, tuple[str, datetime]]:
    return {s.key: (s.status, s.due_at) for s in await store.sends.of_campaign(campaign_id)}


async def invite(store: Store, campaign_id: int) -> None:
    """The invitation goes out to everyone, as a daemon's pass records it."""
    [invitation] = [s for s in await store.sends.of_campaign(campaign_id) if s.key == "invitation"]
    assert await store.sends.start(await store.sends.spec(invitation.id), node="t", now=T0)
    due = await store.deliveries.due(invitation.id, after=0, limit=10, now=T0)
    await store.deliveries.record(
        [DeliveryResult(d.id, DeliveryStatus.SENT, message_id=f"<{d.id}@t>") for d in due], now=T0
    )


async def test_create_from_file_is_the_operators_approval(
    store: Store, app_settings: Settings, tmp_path: Path
) -> None:
    """The spec is stored with its body inlined, approved by the CLI's user with a snapshot
    of that spec (by hash) and of the audience; the same file again changes nothing."""
    campaign_id = await created(store, app_settings, tmp_path)
    record = await store.campaigns.record("journee")
    assert (record.status, record.approved_by, record.version) == ("scheduled", "cli:ops", 1)
    assert record.spec is not None
    assert record.spec["content"]["fr"] == {"body": "Venez.", "subject": "", "preheader": ""}
    snap = record.approval
    assert snap is not None
    assert snap["content_sha256"] == approval.content_hash(record.spec)
    assert (snap["lists"], snap["audience"], snap["by"]) == (
        {"researchers": 2, "clinicians": 2}, 3, "cli:ops"
    )  # fmt: skip
    assert snap["note"] == approval.NOTE_FILE
    assert set(await keys(store, campaign_id)) == {"invitation", "reminder:P7D", "reminder:P1D"}
    again = await scheduling.create_from_file(
        store, app_settings, event_file(tmp_path), now=T0 + timedelta(minutes=5), actor="cli:x"
    )
    assert (again.unchanged, again.result.created) == (True, [])
    assert (await store.campaigns.record("journee")).approved_by == "cli:ops"


def test_the_content_hash_is_the_canonical_json_and_templates_hash_sees_every_file(
    tmp_path: Path,
) -> None:
    assert approval.content_hash({"b": 1, "a": "é"}) == approval.content_hash({"a": "é", "b": 1})
    email = tmp_path / "email"
    email.mkdir()
    (email / "event.fr.html").write_text("<p>{{ body }}</p>", encoding="utf-8")
    before = approval.templates_hash(tmp_path)
    (email / "layout.html").write_text("x", encoding="utf-8")
    assert approval.templates_hash(tmp_path) != before


async def test_plan_update_says_what_apply_update_does(
    store: Store, app_settings: Settings, tmp_path: Path
) -> None:
    """A paused D-7 is cancelled and replaced for the new date, the D-1 moves; the plan
    (nothing written) is what applying does, and the update goes to the 3 people invited."""
    campaign_id = await created(store, app_settings, tmp_path)
    await invite(store, campaign_id)
    sends = {s.key: s for s in await store.sends.of_campaign(campaign_id)}
    await store.sends.move(sends["reminder:P7D"].id, SendMove.PAUSE, now=T0, reason="relay")
    later = event_file(tmp_path, "2027-02-12T09:00:00")
    event = later.event(domain=app_settings.sender.domain)
    assert event is not None
    before = await keys(store, campaign_id)
    plan = await events.plan_update(store, campaign_id, event, ["7d", "1d"], PARIS, T0)
    assert await keys(store, campaign_id) == before  # nothing written
    new_d1 = datetime(2027, 2, 11, 8, 0, tzinfo=UTC)
    assert plan.moved == [("reminder:P1D", before["reminder:P1D"][1], new_d1)]
    assert (plan.cancelled_running, plan.dropped, plan.new) == (
        ["reminder:P7D"], [], ["reminder:P7D@1"]
    )  # fmt: skip
    assert (plan.update_to, plan.sequence) == (3, 1)
    done = await events.apply_update(store, plan, event, T0)
    assert (done.moved, done.dropped, done.new, done.cancelled_running) == (
        plan.moved, plan.dropped, plan.new, plan.cancelled_running
    )  # fmt: skip
    after = await keys(store, campaign_id)
    assert after["reminder:P7D"][0] == "cancelled"
    assert after["reminder:P7D@1"] == ("scheduled", datetime(2027, 2, 5, 8, 0, tzinfo=UTC))
    assert after["reminder:P1D"] == ("scheduled", new_d1)
    assert after["update:1"][0] == "scheduled"
    assert done.update_send is not None


async def test_nobody_invited_yet_gets_no_update_and_a_stale_plan_is_refused(
    store: Store, app_settings: Settings, tmp_path: Path
) -> None:
    campaign_id = await created(store, app_settings, tmp_path)
    event = event_file(tmp_path, "2027-02-12T09:00:00").event(domain="example.org")
    assert event is not None
    plan = await events.plan_update(store, campaign_id, event, ["7d", "1d"], PARIS, T0)
    assert plan.update_to == 0
    sends = {s.key: s for s in await store.sends.of_campaign(campaign_id)}
    await store.sends.move(sends["reminder:P1D"].id, SendMove.PAUSE, now=T0, reason="staff")
    with pytest.raises(StateError, match="changed since this was planned"):
        await events.apply_update(store, plan, event, T0)
    stored = await store.campaigns.event(campaign_id)
    assert stored is not None
    assert stored.sequence == 0  # nothing written
    fresh = await events.plan_update(store, campaign_id, event, ["7d", "1d"], PARIS, T0)
    done = await events.apply_update(store, fresh, event, T0)
    assert (done.update_send, "update:1" in await keys(store, campaign_id)) == (None, False)


async def test_plan_cancel_names_the_sends_that_stop_and_who_is_told(
    store: Store, app_settings: Settings, tmp_path: Path
) -> None:
    campaign_id = await created(store, app_settings, tmp_path)
    await invite(store, campaign_id)
    plan = await events.plan_cancel(store, campaign_id, T0, name="journee")
    assert (sorted(plan.pending), plan.cancellation_to) == (
        ["invitation", "reminder:P1D", "reminder:P7D"], 3
    )  # fmt: skip
    done = await events.apply_cancel(store, plan, T0, name="journee")
    assert (done.stopped, done.sequence) == (3, 1)
    assert done.notice_send is not None
    after = await keys(store, campaign_id)
    assert after["reminder:P7D"][0] == "cancelled"
    assert after["cancellation:1"][0] == "scheduled"


def test_spec_of_is_what_campaign_of_reads_back(tmp_path: Path) -> None:
    from mailer.workflow import campaign_of

    campaign = event_file(tmp_path)
    spec = spec_of(campaign)
    again = campaign_of(spec, name_hint="campaign journee", zone="Europe/Paris", templates_dir=None)
    assert spec_of(again) == spec
    spec["event"]["end"] = "2027-01-14T09:00:00"
    with pytest.raises(campaigns.CampaignFileError, match="campaign journee: event"):
        campaign_of(spec, name_hint="campaign journee", zone="Europe/Paris", templates_dir=None)


async def test_an_event_moved_is_what_its_campaign_spec_says_afterwards(
    store: Store, app_settings: Settings, tmp_path: Path
) -> None:
    """The move is written into the stored spec too, so the edit form, the download and a
    later schedule start from the moved event instead of undoing the move."""
    campaign_id = await created(store, app_settings, tmp_path)
    later = event_file(tmp_path, "2027-02-12T09:00:00")
    event = later.event(domain=app_settings.sender.domain)
    assert event is not None
    event = replace(event, place="Lyon, Hôpital Édouard-Herriot")
    plan = await events.plan_update(store, campaign_id, event, ["2d"], PARIS, T0)
    await events.apply_update(store, plan, event, T0)
    spec = (await store.campaigns.record("journee")).spec
    assert spec is not None
    again = campaigns.from_data(spec, source=Path("stored"), default_zone="Europe/Paris",
                                templates_dir=TEMPLATES, folder=tmp_path)  # fmt: skip
    moved = again.event(domain=app_settings.sender.domain)
    assert moved is not None
    assert (moved.start, moved.place) == (event.start, "Lyon, Hôpital Édouard-Herriot")
    assert again.data.event is not None
    assert again.data.event.reminders == ["2d"]


async def test_an_event_is_moved_only_while_its_campaign_is_scheduled(
    store: Store, app_settings: Settings, tmp_path: Path
) -> None:
    """A cancelled campaign's event cannot be moved (nobody gets an update of it)."""
    campaign_id = await created(store, app_settings, tmp_path)
    await invite(store, campaign_id)
    cancel = await events.plan_cancel(store, campaign_id, T0, name="journee")
    await events.apply_cancel(store, cancel, T0, name="journee")
    later = event_file(tmp_path, "2027-02-12T09:00:00").event(domain=app_settings.sender.domain)
    assert later is not None
    with pytest.raises(StateError, match="cancelled"):
        await events.plan_update(store, campaign_id, later, ["7d"], PARIS, T0)


async def test_two_moves_of_one_plan_at_once_apply_one(
    store: Store, app_settings: Settings, tmp_path: Path
) -> None:
    """Two staff applying a move at the same moment: one goes, the other is refused (one
    update mail, not two)."""
    campaign_id = await created(store, app_settings, tmp_path)
    await invite(store, campaign_id)
    later = event_file(tmp_path, "2027-02-12T09:00:00").event(domain=app_settings.sender.domain)
    assert later is not None
    plan = await events.plan_update(store, campaign_id, later, ["7d", "1d"], PARIS, T0)
    results = await asyncio.gather(
        events.apply_update(store, plan, later, T0),
        events.apply_update(store, plan, replace(later, place="Nice"), T0),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["EventChange", "StateError"], results
    updates = [k for k in await keys(store, campaign_id) if k.startswith("update:")]
    assert updates == ["update:1"]
