"""The REST API's event changes (``campaigns:send``), as the console's event pages and
``mailer event update|cancel`` make them through :mod:`mailer.workflow.events`: a move (new
start, end, place, title, link or reminders) planned first, what it re-plans said (which
reminders move, are dropped, cancelled or made for the new date, who gets the update), then
applied; a cancellation (the sends that stop, who gets the cancellation). ``?dry_run=true``
answers the plan and writes nothing.

The new details are merged into the stored spec's ``[event]`` and validated by the one
campaign model, so a local time in a DST gap is refused and one in the autumn fold noted in
the CLI's words. The event's ``ETag`` is its SEQUENCE (``"e2"``): a move with ``If-Match`` of
another is refused with 412 (someone moved it meanwhile).
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mailer import campaigns as campaign_files
from mailer.errors import EVENT_MOVED_MEANWHILE, MailerError
from mailer.lifecycle import EVENT_MOVABLE
from mailer.models import CampaignKind, CampaignRecord, EventInfo, EventStatus, Scope
from mailer.schedule import ScheduleError
from mailer.web.api.campaign_steps import DryRun
from mailer.web.api.campaigns import EventOut, event_out, file_errors, find, refused
from mailer.web.api.core import Answer, ApiRoute, Call
from mailer.web.api.problems import Problem, invalid
from mailer.workflow import events as event_changes

_SEQUENCE_TAG = re.compile(r'^(?:W/)?"e(\d{1,9})"$')
CLEARABLE = ("end", "place", "link", "description")


class EventPatch(BaseModel):
    """The event's new details (absent: unchanged; null clears end, place, link or
    description). Local times are in the campaign's zone unless they carry an offset."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=300)
    start: datetime | None = None
    end: datetime | None = None
    place: str | None = Field(default=None, max_length=500)
    link: str | None = Field(default=None, max_length=2000)
    description: str | None = Field(default=None, max_length=10_000)
    reminders: list[str] | None = Field(
        default=None, max_length=20, description='Offsets before the start: "7d", "1d", "2h".'
    )


class ReminderMove(BaseModel):
    key: str
    due_was: datetime
    due_at: datetime


class EventMove(BaseModel):
    """What moving the event does (or did, once ``applied``)."""

    applied: bool
    sequence: int = Field(description="The event's SEQUENCE after the move.")
    moved: list[ReminderMove] = Field(description="Scheduled reminders due at a new time.")
    created: list[str] = Field(description="Reminders made for the new date.")
    dropped: list[str] = Field(description="Scheduled reminders that will not go.")
    cancelled: list[str] = Field(description="Reminders paused or running for the old date.")
    update_to: int = Field(description="How many people get the update (0: nobody invited).")
    update_send: int | None = Field(description="The update's send, once applied.")
    notes: list[str] = Field(description="A local time in the autumn fold, and which one.")
    event: EventOut


class EventCancelled(BaseModel):
    """What cancelling the event does (or did, once ``applied``)."""

    applied: bool
    stopping: list[str] = Field(description="The sends that stop (scheduled, running, paused).")
    cancellation_to: int = Field(description="How many get the cancellation (0: nobody).")
    sequence: int
    stopped: int = Field(description="Sends stopped, once applied.")
    notice_send: int | None = Field(description="The cancellation's send, once applied.")


def _tag(event: EventInfo) -> str:
    return f'"e{event.sequence}"'


async def _event_of(call: Call, record: CampaignRecord) -> EventInfo:
    """The campaign's event, if it can be changed now (409 saying why not)."""
    event = await call.store.campaigns.event(record.id)
    if record.kind != CampaignKind.EVENT or event is None:
        raise refused(f"campaign {record.name} is not an event campaign")
    if event.status == EventStatus.CANCELLED:
        raise refused("the event is cancelled: it can no longer be changed")
    if record.status not in EVENT_MOVABLE:  # a draft's event is edited, not moved
        raise refused(f"the campaign is {record.status}: its event cannot be moved (edit the "
                      "draft instead, or schedule it first)")  # fmt: skip
    given = call.request.headers.get("if-match")
    if given is not None and given.strip() != "*":
        tags = [_SEQUENCE_TAG.match(t.strip()) for t in given.split(",")]
        if not any(t is not None and int(t.group(1)) == event.sequence for t in tags):
            raise Problem(412, f"{EVENT_MOVED_MEANWHILE} (If-Match names another SEQUENCE)",
                          slug="stale", headers={"ETag": _tag(event)})  # fmt: skip
    return event


async def event_get(call: Call) -> Answer:
    record = await find(call)
    event = await call.store.campaigns.event(record.id)
    if event is None:
        raise Problem(404, f"campaign {record.name} has no event")
    return Answer(event_out(event), headers={"ETag": _tag(event)})


def _merged(record: CampaignRecord, given: EventPatch) -> dict[str, Any]:
    """The stored spec with the new details in its ``[event]``."""
    spec = dict(record.spec or {})
    section = dict(spec.get("event") or {})
    for name, value in given.model_dump(exclude_unset=True).items():
        if value is None and name not in CLEARABLE:
            raise invalid(name, "cannot be cleared; leave it out to keep it")
        if value is None:
            section.pop(name, None)
        else:
            section[name] = value.isoformat() if isinstance(value, datetime) else value
    spec["event"] = section
    return spec


def _read(call: Call, record: CampaignRecord, stored: EventInfo, given: EventPatch) -> tuple[
    EventInfo, list[str], campaign_files.Campaign, list[str]
]:  # fmt: skip
    """The moved event validated by the one model, its reminders, its campaign, the notes."""
    try:
        campaign = campaign_files.from_data(
            _merged(record, given), source=Path(record.name),
            default_zone=call.settings.scheduler.timezone, templates_dir=None,
        )  # fmt: skip
        section = campaign.data.event
        assert section is not None
        notes = [
            note
            for name in ("start", "end")
            if (moment := getattr(section, name)) is not None
            and (note := campaign.local(moment, f"event.{name}")[1])
        ]
        event = campaign.event(domain=call.settings.sender.domain, sequence=stored.sequence)
    except campaign_files.CampaignFileError as exc:
        raise file_errors(exc, record.name) from None
    assert event is not None
    if event.start <= call.now:
        raise invalid("event.start", "the new start has passed; an event is moved to a time ahead")
    event = replace(event, invite=stored.invite, day_seconds=stored.day_seconds)
    return event, list(section.reminders), campaign, notes


async def event_update(call: Call) -> Answer:
    """Move the event: its reminders re-planned, those invited sent an update."""
    query: DryRun = call.query
    record = await find(call)
    stored = await _event_of(call, record)
    event, reminders, campaign, notes = _read(call, record, stored, call.body)
    try:
        change = await event_changes.plan_update(
            call.store, record.id, event, reminders, campaign.zone, call.now
        )
        if not query.dry_run:
            change = await event_changes.apply_update(call.store, change, event, call.now)
    except ScheduleError as exc:
        raise invalid("event.reminders", str(exc)) from None
    except MailerError as exc:
        raise refused(exc) from None
    if not query.dry_run:
        if change.update_send is not None and call.ctx.on_send is not None:
            call.ctx.on_send(change.update_send)
        details = {
            "start": event.start.isoformat(), "place": event.place, "sequence": change.sequence,
            "moved": ", ".join(change.rescheduled), "cancelled": ", ".join(change.cancelled),
            "update_to": change.update_to,
        }  # fmt: skip
        await call.audit("event.update", record.name, details)
    now_event = await call.store.campaigns.event(record.id)
    assert now_event is not None
    body = EventMove(
        applied=not query.dry_run, sequence=change.sequence,
        moved=[ReminderMove(key=k, due_was=old, due_at=new) for k, old, new in change.moved],
        created=change.new, dropped=change.dropped, cancelled=change.cancelled_running,
        update_to=change.update_to, update_send=change.update_send, notes=notes,
        event=event_out(now_event if not query.dry_run else event),
    )  # fmt: skip
    return Answer(body, headers={"ETag": _tag(now_event)})


async def event_cancel(call: Call) -> Answer:
    """Cancel the event: its pending sends stop, those invited get a cancellation."""
    query: DryRun = call.query
    record = await find(call)
    await _event_of(call, record)
    try:
        plan = await event_changes.plan_cancel(call.store, record.id, call.now, name=record.name)
        done = plan
        if not query.dry_run:
            done = await event_changes.apply_cancel(call.store, plan, call.now, name=record.name)
    except MailerError as exc:
        raise refused(exc) from None
    if not query.dry_run:
        if done.notice_send is not None and call.ctx.on_send is not None:
            call.ctx.on_send(done.notice_send)
        details = {"stopped": done.stopped, "cancellation_to": done.cancellation_to,
                   "sequence": done.sequence}  # fmt: skip
        await call.audit("event.cancel", record.name, details)
    body = EventCancelled(
        applied=not query.dry_run, stopping=list(plan.pending),
        cancellation_to=done.cancellation_to, sequence=done.sequence, stopped=done.stopped,
        notice_send=done.notice_send,
    )  # fmt: skip
    return Answer(body)


SEND = Scope.CAMPAIGNS_SEND
ROUTES = [
    ApiRoute("GET", "/campaigns/{name}/event", event_get, Scope.CAMPAIGNS_READ,
             "An event campaign's event", answer=EventOut, tag="events", etag=True),
    ApiRoute("PATCH", "/campaigns/{name}/event", event_update, SEND,
             "Move an event (new time, place...)", body=EventPatch, query=DryRun,
             answer=EventMove, tag="events", etag=True, problems=(409,),
             description="Its reminders are re-planned and those invited get an update; "
             "`?dry_run=true` answers what would happen and writes nothing."),
    ApiRoute("POST", "/campaigns/{name}/event/cancel", event_cancel, SEND, "Cancel an event",
             query=DryRun, answer=EventCancelled, tag="events", etag=True, problems=(409,),
             description="Its pending sends stop and those invited get a cancellation; "
             "`?dry_run=true` answers what would happen and writes nothing."),
]  # fmt: skip
