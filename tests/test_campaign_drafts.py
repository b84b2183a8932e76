"""store.campaigns' drafts, approvals and schedules (issue 15), on SQLite and PostgreSQL:
a draft's versions (the second of two staff editing one draft is refused with who changed it
and when), submit / approve / send back and their conditions, a schedule in one transaction
(sends made, moved, dropped; the event stored or replaced in place), and THE GATE: nothing of
a campaign that is not approved is scheduled or claimed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailer.errors import NotFoundError, StaleEdit, StateError
from mailer.models import (
    CampaignStatus,
    Content,
    EventInfo,
    ListMeta,
    PublicList,
    SendStatus,
    SubscriberRow,
)
from mailer.schedule import Planned
from mailer.storage import Store
from mailer.storage.campaigns import confirm_campaign

pytestmark = pytest.mark.timeout(60)
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
LATER = T0 + timedelta(days=30)
SNAPSHOT = {"version": 1, "content_sha256": "ab" * 32, "audience": 1}


def content(name: str = "news", subject: str = "Nouvelles", kind: str = "announcement") -> Content:
    return Content(name=name, kind=kind, subject=subject, body="Bonjour.")


async def seed(store: Store) -> None:
    await store.lists.upsert(ListMeta(slug="researchers", title="Researchers"), now=T0)
    row = SubscriberRow(line=0, email="ada@example.org", key="ada@example.org", smtputf8=False)
    await store.subscribers.add(row, slug="researchers", source="cli", now=T0)


async def draft(
    store: Store,
    *,
    subject: str = "Nouvelles",
    expected: int | None = None,
    actor: str = "ed@example.org",
    at: datetime = T0,
    lists: tuple[str, ...] = ("researchers",),
    kind: str = "announcement",
) -> Any:
    return await store.campaigns.save_draft(
        content(subject=subject, kind=kind), spec={"name": "news", "subject": subject},
        list_slugs=list(lists), sender_name=None, sender_address=None, options={},
        expected_version=expected, actor=actor, now=at,
    )  # fmt: skip


async def approved(store: Store) -> Any:
    record = await draft(store)
    await store.campaigns.submit(record.id, version=1, actor="ed@example.org", now=T0)
    await store.campaigns.approve(
        record.id, version=1, snapshot=SNAPSHOT, actor="boss@example.org", now=T0
    )
    return await store.campaigns.record("news")


async def schedule(store: Store, campaign_id: int, planned: list[Planned], **kw: Any) -> Any:
    args: dict[str, Any] = {
        "version": 1, "event": None, "options": {}, "approved_by": None, "snapshot": None,
        "now": T0,
    }  # fmt: skip
    args.update(kw)
    return await store.campaigns.schedule(campaign_id, planned=planned, **args)


async def by_key(store: Store, campaign_id: int) -> dict[str, tuple[str, datetime, str | None]]:
    return {
        s.key: (s.status, s.due_at, s.reason) for s in await store.sends.of_campaign(campaign_id)
    }


async def test_a_draft_is_created_at_version_1_unapproved_and_its_name_is_then_taken(
    store: Store,
) -> None:
    """A new draft: status draft, version 1, who saved it, its spec and lists; no approval.
    A second create of the name is refused, naming it."""
    await seed(store)
    record = await draft(store)
    assert (record.name, record.status, record.version) == ("news", CampaignStatus.DRAFT, 1)
    assert (record.updated_by, record.updated_at) == ("ed@example.org", T0)
    assert record.spec == {"name": "news", "subject": "Nouvelles"}
    assert record.lists == ("researchers",)
    assert (record.approved_by, record.approved_at, record.approval) == (None, None, None)
    assert record.started is False
    with pytest.raises(StateError) as taken:
        await draft(store, subject="Autre")
    assert str(taken.value) == "a campaign named news exists; choose another name or edit it"
    assert (await store.campaigns.record("news")).spec == record.spec


async def test_the_second_of_two_editors_is_told_who_changed_it_and_when(store: Store) -> None:
    """Both read version 1; the first save wins (version 2), the second is refused with the
    first's name and time, and changes nothing."""
    await seed(store)
    await draft(store)
    first = await draft(
        store, subject="Un", expected=1, actor="a@example.org", at=T0 + timedelta(minutes=5)
    )
    assert (first.version, first.updated_by) == (2, "a@example.org")
    with pytest.raises(StaleEdit) as stale:
        await draft(store, subject="Deux", expected=1, actor="b@example.org")
    assert (stale.value.by, stale.value.at) == ("a@example.org", T0 + timedelta(minutes=5))
    assert str(stale.value) == (
        "changed by a@example.org at 2026-12-01 09:05 UTC; reload to see their change"
    )
    assert (await store.campaigns.record("news")).spec == {"name": "news", "subject": "Un"}


async def test_a_list_deleted_meanwhile_is_named_and_nothing_is_saved(store: Store) -> None:
    await seed(store)
    await draft(store)
    with pytest.raises(NotFoundError, match="unknown list 'gone' in campaign 'news'"):
        await draft(store, expected=1, lists=("researchers", "gone"))
    record = await store.campaigns.record("news")
    assert (record.version, record.lists) == (1, ("researchers",))


async def test_an_unknown_campaign_names_the_known_ones(store: Store) -> None:
    await seed(store)
    await draft(store)
    with pytest.raises(NotFoundError, match="no campaign named 'nope'; known: news"):
        await store.campaigns.record("nope")


async def test_submit_approve_and_send_back_follow_the_lifecycle_and_the_version(
    store: Store,
) -> None:
    """Submit from draft only; approve a submitted campaign at its version (an older one is
    StaleEdit), which records who and the snapshot; send back clears both."""
    await seed(store)
    record = await draft(store)
    with pytest.raises(StateError, match="campaign news is draft: it cannot approve"):
        await store.campaigns.approve(record.id, version=1, snapshot=SNAPSHOT, actor="b", now=T0)
    await store.campaigns.submit(record.id, version=1, actor="ed@example.org", now=T0)
    with pytest.raises(StateError, match="campaign news is submitted: it cannot submit"):
        await store.campaigns.submit(record.id, version=1, actor="ed@example.org", now=T0)
    with pytest.raises(StaleEdit):
        await store.campaigns.approve(record.id, version=7, snapshot=SNAPSHOT, actor="b", now=T0)
    submitted = await store.campaigns.record("news")
    assert (submitted.status, submitted.submitted_by, submitted.submitted_at) == (
        CampaignStatus.SUBMITTED, "ed@example.org", T0,
    )  # fmt: skip
    await store.campaigns.approve(record.id, version=1, snapshot=SNAPSHOT, actor="b", now=LATER)
    done = await store.campaigns.record("news")
    assert (done.status, done.approved_by, done.approved_at, done.approval) == (
        CampaignStatus.APPROVED, "b", LATER, SNAPSHOT,
    )  # fmt: skip
    await store.campaigns.send_back(record.id, version=1, actor="b", now=LATER)
    back = await store.campaigns.record("news")
    assert (back.status, back.submitted_by, back.approved_at, back.approval) == (
        CampaignStatus.DRAFT, None, None, None,
    )  # fmt: skip
    with pytest.raises(StateError, match="it cannot send back"):
        await store.campaigns.send_back(record.id, version=1, actor="b", now=LATER)


async def test_an_edit_after_approval_returns_to_draft_and_holds_the_sends(store: Store) -> None:
    """THE GATE: once edited, the scheduled send is not in scheduled() and cannot be claimed
    or started; approved again it is still held (the new version may plan another date: the
    old plan goes only once a sender schedules the new one); scheduled again, it goes."""
    await seed(store)
    record = await approved(store)
    result = await schedule(store, record.id, [Planned("announce", "announcement", T0)])
    assert (result.created, result.moved, result.dropped) == (["announce"], [], [])
    assert (await store.campaigns.record("news")).status == CampaignStatus.SCHEDULED
    (send,) = await store.sends.of_campaign(record.id)
    assert await store.sends.scheduled() == [(send.id, T0)]
    edited = await draft(store, subject="Corrigé", expected=1)
    assert (edited.status, edited.version, edited.approved_at) == (CampaignStatus.DRAFT, 2, None)
    assert await store.sends.scheduled() == []
    assert await store.sends.claim(send.id, node="n", now=T0) is False
    spec = await store.sends.spec(send.id)
    assert await store.sends.start(spec, node="n", now=T0) is False
    assert (await store.sends.of_campaign(record.id))[0].status == SendStatus.SCHEDULED
    with pytest.raises(StateError, match="campaign news is draft: it cannot schedule"):
        await schedule(store, record.id, [Planned("announce", "announcement", T0)], version=2)
    await store.campaigns.submit(record.id, version=2, actor="ed@example.org", now=T0)
    await store.campaigns.approve(record.id, version=2, snapshot=SNAPSHOT, actor="b", now=T0)
    assert await store.sends.scheduled() == []
    assert await store.sends.claim(send.id, node="n", now=T0) is False
    assert await store.sends.start(spec, node="n", now=T0) is False
    await schedule(store, record.id, [Planned("announce", "announcement", T0)], version=2)
    assert await store.sends.scheduled() == [(send.id, T0)]
    assert await store.sends.start(spec, node="n", now=T0) is True


async def test_a_campaign_whose_sending_started_can_no_longer_be_edited(store: Store) -> None:
    await seed(store)
    record = await approved(store)
    await schedule(store, record.id, [Planned("announce", "announcement", T0)])
    (send,) = await store.sends.of_campaign(record.id)
    assert await store.sends.start(await store.sends.spec(send.id), node="n", now=T0)
    assert (await store.campaigns.record("news")).started is True
    with pytest.raises(StateError, match="its sending has started"):
        await draft(store, expected=1)


async def test_a_new_schedule_moves_drops_and_keeps_what_ended(store: Store) -> None:
    """Re-planned: a scheduled send moves, one no longer planned is cancelled with the reason,
    one that ended stays as it was, a new key is made."""
    await seed(store)
    record = await approved(store)
    first = [
        Planned("invitation", "invitation", T0),
        Planned("reminder:P7D", "reminder", LATER - timedelta(days=7)),
        Planned("reminder:P1D", "reminder", LATER - timedelta(days=1)),
    ]
    await schedule(store, record.id, first)
    sends = {s.key: s.id for s in await store.sends.of_campaign(record.id)}
    from mailer.lifecycle import SendMove

    assert await store.sends.move(sends["invitation"], SendMove.CANCEL, now=T0, reason="x")
    await draft(store, expected=1)
    await store.campaigns.submit(record.id, version=2, actor="e", now=T0)
    await store.campaigns.approve(record.id, version=2, snapshot=SNAPSHOT, actor="b", now=T0)
    later = LATER + timedelta(days=2)
    second = [
        Planned("invitation", "invitation", T0 + timedelta(hours=1)),
        Planned("reminder:P7D", "reminder", later - timedelta(days=7)),
        Planned("reminder:PT2H", "reminder", later - timedelta(hours=2)),
    ]
    result = await schedule(store, record.id, second, version=2, now=T0 + timedelta(minutes=1))
    assert (result.created, result.moved, result.dropped) == (
        ["reminder:PT2H"], ["reminder:P7D"], ["reminder:P1D"],
    )  # fmt: skip
    assert await by_key(store, record.id) == {
        "invitation": (SendStatus.CANCELLED, T0, "x"),
        "reminder:P7D": (SendStatus.SCHEDULED, later - timedelta(days=7), None),
        "reminder:P1D": (SendStatus.CANCELLED, LATER - timedelta(days=1), "the campaign changed"),
        "reminder:PT2H": (SendStatus.SCHEDULED, later - timedelta(hours=2), None),
    }


def event(start: datetime, place: str) -> EventInfo:
    return EventInfo(
        uid="news@example.org", title="Journée", start=start, end=None,
        timezone="Europe/Paris", place=place,
    )  # fmt: skip


async def test_the_event_is_stored_then_replaced_in_place_while_nothing_was_sent(
    store: Store,
) -> None:
    """Scheduled once (the event stored, SEQUENCE 0), edited and scheduled again: the event's
    details are replaced, its SEQUENCE unchanged (nobody had it yet)."""
    await seed(store)
    record = await approved(store)
    planned = [Planned("invitation", "invitation", T0)]
    await schedule(store, record.id, planned, event=event(LATER, "Salle A"))
    stored = await store.campaigns.event(record.id)
    assert stored is not None
    assert (stored.place, stored.start, stored.sequence) == ("Salle A", LATER, 0)
    await draft(store, expected=1)
    await store.campaigns.submit(record.id, version=2, actor="e", now=T0)
    await store.campaigns.approve(record.id, version=2, snapshot=SNAPSHOT, actor="b", now=T0)
    moved = LATER + timedelta(days=1)
    await schedule(store, record.id, planned, version=2, event=event(moved, "Salle B"))
    stored = await store.campaigns.event(record.id)
    assert stored is not None
    assert (stored.place, stored.start, stored.sequence, stored.uid) == (
        "Salle B", moved, 0, "news@example.org",
    )  # fmt: skip


async def test_a_schedule_that_fails_midway_changes_nothing(store: Store) -> None:
    """ONE transaction: a planned send that cannot be stored leaves the campaign approved,
    its event unstored and no send made."""
    await seed(store)
    record = await approved(store)
    bad = [Planned("invitation", "invitation", T0), Planned("x", "no such action", T0)]
    with pytest.raises(ValueError, match="no such action"):
        await schedule(store, record.id, bad, event=event(LATER, "Salle A"))
    assert (await store.campaigns.record("news")).status == CampaignStatus.APPROVED
    assert await store.sends.of_campaign(record.id) == []
    assert await store.campaigns.event(record.id) is None


async def test_a_schedule_that_approves_itself_records_who_from_a_draft(store: Store) -> None:
    """Approval not required (or a file's `campaign create`): a draft is scheduled and the
    approval recorded with the snapshot; a paused campaign is not scheduled that way."""
    await seed(store)
    record = await draft(store)
    with pytest.raises(StateError, match="campaign news is draft: it cannot schedule"):
        await schedule(store, record.id, [Planned("announce", "announcement", T0)])
    await schedule(
        store, record.id, [Planned("announce", "announcement", T0)],
        approved_by="boss@example.org", snapshot=SNAPSHOT, now=LATER,
    )  # fmt: skip
    done = await store.campaigns.record("news")
    assert (done.status, done.approved_by, done.approved_at, done.approval) == (
        CampaignStatus.SCHEDULED, "boss@example.org", LATER, SNAPSHOT,
    )  # fmt: skip
    assert len(await store.sends.scheduled()) == 1
    await store.campaigns.pause(record.id, now=LATER)
    with pytest.raises(StateError, match="campaign news is paused: it cannot schedule"):
        await schedule(store, record.id, [], approved_by="boss@example.org")


async def test_a_file_saved_by_the_cli_is_approved_and_sends(store: Store) -> None:
    """`campaign create` (save) records the operator's approval ("cli" until it says who),
    bumps the version at each save; without an approver it stores an unapproved draft."""
    await seed(store)
    save: dict[str, Any] = {
        "list_slugs": ["researchers"], "sender_name": None, "sender_address": None,
        "event": None, "now": T0,
    }  # fmt: skip
    campaign_id = await store.campaigns.save(content(), **save)
    record = await store.campaigns.record("news")
    assert (record.status, record.version, record.approved_by) == ("scheduled", 1, "cli")
    await store.sends.create(campaign_id, key="announce", action="announcement", due_at=T0, now=T0)
    assert len(await store.sends.scheduled()) == 1
    await store.campaigns.save(content(), **save, approved_by="cli:ops", spec={"name": "news"})
    record = await store.campaigns.record("news")
    assert (record.version, record.approved_by, record.spec) == (2, "cli:ops", {"name": "news"})
    await store.campaigns.save(content(name="held"), **save, approved_by=None)
    held = await store.campaigns.record("held")
    assert (held.status, held.approved_at) == (CampaignStatus.DRAFT, None)


async def test_the_listing_leaves_out_the_confirmation_campaigns_and_filters(
    store: Store,
) -> None:
    await seed(store)
    record = await approved(store)
    await schedule(store, record.id, [Planned("announce", "announcement", LATER)])
    await store.campaigns.save_draft(
        content(name="ev", kind="event"), spec={}, list_slugs=["researchers"],
        sender_name=None, sender_address=None, options={}, expected_version=None,
        actor="ed@example.org", now=T0,
    )  # fmt: skip
    list_id = await store.lists.id_of("researchers")
    async with store.db.begin(write=True) as conn:
        confirm_id = await confirm_campaign(
            conn, PublicList(id=list_id, slug="researchers", title="R", default_locale="fr"),
            timezone="Europe/Paris", now=T0,
        )  # fmt: skip
    everything = await store.campaigns.listing()
    assert [(c.name, c.status, c.next_due, c.sends) for c in everything] == [
        ("ev", "draft", None, 0), ("news", "scheduled", LATER, 1),
    ]  # fmt: skip
    assert [c.name for c in await store.campaigns.listing(kind="event")] == ["ev"]
    assert [c.name for c in await store.campaigns.listing(status="scheduled")] == ["news"]
    # The system's confirmation campaign is approved by "system": its mails are not held.
    confirm = await store.campaigns.get("confirm:researchers")
    assert confirm.id == confirm_id
    assert (await store.campaigns.record("confirm:researchers")).approved_by == "system"
