"""Console pages: The preview of a campaign as the send pipeline renders it: live from the form,
and of the saved version as any member of its lists, in either language.

- ``POST /admin/preview`` (editor; htmx from the compose form): the form read with
  :func:`~mailer.web.console.campaign_form.read`; its errors listed ("fix these to see the
  preview"), else each of its languages as a sample subscriber (or ``preview_as``, a member of
  its lists), as a fragment (a page without htmx).
- ``GET /admin/campaigns/{name}/preview`` (viewer): the saved version, ``?as=`` a subscribed
  member, ``?locale=`` one of its languages, ``?action=`` an event's mail, ``?width=``.
- ``GET /admin/campaigns/{name}/members?q=`` (editor): up to 20 members of its lists whose
  address or name starts with ``q``, as links to the preview as each.

A mail is made exactly as a send makes it (:func:`mailer.compose.make_composer`, the templates
of the folder, the signer's links) in a worker thread, so the render budget stops a runaway
template; a template or message error is shown instead of the mail. The mail's HTML is shown
in ``<iframe sandbox srcdoc>`` (no scripts, no same origin), with its text part, its headers
and the language it is in and why. The rendering helpers are shared with the pre-flight and
the test send (:mod:`mailer.web.console.preflight`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailer.addresses import address_key
from mailer.campaigns import NAME, Campaign, CampaignFileError, from_data
from mailer.compose import Composed, Composer, make_composer
from mailer.errors import MailerError, NotFoundError
from mailer.message import Built
from mailer.models import (
    EVENT_ACTIONS,
    CampaignKind,
    CampaignRecord,
    EventStatus,
    ListInfo,
    Recipient,
    Role,
    SendAction,
    SendInfo,
)
from mailer.storage import Store
from mailer.tokens import load_signer
from mailer.web.console import campaign_form
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, form_of

SAMPLE = "preview@example.org"  # the sample subscriber a preview is made for
WIDTHS = ("desktop", "phone")
MEMBERS_SHOWN = 20
SHOWN_HEADERS = (
    "From", "To", "Subject", "Date", "List-Unsubscribe", "List-Unsubscribe-Post", "Content-Type",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Shown:
    """One composed mail as the preview shows it."""

    locale: str
    why: str  # own | list | first (CompiledSend.choice) | forced (?lang= chose it)
    recipient: str
    subject: str
    preheader: str
    html: str
    text: str
    headers: list[tuple[str, str]]
    method: str | None  # the calendar part's METHOD, for an event's mail


@dataclass(frozen=True, slots=True)
class Failed:
    """A mail that cannot be composed, and why (the template's line when it is one)."""

    locale: str | None
    message: str


# --- composing as a send does ------------------------------------------------------------------


def kind_action(campaign: Campaign, action: str | None) -> str:
    """The send action of a preview: the chosen mail of an event, else the campaign's kind."""
    if campaign.data.kind == CampaignKind.EVENT:
        return action or SendAction.INVITATION.value
    return campaign.data.kind.value


def send_info(
    ctx: ConsoleContext, campaign: Campaign, list_info: ListInfo, action: str, now: datetime
) -> SendInfo:
    """What every recipient of such a send shares, as ``mailer preview`` builds it."""
    settings = ctx.settings
    cancelled = action == SendAction.CANCELLATION
    event = campaign.event(
        domain=settings.sender.domain,
        status=EventStatus.CANCELLED if cancelled else EventStatus.CONFIRMED,
    )
    newsletter = campaign.data.kind == CampaignKind.NEWSLETTER
    return SendInfo(
        content=campaign.content,
        list=list_info,
        sender_name=campaign.data.sender.name or settings.sender.from_name,
        sender_address=campaign.data.sender.address or settings.sender.from_address,
        action=action,
        now=now,
        event=event,
        key=f"issue:{now.astimezone(campaign.zone):%Y-%m-%d}" if newsletter else action,
    )


def composer_for(
    ctx: ConsoleContext, campaign: Campaign, list_info: ListInfo, action: str, now: datetime
) -> Composer:
    """The composer of such a send (TemplateError/MessageError if it cannot be one); blocking:
    call it in a worker thread."""
    settings = ctx.settings
    return make_composer(
        settings,
        renderer=ctx.preflights.renderer(settings.paths.templates_dir),
        signer=load_signer(settings.secret_keys, settings.paths.data_dir),
        send=send_info(ctx, campaign, list_info, action, now),
        send_id=0,
        trace=f"preview/{campaign.name}",
    )


def headers_of(built: Built) -> tuple[list[tuple[str, str]], str | None]:
    """The headers a preview shows, decoded, and the calendar part's method (None: none)."""
    message = BytesParser(policy=policy.default).parsebytes(built.data)
    shown = [(name, str(message[name])) for name in SHOWN_HEADERS if message[name] is not None]
    method = None
    for part in message.walk():
        if part.get_content_type() == "text/calendar":
            method = str(part.get_param("method") or "") or None
    return shown, method


def shown_of(campaign: Campaign, composed: Composed, *, why: str, recipient: str) -> Shown:
    rendered = composed.rendered
    headers, method = headers_of(composed.message)
    return Shown(
        locale=rendered.locale, why=why, recipient=recipient, subject=rendered.subject,
        preheader=campaign.content.text(rendered.locale).preheader, html=rendered.html,
        text=rendered.text, headers=headers, method=method,
    )  # fmt: skip


async def render_mail(
    ctx: ConsoleContext,
    campaign: Campaign,
    list_info: ListInfo,
    recipient: Recipient,
    *,
    action: str,
    lang: str | None = None,
) -> Shown | Failed:
    """``recipient``'s mail (in ``lang`` when given), composed in a worker thread."""
    now = ctx.clock()
    if lang is not None:
        recipient = replace(recipient, locale=lang)

    def work() -> Shown | Failed:
        try:
            composer = composer_for(ctx, campaign, list_info, action, now)
            why = "forced" if lang else composer.compiled.choice(recipient).how
            composed = composer.compose(recipient, date=now, inert=True)  # staff's eyes only
        except (MailerError, ValueError) as exc:
            return Failed(lang, str(exc))
        return shown_of(campaign, composed, why=why, recipient=recipient.email)

    return await asyncio.to_thread(work)


async def find_member(
    store: Store, slugs: Sequence[str], address: str
) -> tuple[str, Recipient] | None:
    """The subscribed member ``address`` of the first of ``slugs`` that has them."""
    key = address_key(address)
    for slug in slugs:
        try:
            found = [r async for r in store.lists.recipients(slug, email_key=key, limit=1)]
        except NotFoundError:
            continue
        if found:
            return slug, found[0]
    return None


async def first_member(store: Store, slugs: Sequence[str]) -> tuple[str, Recipient] | None:
    for slug in slugs:
        try:
            found = [r async for r in store.lists.recipients(slug, limit=1)]
        except NotFoundError:
            continue
        if found:
            return slug, found[0]
    return None


def sample() -> Recipient:
    return Recipient(id=0, email=SAMPLE)


# --- a saved campaign ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Saved:
    record: CampaignRecord
    campaign: Campaign


def campaign_of(ctx: ConsoleContext, name: str, spec: dict[str, Any]) -> Campaign:
    """The stored spec validated again (CampaignFileError if it no longer is a campaign)."""
    return from_data(dict(spec), source=Path(name), default_zone=ctx.settings.scheduler.timezone)


def not_found(ctx: ConsoleContext, staff: Staffer, name: str) -> Response:
    say = ctx.views.say
    return ctx.views.render(
        "message.html", staff.lang, title=say(staff.lang, "preview_not_found_title"),
        text=say(staff.lang, "preview_not_found", name=name[:100]), staff=staff,
        back="/admin/campaigns", status=404,
    )  # fmt: skip


async def saved(ctx: ConsoleContext, request: Request, staff: Staffer) -> Saved | Response:
    """The campaign the path names, its spec read as a campaign; or the page that says why
    there is none (404 for a name that is not one)."""
    name = str(request.path_params["name"])
    if not NAME.fullmatch(name):
        return not_found(ctx, staff, name)
    try:
        record = await ctx.store.campaigns.record(name)
    except NotFoundError:
        return not_found(ctx, staff, name)
    back = f"/admin/campaigns/{name}"
    if record.spec is None:
        return ctx.views.render(
            "message.html", staff.lang, title=ctx.views.say(staff.lang, "preview_title", name=name),
            text=ctx.views.say(staff.lang, "preview_no_spec"), staff=staff, back=back,
        )  # fmt: skip
    try:
        campaign = campaign_of(ctx, name, record.spec)
    except CampaignFileError as exc:
        text = f"{ctx.views.say(staff.lang, 'preview_bad_spec')} {exc}"
        return ctx.views.render(
            "message.html", staff.lang, title=ctx.views.say(staff.lang, "preview_title", name=name),
            text=text, staff=staff, back=back,
        )  # fmt: skip
    return Saved(record, campaign)


def layout(request: Request) -> str:
    """A fragment for htmx, a page otherwise."""
    return "preview_layout.html" if request.headers.get("hx-request") else "base.html"


# --- GET /campaigns/{name}/preview -------------------------------------------------------------


@dataclass
class Choices:
    """What the preview's controls say, and what is wrong with them, by field."""

    address: str = ""
    lang: str = ""
    action: str = ""
    width: str = "desktop"
    errors: dict[str, str] | None = None

    def error(self, name: str, message: str) -> None:
        self.errors = {**(self.errors or {}), name: message}


def choices_of(
    ctx: ConsoleContext, params: Any, campaign: Campaign, lang: str, *, prefix: str = ""
) -> Choices:
    """The controls' values (``as``, ``locale``, ``action``, ``width``), checked against the
    campaign; an error beside the field, in the staff member's words. The mail's language is
    ``locale``, not ``lang``: ``?lang=`` is the console's own language on every page."""
    say = ctx.views.say

    def value(name: str) -> str:
        raw = params.get(prefix + name)
        return raw.strip()[:320] if isinstance(raw, str) else ""

    found = Choices(value("as"), value("locale"), value("action"))
    width = value("width")
    found.width = width if width in WIDTHS else "desktop"
    languages = campaign.languages
    if found.lang and languages and found.lang not in languages:
        found.error("lang", say(lang, "preview_lang_unknown", asked=found.lang[:20],
                                languages=", ".join(languages)))  # fmt: skip
    if found.action and (
        campaign.data.kind != CampaignKind.EVENT or found.action not in EVENT_ACTIONS
    ):
        found.error("action", say(lang, "preview_action_unknown", action=found.action[:40]))
    return found


async def saved_preview(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/campaigns/{name}/preview``: the saved version, as a member or a sample."""
    found = await saved(ctx, request, staff)
    if isinstance(found, Response):
        return found
    record, campaign = found.record, found.campaign
    choices = choices_of(ctx, request.query_params, campaign, staff.lang)
    mails: list[Shown | Failed] = []
    slugs = list(campaign.data.lists)
    member = None
    if choices.address:
        member = await find_member(ctx.store, slugs, choices.address)
        if member is None:
            choices.error("as", ctx.views.say(staff.lang, "preview_as_unknown",
                          address=choices.address, lists=", ".join(slugs)))  # fmt: skip
    is_event = campaign.data.kind == CampaignKind.EVENT
    error = None if is_event else (choices.errors or {}).get("action")  # no control to show it
    if not choices.errors:
        slug, recipient = member or (slugs[0], sample())
        try:
            list_info = await ctx.store.lists.info(slug)
        except NotFoundError as exc:
            error = str(exc)
        else:
            mails.append(await render_mail(
                ctx, campaign, list_info, recipient, action=kind_action(campaign, choices.action),
                lang=choices.lang or None,
            ))  # fmt: skip
    title = ctx.views.say(staff.lang, "preview_title", name=record.name)
    return ctx.views.render(
        "preview.html", staff.lang, title=title, staff=staff, section="campaigns",
        layout=layout(request), record=record, campaign=campaign, choices=choices,
        mails=mails, error=error, actions=EVENT_ACTIONS, sample=SAMPLE, is_event=is_event,
    )  # fmt: skip


# --- POST /preview: the compose form, live -----------------------------------------------------


def form_errors(ctx: ConsoleContext, lang: str, reading: campaign_form.FormReading) -> list[str]:
    """The form's errors as lines ``field: message`` (the model's words, as they are)."""
    general = ctx.views.say(lang, "preview_field_general")
    return [
        f"{general if name == campaign_form.GENERAL else name}: {message}"
        for name, messages in reading.errors.items()
        for message in messages
    ]


async def live_preview(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``POST /admin/preview``: each language of the posted form, or what to fix first."""
    form = await form_of(request)
    settings = ctx.settings
    reading = campaign_form.read(
        form, now=ctx.clock(), domain=settings.sender.domain,
        default_zone=settings.scheduler.timezone, templates_dir=settings.paths.templates_dir,
    )  # fmt: skip
    errors = [] if reading.ok else form_errors(ctx, staff.lang, reading)
    mails: list[Shown | Failed] = []
    choices = Choices()
    campaign = reading.campaign
    if campaign is not None and not errors:
        choices = choices_of(ctx, form, campaign, staff.lang, prefix="preview_")
        mails, more = await _live_mails(ctx, staff, campaign, choices)
        errors += more
    return ctx.views.render(
        "preview_live.html", staff.lang, title=ctx.views.say(staff.lang, "preview_live_title"),
        staff=staff, section="campaigns", layout=layout(request), errors=errors, mails=mails,
        choices=choices, campaign=campaign, actions=EVENT_ACTIONS, sample=SAMPLE,
        is_event=campaign is not None and campaign.data.kind == CampaignKind.EVENT,
    )  # fmt: skip


async def _live_mails(
    ctx: ConsoleContext, staff: Staffer, campaign: Campaign, choices: Choices
) -> tuple[list[Shown | Failed], list[str]]:
    """Each language of the campaign (every template's for a campaign without words)."""
    slugs = list(campaign.data.lists)
    member = None
    if choices.address:
        member = await find_member(ctx.store, slugs, choices.address)
        if member is None:
            choices.error("as", ctx.views.say(staff.lang, "preview_as_unknown",
                          address=choices.address, lists=", ".join(slugs)))  # fmt: skip
    if choices.errors:
        return [], []
    slug, recipient = member or (slugs[0], sample())
    try:
        list_info = await ctx.store.lists.info(slug)
    except NotFoundError as exc:
        return [], [f"lists: {exc}"]
    action = kind_action(campaign, choices.action)
    languages: tuple[str | None, ...] = campaign.languages or (None,)
    mails = [
        await render_mail(ctx, campaign, list_info, recipient, action=action, lang=lang)
        for lang in languages
    ]
    return mails, []


async def live(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``/admin/preview``: a ``POST`` previews the form; a ``GET`` has nothing to show (the
    live preview is the compose form's) and goes to the campaigns."""
    if request.method == "POST":
        return await live_preview(ctx, request, staff)
    return RedirectResponse("/admin/campaigns", status_code=303)


# --- GET /campaigns/{name}/members -------------------------------------------------------------


async def members(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/campaigns/{name}/members?q=``: whom to preview as."""
    found = await saved(ctx, request, staff)
    if isinstance(found, Response):
        return found
    raw = request.query_params.get("q", "")
    query = raw.strip()[:200]
    rows: list[tuple[str, str, str]] = []  # address, name, list
    seen: set[str] = set()
    for slug in found.campaign.data.lists:
        try:
            page = await ctx.store.browse.members(
                slug, search=query, status="subscribed", limit=MEMBERS_SHOWN
            )
        except NotFoundError:
            continue
        for member in page.members:
            if member.email not in seen and not member.suppressed:
                seen.add(member.email)
                rows.append((member.email, member.name, slug))
    rows = sorted(rows)[:MEMBERS_SHOWN]
    title = ctx.views.say(staff.lang, "preview_members_title", name=found.record.name)
    return ctx.views.render(
        "preview_members.html", staff.lang, title=title, staff=staff, section="campaigns",
        layout=layout(request), record=found.record, rows=rows, q=query,
    )  # fmt: skip


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("/preview", live, read=Role.EDITOR, write=Role.EDITOR),
    ConsoleRoute("/campaigns/{name}/preview", saved_preview, read=Role.VIEWER),
    ConsoleRoute("/campaigns/{name}/members", members, read=Role.EDITOR),
)
