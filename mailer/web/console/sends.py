"""Console pages: a send's page (``/admin/sends/{id}``: progress, counts, the per-recipient
report with a status filter, an address search and keyset pages), its live progress
(``/progress``, the fragment htmx polls every 2 s), its report as CSV (``/report.csv``,
editor and up: personal data, formula-safe, streamed), and its actions (sender and up):
pause, resume, cancel, retry failed, each a confirmation page whose ``POST`` does it.

The actions are the lifecycle's moves, as the CLI makes them (``send pause|run|cancel|
retry-failed``): a refused move says why in the lifecycle's terms (the status the send is in,
the statuses the move goes from). A send that runs again is handed to ``on_send`` (the daemon's
scheduler); the console never sends anything itself. Every action is written to the audit log.
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlencode

from babel.dates import format_timedelta
from babel.numbers import format_decimal
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from mailer.errors import NotFoundError, StateError
from mailer.lifecycle import SendMove, send_sources
from mailer.lists import neutralise
from mailer.models import REPORT_COLUMNS, DeliveryStatus, Role, SendStatus
from mailer.storage.overview import STAFF_PAUSE, Progress, SendLine
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, form_of
from mailer.web.console.views import BABEL

PAGE = 50
STAFF_CANCEL = "cancelled by staff"
SPOOL = 8 << 20  # a report larger than this is spooled to disk
FLUSH = 64 * 1024  # CSV bytes gathered before a chunk is sent
DONE = ("paused", "resumed", "scheduled", "cancelled", "retried", "nothing")


def eta_text(progress: Progress, lang: str) -> str | None:
    """The time left at the current rate, in words (``13 minutes``); None when unknown."""
    eta = progress.eta
    return None if eta is None else format_timedelta(eta, locale=BABEL[lang])


def rate_text(rate: float, lang: str) -> str:
    """Messages per second with two decimals at most (``0,05``: a slow relay shows)."""
    text = format_decimal(round(rate, 2), format="#,##0.##", locale=BABEL[lang])
    return text.replace("\u00a0", "\u202f") if lang == "fr" else text


def progress_values(lang: str) -> dict[str, Any]:
    """What ``_progress.html`` needs beside the progress itself."""
    return {"eta": lambda p: eta_text(p, lang), "rate": lambda p: rate_text(p.rate, lang)}


def _send_id(request: Request) -> int:
    return int(request.path_params["send_id"])


def _not_found(ctx: ConsoleContext, staff: Staffer, send_id: int) -> Response:
    say = ctx.views.say
    return ctx.views.render(
        "message.html", staff.lang, title=say(staff.lang, "sends_not_found_title"),
        text=say(staff.lang, "sends_not_found", id=send_id), staff=staff, back="/admin/",
        status=404,
    )  # fmt: skip


# --- the send's page ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """The report's filter as the page's query string gives it."""

    status: DeliveryStatus | None
    search: str
    after: str | None
    error: str | None  # a filter that does not parse, said in words

    @classmethod
    def of(cls, ctx: ConsoleContext, request: Request, lang: str) -> ReportQuery:
        params = request.query_params
        raw = params.get("status", "")
        status, error = None, None
        if raw:
            try:
                status = DeliveryStatus(raw)
            except ValueError:
                error = ctx.views.say(lang, "sends_bad_status", value=raw[:40])
        search = params.get("q", "").strip()[:320]
        return cls(status, search, params.get("after") or None, error)

    def url(self, send_id: int, after: str | None) -> str:
        fields = {"status": self.status.value if self.status else "", "q": self.search}
        kept = {k: v for k, v in fields.items() if v}
        if after:
            kept["after"] = after
        return f"/admin/sends/{send_id}" + (f"?{urlencode(kept)}" if kept else "") + "#report"


async def _render_send(
    ctx: ConsoleContext, request: Request, staff: Staffer, send_id: int, *,
    error: str | None = None, status: int = 200,
) -> Response:  # fmt: skip
    try:
        line = await ctx.store.overview.send(send_id)
        progress = await ctx.live.of(line)
    except NotFoundError:
        return _not_found(ctx, staff, send_id)
    query = ReportQuery.of(ctx, request, staff.lang)
    page = await ctx.store.overview.report(
        send_id, status=query.status, search=query.search, after=query.after, limit=PAGE
    )
    done, count = request.query_params.get("done", ""), request.query_params.get("queued", "")
    notice = None
    if done in DONE:
        queued = (
            ctx.views.number(int(count), staff.lang)
            if count.isascii() and count.isdigit() and len(count) < 10
            else "?"
        )
        notice = ctx.views.say(staff.lang, f"sends_done_{done}", count=queued)
    title = ctx.views.say(staff.lang, "sends_title", id=send_id, campaign=line.campaign)
    return ctx.views.render(
        "send.html", staff.lang, title=title, staff=staff, section="dashboard", line=line,
        p=progress, actions=_possible(line, progress), query=query, page=page,
        next_url=query.url(send_id, page.next) if page.next else None,
        first_url=query.url(send_id, None) if query.after else None,
        statuses=[s.value for s in DeliveryStatus], notice=notice,
        error=error or query.error, status=status, **progress_values(staff.lang),
    )  # fmt: skip


async def send_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/sends/{id}``."""
    return await _render_send(ctx, request, staff, _send_id(request))


async def progress_fragment(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/sends/{id}/progress``: the live part of the page, which htmx swaps in
    every 2 s while the send runs (its answer stops the polling once it no longer does)."""
    send_id = _send_id(request)
    try:
        progress = await ctx.live.of(await ctx.store.overview.send(send_id))
    except NotFoundError:
        return Response(status_code=404, media_type="text/plain")
    return ctx.views.render(
        "_progress.html", staff.lang, title="", staff=staff, p=progress,
        **progress_values(staff.lang),
    )  # fmt: skip


async def report_csv(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/sends/{id}/report.csv``: every recipient with what happened, the columns
    of ``mailer send report --csv``, each cell defused against spreadsheet formulas."""
    send_id = _send_id(request)
    try:
        await ctx.store.overview.send(send_id)
    except NotFoundError:
        return _not_found(ctx, staff, send_id)
    if request.method == "HEAD":  # no file made, nothing audited: only a GET exports
        return Response(media_type="text/csv; charset=utf-8")
    # Written to a spool file at the database's pace, then sent at the client's: a slow or
    # stalled download holds no database connection.
    spool: IO[str] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by the stream)
        max_size=SPOOL, mode="w+", encoding="utf-8", newline=""
    )
    try:
        writer = csv.writer(spool, lineterminator="\n")
        writer.writerow(REPORT_COLUMNS)
        async for row in ctx.store.figures.report(send_id):
            values = (row.value(c) for c in REPORT_COLUMNS)
            writer.writerow([neutralise("" if v is None else str(v)) for v in values])
    except BaseException:
        spool.close()
        raise
    await ctx.audit(staff, request, "send.export", f"send {send_id}", {"what": "report"})
    spool.seek(0)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while chunk := spool.read(FLUSH):
                yield chunk.encode("utf-8")
        finally:
            spool.close()

    name = f"send-{send_id}-report.csv"
    return StreamingResponse(
        chunks(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# --- the actions ------------------------------------------------------------------------------

Done = str  # the ``?done=`` notice of the send's page after a change


@dataclass(frozen=True, slots=True)
class Action:
    """One action of a send's page: its confirmation words and what it does."""

    name: str  # pause, resume, cancel, retry (the URL and the words' keys)
    audit: str
    run: Callable[[ConsoleContext, SendLine], Awaitable[tuple[Done, dict[str, Any]]]]


def _possible(line: SendLine, progress: Progress) -> list[str]:
    """The actions the send's status allows (the lifecycle's table; retry: failed ones)."""
    found = []
    if line.status in send_sources(SendMove.PAUSE):
        found.append("pause")
    if line.status == SendStatus.PAUSED:
        found.append("resume")
    if progress.counts.failed and line.status not in (SendStatus.CANCELLED, SendStatus.MISSED):
        found.append("retry")
    if line.status in send_sources(SendMove.CANCEL):
        found.append("cancel")
    return found


class Refused(Exception):
    """A move the send's status does not allow: the words that say why."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key, self.values = key, values


async def _move(ctx: ConsoleContext, line: SendLine, move: SendMove, reason: str | None) -> None:
    """Make ``move`` (as ``mailer send pause|cancel|run`` do), or raise :class:`Refused`
    with the lifecycle's reason: the status the send is in and where the move goes from."""
    if await ctx.store.sends.move(line.id, move, now=ctx.clock(), reason=reason):
        return
    current = await ctx.store.sends.status(line.id)
    sources = send_sources(move)
    if current in sources:  # it was elsewhere when the move was tried
        raise Refused("sends_refused_raced")
    raise Refused("sends_refused", status=current, allowed=sources)


def _hand_over(ctx: ConsoleContext, send_id: int) -> None:
    if ctx.on_send is not None:
        ctx.on_send(send_id)


async def _pause(ctx: ConsoleContext, line: SendLine) -> tuple[Done, dict[str, Any]]:
    await _move(ctx, line, SendMove.PAUSE, STAFF_PAUSE)
    return "paused", {"from": line.status}


async def _cancel(ctx: ConsoleContext, line: SendLine) -> tuple[Done, dict[str, Any]]:
    await _move(ctx, line, SendMove.CANCEL, STAFF_CANCEL)
    return "cancelled", {"from": line.status}


async def _resume(ctx: ConsoleContext, line: SendLine) -> tuple[Done, dict[str, Any]]:
    """A send paused while it ran goes on now (the daemon runs it); one paused before it
    started goes back to waiting for its due time (as ``mailer campaign resume`` does)."""
    started = line.started_at is not None
    await _move(ctx, line, SendMove.RESUME if started else SendMove.RESUME_UNSTARTED, None)
    if started or line.due_at <= ctx.clock():
        _hand_over(ctx, line.id)
    return ("resumed" if started else "scheduled"), {"from": line.status}


async def _retry(ctx: ConsoleContext, line: SendLine) -> tuple[Done, dict[str, Any]]:
    """Queue the failed deliveries again (and those skipped for a suppression lifted since),
    as ``mailer send retry-failed`` does; a finished send runs again."""
    try:
        count = await ctx.store.sends.retry_failed(line.id, now=ctx.clock())
    except StateError:
        current = await ctx.store.sends.status(line.id)
        raise Refused("sends_refused_retry", status=current) from None
    if not count:
        return "nothing", {}
    if await ctx.store.sends.status(line.id) == SendStatus.RUNNING:
        _hand_over(ctx, line.id)
    return "retried", {"from": line.status, "queued": count}


ACTIONS = {
    "pause": Action("pause", "send.pause", _pause),
    "resume": Action("resume", "send.resume", _resume),
    "cancel": Action("cancel", "send.cancel", _cancel),
    "retry": Action("retry", "send.retry", _retry),
}


def _refusal(ctx: ConsoleContext, lang: str, refused: Refused) -> str:
    def status(value: str) -> str:
        return ctx.views.say(lang, f"sends_status_{value}")

    values = dict(refused.values)
    if "status" in values:
        values["status"] = status(values["status"])
    if "allowed" in values:
        values["allowed"] = ", ".join(status(s) for s in values["allowed"])
    return ctx.views.say(lang, refused.key, **values)


def action_view(
    action: Action,
) -> Callable[[ConsoleContext, Request, Staffer], Awaitable[Response]]:
    async def view(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
        send_id = _send_id(request)
        try:
            line = await ctx.store.overview.send(send_id)
        except NotFoundError:
            return _not_found(ctx, staff, send_id)
        if request.method != "POST" or (await form_of(request)).get("confirm") != "yes":
            return _confirm(ctx, staff, action, line)
        try:
            done, details = await action.run(ctx, line)
        except Refused as refused:
            text = _refusal(ctx, staff.lang, refused)
            return await _render_send(ctx, request, staff, send_id, error=text, status=409)
        if done != "nothing":
            details = {"campaign": line.campaign, "key": line.key, **details}
            await ctx.audit(staff, request, action.audit, f"send {send_id}", details)
        queued = f"&queued={details['queued']}" if "queued" in details else ""
        return RedirectResponse(f"/admin/sends/{send_id}?done={done}{queued}", status_code=303)

    view.__name__ = f"send_{action.name}"
    return view


def _confirm(ctx: ConsoleContext, staff: Staffer, action: Action, line: SendLine) -> Response:
    say, lang = ctx.views.say, staff.lang
    what = say(
        lang,
        "sends_what",
        campaign=line.campaign,
        action=say(lang, f"sends_action_{line.action}"),
        id=line.id,
    )
    return ctx.views.render(
        "confirm.html", lang, title=say(lang, f"sends_{action.name}_title"), staff=staff,
        section="dashboard", question=say(lang, f"sends_{action.name}_question", what=what),
        action=f"/admin/sends/{line.id}/{action.name}",
        button=say(lang, f"sends_{action.name}_confirm"), back=f"/admin/sends/{line.id}",
    )  # fmt: skip


ROUTES: list[ConsoleRoute] = [
    ConsoleRoute("/sends/{send_id:int}", send_page),
    ConsoleRoute("/sends/{send_id:int}/progress", progress_fragment),
    ConsoleRoute("/sends/{send_id:int}/report.csv", report_csv, read=Role.EDITOR),
    *(
        ConsoleRoute(f"/sends/{{send_id:int}}/{name}", action_view(a), Role.SENDER, Role.SENDER)
        for name, a in ACTIONS.items()
    ),
]
