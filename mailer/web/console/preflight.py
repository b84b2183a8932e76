"""Console pages: The pre-flight of a campaign (every recipient rendered, with progress, those who
cannot be named with why) and its test send.

- ``GET /admin/campaigns/{name}/preflight`` (editor): the pre-flight of the campaign's current
  version, its progress bar and figures (the fragment htmx polls every second while it runs);
  ``POST`` starts it (one per version at a time: a second start while it runs shows it). The
  work is a task of :class:`~mailer.web.console.preflight_runs.PreflightRuns`: every subscribed
  member of each list (each person once), composed as the send will compose them, in chunks in
  a worker thread. Kept in this process's memory, for that version.
- ``GET /admin/campaigns/{name}/test`` (editor): the test form (to: one's own address or one of
  ``MAILER_CONSOLE__TEST_RECIPIENTS``; as a member; the language; an event's mail); ``POST``
  composes it with :meth:`~mailer.compose.Composer.compose_test` (``[TEST]`` subject, inert
  links) and hands it to the daemon's ``test_mail`` (the console never imports the transport);
  the relay's answer is shown. At most ten a minute per staff member.

Both are written to the audit log (``campaign.preflight``, ``campaign.test``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailer.addresses import address_key
from mailer.campaigns import Campaign
from mailer.compose import Composed, Composer
from mailer.errors import MailerError, NotFoundError
from mailer.models import EVENT_ACTIONS, CampaignKind, Recipient, Role
from mailer.render import CheckReport, preflight
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, form_of
from mailer.web.console.preflight_runs import KEEP_FAILURES, TESTS_PER_MINUTE, PreflightRun
from mailer.web.console.preview import (
    SAMPLE,
    Choices,
    Saved,
    choices_of,
    composer_for,
    find_member,
    first_member,
    kind_action,
    sample,
    saved,
)

CHUNK = 200  # recipients composed in one go in the worker thread

# --- the pre-flight ----------------------------------------------------------------------------


def check_chunk(composer: Composer, chunk: Sequence[Any], now: datetime) -> CheckReport:
    """Compose every recipient of ``chunk`` as the send will (blocking: in a worker thread)."""
    return preflight(
        composer.compiled,
        ((r, composer.links(r)) for r in chunk),
        build=lambda recipient, _: composer.compose(recipient, date=now),
        keep=KEEP_FAILURES,
    )


def preflight_work(ctx: ConsoleContext, campaign: Campaign, action: str) -> Any:
    """The task of one pre-flight: count, then compose each list's members chunk by chunk."""

    async def work(run: PreflightRun) -> None:
        now = ctx.clock()
        slugs = list(campaign.data.lists)
        _, run.total = await ctx.store.lists.audience(slugs)
        run.stage = "checking"
        seen: set[int] | None = set() if len(slugs) > 1 else None  # each person once
        for slug in slugs:
            list_info = await ctx.store.lists.info(slug)
            try:
                composer = await asyncio.to_thread(
                    composer_for, ctx, campaign, list_info, action, now
                )
            except (MailerError, ValueError) as exc:  # the campaign's, not a recipient's
                run.stage, run.error = "failed", str(exc)
                return
            chunk: list[Any] = []
            stream = cast(AsyncGenerator[Recipient], ctx.store.lists.recipients(slug))
            async with contextlib.aclosing(stream) as members:
                async for recipient in members:
                    if seen is not None:
                        if recipient.id in seen:
                            continue
                        seen.add(recipient.id)
                    chunk.append(recipient)
                    if len(chunk) >= CHUNK:
                        run.add(await asyncio.to_thread(check_chunk, composer, chunk, now))
                        chunk = []
            if chunk:
                run.add(await asyncio.to_thread(check_chunk, composer, chunk, now))
        run.finished_at = ctx.clock()

    return work


def _preflight_view(
    ctx: ConsoleContext, request: Request, staff: Staffer, found: Saved, *, status: int = 200
) -> Response:
    record = found.record
    run = ctx.preflights.get(record.id, record.version)
    latest = ctx.preflights.latest(record.id)
    stale = latest.version if latest is not None and latest is not run else None
    fragment = bool(request.headers.get("hx-request"))
    return ctx.views.render(
        "preflight_progress.html" if fragment else "preflight.html", staff.lang,
        title=ctx.views.say(staff.lang, "preflight_title", name=record.name), staff=staff,
        section="campaigns", record=record, run=run, stale=stale, status=status,
        is_event=found.campaign.data.kind == CampaignKind.EVENT, actions=EVENT_ACTIONS,
    )  # fmt: skip


async def preflight_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``/admin/campaigns/{name}/preflight``: its progress; a ``POST`` starts it."""
    found = await saved(ctx, request, staff)
    if isinstance(found, Response):
        return found
    if request.method != "POST":
        return _preflight_view(ctx, request, staff, found)
    form = await form_of(request)
    raw = form.get("action")
    action = raw if isinstance(raw, str) and raw in EVENT_ACTIONS else None
    record = found.record
    run = PreflightRun(
        record.id, record.version, record.name, started_by=staff.user.email,
        started_at=ctx.clock(),
    )  # fmt: skip
    work = preflight_work(ctx, found.campaign, kind_action(found.campaign, action))
    run, started = ctx.preflights.start(run, work)
    if started:
        await ctx.audit(
            staff, request, "campaign.preflight", record.name,
            {"version": record.version, "action": kind_action(found.campaign, action)},
        )  # fmt: skip
    return RedirectResponse(f"/admin/campaigns/{record.name}/preflight", status_code=303)


# --- the test send -----------------------------------------------------------------------------


def allowed_targets(ctx: ConsoleContext, staff: Staffer) -> list[str]:
    """Where a test may go: one's own address, then the seed list (each once)."""
    targets = [staff.user.email]
    for address in ctx.settings.console.test_recipients:
        if address_key(address) not in {address_key(t) for t in targets}:
            targets.append(address)
    return targets


def _test_view(
    ctx: ConsoleContext,
    staff: Staffer,
    found: Saved,
    choices: Choices,
    *,
    to: str = "",
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> Response:
    record = found.record
    return ctx.views.render(
        "testsend.html", staff.lang,
        title=ctx.views.say(staff.lang, "testsend_title", name=record.name), staff=staff,
        section="campaigns", record=record, campaign=found.campaign, choices=choices,
        targets=allowed_targets(ctx, staff), to=to or staff.user.email, notice=notice,
        error=error, status=status, actions=EVENT_ACTIONS, sample=SAMPLE,
        is_event=found.campaign.data.kind == CampaignKind.EVENT,
    )  # fmt: skip


async def test_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``/admin/campaigns/{name}/test``: the form; a ``POST`` sends the test."""
    found = await saved(ctx, request, staff)
    if isinstance(found, Response):
        return found
    if request.method != "POST":
        choices = choices_of(ctx, request.query_params, found.campaign, staff.lang)
        choices.errors = None  # a first look: nothing typed yet
        return _test_view(ctx, staff, found, choices)
    return await _send_test(ctx, request, staff, found)


async def _send_test(
    ctx: ConsoleContext, request: Request, staff: Staffer, found: Saved
) -> Response:
    say, lang, campaign = ctx.views.say, staff.lang, found.campaign
    form = await form_of(request)
    choices = choices_of(ctx, form, campaign, lang)
    raw_to = form.get("to")
    to = raw_to.strip()[:320] if isinstance(raw_to, str) else ""
    keys = {address_key(t): t for t in allowed_targets(ctx, staff)}
    target = keys.get(address_key(to)) if to else None
    if target is None:
        choices.error("to", say(lang, "testsend_bad_to", address=to or "—"))
    slugs = list(campaign.data.lists)
    member = None
    if choices.address:
        member = await find_member(ctx.store, slugs, choices.address)
        if member is None:
            choices.error("as", say(lang, "preview_as_unknown", address=choices.address,
                                    lists=", ".join(slugs)))  # fmt: skip
    if choices.errors or target is None:
        return _test_view(ctx, staff, found, choices, to=to, status=400)
    if ctx.test_mail is None:
        return _test_view(ctx, staff, found, choices, to=target,
                          error=say(lang, "testsend_unavailable"), status=503)  # fmt: skip
    if not ctx.preflights.allow_test(staff.user.email):
        return _test_view(ctx, staff, found, choices, to=target, status=429,
                          error=say(lang, "testsend_too_many", count=TESTS_PER_MINUTE))  # fmt: skip
    member = member or await first_member(ctx.store, slugs)
    slug, recipient = member or (slugs[0], sample())
    composed = await _compose_test(ctx, campaign, slug, recipient, choices, target)
    if isinstance(composed, str):
        return _test_view(ctx, staff, found, choices, to=target, status=400,
                          error=f"{say(lang, 'preview_failed')} {composed}")  # fmt: skip
    result = await ctx.test_mail(composed.message)
    await ctx.audit(
        staff, request, "campaign.test", found.record.name,
        {"to": target, "as": recipient.email, "lang": composed.rendered.locale,
         "version": found.record.version, "delivered": result.delivered,
         "reply": result.reply[:200]},
    )  # fmt: skip
    key = "testsend_sent" if result.delivered else "testsend_refused"
    text = say(lang, key, to=target, reply=result.reply or "—")
    if result.delivered:
        return _test_view(ctx, staff, found, choices, to=target, notice=text)
    return _test_view(ctx, staff, found, choices, to=target, error=text, status=502)


async def _compose_test(
    ctx: ConsoleContext,
    campaign: Campaign,
    slug: str,
    recipient: Any,
    choices: Choices,
    target: str,
) -> Composed | str:
    """The test message, or why it cannot be made (a template's error with its line)."""
    try:
        list_info = await ctx.store.lists.info(slug)
    except NotFoundError as exc:
        return str(exc)
    now = ctx.clock()
    if choices.lang:
        recipient = replace(recipient, locale=choices.lang)
    action = kind_action(campaign, choices.action)

    def work() -> Composed | str:
        try:
            composer = composer_for(ctx, campaign, list_info, action, now)
            return composer.compose_test(recipient, to=target, date=now)
        except (MailerError, ValueError) as exc:
            return str(exc)

    return await asyncio.to_thread(work)


ROUTES: tuple[ConsoleRoute, ...] = (
    ConsoleRoute("/campaigns/{name}/preflight", preflight_page, read=Role.EDITOR,
                 write=Role.EDITOR),
    ConsoleRoute("/campaigns/{name}/test", test_page, read=Role.EDITOR, write=Role.EDITOR),
)  # fmt: skip

__all__ = ["ROUTES", "allowed_targets", "check_chunk", "preflight_work"]
