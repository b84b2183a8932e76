"""Console pages: the campaigns' list (``/admin/campaigns``, filtered by kind and status) and a
campaign's page (``/admin/campaigns/{name}``): its summary, its approval panel (who saved,
submitted and approved which version, and the snapshot the approval froze), its event, its
timeline (every send in due order, in words, at its local time, with its counts) and the
actions the staff member's role and the campaign's status allow.

Also what the campaign's other pages share (:mod:`~mailer.web.console.approval`,
:mod:`~mailer.web.console.campaign_control`): finding the campaign a path names (a name that
is not a campaign name, or names none, is a 404 page), its stored spec validated again by the
one model (:func:`mailer.campaigns.from_data`), the words of a send's key, the refusal page.
Reads only; every change is made by those modules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from babel.dates import format_date
from starlette.requests import Request
from starlette.responses import Response

from mailer import campaigns as campaign_files
from mailer.errors import NotFoundError, StaleEdit
from mailer.lifecycle import CampaignMove, campaign_sources
from mailer.models import (
    CONFIRM_KIND,
    CampaignKind,
    CampaignRecord,
    CampaignStatus,
    EventInfo,
    EventStatus,
    Role,
    Send,
)
from mailer.models import Campaign as StoredCampaign
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute
from mailer.web.console.views import BABEL

KINDS = tuple(k.value for k in CampaignKind)
STATUSES = tuple(s.value for s in CampaignStatus)
SUMMARIES_FRESH = 30.0  # seconds the lists' member counts are answered from memory
COUNTS_FRESH = 2.0  # seconds a send's counts are
_OFFSET = re.compile(r"^P(?:T(\d+)([HM])|(\d+)D)$")
# the ?done= notices of the campaign's page after a change
DONE = (
    "submitted", "approved", "sent_back", "scheduled", "paused", "resumed", "cancelled",
    "event_updated", "event_cancelled",
)  # fmt: skip


# --- what the campaign's pages share -------------------------------------------------------------


def name_of(request: Request) -> str | None:
    """The campaign name the path gives, if it can be one (:data:`campaigns.NAME`)."""
    name = str(request.path_params.get("name", ""))
    return name if campaign_files.NAME.match(name) else None


def not_found(ctx: ConsoleContext, staff: Staffer, name: str | None) -> Response:
    say, lang = ctx.views.say, staff.lang
    return ctx.views.render(
        "message.html", lang, title=say(lang, "camp_not_found_title"),
        text=say(lang, "camp_not_found", name=(name or "")[:100]), staff=staff,
        back="/admin/campaigns", section="campaigns", status=404,
    )  # fmt: skip


async def find(ctx: ConsoleContext, request: Request, staff: Staffer) -> CampaignRecord | Response:
    """The campaign the path names, or the 404 page (a system campaign is not staff's)."""
    name = name_of(request)
    if name is None:
        return not_found(ctx, staff, None)
    try:
        record = await ctx.store.campaigns.record(name)
    except NotFoundError:
        return not_found(ctx, staff, name)
    if record.kind == CONFIRM_KIND:
        return not_found(ctx, staff, name)
    return record


def page_of(record: CampaignRecord) -> str:
    return f"/admin/campaigns/{record.name}"


def refused(
    ctx: ConsoleContext, staff: Staffer, record: CampaignRecord, text: str, *, status: int = 409
) -> Response:
    """A page saying why nothing changed, with the way back to the campaign."""
    say, lang = ctx.views.say, staff.lang
    return ctx.views.render(
        "message.html", lang, title=say(lang, "camp_refused_title"), text=text, staff=staff,
        back=page_of(record), section="campaigns", status=status,
    )  # fmt: skip


def model_said(ctx: ConsoleContext, lang: str, message: str) -> str:
    """The model's (or storage's) own words, English as the CLI says them, after a lead in
    the staff member's language."""
    return ctx.views.say(lang, "camp_model_said", message=message)


def stale_text(ctx: ConsoleContext, lang: str, stale: StaleEdit) -> str:
    return ctx.views.say(lang, "camp_stale", message=str(stale))


def stored_campaign(ctx: ConsoleContext, record: CampaignRecord) -> campaign_files.Campaign:
    """The stored spec validated again by the one model; CampaignFileError (in the model's
    words) when it has none (stored before specs) or no longer validates (a template
    removed since, say)."""
    if record.spec is None:
        raise campaign_files.CampaignFileError(
            f"{record.name}: the campaign was stored before the console kept campaigns as "
            "data; create it again from its file (mailer campaign create)"
        )
    settings = ctx.settings
    return campaign_files.from_data(
        dict(record.spec), source=Path(record.name), default_zone=settings.scheduler.timezone,
        templates_dir=settings.paths.templates_dir,
    )  # fmt: skip


def version_of(form: Mapping[str, Any]) -> int | None:
    """The version a form was made for (its hidden field); None if it has none."""
    text = form.get("version")
    if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) < 10:
        return int(text)
    return None


def status_words(ctx: ConsoleContext, lang: str, status: str) -> str:
    key = f"camp_status_{status}"
    return ctx.views.words[lang].get(key, status)


def key_words(ctx: ConsoleContext, lang: str, key: str, action: str) -> str:
    """A send's key in words: the announcement, the invitation, a reminder 7 days before
    (for the date of update 2), update 2, the cancellation, the issue of 1 December 2026."""
    say = ctx.views.say
    base, _, sequence = key.partition("@")
    kind, _, rest = base.partition(":")
    text: str | None = None
    if kind == "announce":
        text = say(lang, "camp_key_announce")
    elif kind == "invitation":
        text = say(lang, "camp_key_invitation")
    elif kind == "reminder":
        text = _reminder_words(ctx, lang, rest)
    elif kind in ("update", "cancellation") and rest.isdigit():
        text = say(lang, f"camp_key_{kind}", n=rest)
    elif kind == "issue":
        try:
            day = date.fromisoformat(rest)
        except ValueError:
            day = None
        if day is not None:
            text = say(
                lang, "camp_key_issue", date=format_date(day, "d MMMM y", locale=BABEL[lang])
            )
    if text is None:
        action_words = ctx.views.words[lang].get(f"sends_action_{action}", action)
        text = f"{action_words} ({key})"
    if sequence.isdigit():
        text += say(lang, "camp_key_for_update", n=sequence)
    return text


def _reminder_words(ctx: ConsoleContext, lang: str, iso: str) -> str | None:
    found = _OFFSET.match(iso)
    if found is None:
        return None
    if found.group(3):
        amount, unit = int(found.group(3)), "day"
    else:
        amount, unit = int(found.group(1)), "hour" if found.group(2) == "H" else "minute"
    plural = "one" if amount == 1 else "many"
    offset = ctx.views.say(lang, f"camp_offset_{unit}_{plural}", n=amount)
    return ctx.views.say(lang, "camp_key_reminder", offset=offset)


async def list_counts(ctx: ConsoleContext, slugs: Sequence[str]) -> dict[str, int | None]:
    """Subscribed members per list (None: the list is gone), from the console's readings."""
    summaries = await ctx.live.get(("summaries",), ctx.store.lists.summaries, fresh=SUMMARIES_FRESH)
    by_slug = {s.slug: s.counts.get("subscribed", 0) for s in summaries}
    return {slug: by_slug.get(slug) for slug in slugs}


# --- the list ------------------------------------------------------------------------------------


async def campaigns_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/campaigns``: every staff campaign, filtered by ``kind`` and ``status``;
    a filter that names nothing is said beside it, and the list shown unfiltered by it."""
    say, lang = ctx.views.say, staff.lang
    params = request.query_params
    errors: dict[str, str] = {}
    chosen: dict[str, str | None] = {}
    for name, allowed in (("kind", KINDS), ("status", STATUSES)):
        value = params.get(name, "")
        chosen[name] = value if value in allowed else None
        if value and value not in allowed:
            errors[name] = say(lang, f"camp_bad_{name}", value=value[:40])
    lines = await ctx.store.campaigns.listing(kind=chosen["kind"], status=chosen["status"])
    return ctx.views.render(
        "campaigns.html", lang, title=say(lang, "camp_list_title"), staff=staff,
        section="campaigns", lines=lines, kinds=KINDS, statuses=STATUSES, chosen=chosen,
        errors=errors, filtered=bool(chosen["kind"] or chosen["status"]),
        status_words=lambda s: status_words(ctx, lang, s), status=400 if errors else 200,
    )  # fmt: skip


# --- a campaign's page ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimelineLine:
    """One send of the campaign, as its timeline shows it."""

    send: Send
    what: str  # in words
    sent: int
    failed: int
    skipped: int


def actions_of(ctx: ConsoleContext, staff: Staffer, record: CampaignRecord) -> list[str]:
    """What the staff member may do with the campaign now, in the page's order: their role
    and the lifecycle's table (and the settings) decide."""
    status = record.status
    found: list[str] = ["preview"]
    if staff.can(Role.EDITOR):
        if not record.started and status in campaign_sources(CampaignMove.EDIT):
            found.append("edit")
        found += ["preflight", "test", "download"]
        if status in campaign_sources(CampaignMove.SUBMIT):
            found.append("submit")
    if staff.can(Role.SENDER):
        if status in campaign_sources(CampaignMove.APPROVE):
            found.append("approve")
        if status in campaign_sources(CampaignMove.RETURN):
            found.append("send-back")
        if status == CampaignStatus.APPROVED or (
            not ctx.settings.console.require_approval
            and status in (CampaignStatus.DRAFT, CampaignStatus.SUBMITTED)
        ):
            found.append("schedule")
        if status in (CampaignStatus.SCHEDULED,):
            found.append("pause")
        if status == CampaignStatus.PAUSED:
            found.append("resume")
        if status not in (CampaignStatus.CANCELLED, CampaignStatus.DONE):
            found.append("cancel")
    return found


def event_actions(staff: Staffer, record: CampaignRecord, event: EventInfo | None) -> list[str]:
    """An event's update and cancellation: a sender's, once its sends are planned."""
    if event is None or not staff.can(Role.SENDER) or event.status == EventStatus.CANCELLED:
        return []
    if record.status not in (CampaignStatus.SCHEDULED, CampaignStatus.PAUSED):
        return []
    return ["event", "event-cancel"]


async def timeline(ctx: ConsoleContext, lang: str, campaign_id: int) -> list[TimelineLine]:
    """Every send of the campaign in due order, with its counts (the console's readings)."""
    sends = sorted(await ctx.store.sends.of_campaign(campaign_id), key=lambda s: (s.due_at, s.id))
    lines = []
    for send in sends:

        async def read(send_id: int = send.id) -> Any:
            return await ctx.store.figures.counts(send_id)

        counts = await ctx.live.get(("send-counts", send.id), read, fresh=COUNTS_FRESH)
        lines.append(
            TimelineLine(send, key_words(ctx, lang, send.key, send.action), counts.sent,
                         counts.failed, counts.skipped)
        )  # fmt: skip
    return lines


async def campaign_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/campaigns/{name}``."""
    found = await find(ctx, request, staff)
    if isinstance(found, Response):
        return found
    return await render_campaign(ctx, request, staff, found)


async def render_campaign(
    ctx: ConsoleContext, request: Request, staff: Staffer, record: CampaignRecord, *,
    error: str | None = None, status: int = 200,
) -> Response:  # fmt: skip
    say, lang = ctx.views.say, staff.lang
    stored: StoredCampaign = await ctx.store.campaigns.get(record.name)
    event = await ctx.store.campaigns.event(record.id)
    done = request.query_params.get("done", "")
    notice = say(lang, f"camp_done_{done}") if done in DONE else None
    languages = [t.locale for t in stored.texts]
    if not languages and record.spec:
        languages = list((record.spec.get("content") or {}).keys())
    approval = record.approval or {}
    sender = ctx.settings.sender
    return ctx.views.render(
        "campaign.html", lang, title=say(lang, "camp_title", name=record.name), staff=staff,
        section="campaigns", record=record, stored=stored, event=event,
        lists=await list_counts(ctx, record.lists), languages=languages,
        sender_name=stored.sender_name or sender.from_name,
        sender_address=stored.sender_address or sender.from_address,
        snapshot=approval, require_approval=ctx.settings.console.require_approval,
        lines=await timeline(ctx, lang, record.id), actions=actions_of(ctx, staff, record),
        event_actions=event_actions(staff, record, event), notice=notice, error=error,
        status_words=lambda s: status_words(ctx, lang, s), status=status,
    )  # fmt: skip


def done_url(record: CampaignRecord, done: str) -> str:
    return f"{page_of(record)}?{urlencode({'done': done})}"


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("/campaigns", campaigns_page),
    ConsoleRoute("/campaigns/{name}", campaign_page),
)
