"""Console pages: a campaign's controls once scheduled. Pause, resume and cancel (sender), as
``mailer campaign pause|resume|cancel`` make them (the lifecycle's check first, its words
when it refuses); an event's update (new time, place, link or title: a form, then a review of
:func:`mailer.workflow.events.plan_update` saying which reminders move and who gets the
update, then :func:`~mailer.workflow.events.apply_update`) and its cancellation (who gets the
cancellation, then :func:`~mailer.workflow.events.apply_cancel`). Each is a confirmation page
whose ``POST`` does it; each change is written to the audit log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailer import campaigns as campaign_files
from mailer.errors import EVENT_MOVED_MEANWHILE, ConfigError, MailerError, NotFoundError, StateError
from mailer.lifecycle import EVENT_MOVABLE, CampaignMove, SendMove, check_campaign, send_sources
from mailer.models import CampaignKind, CampaignRecord, CampaignStatus, EventInfo, Role, SendStatus
from mailer.web.console.campaign_form import GENERAL, split_error
from mailer.web.console.campaigns import (
    done_url,
    find,
    key_words,
    model_said,
    page_of,
    refused,
    status_words,
)
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, ConsoleView, form_of
from mailer.workflow import events as event_changes

EVENT_FIELDS = ("title", "start", "end", "place", "link")
CANCELLED = "campaign cancelled"  # the reason of the sends a campaign's cancel stops


# --- pause, resume, cancel ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Control:
    """One control of a campaign: its move, the sends it reaches, what it does."""

    name: str  # pause, resume, cancel (the URL and the words' keys)
    move: CampaignMove
    reaches: tuple[str, ...]  # the statuses of the sends it moves
    run: Callable[[ConsoleContext, CampaignRecord], Awaitable[int]]
    done: str
    offered: tuple[CampaignStatus, ...]  # where the console offers it (the table is wider)


async def _pause(ctx: ConsoleContext, record: CampaignRecord) -> int:
    return await ctx.store.campaigns.pause(record.id, now=ctx.clock())


async def _resume(ctx: ConsoleContext, record: CampaignRecord) -> int:
    """Paused sends go on: those that had started run now (handed to the daemon), the
    others wait for their time again (handed over if it has come)."""
    paused = {s.id for s in await ctx.store.sends.of_campaign(record.id)
              if s.status == SendStatus.PAUSED}  # fmt: skip
    count = await ctx.store.campaigns.resume(record.id, now=ctx.clock())
    now = ctx.clock()
    for send in await ctx.store.sends.of_campaign(record.id):
        due = send.status == SendStatus.RUNNING or (
            send.status == SendStatus.SCHEDULED and send.due_at <= now
        )
        if send.id in paused and due and ctx.on_send is not None:
            ctx.on_send(send.id)
    return count


async def _cancel(ctx: ConsoleContext, record: CampaignRecord) -> int:
    return await ctx.store.campaigns.cancel_sends(record.id, now=ctx.clock(), reason=CANCELLED)


_OPEN = tuple(s for s in CampaignStatus if s not in (CampaignStatus.CANCELLED, CampaignStatus.DONE))
CONTROLS = {
    "pause": Control("pause", CampaignMove.PAUSE, tuple(send_sources(SendMove.PAUSE)), _pause,
                     "paused", (CampaignStatus.SCHEDULED,)),
    "resume": Control("resume", CampaignMove.RESUME, (SendStatus.PAUSED,), _resume, "resumed",
                      (CampaignStatus.PAUSED,)),
    "cancel": Control("cancel", CampaignMove.CANCEL, tuple(send_sources(SendMove.CANCEL)),
                      _cancel, "cancelled", _OPEN),
}  # fmt: skip


def control_view(control: Control) -> ConsoleView:
    async def view(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
        found = await find(ctx, request, staff)
        if isinstance(found, Response):
            return found
        record, say, lang = found, ctx.views.say, staff.lang
        try:
            check_campaign(record.name, record.status, control.move)
        except StateError as exc:
            return refused(ctx, staff, record, model_said(ctx, lang, str(exc)))
        if record.status not in control.offered:
            words = [status_words(ctx, lang, s) for s in (record.status, *control.offered)]
            text = say(lang, "camp_control_refused", status=words[0], allowed=", ".join(words[1:]))
            return refused(ctx, staff, record, text)
        sends = await ctx.store.sends.of_campaign(record.id)
        reached = [s for s in sends if s.status in control.reaches]
        if request.method != "POST" or (await form_of(request)).get("confirm") != "yes":
            count = ctx.views.number(len(reached), lang)
            return ctx.views.render(
                "campaign_confirm.html", lang, title=say(lang, f"camp_{control.name}_title",
                name=record.name), staff=staff, section="campaigns",
                question=say(lang, f"camp_{control.name}_question", name=record.name,
                             count=count),
                notes=[key_words(ctx, lang, s.key, s.action) for s in reached],
                action=f"{page_of(record)}/{control.name}", version=record.version,
                button=say(lang, f"camp_{control.name}_confirm"), back=page_of(record),
            )  # fmt: skip
        moved = await control.run(ctx, record)
        details = {"from": record.status, "sends": moved}
        await ctx.audit(staff, request, f"campaign.{control.name}", record.name, details)
        return RedirectResponse(done_url(record, control.done), status_code=303)

    view.__name__ = f"campaign_{control.name}"
    return view


# --- an event's update -------------------------------------------------------------------------


@dataclass
class EventForm:
    """The event form's values as typed, and what they say: the new event (None while an
    error stands), the reminders asked for, the errors and notes by field."""

    values: dict[str, str]
    event: EventInfo | None = None
    reminders: list[str] | None = None
    zone: ZoneInfo | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _current_values(event: EventInfo) -> dict[str, str]:
    """The stored event as the form shows it: local times in its zone, to the minute."""
    zone = ZoneInfo(event.timezone)
    local = {"start": event.start, "end": event.end}
    values = {k: v.astimezone(zone).strftime("%Y-%m-%dT%H:%M") if v else ""
              for k, v in local.items()}  # fmt: skip
    values.update(title=event.title, place=event.place, link=event.link or "")
    return values


def _read_event(
    ctx: ConsoleContext, record: CampaignRecord, stored: EventInfo, form: Any
) -> EventForm:
    """The posted form over the stored spec's event, validated by the one model; the
    start must be ahead. Errors by field, in the model's words."""
    values = {f: (form.get(f"event.{f}") or "").strip() for f in EVENT_FIELDS}
    reading = EventForm(values)
    spec = dict(record.spec or {})
    section = dict(spec.get("event") or {})
    for name in EVENT_FIELDS:
        if values[name]:
            section[name] = values[name]
        else:
            section.pop(name, None)
    spec["event"] = section
    now = ctx.clock()
    try:
        campaign = campaign_files.from_data(
            spec, source=Path(record.name),
            default_zone=ctx.settings.scheduler.timezone, templates_dir=None,
        )  # fmt: skip
        assert campaign.data.event is not None
        for name in ("start", "end"):
            moment = getattr(campaign.data.event, name)
            if moment is not None:
                note = campaign.local(moment, f"event.{name}")[1]
                if note:
                    reading.notes[f"event.{name}"] = note
        event = campaign.event(domain=ctx.settings.sender.domain, sequence=stored.sequence)
    except campaign_files.CampaignFileError as exc:
        known = [f"event.{f}" for f in EVENT_FIELDS]
        for line in str(exc).splitlines():
            name, message = split_error(line, record.name, known=known)
            reading.errors.setdefault(name, []).append(message)
        return reading
    assert event is not None
    if event.start <= now:
        reading.errors.setdefault("event.start", []).append(
            "the new start has passed; an event is moved to a time ahead"
        )
        return reading
    reading.event = replace(event, invite=stored.invite, day_seconds=stored.day_seconds)
    reading.reminders = list(campaign.data.event.reminders)
    reading.zone = campaign.zone
    return reading


def _event_page(
    ctx: ConsoleContext, staff: Staffer, record: CampaignRecord, reading: EventForm, *,
    change: event_changes.EventChange | None = None, sequence: int, status: int = 200,
) -> Response:  # fmt: skip
    say, lang = ctx.views.say, staff.lang
    zone = record.timezone
    moved = []
    if change is not None:
        moved = [(key_words(ctx, lang, key, "reminder"), ctx.views.when(old, lang, zone),
                  ctx.views.when(new, lang, zone)) for key, old, new in change.moved]  # fmt: skip
    errors = reading.errors
    general = errors.get(GENERAL, [])
    return ctx.views.render(
        "campaign_event.html", lang, title=say(lang, "camp_event_update_title", name=record.name),
        staff=staff, section="campaigns", record=record, values=reading.values, event_zone=zone,
        errors={k: [model_said(ctx, lang, m) for m in v] for k, v in errors.items()},
        notes=reading.notes, change=change, moved=moved,
        words=lambda keys: [key_words(ctx, lang, k, "reminder") for k in keys],
        error=" ".join(model_said(ctx, lang, m) for m in general) or None,
        version=record.version, sequence=sequence, status=status,
    )  # fmt: skip


async def _event_of(
    ctx: ConsoleContext, staff: Staffer, record: CampaignRecord
) -> EventInfo | Response:
    say = ctx.views.say
    if record.kind != CampaignKind.EVENT:
        return refused(ctx, staff, record, say(staff.lang, "camp_not_event"))
    event = await ctx.store.campaigns.event(record.id)
    if event is None:
        return refused(ctx, staff, record, say(staff.lang, "camp_not_event"))
    if event.status == "cancelled":
        return refused(ctx, staff, record, say(staff.lang, "camp_event_is_cancelled"))
    if record.status not in EVENT_MOVABLE:  # a draft's event is edited, not moved
        said = f"the campaign is {record.status}: its event cannot be moved"
        return refused(ctx, staff, record, model_said(ctx, staff.lang, said))
    return event


async def event_view(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``/admin/campaigns/{name}/event``: the form (``GET``), its review (``POST`` with
    ``step=review``), the move (``POST`` with ``step=apply``, the same values)."""
    found = await find(ctx, request, staff)
    if isinstance(found, Response):
        return found
    record = found
    stored = await _event_of(ctx, staff, record)
    if isinstance(stored, Response):
        return stored
    if request.method != "POST":
        return _event_page(
            ctx, staff, record, EventForm(_current_values(stored)), sequence=stored.sequence
        )
    form = await form_of(request)
    step = form.get("step")
    if step not in ("review", "apply"):
        return _event_page(
            ctx, staff, record, EventForm(_current_values(stored)), sequence=stored.sequence
        )
    reading = _read_event(ctx, record, stored, form)
    if form.get("sequence") != str(stored.sequence):  # the form was shown before another move
        reading.errors = {GENERAL: [EVENT_MOVED_MEANWHILE]}
        return _event_page(ctx, staff, record, reading, sequence=stored.sequence, status=409)
    if reading.event is None or reading.reminders is None or reading.zone is None:
        return _event_page(ctx, staff, record, reading, sequence=stored.sequence, status=400)
    now = ctx.clock()
    try:
        change = await event_changes.plan_update(
            ctx.store, record.id, reading.event, reading.reminders, reading.zone, now
        )
        if step == "review":
            return _event_page(ctx, staff, record, reading, change=change, sequence=stored.sequence)
        done = await event_changes.apply_update(ctx.store, change, reading.event, now)
    except (StateError, ConfigError, NotFoundError, MailerError) as exc:
        reading.errors = {GENERAL: [str(exc)]}
        return _event_page(ctx, staff, record, reading, sequence=stored.sequence, status=409)
    if done.update_send is not None and ctx.on_send is not None:
        ctx.on_send(done.update_send)
    details = {
        "start": reading.event.start.isoformat(), "place": reading.event.place,
        "sequence": done.sequence, "moved": ", ".join(done.rescheduled),
        "cancelled": ", ".join(done.cancelled),
        "update_to": done.update_to,
    }  # fmt: skip
    await ctx.audit(staff, request, "event.update", record.name, details)
    return RedirectResponse(done_url(record, "event_updated"), status_code=303)


async def event_cancel_view(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``/admin/campaigns/{name}/event-cancel``: who gets the cancellation, then do it."""
    found = await find(ctx, request, staff)
    if isinstance(found, Response):
        return found
    record, say, lang = found, ctx.views.say, staff.lang
    stored = await _event_of(ctx, staff, record)
    if isinstance(stored, Response):
        return stored
    now = ctx.clock()
    try:
        plan = await event_changes.plan_cancel(ctx.store, record.id, now, name=record.name)
    except (ConfigError, StateError) as exc:
        return refused(ctx, staff, record, model_said(ctx, lang, str(exc)))
    if request.method != "POST" or (await form_of(request)).get("confirm") != "yes":
        who = (say(lang, "camp_event_cancel_to", count=ctx.views.number(plan.cancellation_to, lang))
               if plan.cancellation_to else say(lang, "camp_event_cancel_nobody"))  # fmt: skip
        return ctx.views.render(
            "campaign_confirm.html", lang, title=say(lang, "camp_event_cancel_title",
            name=record.name), staff=staff, section="campaigns",
            question=say(lang, "camp_event_cancel_question", name=record.name,
                         count=ctx.views.number(len(plan.pending), lang), who=who),
            notes=[key_words(ctx, lang, key, "") for key in plan.pending],
            action=f"{page_of(record)}/event-cancel", version=record.version,
            button=say(lang, "camp_event_cancel_confirm"), back=page_of(record),
        )  # fmt: skip
    try:
        done = await event_changes.apply_cancel(ctx.store, plan, now, name=record.name)
    except (ConfigError, StateError) as exc:
        return refused(ctx, staff, record, model_said(ctx, lang, str(exc)))
    if done.notice_send is not None and ctx.on_send is not None:
        ctx.on_send(done.notice_send)
    details = {"stopped": done.stopped, "cancellation_to": done.cancellation_to,
               "sequence": done.sequence}  # fmt: skip
    await ctx.audit(staff, request, "event.cancel", record.name, details)
    return RedirectResponse(done_url(record, "event_cancelled"), status_code=303)


ROUTES: tuple[ConsoleRoute, ...] = (
    *(
        ConsoleRoute(f"/campaigns/{{name}}/{name}", control_view(c), Role.SENDER, Role.SENDER)
        for name, c in CONTROLS.items()
    ),
    ConsoleRoute("/campaigns/{name}/event", event_view, Role.SENDER, Role.SENDER),
    ConsoleRoute("/campaigns/{name}/event-cancel", event_cancel_view, Role.SENDER, Role.SENDER),
)
