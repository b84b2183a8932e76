"""Console pages: the dashboard (``/admin/``, every role): what needs attention first (sends
paused and why, sends missed lately, sends halted by the pass or waiting on the relay), the
running sends with their live progress (the fragment of :mod:`~mailer.web.console.sends`,
polled by htmx every 2 s; without JavaScript, the figures of the page's load), the sends
coming up in the console's local time with their audience, and the last sends with their
counts.

Reads only (``store.overview.dashboard``, and the running sends' counts through
:mod:`~mailer.web.console.live`, at most about 2 s old); changes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from starlette.requests import Request
from starlette.responses import Response

from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute
from mailer.web.console.sends import progress_values

AUDIENCES_FRESH = 60.0  # seconds an upcoming send's audience count is shown before a new one
MISSED_WITHIN = timedelta(days=7)  # missed sends shown on the dashboard: those of the last week
UPCOMING = 20
RECENT = 10


async def dashboard(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/``."""
    board = await ctx.store.overview.dashboard(
        now=ctx.clock(), upcoming=UPCOMING, recent=RECENT, within=MISSED_WITHIN, counted=False
    )
    # the running sends' figures and the audiences come from the console's readings (at most
    # ~2 s and ~60 s old: a distinct count over a million subscriptions takes a second)
    ids = [u.line.id for u in board.upcoming]

    async def read() -> dict[int, int]:
        return await ctx.store.overview.audiences(ids)

    audiences = await ctx.live.get(("audiences", *ids), read, fresh=AUDIENCES_FRESH)
    board = replace(
        board,
        running=[(line, await ctx.live.of(line)) for line, _ in board.running],
        upcoming=[replace(u, audience=audiences.get(u.line.id, 0)) for u in board.upcoming],
    )
    return ctx.views.render(
        "dashboard.html",
        staff.lang,
        title=ctx.views.say(staff.lang, "dash_title"),
        staff=staff,
        section="dashboard",
        board=board,
        attention=bool(board.paused or board.missed or board.troubles),
        **progress_values(staff.lang),
    )


ROUTES: list[ConsoleRoute] = [ConsoleRoute("/", dashboard)]
