"""The console's route table: every :class:`~mailer.web.console.guard.ConsoleRoute` of its
modules, each behind the guard, plus the sign-in page and the static files, all under
``/admin``. :data:`CONSOLE_ROUTES` is what the route x role x method tests walk.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from mailer.clock import Clock, utc_now
from mailer.settings import Settings
from mailer.storage import Store
from mailer.web.console import (
    approval,
    audit,
    bounces,
    campaign_control,
    campaigns,
    compose,
    dashboard,
    imports,
    login,
    people,
    preflight,
    preview,
    sends,
    suppressions,
    users,
)
from mailer.web.console.context import ConsoleContext, TestMail
from mailer.web.console.guard import ConsoleRoute, guarded
from mailer.web.console.static import static_file
from mailer.web.console.views import ConsoleViews

PREFIX = "/admin"
CONSOLE_ROUTES: tuple[ConsoleRoute, ...] = (
    *dashboard.ROUTES,
    *sends.ROUTES,
    *compose.ROUTES,  # /compose before the campaigns' {name} paths
    *campaigns.ROUTES,
    *approval.ROUTES,
    *campaign_control.ROUTES,
    *preview.ROUTES,
    *preflight.ROUTES,
    *people.ROUTES,
    *imports.ROUTES,
    *suppressions.ROUTES,
    *bounces.ROUTES,
    *audit.ROUTES,
    *users.ROUTES,
    *login.ROUTES,
)


async def _to_home(request: Request) -> Response:
    return RedirectResponse(PREFIX + "/", status_code=308)


class Mounted(NamedTuple):
    """The console's routes, and what to await when the app stops (counts in flight)."""

    routes: list[Route]
    close: Callable[[], Awaitable[None]]


def console_routes(
    settings: Settings,
    store: Store,
    *,
    on_send: Callable[[int], None] | None = None,
    test_mail: TestMail | None = None,
    clock: Clock = utc_now,
) -> Mounted:
    """The console's routes, ready to mount on the web app (or on its own listener)."""
    views = ConsoleViews(settings.paths.templates_dir, zone=settings.scheduler.timezone)
    ctx = ConsoleContext(settings, store, views, on_send=on_send, test_mail=test_mail, clock=clock)
    routes: list[Route] = [
        Route(PREFIX, _to_home),
        Route(PREFIX + "/login", partial(login.login, ctx=ctx), methods=["GET", "HEAD", "POST"]),
        Route(PREFIX + "/static/{name:str}", static_file),
    ]
    routes += [
        Route(PREFIX + route.path, guarded(ctx, route), methods=route.methods)
        for route in CONSOLE_ROUTES
    ]
    return Mounted(routes, ctx.close)
