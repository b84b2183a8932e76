"""Console pages: composing a campaign: the form of each kind (``/compose``: new; ``/campaigns/
{name}/edit``: a stored one), saved as a draft, the newsletter's cron in words
(``/compose/cron``, the fragment htmx refreshes as it is typed) and the campaign downloaded as
a campaign file (``/campaigns/{name}/download``).

The form is read by :mod:`~mailer.web.console.campaign_form` into the one campaign model, so
the console says what ``mailer campaign check`` says, each error beside its field. Before a
draft is saved its lists must exist and its templates and words must compile in each of its
languages. A draft is saved with the version the form was read at: someone who saved since
wins, and the form comes back with the words typed and who changed it when. Nothing here
sends mail or schedules anything: a draft waits to be submitted, approved, then scheduled.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailer.campaigns import NAME
from mailer.errors import NotFoundError, StaleEdit, StateError
from mailer.models import CampaignRecord, CampaignStatus, ListInfo, Role
from mailer.web.console.campaign_form import (
    GENERAL,
    KINDS,
    LANGUAGES,
    FormReading,
    blank,
    read,
    values_of,
)
from mailer.web.console.compose_fields import (
    COMMON_ZONES,
    campaign_toml,
    cron_words,
    field_id,
    label_of,
    template_errors,
    template_kinds,
)
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, form_of
from mailer.web.console.people import COUNTS_FRESH
from mailer.workflow.scheduling import options_of

RETURNS_TO_DRAFT = (CampaignStatus.SUBMITTED, CampaignStatus.APPROVED, CampaignStatus.SCHEDULED)
HIDDEN = (GENERAL, "kind", "version")  # errors of fields the form does not show
PLAN_FIELDS = (("event.reminder ", "event.reminders"),)  # a plan's message -> its field


def _message(
    ctx: ConsoleContext, staff: Staffer, key: str, status: int, back: str, **values: Any
) -> Response:
    say = ctx.views.say
    return ctx.views.render(
        "message.html", staff.lang, title=say(staff.lang, f"{key}_title"),
        text=say(staff.lang, key, **values), staff=staff, back=back, status=status,
    )  # fmt: skip


async def _record(
    ctx: ConsoleContext, staff: Staffer, request: Request
) -> CampaignRecord | Response:
    """The campaign the path names, or the page that says there is none."""
    name = str(request.path_params.get("name", ""))
    if NAME.match(name):
        try:
            return await ctx.store.campaigns.record(name)
        except NotFoundError:
            pass
    return _message(ctx, staff, "compose_not_found", 404, "/admin/campaigns", name=name[:100])


def _not_editable(
    ctx: ConsoleContext, staff: Staffer, record: CampaignRecord, status: int
) -> Response | None:
    """The page that says why a campaign cannot be edited here, or None when it can."""
    back = f"/admin/campaigns/{record.name}"
    if record.spec is None:
        return _message(ctx, staff, "compose_no_spec", status, back, name=record.name)
    if record.started:
        return _message(ctx, staff, "compose_started", status, back, name=record.name)
    return None


# --- the form ---------------------------------------------------------------------------------


async def _lists(ctx: ConsoleContext, chosen: list[str]) -> list[dict[str, Any]]:
    """The lists to tick, with their subscribed members, and those chosen that are gone."""
    found = await ctx.live.get(("lists",), ctx.store.browse.lists, fresh=COUNTS_FRESH)
    lists = [
        {"slug": s.slug, "title": s.title, "count": s.counts.get("subscribed", 0), "gone": False}
        for s in found
    ]
    known = {s.slug for s in found}
    lists += [{"slug": s, "title": s, "count": 0, "gone": True} for s in chosen if s not in known]
    return lists


async def _form(
    ctx: ConsoleContext,
    staff: Staffer,
    values: dict[str, Any],
    *,
    record: CampaignRecord | None = None,
    errors: dict[str, list[str]] | None = None,
    stale: str | None = None,
    status: int = 200,
) -> Response:
    """The campaign form with ``values``, every error beside its field and in the summary."""
    lang, words = staff.lang, ctx.views.words[staff.lang]
    errors = errors or {}
    kind = values.get("kind") or ""
    summary = [
        (None if name in HIDDEN else field_id(name), label_of(name, words), message)
        for name, messages in errors.items()
        for message in messages
    ]
    settings = ctx.settings
    zone = (values.get("timezone") or "").strip() or settings.scheduler.timezone
    if record is None:
        kind_words = words.get(f"compose_kind_{kind}", kind)
        title = ctx.views.say(lang, "compose_new_title", kind=kind_words)
        action, back = "/admin/compose", "/admin/campaigns"
    else:
        title = ctx.views.say(lang, "compose_edit_title", name=record.name)
        action = back = f"/admin/campaigns/{record.name}"
        action += "/edit"
    return ctx.views.render(
        "compose.html", lang, title=title, staff=staff, section="campaigns", values=values,
        kind=kind, record=record, errors=errors, summary=summary, stale=stale, action=action,
        back=back, fid=field_id, languages=LANGUAGES, zones=COMMON_ZONES,
        templates=template_kinds(settings.paths.templates_dir),
        lists=await _lists(ctx, list(values.get("lists") or [])), local_zone=zone,
        cron=cron_words(values.get("newsletter.cron") or "", zone, lang, now=ctx.clock()),
        default_zone=settings.scheduler.timezone, sender=settings.sender,
        returns=record is not None and record.status in RETURNS_TO_DRAFT, status=status,
    )  # fmt: skip


async def compose_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/compose``: the three kinds to choose from; ``?kind=X``: X's empty form.
    ``POST``: the form saved as a new draft."""
    if request.method == "POST":
        posted = (await form_of(request)).get("kind")
        if posted in KINDS:
            return await _save(ctx, request, staff, record=None)
        kind = posted if isinstance(posted, str) and posted else "?"
    else:
        kind = request.query_params.get("kind", "")
        if kind in KINDS:
            values = blank(kind)
            values["timezone"] = ctx.settings.scheduler.timezone
            return await _form(ctx, staff, values)
    error = ctx.views.say(staff.lang, "compose_bad_kind", kind=kind[:40]) if kind else None
    return ctx.views.render(
        "compose_choose.html", staff.lang, title=ctx.views.say(staff.lang, "compose_choose_title"),
        staff=staff, section="campaigns", kinds=KINDS, error=error, status=400 if kind else 200,
    )  # fmt: skip


async def edit_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/campaigns/{name}/edit``: the form of the stored campaign; ``POST``: saved
    over the version the form was read at."""
    record = await _record(ctx, staff, request)
    if isinstance(record, Response):
        return record
    refused = _not_editable(ctx, staff, record, 409 if request.method == "POST" else 200)
    if refused is not None:
        return refused
    if request.method == "POST":
        return await _save(ctx, request, staff, record=record)
    assert record.spec is not None
    return await _form(
        ctx,
        staff,
        values_of(
            record.spec, version=record.version, default_zone=ctx.settings.scheduler.timezone
        ),
        record=record,
    )


# --- saving -------------------------------------------------------------------------------------


def _pinned(form: FormData, **fixed: str) -> FormData:
    """The posted form with ``fixed`` fields set (an edit keeps its name and kind)."""
    return FormData([*((k, v) for k, v in form.multi_items() if k not in fixed), *fixed.items()])


async def _checked(ctx: ConsoleContext, reading: FormReading, now: datetime) -> None:
    """What the model cannot know: the lists exist now, and the templates and words compile
    in each language (a Jinja error said beside its body, with its line)."""
    campaign = reading.campaign
    assert campaign is not None
    infos: list[ListInfo] = []
    for slug in campaign.data.lists:
        try:
            infos.append(await ctx.store.lists.info(slug))
        except NotFoundError:
            reading.error("lists", ctx.views.words["en"]["compose_list_gone"].format(slug=slug))
    if not infos or reading.errors:
        return
    settings = ctx.settings
    data = campaign.data
    sender = (data.sender.name or settings.sender.from_name,
              data.sender.address or settings.sender.from_address)  # fmt: skip
    found = await asyncio.to_thread(
        template_errors, campaign, templates_dir=settings.paths.templates_dir,
        first_list=infos[0], sender=sender,
        action=reading.planned[0].action if reading.planned else data.kind.value,
        event=campaign.event(domain=settings.sender.domain), now=now,
    )  # fmt: skip
    for name, message in found:
        reading.error(name, message)


def _placed(reading: FormReading) -> None:
    """Errors the plan words without a field path (``event.reminder '7x': ...``) moved beside
    the field they are about."""
    for message in list(reading.errors.get(GENERAL, [])):
        for prefix, name in PLAN_FIELDS:
            if message.startswith(prefix):
                reading.errors[GENERAL].remove(message)
                reading.error(name, message)
                break
    if not reading.errors.get(GENERAL, True):
        del reading.errors[GENERAL]


def _version(reading: FormReading, lang_words: dict[str, str]) -> int | None:
    text = str(reading.values.get("version") or "")
    if text.isascii() and text.isdigit() and len(text) < 10:
        return int(text)
    reading.error(GENERAL, lang_words["compose_bad_version"])
    return None


async def _save(
    ctx: ConsoleContext, request: Request, staff: Staffer, *, record: CampaignRecord | None
) -> Response:
    """The posted form saved as a draft (new, or over ``record``'s version); else the form
    again, as typed, with what is wrong (400), or who saved since (409)."""
    form = await form_of(request)
    if record is not None:
        form = _pinned(form, name=record.name, kind=record.kind)
    settings, now = ctx.settings, ctx.clock()
    reading = read(
        form, now=now, domain=settings.sender.domain, default_zone=settings.scheduler.timezone,
        templates_dir=settings.paths.templates_dir,
    )  # fmt: skip
    _placed(reading)
    words = ctx.views.words[staff.lang]
    expected = None if record is None else _version(reading, words)
    if reading.ok:
        await _checked(ctx, reading, now)
    if not reading.ok or reading.campaign is None:
        return await _form(ctx, staff, reading.values, record=record, errors=reading.errors,
                           status=400)  # fmt: skip
    campaign = reading.campaign
    try:
        saved = await ctx.store.campaigns.save_draft(
            campaign.content, spec=campaign.spec(), list_slugs=campaign.data.lists,
            sender_name=campaign.data.sender.name, sender_address=campaign.data.sender.address,
            options=options_of(campaign), expected_version=expected, actor=staff.user.email,
            now=now,
        )  # fmt: skip
    except StaleEdit as exc:
        zone = record.timezone if record is not None else None
        stale = ctx.views.say(staff.lang, "compose_stale",
                              by=exc.by or words["compose_stale_someone"],
                              at=ctx.views.when(exc.at, staff.lang, zone))  # fmt: skip
        return await _form(ctx, staff, reading.values, record=record, stale=stale, status=409)
    except NotFoundError as exc:  # a list deleted between the check and the save
        reading.error("lists", str(exc))
        return await _form(ctx, staff, reading.values, record=record, errors=reading.errors,
                           status=400)  # fmt: skip
    except StateError as exc:  # a name taken; a campaign whose sending started meanwhile
        reading.error("name" if record is None else GENERAL, str(exc))
        return await _form(ctx, staff, reading.values, record=record, errors=reading.errors,
                           status=409)  # fmt: skip
    details = {"version": saved.version, "kind": saved.kind, "new": record is None}
    await ctx.audit(staff, request, "campaign.save", saved.name, details)
    if reading.notes:
        return ctx.views.render(
            "compose_saved.html", staff.lang, title=words["compose_saved_title"], staff=staff,
            section="campaigns", record=saved, notes=reading.notes,
        )  # fmt: skip
    return RedirectResponse(f"/admin/campaigns/{saved.name}?done=saved", status_code=303)


# --- the cron in words, the download ----------------------------------------------------------


async def cron_fragment(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/compose/cron?cron=...&zone=...``: the cron in words and its next dates
    (the names of the form's fields are read too: htmx sends those)."""
    params = request.query_params
    cron = (params.get("cron") or params.get("newsletter.cron") or "")[:200]
    zone = (params.get("zone") or params.get("timezone") or "").strip()[:64]
    words = cron_words(cron, zone or ctx.settings.scheduler.timezone, staff.lang, now=ctx.clock())
    return ctx.views.render("compose_cron.html", staff.lang, title="", staff=staff, cron=words)


async def download(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/campaigns/{name}/download``: the stored campaign as a campaign file that
    ``mailer campaign create`` reads back into the same campaign."""
    record = await _record(ctx, staff, request)
    if isinstance(record, Response):
        return record
    if record.spec is None:
        back = f"/admin/campaigns/{record.name}"
        return _message(ctx, staff, "compose_no_spec", 404, back, name=record.name)
    heading = (
        f"Campaign {record.name}, version {record.version}, from the console "
        f"({ctx.clock():%Y-%m-%d %H:%M} UTC).\n"
        f"Check it with: mailer campaign check {record.name}.toml\n"
        "mailer campaign create of this file counts as the operator's approval."
    )
    return Response(
        campaign_toml(record.spec, heading=heading),
        media_type="application/toml; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{record.name}.toml"'},
    )


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("/compose", compose_page, read=Role.EDITOR, write=Role.EDITOR),
    ConsoleRoute("/compose/cron", cron_fragment, read=Role.EDITOR),
    ConsoleRoute("/campaigns/{name}/edit", edit_page, read=Role.EDITOR, write=Role.EDITOR),
    ConsoleRoute("/campaigns/{name}/download", download, read=Role.EDITOR),
)
