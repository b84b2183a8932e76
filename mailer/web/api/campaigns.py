"""The REST API's campaigns: the list, one campaign (its record, approval and event), its
timeline of sends, a new draft and a draft's update, each as the console's compose page makes
them: the body is the one campaign model (:class:`~mailer.campaigns.CampaignFile`, the
schema of campaign files), validated again by :func:`mailer.campaigns.from_data` and planned
(a local time in a DST gap refused, one in the autumn fold noted, in the CLI's words), its
lists checked and its templates compiled in each language, then saved as a draft by
``store.campaigns.save_draft`` (so ``api:<key name>`` is its author and a contributor).

A campaign's ``ETag`` is its version (``"v3"``): an update or a move with ``If-Match`` of
another version is refused with 412 and who changed it when ("changed by X at T"); without
``If-Match`` the version stored now is the one changed. Also what the campaign's other
modules share (:mod:`~mailer.web.api.campaign_steps`, :mod:`~mailer.web.api.events`): the
campaign a path names, its stored spec validated again, the problems of a refusal.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from mailer import campaigns as campaign_files
from mailer.errors import MailerError, NotFoundError, StaleEdit, StateError
from mailer.models import (
    CONFIRM_KIND,
    CampaignKind,
    CampaignRecord,
    CampaignStatus,
    EventInfo,
    ListInfo,
    Scope,
)
from mailer.web.api.core import Answer, ApiRoute, Call
from mailer.web.api.paging import PageQuery, decode_cursor, encode_cursor, page_answer, page_model
from mailer.web.api.problems import FieldError, Problem, validation_problem
from mailer.web.console.compose_fields import template_errors
from mailer.workflow.scheduling import options_of

_FIELD = re.compile(r"^[A-Za-z0-9_.\[\]-]+$")
PLAN_FIELDS = (("event.reminder ", "event.reminders"),)  # a plan's message -> its field
_VERSION_TAG = re.compile(r'^(?:W/)?"v(\d{1,9})"$')


# --- the models -----------------------------------------------------------------------------------


class EventOut(BaseModel):
    """An event campaign's event as it stands (times in UTC with their offset)."""

    title: str
    start: datetime
    end: datetime | None
    timezone: str = Field(description="The zone its local times are said in.")
    place: str
    link: str | None
    sequence: int = Field(description="Grows by one at every update (iCalendar SEQUENCE).")
    status: str = Field(description="confirmed or cancelled.")
    invite: str = Field(description="request (an invitation) or publish.")


class CampaignOut(BaseModel):
    """A stored campaign: its spec (a campaign file's data, bodies inlined), version,
    where it stands on the way to sending, and the approval's snapshot."""

    name: str
    kind: CampaignKind
    status: CampaignStatus
    version: int = Field(description='One more at each save; the ETag is `"v<version>"`.')
    lists: list[str]
    template: str
    timezone: str
    spec: dict[str, Any] | None = Field(
        description="The campaign as data, in the CampaignFile schema (null: stored before)."
    )
    created_at: datetime
    updated_at: datetime
    updated_by: str | None
    submitted_by: str | None
    submitted_at: datetime | None
    approved_by: str | None
    approved_at: datetime | None
    approval: dict[str, Any] | None = Field(
        description="What the approval froze: content and templates SHA-256, the lists and "
        "their audience, the languages, who and when."
    )
    started: bool = Field(description="A send of it started: it can no longer be edited.")
    contributors: list[str] = Field(description="Who saved a version since the last approval.")
    event: EventOut | None


class CampaignLine(BaseModel):
    """One campaign of the list."""

    name: str
    kind: CampaignKind
    status: CampaignStatus
    version: int
    updated_by: str | None
    updated_at: datetime
    next_due: datetime | None = Field(description="Its next scheduled send.")
    sends: int


class CampaignsQuery(PageQuery):
    kind: CampaignKind | None = None
    status: CampaignStatus | None = None


class Saved(BaseModel):
    """A draft saved, with the notes its plan made (a local time in the autumn fold...)."""

    campaign: CampaignOut
    notes: list[str]


class Counts(BaseModel):
    """A send's deliveries by status."""

    queued: int
    sent: int
    deferred: int
    failed: int
    skipped: int
    bounced: int


class TimelineSend(BaseModel):
    """One send of a campaign, with its counts."""

    id: int
    key: str = Field(description="announce, invitation, reminder:P7D, update:2, issue:2027-01-01")
    action: str
    status: str
    due_at: datetime
    reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    counts: Counts


class Timeline(BaseModel):
    """Every send of a campaign, in due order."""

    data: list[TimelineSend]


# --- what the campaign modules share --------------------------------------------------------------


def version_tag(version: int) -> str:
    return f'"v{version}"'


def tagged(body: BaseModel, version: int, status: int = 200, **headers: str) -> Answer:
    return Answer(body, status=status, headers={"ETag": version_tag(version), **headers})


def stale(exc: StaleEdit, version: int) -> Problem:
    """412: someone saved since (``changed by X at T``), with the version stored now."""
    return Problem(
        412, f"{exc}; read the campaign again and send its ETag as If-Match", slug="stale",
        headers={"ETag": version_tag(version)},
    )  # fmt: skip


def wanted_version(call: Call, record: CampaignRecord) -> int:
    """The version ``If-Match`` names (``*`` or none: the stored one); 412 for another."""
    given = call.request.headers.get("if-match")
    if given is None or given.strip() == "*":
        return record.version
    for tag in given.split(","):
        found = _VERSION_TAG.match(tag.strip())
        if found is not None and int(found.group(1)) == record.version:
            return record.version
    raise stale(StaleEdit(record.updated_by, record.updated_at), record.version)


def refused(exc: MailerError | str, *, status: int = 409) -> Problem:
    """A move storage or the lifecycle refused, in their words; nothing changed."""
    return Problem(status, f"{exc}; nothing was changed", slug="refused")


async def find(call: Call, name: str | None = None) -> CampaignRecord:
    """The campaign the path names, or a 404 (a system campaign is not staff's)."""
    name = name or call.param("name")
    if campaign_files.NAME.match(name):
        try:
            record = await call.store.campaigns.record(name)
        except NotFoundError:
            pass
        else:
            if record.kind != CONFIRM_KIND:
                return record
    raise Problem(404, f"no campaign is named {name[:100]!r} (GET /api/v1/campaigns names them)")


def file_errors(exc: campaign_files.CampaignFileError, source: str) -> Problem:
    """A campaign's errors (``source: field: message``, one a line) as a 422 naming each
    field, in the words of ``mailer campaign check``."""
    errors = []
    for line in str(exc).splitlines():
        rest = line.removeprefix(f"{source}: ")
        path, sep, message = rest.partition(": ")
        if sep and _FIELD.match(path):
            errors.append(FieldError(field=path[:200], message=message[:500]))
            continue
        field = next((f for prefix, f in PLAN_FIELDS if rest.startswith(prefix)), "body")
        errors.append(FieldError(field=field, message=rest[:500]))
    return validation_problem(errors)


def stored_campaign(call: Call, record: CampaignRecord) -> campaign_files.Campaign:
    """The stored spec validated again by the one model; 409 when it has none or no
    longer validates (a template removed since, say)."""
    if record.spec is None:
        raise refused(
            f"campaign {record.name} was stored before campaigns were kept as data; create "
            "it again from its file (mailer campaign create)"
        )
    settings = call.settings
    try:
        return campaign_files.from_data(
            dict(record.spec), source=Path(record.name),
            default_zone=settings.scheduler.timezone, templates_dir=settings.paths.templates_dir,
        )  # fmt: skip
    except campaign_files.CampaignFileError as exc:
        raise refused(str(exc)) from None


def event_out(event: EventInfo) -> EventOut:
    return EventOut(
        title=event.title, start=event.start, end=event.end, timezone=event.timezone,
        place=event.place, link=event.link, sequence=event.sequence, status=event.status,
        invite=event.invite,
    )  # fmt: skip


async def campaign_out(call: Call, record: CampaignRecord) -> CampaignOut:
    event = await call.store.campaigns.event(record.id)
    return CampaignOut(
        name=record.name, kind=CampaignKind(record.kind), status=CampaignStatus(record.status),
        version=record.version, lists=list(record.lists), template=record.template,
        timezone=record.timezone, spec=record.spec, created_at=record.created_at,
        updated_at=record.updated_at, updated_by=record.updated_by,
        submitted_by=record.submitted_by, submitted_at=record.submitted_at,
        approved_by=record.approved_by, approved_at=record.approved_at,
        approval=record.approval, started=record.started,
        contributors=list(record.contributors), event=None if event is None else event_out(event),
    )  # fmt: skip


async def answer_of(call: Call, name: str, status: int = 200, **headers: str) -> Answer:
    """The campaign as it is stored now, with its ETag."""
    record = await find(call, name)
    return tagged(await campaign_out(call, record), record.version, status, **headers)


# --- reading --------------------------------------------------------------------------------------


async def campaigns_index(call: Call) -> Answer:
    query: CampaignsQuery = call.query
    after = decode_cursor(query.cursor)
    lines = await call.store.campaigns.listing(
        kind=None if query.kind is None else query.kind.value,
        status=None if query.status is None else query.status.value,
    )
    found = [x for x in lines if after is None or x.name > after]
    shown = found[: query.limit]
    following = encode_cursor(shown[-1].name) if len(found) > query.limit else None
    data = [
        CampaignLine(
            name=x.name,
            kind=CampaignKind(x.kind),
            status=CampaignStatus(x.status),
            version=x.version,
            updated_by=x.updated_by,
            updated_at=x.updated_at,
            next_due=x.next_due,
            sends=x.sends,
        )
        for x in shown
    ]
    return page_answer(call.request, CampaignLine, data, following)


async def campaign_get(call: Call) -> Answer:
    record = await find(call)
    return tagged(await campaign_out(call, record), record.version)


async def campaign_timeline(call: Call) -> Answer:
    record = await find(call)
    sends = sorted(await call.store.sends.of_campaign(record.id), key=lambda s: (s.due_at, s.id))
    data = []
    for send in sends:
        counts = await call.store.figures.counts(send.id)
        data.append(
            TimelineSend(
                id=send.id,
                key=send.key,
                action=send.action,
                status=send.status,
                due_at=send.due_at,
                reason=send.reason,
                started_at=send.started_at,
                finished_at=send.finished_at,
                counts=Counts(**dict(counts)),
            )
        )
    return Answer(Timeline(data=data))


# --- saving a draft -------------------------------------------------------------------------------


async def read_campaign(
    call: Call, given: campaign_files.CampaignFile
) -> tuple[campaign_files.Campaign, list[str]]:
    """The posted campaign validated as a file is (bodies given, not files), planned, its
    lists found and its templates compiled in each of its languages; a 422 naming each
    field otherwise. Returns it with the plan's notes."""
    settings, source = call.settings, given.name
    spec = given.model_dump(mode="json", exclude_none=True)
    try:
        campaign = campaign_files.from_data(
            spec, source=Path(source), default_zone=settings.scheduler.timezone,
            templates_dir=settings.paths.templates_dir,
        )  # fmt: skip
        planned, notes = campaign_files.plan(campaign, now=call.now, domain=settings.sender.domain)
    except campaign_files.CampaignFileError as exc:
        raise file_errors(exc, source) from None
    infos: list[ListInfo] = []
    errors: list[FieldError] = []
    for slug in campaign.data.lists:
        try:
            infos.append(await call.store.lists.info(slug))
        except NotFoundError:
            errors.append(FieldError(field="lists", message=f"no list is named {slug!r}"))
    if errors:
        raise validation_problem(errors)
    data = campaign.data
    sender = (data.sender.name or settings.sender.from_name,
              data.sender.address or settings.sender.from_address)  # fmt: skip
    found = await asyncio.to_thread(
        template_errors, campaign, templates_dir=settings.paths.templates_dir,
        first_list=infos[0], sender=sender,
        action=planned[0].action if planned else data.kind.value,
        event=campaign.event(domain=settings.sender.domain), now=call.now,
    )  # fmt: skip
    if found:
        raise validation_problem([FieldError(field=f, message=m[:500]) for f, m in found])
    return campaign, notes


async def _save(
    call: Call, campaign: campaign_files.Campaign, expected: int | None
) -> CampaignRecord:
    try:
        return await call.store.campaigns.save_draft(
            campaign.content, spec=campaign.spec(), list_slugs=campaign.data.lists,
            sender_name=campaign.data.sender.name, sender_address=campaign.data.sender.address,
            options=options_of(campaign), expected_version=expected, actor=call.actor,
            now=call.now,
        )  # fmt: skip
    except NotFoundError as exc:  # a list deleted between the check and the save
        raise validation_problem([FieldError(field="lists", message=str(exc))]) from None


async def campaign_create(call: Call) -> Answer:
    """A new draft; it waits to be submitted, approved, then scheduled."""
    campaign, notes = await read_campaign(call, call.body)
    try:
        saved = await _save(call, campaign, None)
    except StateError as exc:  # the name is taken
        raise refused(exc) from None
    await call.audit(
        "campaign.save", saved.name, {"version": saved.version, "kind": saved.kind, "new": True}
    )
    body = Saved(campaign=await campaign_out(call, saved), notes=notes)
    return tagged(body, saved.version, 201, Location=f"/api/v1/campaigns/{saved.name}")


async def campaign_update(call: Call) -> Answer:
    """The draft replaced by the posted campaign (its name and kind kept); it is a draft
    afterwards, its submission and approval gone."""
    record = await find(call)
    given: campaign_files.CampaignFile = call.body
    mismatch = [
        FieldError(field=f, message=f"is {v!r}; a campaign keeps its {f} ({record.name}: "
                   f"{w!r}); create another campaign instead")
        for f, v, w in (("name", given.name, record.name), ("kind", given.kind.value, record.kind))
        if v != w
    ]  # fmt: skip
    if mismatch:
        raise validation_problem(mismatch)
    if record.spec is None or record.started:
        said = "its sending has started" if record.started else "it was stored before specs"
        raise refused(f"campaign {record.name} cannot be edited: {said}")
    expected = wanted_version(call, record)
    campaign, notes = await read_campaign(call, given)
    try:
        saved = await _save(call, campaign, expected)
    except StaleEdit as exc:
        raise stale(exc, (await find(call)).version) from None
    except StateError as exc:
        raise refused(exc) from None
    details = {"version": saved.version, "kind": saved.kind, "new": False}
    await call.audit("campaign.save", saved.name, details)
    return tagged(Saved(campaign=await campaign_out(call, saved), notes=notes), saved.version)


READ, WRITE = Scope.CAMPAIGNS_READ, Scope.CAMPAIGNS_WRITE
ROUTES = [
    ApiRoute("GET", "/campaigns", campaigns_index, READ, "Every campaign",
             query=CampaignsQuery, answer=page_model(CampaignLine), tag="campaigns"),
    ApiRoute("POST", "/campaigns", campaign_create, WRITE, "A new campaign, as a draft",
             body=campaign_files.CampaignFile, answer=Saved, status=201, tag="campaigns",
             etag=True,
             description="The body is a campaign file's data (bodies given, not files); it "
             "is validated and planned as `mailer campaign check` does, its lists and "
             "templates checked, and saved as a draft by this key."),
    ApiRoute("GET", "/campaigns/{name}", campaign_get, READ, "A campaign",
             answer=CampaignOut, tag="campaigns", etag=True),
    ApiRoute("PUT", "/campaigns/{name}", campaign_update, WRITE, "Replace a campaign's draft",
             body=campaign_files.CampaignFile, answer=Saved, tag="campaigns", etag=True,
             problems=(409,),
             description="Any change returns the campaign to draft: its submission and "
             "approval are gone, its scheduled sends wait for a new approval. Refused once a "
             "send of it started."),
    ApiRoute("GET", "/campaigns/{name}/timeline", campaign_timeline, READ,
             "A campaign's sends, with their counts", answer=Timeline, tag="campaigns"),
]  # fmt: skip
