"""The REST API's moves of a campaign, as the console's approval and control pages make them:
submit (``campaigns:write``), approve, send back, schedule, pause, resume and cancel
(``campaigns:send``). Each checks the version ``If-Match`` names (412 "changed by X at T"),
then the lifecycle (409 in its words), then makes the same storage and workflow calls as the
console (:mod:`mailer.workflow.approval`, :mod:`mailer.workflow.scheduling`), and writes one
audit line (actor ``api:<key name>``).

The approval rules are the console's: with ``MAILER_CONSOLE__ALLOW_SELF_APPROVAL=false`` (the
default) a key that saved or submitted the version, or saved an earlier one since the last
approval, may not approve it (403); with ``MAILER_CONSOLE__REQUIRE_APPROVAL=false`` a
schedule of a draft records its own approval, by the key, with the note saying so. A
schedule's plan can be read first with ``?dry_run=true`` (nothing written). Sends due now are
handed to the daemon (``on_send``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from mailer import campaigns as campaign_files
from mailer.errors import NotFoundError, StaleEdit, StateError
from mailer.lifecycle import CampaignMove, check_campaign, check_schedule
from mailer.models import CampaignRecord, CampaignStatus, Scope, SendStatus
from mailer.web.api.campaigns import (
    CampaignOut,
    answer_of,
    campaign_out,
    find,
    refused,
    stale,
    stored_campaign,
    tagged,
    wanted_version,
)
from mailer.web.api.core import Answer, ApiRoute, Call, View
from mailer.web.api.problems import Problem
from mailer.workflow import approval as approvals
from mailer.workflow.scheduling import schedule_campaign

SELF_APPROVAL = (
    "this key saved or submitted this version (or saved an earlier one since the last "
    "approval): another key or person with the campaigns:send scope must approve it "
    "(MAILER_CONSOLE__ALLOW_SELF_APPROVAL=false); nothing was changed"
)
CANCELLED = "campaign cancelled"  # the reason of the sends a campaign's cancel stops


class DryRun(BaseModel):
    dry_run: bool = Field(default=False, description="Say what it would do; change nothing.")


class PlannedSend(BaseModel):
    key: str
    action: str
    due_at: datetime = Field(description="When it goes (UTC, with its offset).")


class Scheduled(BaseModel):
    """A schedule: the sends planned, what it did to those stored, who approved."""

    applied: bool = Field(description="False for a dry run: nothing was written.")
    planned: list[PlannedSend]
    notes: list[str] = Field(description="The plan's notes (a time in the autumn fold...).")
    created: list[str]
    moved: list[str]
    dropped: list[str]
    approved_by: str | None = Field(description="Who the schedule records as approving it.")
    campaign: CampaignOut


class Moved(BaseModel):
    """A pause, resume or cancel: how many sends it moved."""

    sends: int
    campaign: CampaignOut


async def _checked(call: Call, move: CampaignMove | None = None) -> tuple[CampaignRecord, int]:
    """The campaign, the version If-Match allows, and the lifecycle's yes to ``move``."""
    record = await find(call)
    version = wanted_version(call, record)
    if move is not None:
        try:
            check_campaign(record.name, record.status, move)
        except StateError as exc:
            raise refused(exc) from None
    return record, version


async def _moved(
    call: Call, record: CampaignRecord, action: str, details: dict[str, Any]
) -> Answer:
    await call.audit(action, record.name, details)
    return await answer_of(call, record.name)


# --- submit, send back, approve -------------------------------------------------------------------


async def campaign_submit(call: Call) -> Answer:
    """draft -> submitted: the draft waits for an approval."""
    record, version = await _checked(call, CampaignMove.SUBMIT)
    try:
        await call.store.campaigns.submit(record.id, version=version, actor=call.actor,
                                          now=call.now)  # fmt: skip
    except StaleEdit as exc:
        raise stale(exc, (await find(call)).version) from None
    except StateError as exc:
        raise refused(exc) from None
    return await _moved(call, record, "campaign.submit", {"version": version})


async def campaign_send_back(call: Call) -> Answer:
    """submitted or approved -> draft: returned to its editors."""
    record, version = await _checked(call, CampaignMove.RETURN)
    try:
        await call.store.campaigns.send_back(record.id, version=version, actor=call.actor,
                                             now=call.now)  # fmt: skip
    except StaleEdit as exc:
        raise stale(exc, (await find(call)).version) from None
    except StateError as exc:
        raise refused(exc) from None
    details = {"version": version, "from": record.status}
    return await _moved(call, record, "campaign.send_back", details)


def may_approve(call: Call, record: CampaignRecord) -> None:
    """403 when the settings want a second person and this key wrote or submitted it."""
    if call.settings.console.allow_self_approval:
        return
    if call.actor in (record.updated_by, record.submitted_by, *record.contributors):
        raise Problem(403, SELF_APPROVAL, slug="self-approval")


async def campaign_approve(call: Call) -> Answer:
    """submitted -> approved, freezing the snapshot (content and templates by hash, the
    lists and their audience counted now)."""
    record, version = await _checked(call, CampaignMove.APPROVE)
    may_approve(call, record)
    campaign = stored_campaign(call, record)
    try:
        audience = await approvals.audience(call.store, record.lists)
    except NotFoundError as exc:
        raise refused(exc) from None
    snapshot = approvals.snapshot(
        campaign, templates_dir=call.settings.paths.templates_dir, audience=audience,
        version=version, by=call.actor, now=call.now,
    )  # fmt: skip
    try:
        await call.store.campaigns.approve(
            record.id, version=version, snapshot=snapshot, actor=call.actor, now=call.now
        )
    except StaleEdit as exc:
        raise stale(exc, (await find(call)).version) from None
    except StateError as exc:
        raise refused(exc) from None
    details = {"version": version, "content_sha256": snapshot["content_sha256"],
               "audience": snapshot["audience"]}  # fmt: skip
    return await _moved(call, record, "campaign.approve", details)


# --- schedule -------------------------------------------------------------------------------------


def self_approves(call: Call, record: CampaignRecord) -> bool:
    """A schedule that records its own approval (approval not required, not approved)."""
    return not call.settings.console.require_approval and record.status != CampaignStatus.APPROVED


def _schedulable(call: Call, record: CampaignRecord) -> None:
    approve = self_approves(call, record)
    try:
        check_schedule(record.name, record.status, self_approved=approve)
        if approve and record.status == CampaignStatus.SCHEDULED:
            # scheduling again what is scheduled is the CLI's (a file created again)
            check_campaign(record.name, record.status, CampaignMove.SCHEDULE)
    except StateError as exc:
        raise refused(exc) from None


async def campaign_schedule(call: Call) -> Answer:
    """Its sends planned and stored in one transaction (or, dry, only planned)."""
    query: DryRun = call.query
    record, version = await _checked(call)
    _schedulable(call, record)
    campaign = stored_campaign(call, record)
    approve = self_approves(call, record)
    try:
        planned, notes = campaign_files.plan(
            campaign, now=call.now, domain=call.settings.sender.domain
        )
    except campaign_files.CampaignFileError as exc:
        raise refused(exc) from None
    shown = [PlannedSend(key=p.key, action=p.action, due_at=p.due) for p in planned]
    if query.dry_run:
        return tagged(
            Scheduled(applied=False, planned=shown, notes=notes, created=[], moved=[],
                      dropped=[], approved_by=call.actor if approve else record.approved_by,
                      campaign=await campaign_out(call, record)),
            record.version,
        )  # fmt: skip
    try:
        done = await schedule_campaign(
            call.store, call.settings, campaign, now=call.now, version=version,
            actor=call.actor, approve=approve,
            note=approvals.NOTE_NOT_REQUIRED if approve else "",
        )  # fmt: skip
    except StaleEdit as exc:
        raise stale(exc, (await find(call)).version) from None
    except (StateError, NotFoundError, campaign_files.CampaignFileError) as exc:
        raise refused(exc) from None
    for send in await call.store.sends.of_campaign(record.id):
        if send.status == SendStatus.SCHEDULED and send.due_at <= call.now and call.ctx.on_send:
            call.ctx.on_send(send.id)
    result = done.result
    details: dict[str, Any] = {
        "version": version, "created": ", ".join(result.created),
        "moved": ", ".join(result.moved), "dropped": ", ".join(result.dropped),
    }  # fmt: skip
    if approve and done.snapshot is not None:
        details.update(approved_by=call.actor, note=approvals.NOTE_NOT_REQUIRED,
                       content_sha256=done.snapshot["content_sha256"])  # fmt: skip
    await call.audit("campaign.schedule", record.name, details)
    after = await find(call)
    shown = [PlannedSend(key=p.key, action=p.action, due_at=p.due) for p in done.planned]
    body = Scheduled(
        applied=True, planned=shown, notes=done.notes, created=list(result.created),
        moved=list(result.moved), dropped=list(result.dropped), approved_by=after.approved_by,
        campaign=await campaign_out(call, after),
    )  # fmt: skip
    return tagged(body, after.version)


# --- pause, resume, cancel ------------------------------------------------------------------------


_OFFERED = {
    CampaignMove.PAUSE: (CampaignStatus.SCHEDULED,),
    CampaignMove.RESUME: (CampaignStatus.PAUSED,),
    CampaignMove.CANCEL: tuple(
        s for s in CampaignStatus if s not in (CampaignStatus.CANCELLED, CampaignStatus.DONE)
    ),
}


async def _control(call: Call, move: CampaignMove) -> CampaignRecord:
    """The campaign once the lifecycle and the console allow ``move`` from its status."""
    record, _ = await _checked(call, move)
    offered = _OFFERED[move]
    if record.status not in offered:
        allowed = ", ".join(s.value for s in offered)
        raise refused(f"campaign {record.name} is {record.status}; {move.value} is done from: "
                      f"{allowed}")  # fmt: skip
    return record


async def _controlled(call: Call, record: CampaignRecord, move: CampaignMove, count: int) -> Answer:
    await call.audit(f"campaign.{move.value}", record.name, {"from": record.status, "sends": count})
    after = await find(call)
    return tagged(Moved(sends=count, campaign=await campaign_out(call, after)), after.version)


async def campaign_pause(call: Call) -> Answer:
    record = await _control(call, CampaignMove.PAUSE)
    count = await call.store.campaigns.pause(record.id, now=call.now)
    return await _controlled(call, record, CampaignMove.PAUSE, count)


async def campaign_resume(call: Call) -> Answer:
    """Paused sends go on: those that had started run now (handed to the daemon), the others
    wait for their time again (handed over if it has come)."""
    record = await _control(call, CampaignMove.RESUME)
    paused = {s.id for s in await call.store.sends.of_campaign(record.id)
              if s.status == SendStatus.PAUSED}  # fmt: skip
    count = await call.store.campaigns.resume(record.id, now=call.now)
    for send in await call.store.sends.of_campaign(record.id):
        due = send.status == SendStatus.RUNNING or (
            send.status == SendStatus.SCHEDULED and send.due_at <= call.now
        )
        if send.id in paused and due and call.ctx.on_send is not None:
            call.ctx.on_send(send.id)
    return await _controlled(call, record, CampaignMove.RESUME, count)


async def campaign_cancel(call: Call) -> Answer:
    """Every send that has not ended is cancelled; what was sent stays recorded."""
    record = await _control(call, CampaignMove.CANCEL)
    count = await call.store.campaigns.cancel_sends(record.id, now=call.now, reason=CANCELLED)
    return await _controlled(call, record, CampaignMove.CANCEL, count)


SEND = Scope.CAMPAIGNS_SEND


def _step(
    path: str, view: View, scope: Scope, summary: str, answer: type[BaseModel], *,
    query: type[BaseModel] | None = None, description: str = "",
) -> ApiRoute:  # fmt: skip
    return ApiRoute(
        "POST", f"/campaigns/{{name}}/{path}", view, scope, summary, query=query, answer=answer,
        tag="campaigns", etag=True, problems=(409, 412), description=description,
    )  # fmt: skip


ROUTES = [
    _step("submit", campaign_submit, Scope.CAMPAIGNS_WRITE, "Submit a draft for approval",
          CampaignOut),
    _step("approve", campaign_approve, SEND, "Approve a submitted campaign", CampaignOut,
          description="Refused (403) to a key that saved or submitted this version unless "
          "MAILER_CONSOLE__ALLOW_SELF_APPROVAL is true."),
    _step("send-back", campaign_send_back, SEND, "Send a campaign back to draft", CampaignOut),
    _step("schedule", campaign_schedule, SEND, "Schedule an approved campaign's sends",
          Scheduled, query=DryRun,
          description="With MAILER_CONSOLE__REQUIRE_APPROVAL=false a draft is scheduled "
          "directly, recorded as approved by this key. `?dry_run=true` says the plan and "
          "writes nothing."),
    _step("pause", campaign_pause, SEND, "Pause a campaign's sends", Moved),
    _step("resume", campaign_resume, SEND, "Resume a paused campaign", Moved),
    _step("cancel", campaign_cancel, SEND, "Cancel a campaign's sends", Moved),
]  # fmt: skip
