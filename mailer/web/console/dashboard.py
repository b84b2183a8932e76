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

MISSED_WITHIN = timedelta(days=7)  # missed sends shown on the dashboard: those of the last week
UPCOMING = 20
RECENT = 10


async def dashboard(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/``."""
    board = await ctx.store.overview.dashboard(
        now=ctx.clock(), upcoming=UPCOMING, recent=RECENT, within=MISSED_WITHIN, counted=False
    )
    # the running sends' figures come from the console's readings (at most ~2 s old)
    board = replace(board, running=[(line, await ctx.live.of(line)) for line, _ in board.running])
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
