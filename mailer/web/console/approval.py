"""Console pages: a campaign's approval. Submit (editor: draft -> submitted), approve (sender:
submitted -> approved, freezing the snapshot of :func:`mailer.workflow.approval.snapshot`),
send back (sender: -> draft) and schedule (sender: its sends planned by
:func:`mailer.workflow.scheduling.schedule_campaign`), each a confirmation page whose ``POST``
does it.

Every form carries the version it was shown for: a ``POST`` for another version than the one
stored changes nothing and says who changed it when ("changed by X at T"). A move the
lifecycle refuses says why in its words. With ``MAILER_CONSOLE__ALLOW_SELF_APPROVAL=false``
(the default) whoever last saved or submitted the campaign may not approve it; with
``MAILER_CONSOLE__REQUIRE_APPROVAL=false`` a sender may schedule a draft directly, recorded as
approved by them with the note saying so. Sends due now are handed to the daemon
(``on_send``); every change is written to the audit log.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailer import campaigns as campaign_files
from mailer.errors import NotFoundError, StaleEdit, StateError
from mailer.lifecycle import CampaignMove, check_campaign, check_schedule
from mailer.models import CampaignRecord, CampaignStatus, Role, SendStatus
from mailer.web.console.campaigns import (
    done_url,
    find,
    key_words,
    model_said,
    page_of,
    refused,
    stale_text,
    stored_campaign,
    version_of,
)
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, ConsoleView, form_of
from mailer.workflow import approval as approvals
from mailer.workflow.scheduling import schedule_campaign

Check = Callable[[ConsoleContext, Staffer, CampaignRecord], Response | None]
Page = Callable[[ConsoleContext, Staffer, CampaignRecord], Awaitable[Response]]
Run = Callable[[ConsoleContext, Request, Staffer, CampaignRecord, int], Awaitable[Response]]


def _lifecycle(move: CampaignMove) -> Check:
    def check(ctx: ConsoleContext, staff: Staffer, record: CampaignRecord) -> Response | None:
        try:
            check_campaign(record.name, record.status, move)
        except StateError as exc:
            return refused(ctx, staff, record, model_said(ctx, staff.lang, str(exc)))
        return None

    return check


def _self_approval(ctx: ConsoleContext, staff: Staffer, record: CampaignRecord) -> Response | None:
    """Refused when the approver saved or submitted this version, or saved an earlier one
    since the last approval, and the settings want a second person."""
    refusal = _lifecycle(CampaignMove.APPROVE)(ctx, staff, record)
    if refusal is not None or ctx.settings.console.allow_self_approval:
        return refusal
    me = staff.user.email
    if me in (record.updated_by, record.submitted_by, *record.contributors):
        text = ctx.views.say(staff.lang, "camp_self_approval")
        return refused(ctx, staff, record, text, status=403)
    return None


def self_approves(ctx: ConsoleContext, record: CampaignRecord) -> bool:
    """A schedule that records its own approval: approval is not required here and the
    campaign is not approved (an approval given stays the one recorded)."""
    return not ctx.settings.console.require_approval and record.status != CampaignStatus.APPROVED


def _schedulable(ctx: ConsoleContext, staff: Staffer, record: CampaignRecord) -> Response | None:
    try:
        check_schedule(record.name, record.status, self_approved=self_approves(ctx, record))
    except StateError as exc:
        return refused(ctx, staff, record, model_said(ctx, staff.lang, str(exc)))
    if self_approves(ctx, record) and record.status == CampaignStatus.SCHEDULED:
        # scheduling again what is scheduled is the CLI's (a file created again)
        return _lifecycle(CampaignMove.SCHEDULE)(ctx, staff, record)
    return None


def _step(*, check: Check, page: Page, run: Run) -> ConsoleView:
    """A confirmation page (``GET``, or a ``POST`` without ``confirm=yes``) and its ``POST``:
    the version checked first, then the lifecycle, then ``run``."""

    async def view(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
        found = await find(ctx, request, staff)
        if isinstance(found, Response):
            return found
        record = found
        form = await form_of(request) if request.method == "POST" else None
        if form is not None and form.get("confirm") == "yes":
            version = version_of(form)
            if version is None:
                text = ctx.views.say(staff.lang, "camp_no_version")
                return refused(ctx, staff, record, text, status=400)
            if version != record.version:
                stale = StaleEdit(record.updated_by, record.updated_at)
                return refused(ctx, staff, record, stale_text(ctx, staff.lang, stale))
        refusal = check(ctx, staff, record)
        if refusal is not None:
            return refusal
        if form is None or form.get("confirm") != "yes":
            return await page(ctx, staff, record)
        try:
            return await run(ctx, request, staff, record, record.version)
        except StaleEdit as stale:
            return refused(ctx, staff, record, stale_text(ctx, staff.lang, stale))
        except (StateError, NotFoundError, campaign_files.CampaignFileError) as exc:
            return refused(ctx, staff, record, model_said(ctx, staff.lang, str(exc)))

    return view


def _confirm(
    ctx: ConsoleContext, staff: Staffer, record: CampaignRecord, name: str, **extra: Any
) -> Response:
    say, lang = ctx.views.say, staff.lang
    return ctx.views.render(
        "campaign_confirm.html", lang, title=say(lang, f"camp_{name}_title", name=record.name),
        staff=staff, section="campaigns",
        question=extra.pop("question", None) or say(lang, f"camp_{name}_question",
                                                    name=record.name, version=record.version),
        action=f"{page_of(record)}/{name.replace('_', '-')}", version=record.version,
        button=say(lang, f"camp_{name}_confirm"), back=page_of(record), **extra,
    )  # fmt: skip


# --- submit and send back ----------------------------------------------------------------------


async def _submit_page(ctx: ConsoleContext, staff: Staffer, record: CampaignRecord) -> Response:
    return _confirm(ctx, staff, record, "submit")


async def _submit(
    ctx: ConsoleContext, request: Request, staff: Staffer, record: CampaignRecord, version: int
) -> Response:
    await ctx.store.campaigns.submit(
        record.id, version=version, actor=staff.user.email, now=ctx.clock()
    )
    await ctx.audit(staff, request, "campaign.submit", record.name, {"version": version})
    return RedirectResponse(done_url(record, "submitted"), status_code=303)


async def _send_back_page(ctx: ConsoleContext, staff: Staffer, record: CampaignRecord) -> Response:
    return _confirm(ctx, staff, record, "send_back")


async def _send_back(
    ctx: ConsoleContext, request: Request, staff: Staffer, record: CampaignRecord, version: int
) -> Response:
    await ctx.store.campaigns.send_back(
        record.id, version=version, actor=staff.user.email, now=ctx.clock()
    )
    details = {"version": version, "from": record.status}
    await ctx.audit(staff, request, "campaign.send_back", record.name, details)
    return RedirectResponse(done_url(record, "sent_back"), status_code=303)


# --- approve -----------------------------------------------------------------------------------


async def _snapshot(
    ctx: ConsoleContext, staff: Staffer, record: CampaignRecord, *, note: str = ""
) -> tuple[campaign_files.Campaign, dict[str, Any]]:
    """The snapshot an approval by ``staff`` now freezes: the stored spec validated again,
    the templates, the lists' audience counted now."""
    campaign = stored_campaign(ctx, record)
    audience = await approvals.audience(ctx.store, record.lists)
    result = ctx.preflights.result(record.id, record.version)
    preflight = None  # none finished for this version in this process
    if result is not None and result.finished:
        preflight = {"total": result.total, "failed": result.failed}
    snapshot = approvals.snapshot(
        campaign, templates_dir=ctx.settings.paths.templates_dir, audience=audience,
        version=record.version, by=staff.user.email, now=ctx.clock(), note=note,
        preflight=preflight,
    )  # fmt: skip
    return campaign, snapshot


def _snapshot_facts(ctx: ConsoleContext, lang: str, snap: dict[str, Any]) -> list[tuple[str, str]]:
    say = ctx.views.say
    facts = [
        (say(lang, "camp_version"), str(snap["version"])),
        (say(lang, "camp_snapshot_content"), snap["content_sha256"][:12]),
        (say(lang, "camp_snapshot_templates"), snap["templates_sha256"][:12]),
        (say(lang, "camp_languages"), ", ".join(snap["languages"]) or "—"),
    ]
    if snap.get("preflight"):
        figures = snap["preflight"]
        facts.append((say(lang, "camp_snapshot_preflight"), say(
            lang, "camp_preflight_figures", total=ctx.views.number(figures["total"], lang),
            failed=ctx.views.number(figures["failed"], lang),
        )))  # fmt: skip
    return facts


async def _approve_page(ctx: ConsoleContext, staff: Staffer, record: CampaignRecord) -> Response:
    try:
        _, snap = await _snapshot(ctx, staff, record)
    except (NotFoundError, campaign_files.CampaignFileError) as exc:
        return refused(ctx, staff, record, model_said(ctx, staff.lang, str(exc)))
    return _confirm(
        ctx, staff, record, "approve", facts=_snapshot_facts(ctx, staff.lang, snap),
        audience=snap["lists"], audience_total=snap["audience"],
    )  # fmt: skip


async def _approve(
    ctx: ConsoleContext, request: Request, staff: Staffer, record: CampaignRecord, version: int
) -> Response:
    _, snap = await _snapshot(ctx, staff, record)
    await ctx.store.campaigns.approve(
        record.id, version=version, snapshot=snap, actor=staff.user.email, now=ctx.clock()
    )
    details = {"version": version, "content_sha256": snap["content_sha256"],
               "audience": snap["audience"]}  # fmt: skip
    await ctx.audit(staff, request, "campaign.approve", record.name, details)
    return RedirectResponse(done_url(record, "approved"), status_code=303)


# --- schedule ----------------------------------------------------------------------------------


async def _schedule_page(ctx: ConsoleContext, staff: Staffer, record: CampaignRecord) -> Response:
    say, lang = ctx.views.say, staff.lang
    try:
        campaign = stored_campaign(ctx, record)
        planned, notes = campaign_files.plan(
            campaign, now=ctx.clock(), domain=ctx.settings.sender.domain
        )
        audience = await approvals.audience(ctx.store, record.lists)
    except (NotFoundError, campaign_files.CampaignFileError) as exc:
        return refused(ctx, staff, record, model_said(ctx, lang, str(exc)))
    zone = campaign.zone.key
    plan = [
        (key_words(ctx, lang, p.key, p.action), ctx.views.when(p.due, lang, zone)) for p in planned
    ]
    notes = [model_said(ctx, lang, n) for n in notes]
    if self_approves(ctx, record):
        notes.insert(0, say(lang, "camp_schedule_self_approved"))
    return _confirm(
        ctx, staff, record, "schedule", plan=plan,
        plan_caption=say(lang, "camp_plan_caption", zone=zone), audience=dict(audience),
        audience_total=audience.total, notes=notes,
    )  # fmt: skip


async def _schedule(
    ctx: ConsoleContext, request: Request, staff: Staffer, record: CampaignRecord, version: int
) -> Response:
    now = ctx.clock()
    approve = self_approves(ctx, record)
    done = await schedule_campaign(
        ctx.store, ctx.settings, stored_campaign(ctx, record), now=now, version=version,
        actor=staff.user.email, approve=approve,
        note=approvals.NOTE_NOT_REQUIRED if approve else "",
    )  # fmt: skip
    for send in await ctx.store.sends.of_campaign(record.id):
        if send.status == SendStatus.SCHEDULED and send.due_at <= now and ctx.on_send is not None:
            ctx.on_send(send.id)
    result = done.result
    details: dict[str, Any] = {
        "version": version, "created": ", ".join(result.created),
        "moved": ", ".join(result.moved), "dropped": ", ".join(result.dropped),
    }  # fmt: skip
    if approve and done.snapshot is not None:
        details.update(approved_by=staff.user.email, note=approvals.NOTE_NOT_REQUIRED,
                       content_sha256=done.snapshot["content_sha256"])  # fmt: skip
    await ctx.audit(staff, request, "campaign.schedule", record.name, details)
    return RedirectResponse(done_url(record, "scheduled"), status_code=303)


submit_view = _step(check=_lifecycle(CampaignMove.SUBMIT), page=_submit_page, run=_submit)
approve_view = _step(check=_self_approval, page=_approve_page, run=_approve)
send_back_view = _step(check=_lifecycle(CampaignMove.RETURN), page=_send_back_page, run=_send_back)
schedule_view = _step(check=_schedulable, page=_schedule_page, run=_schedule)

ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("/campaigns/{name}/submit", submit_view, Role.EDITOR, Role.EDITOR),
    ConsoleRoute("/campaigns/{name}/approve", approve_view, Role.SENDER, Role.SENDER),
    ConsoleRoute("/campaigns/{name}/send-back", send_back_view, Role.SENDER, Role.SENDER),
    ConsoleRoute("/campaigns/{name}/schedule", schedule_view, Role.SENDER, Role.SENDER),
)
