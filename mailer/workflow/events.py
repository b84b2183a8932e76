"""An event's changes, planned before they are applied: moving it (new time or place) and
cancelling it. ``plan_*`` reads the store and says what would happen, writing nothing (the
console's confirmation pages, "who will get what"); ``apply_*`` does it, planning again
first and refusing (StateError) when that plan is no longer the one shown.

Moving an event re-plans its reminders: per offset, a reminder still to go (scheduled)
moves to its new time, or is dropped when that has passed or the offset is gone; one paused
or running (for the old date) is cancelled. An offset still ahead whose reminder went out
for the old date (done, missed, or replaced here) gets a new send keyed by the event's
SEQUENCE ("reminder:P7D@2"), so it goes out again for the new date; one that staff
cancelled stays cancelled. Those invited get an update (``update:<sequence>``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from mailer.errors import ConfigError, StateError
from mailer.lifecycle import SendMove, send_sources
from mailer.models import EventInfo, EventStatus, Send, SendAction, SendStatus
from mailer.schedule import Planned, reminders
from mailer.storage import Store

MOVED = "the event moved"  # the reason of a reminder the event's move replaced
CANCELLED = "event cancelled"  # the reason of the sends an event's cancellation stops
EVENT_MAILS = (SendAction.INVITATION, SendAction.REMINDER, SendAction.UPDATE)  # in calendars


@dataclass(frozen=True, slots=True)
class Step:
    """One change to a reminder: ``cancel`` (paused or running for the old date), ``drop``
    (scheduled, no longer wanted), ``move`` (scheduled, to ``due``), ``create``."""

    what: str
    key: str
    send_id: int | None
    old_due: datetime | None
    due: datetime | None


@dataclass(frozen=True, slots=True)
class EventChange:
    """What moving an event does (planned, or done once applied)."""

    campaign_id: int
    reminders: tuple[str, ...]  # the offsets asked for ("7d", "1d")
    zone: str
    steps: tuple[Step, ...]
    update_to: int  # who got a mail of the event and gets the update; 0: nobody invited yet
    sequence: int  # the event's SEQUENCE after the move
    update_send: int | None = None  # once applied: the update's send (None: nobody invited)

    @property
    def moved(self) -> list[tuple[str, datetime, datetime]]:
        """(key, old due, new due) of the scheduled reminders that move."""
        return [(s.key, s.old_due, s.due) for s in self.steps
                if s.what == "move" and s.old_due is not None and s.due is not None]  # fmt: skip

    @property
    def dropped(self) -> list[str]:
        """Scheduled reminders that will not go (their time passed, or their offset gone)."""
        return [s.key for s in self.steps if s.what == "drop"]

    @property
    def new(self) -> list[str]:
        """Reminders made for the new date."""
        return [s.key for s in self.steps if s.what == "create"]

    @property
    def cancelled_running(self) -> list[str]:
        """Reminders paused or running for the old date, cancelled (and replaced)."""
        return [s.key for s in self.steps if s.what == "cancel"]

    @property
    def rescheduled(self) -> list[str]:
        """The reminders due at a new time: those moved, then those made for the new date."""
        return [key for key, _, _ in self.moved] + self.new

    @property
    def cancelled(self) -> list[str]:
        """The reminders that will not go: cancelled or dropped, in the order planned."""
        return [s.key for s in self.steps if s.what in ("cancel", "drop")]

    def same_plan(self, other: EventChange) -> bool:
        return (self.steps, self.sequence, self.update_to) == (
            other.steps, other.sequence, other.update_to
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class EventCancel:
    """What cancelling an event does: the sends that stop, who gets the cancellation."""

    campaign_id: int
    pending: list[str]  # keys of the sends that stop (scheduled, running, paused)
    cancellation_to: int  # who got a mail of the event; 0: nobody was invited
    sequence: int  # the event's SEQUENCE after the cancellation
    stopped: int = 0  # once applied: how many sends stopped
    notice_send: int | None = None  # once applied: the cancellation's send


async def plan_update(
    store: Store,
    campaign_id: int,
    event: EventInfo,
    reminder_offsets: list[str],
    zone: ZoneInfo,
    now: datetime,
) -> EventChange:
    """What moving the event to ``event`` (its new details) does; nothing written.
    ScheduleError when a reminder cannot be planned (a local time that does not exist);
    StateError when the campaign has no event."""
    stored = await store.campaigns.event(campaign_id)
    if stored is None:
        raise StateError("this campaign has no event")
    if stored.status == EventStatus.CANCELLED:
        raise StateError("the event is cancelled: it cannot be moved")
    planned, _ = reminders(
        event.start, reminder_offsets, now=now, zone=zone, scale=stored.day_seconds / 86400
    )
    sequence = stored.sequence + 1
    sends = await store.sends.of_campaign(campaign_id)
    reached = await _reached(store, sends) if _invited(sends, await _counts(store, sends)) else 0
    return EventChange(
        campaign_id=campaign_id, reminders=tuple(reminder_offsets), zone=zone.key,
        steps=tuple(_steps(sends, planned, sequence)), update_to=reached, sequence=sequence,
    )  # fmt: skip


async def apply_update(
    store: Store, change: EventChange, event: EventInfo, now: datetime
) -> EventChange:
    """Move the event as ``change`` planned it: its details (SEQUENCE one more), the
    reminders, and the update to those invited. StateError, nothing written, when the plan
    made now differs from ``change`` (someone changed the campaign's sends meanwhile)."""
    fresh = await plan_update(
        store, change.campaign_id, event, list(change.reminders), ZoneInfo(change.zone), now
    )
    if not fresh.same_plan(change):
        raise StateError("the event's sends changed since this was planned; look at the plan again")
    zone = ZoneInfo(change.zone)
    sequence = await store.campaigns.update_event(
        change.campaign_id, event, status=EventStatus.CONFIRMED, now=now,
        expected_sequence=change.sequence - 1, spec_event=_spec_event(event, change, zone),
        spec_words={t.locale: {"title": t.title, "place": t.place,
                               "description": t.description} for t in event.texts},
    )  # fmt: skip
    steps = []
    for step in fresh.steps:
        if step.what == "cancel" and step.send_id is not None:
            await store.sends.move(step.send_id, SendMove.CANCEL, now=now, reason=MOVED)
        elif step.what == "drop" and step.send_id is not None:
            await store.sends.move(step.send_id, SendMove.DROP, now=now, reason=MOVED)
        elif step.what == "move" and step.send_id is not None and step.due is not None:
            await store.sends.reschedule(step.send_id, step.due, now=now)
        elif step.what == "create" and step.due is not None:
            _, new = await store.sends.create(
                change.campaign_id, key=step.key, action=SendAction.REMINDER, due_at=step.due,
                now=now,
            )  # fmt: skip
            if not new:
                continue
        steps.append(step)
    update_send = None
    sends = await store.sends.of_campaign(change.campaign_id)
    invitation = next((s for s in sends if s.key == "invitation"), None)
    if invitation is not None and fresh.update_to:
        update_send, _ = await store.sends.create(
            change.campaign_id, key=f"update:{sequence}", action=SendAction.UPDATE, due_at=now,
            now=now, audience_send_id=invitation.id,
        )  # fmt: skip
    return replace(fresh, steps=tuple(steps), sequence=sequence, update_send=update_send)


def _spec_event(event: EventInfo, change: EventChange, zone: ZoneInfo) -> dict[str, Any]:
    """The moved event as a campaign file's ``[event]`` says it (times at their offset in
    the campaign's zone: the same instants read back, in the fold too)."""
    return {
        "title": event.title, "start": event.start.astimezone(zone).isoformat(),
        "end": None if event.end is None else event.end.astimezone(zone).isoformat(),
        "place": event.place, "link": event.link, "description": event.description,
        "reminders": list(change.reminders),
    }  # fmt: skip


async def plan_cancel(
    store: Store, campaign_id: int, now: datetime, *, name: str = "this campaign"
) -> EventCancel:
    """What cancelling the event does; nothing written. ConfigError when the campaign has
    no event invitation (``name`` names it)."""
    sends = await store.sends.of_campaign(campaign_id)
    invitation = next((s for s in sends if s.key == "invitation"), None)
    if invitation is None:
        raise ConfigError(f"campaign {name} has no event invitation")
    stored = await store.campaigns.event(campaign_id)
    if stored is None:
        raise ConfigError(f"campaign {name} has no event")
    stopping = set(send_sources(SendMove.CANCEL))
    reached = await _reached(store, sends) if _invited(sends, await _counts(store, sends)) else 0
    return EventCancel(
        campaign_id=campaign_id, pending=[s.key for s in sends if s.status in stopping],
        cancellation_to=reached, sequence=stored.sequence + 1,
    )  # fmt: skip


async def apply_cancel(
    store: Store, cancel: EventCancel, now: datetime, *, name: str = "this campaign"
) -> EventCancel:
    """Cancel the event: its pending sends stop, the campaign is cancelled, the event's
    SEQUENCE grows, and those invited get a cancellation (METHOD:CANCEL)."""
    sends = await store.sends.of_campaign(cancel.campaign_id)
    invitation = next((s for s in sends if s.key == "invitation"), None)
    if invitation is None:
        raise ConfigError(f"campaign {name} has no event invitation")
    spec = await store.sends.spec(invitation.id)
    if spec.event is None:
        raise ConfigError(f"campaign {name} has no event")
    stopped = await store.campaigns.cancel_sends(cancel.campaign_id, now=now, reason=CANCELLED)
    sequence = await store.campaigns.update_event(
        cancel.campaign_id, spec.event, status=EventStatus.CANCELLED, now=now
    )
    notice = None
    if (await store.figures.counts(invitation.id)).sent:
        notice, _ = await store.sends.create(
            cancel.campaign_id, key=f"cancellation:{sequence}", action=SendAction.CANCELLATION,
            due_at=now, now=now, audience_send_id=invitation.id,
        )  # fmt: skip
    return replace(cancel, sequence=sequence, stopped=stopped, notice_send=notice)


def _steps(sends: list[Send], planned: list[Planned], sequence: int) -> list[Step]:
    """The reminders for the new date (the rule in the module's docstring)."""
    wanted = {p.key: p.due for p in planned}
    by_offset: dict[str, list[Send]] = {}
    for s in sends:
        if s.action == SendAction.REMINDER:
            by_offset.setdefault(s.key.partition("@")[0], []).append(s)
    steps: list[Step] = []
    replaced: set[str] = set()
    for offset, group in by_offset.items():
        for s in group:
            if s.status in (SendStatus.PAUSED, SendStatus.RUNNING):
                steps.append(Step("cancel", s.key, s.id, s.due_at, None))
                replaced.add(offset)
            elif s.status == SendStatus.SCHEDULED:
                due = wanted.pop(offset, None)
                what = "drop" if due is None else "move"
                steps.append(Step(what, s.key, s.id, s.due_at, due))
    for offset, due in wanted.items():
        group = by_offset.get(offset, [])
        went = offset in replaced or any(
            s.status in (SendStatus.DONE, SendStatus.MISSED)
            or (s.status == SendStatus.CANCELLED and s.reason == MOVED)
            for s in group
        )
        if group and not went:
            continue  # staff cancelled this reminder: the move does not bring it back
        steps.append(Step("create", f"{offset}@{sequence}" if group else offset, None, None, due))
    return steps


async def _counts(store: Store, sends: list[Send]) -> int:
    """How many the invitation reached (0: none, or no invitation)."""
    invitation = next((s for s in sends if s.key == "invitation"), None)
    return 0 if invitation is None else (await store.figures.counts(invitation.id)).sent


def _invited(sends: list[Send], invitation_sent: int) -> bool:
    return invitation_sent > 0 and any(s.key == "invitation" for s in sends)


async def _reached(store: Store, sends: list[Send]) -> int:
    """Everyone one of the event's mails reached (invitation, reminders, updates), once:
    those its update or cancellation goes to."""
    people: set[str] = set()
    for s in sends:
        if s.action in EVENT_MAILS:
            async for row in store.figures.report(s.id):
                if row.status == "sent":
                    people.add(row.email.lower())
    return len(people)
