"""The app factory: :func:`create_app` mounts the subscriber pages (``pages.PAGES``),
``/healthz``, ``/metrics``, the relays' bounce webhooks (``/hooks/bounces/``), the staff
console (``/admin/``) and the REST API (``/api/v1/``, its own app answering problems in
JSON, never these pages, with its own body limit ``MAILER_API__MAX_BODY``) on one Starlette
app, maps
what a view raises to a page (413, 400, 503, 500), answers 404 and 405 with our own pages,
and wraps the whole in the body limit and the security headers.

Starlette's trailing-slash redirect is off (it builds its URL from the Host header): a path
with a slash too many is redirected here, to ``MAILER_WEB__BASE_URL``.
:func:`create_console_app` serves the console alone, for its own listener. Nothing here
reads a token or a form.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Scope

from mailer.clock import Clock, utc_now
from mailer.errors import StorageError
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer
from mailer.web.context import PageContext, route_name
from mailer.web.headers import SecurityHeaders
from mailer.web.limits import MAX_BODY, BodyLimit, TooLarge
from mailer.web.locales import pick_locale
from mailer.web.metrics import Monitor, SchedulerProbe
from mailer.web.pages import PAGES
from mailer.web.views import Views

if TYPE_CHECKING:  # the console loads only when it is mounted
    from mailer.web.console.context import TestMail

log = logging.getLogger("mailer.web")

Endpoint = Callable[[Request], Awaitable[Response]]
OPERATOR_PATHS = ("/healthz", "/metrics")  # they answer JSON, not a page, when storage fails
API_PREFIX = "/api/v1"
API_PATHS = "/api/"  # a path below it answers a problem (JSON), never a page


def create_app(
    settings: Settings,
    store: Store,
    *,
    signer: Signer,
    scheduler: SchedulerProbe | None = None,
    on_send: Callable[[int], None] | None = None,
    test_mail: TestMail | None = None,
    clock: Clock = utc_now,
) -> ASGIApp:
    """The subscriber pages, ``/healthz`` and ``/metrics`` as one ASGI app, and the staff
    console under ``/admin/`` (unless it is off, or has a listener of its own)."""
    views = Views(settings.paths.templates_dir)
    web = PageContext(settings, store, signer, views, on_send=on_send, clock=clock)
    monitor = Monitor(store, scheduler=scheduler, clock=clock)
    routes: list[BaseRoute] = [
        Route(page.path, _guarded(views, partial(page.view, web)), methods=page.methods)
        for page in PAGES
    ]
    routes += [
        Route("/healthz", _guarded(views, monitor.healthz)),
        Route("/metrics", _guarded(views, monitor.metrics)),
    ]
    routes += _bounce_hooks(settings, store, signer, clock)
    if settings.api.enabled:
        routes.append(_api(settings, store, on_send=on_send, clock=clock))
    closers: list[Callable[[], Awaitable[None]]] = []
    if settings.console.enabled and not own_console_listener(settings):
        routes += _console(
            settings, store, views, closers, on_send=on_send, test_mail=test_mail, clock=clock
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with monitor.lag.running():
            yield
        for close in closers:
            await close()

    errors = _ErrorPages(settings, views)
    app = Starlette(
        routes=routes,
        exception_handlers={
            404: errors.not_found,
            405: errors.not_found,
            Exception: errors.server_error,
        },
        lifespan=lifespan,
    )
    # Starlette's own trailing-slash redirect builds its URL from the Host header.
    app.router.redirect_slashes = False
    return _limited(app, settings, views)


def _bounce_hooks(settings: Settings, store: Store, signer: Signer, clock: Clock) -> list[Route]:
    """``/hooks/bounces/<provider>``: the relays' webhooks, their events stored by the one
    intake (a provider without its secret answers 404)."""
    from mailer.intake import Intake
    from mailer.web.bounce_hooks import hook_routes

    intake = Intake(store, settings, clock=clock, signer=signer)
    return hook_routes(settings.bounces.webhooks, intake.events, clock=clock)


def _api(
    settings: Settings, store: Store, *, on_send: Callable[[int], None] | None, clock: Clock
) -> Mount:
    """``/api/v1``: the REST API, an app of its own (its 404, 405 and 500 are problems)."""
    from mailer.web.api import api_app

    return Mount(API_PREFIX, app=api_app(settings, store, on_send=on_send, clock=clock))


def create_console_app(
    settings: Settings,
    store: Store,
    *,
    on_send: Callable[[int], None] | None = None,
    test_mail: TestMail | None = None,
    clock: Clock = utc_now,
) -> ASGIApp:
    """The staff console alone, for its own listener (``MAILER_CONSOLE__HOST``/``PORT``)."""
    views = Views(settings.paths.templates_dir)
    errors = _ErrorPages(settings, views)
    closers: list[Callable[[], Awaitable[None]]] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for close in closers:
            await close()

    app = Starlette(
        routes=_console(settings, store, views, closers, on_send=on_send, test_mail=test_mail,
                        clock=clock),
        exception_handlers={404: errors.not_found, 405: errors.not_found,
                            Exception: errors.server_error},
        lifespan=lifespan,
    )  # fmt: skip
    app.router.redirect_slashes = False
    return _limited(app, settings, views)


def own_console_listener(settings: Settings) -> bool:
    """Whether the console has a listener of its own (``MAILER_CONSOLE__PORT`` set), and so
    is not on the web port."""
    return settings.console.port is not None


def _console(
    settings: Settings,
    store: Store,
    views: Views,
    closers: list[Callable[[], Awaitable[None]]],
    *,
    on_send: Callable[[int], None] | None,
    test_mail: TestMail | None,
    clock: Clock,
) -> list[Route]:
    """The console's routes, each wrapped like the pages' (413, 400, 503 answered); what to
    await at shutdown goes to ``closers``."""
    from mailer.web.console import console_routes

    mounted = console_routes(settings, store, on_send=on_send, test_mail=test_mail, clock=clock)
    closers.append(mounted.close)
    return [
        Route(route.path, _guarded(views, route.endpoint), methods=route.methods)
        for route in mounted.routes
    ]


# The console's campaign form (and its live preview) carries a body per language.
CAMPAIGN_FORMS = re.compile(r"^/admin/(compose|preview|campaigns/[^/]+/(edit|event))$")
CAMPAIGN_FORM_MAX = 8 << 20  # bytes: two bodies of MAX_BODY characters, URL-encoded


def _limited(app: ASGIApp, settings: Settings, views: Views) -> ASGIApp:
    """``app`` behind the body limit (wider for the console's upload and campaign form, the
    API's own ``MAILER_API__MAX_BODY``; a 413 page in the reader's language, a problem for the
    API) and the security headers (the API's docs page with a policy of its own)."""
    from mailer.web.api.docs import DocsHeaders
    from mailer.web.api.problems import Problem
    from mailer.web.bounce_hooks import HOOK_PREFIX, MAX_HOOK_BODY
    from mailer.web.console.imports import UPLOAD_PATHS

    uploads = dict.fromkeys(UPLOAD_PATHS, settings.console.upload_max_bytes + 64 * 1024)
    api_body = settings.api.max_body

    def wider(path: str) -> int | None:
        if path in uploads:
            return uploads[path]
        if path.startswith(HOOK_PREFIX):
            return MAX_HOOK_BODY
        if path.startswith(API_PATHS):
            return api_body
        return CAMPAIGN_FORM_MAX if CAMPAIGN_FORMS.match(path) else None

    def page(scope: Scope) -> Response:
        if str(scope.get("path", "")).startswith(API_PATHS):
            detail = f"the body is larger than {api_body} bytes (MAILER_API__MAX_BODY)"
            return Problem(413, detail).response()
        return views.message(pick_locale(Request(scope)), "too_large", status=413)

    return DocsHeaders(SecurityHeaders(BodyLimit(app, MAX_BODY, wider=wider, page=page)))


def _guarded(views: Views, view: Endpoint) -> Endpoint:
    """``view``, with what it may raise answered: a body grown too large (413), a client
    gone mid-body (400), storage failing (503, a page or JSON for the operator paths)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await view(request)
        except TooLarge:  # a body without Content-Length grew past the limit
            return views.message(pick_locale(request), "too_large", status=413)
        except ClientDisconnect:
            # the client went away mid-body: nothing was read, nothing changes
            log.debug("%s %s: client disconnected", request.method, route_name(request))
            return Response(status_code=400)
        except StorageError as exc:
            log.error("%s %s: %s", request.method, route_name(request), exc)
            if request.url.path in OPERATOR_PATHS:
                return JSONResponse(
                    {"status": "unavailable", "database": str(exc)}, status_code=503
                )
            lang = pick_locale(request)
            return views.message(lang, "unavailable", status=503)

    return endpoint


class _ErrorPages:
    """Our pages for 404, 405 and 500, and the redirect of a path with a trailing slash."""

    def __init__(self, settings: Settings, views: Views) -> None:
        self.settings = settings
        self.views = views

    async def not_found(self, request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        if request.url.path.startswith(API_PATHS) or request.url.path == API_PREFIX:
            from mailer.web.api.problems import Problem

            return Problem(404, "no such API; the REST API is under /api/v1/").response()
        lang = pick_locale(request)
        if code == 405:
            allowed = (exc.headers or {}).get("Allow", "") if isinstance(exc, HTTPException) else ""
            response = self.views.message(lang, "bad_request", status=405)
            if allowed:
                response.headers["Allow"] = allowed
            return response
        path = request.url.path
        if path.endswith("/") and path.rstrip("/") and _is_route(request.app, path.rstrip("/")):
            # /s/list/ -> /s/list, on the configured base URL (never the Host header)
            target = self.settings.web.base_url + path.rstrip("/")
            if request.url.query:
                target += "?" + request.url.query
            return RedirectResponse(target, status_code=308 if request.method != "GET" else 307)
        return self.views.message(lang, "notfound", status=404)

    async def server_error(self, request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this answer, so the server logs the traceback once.
        log.error("%s %s: unexpected %s: %s", request.method, route_name(request),
                  type(exc).__name__, exc)  # fmt: skip
        return self.views.message(pick_locale(request), "error", status=500)


def _is_route(app: Starlette, path: str) -> bool:
    scope: Scope = {"type": "http", "path": path, "method": "GET"}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)
