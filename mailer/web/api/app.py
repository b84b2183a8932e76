"""The REST API as a Starlette app, mounted by the app factory at ``/api/v1``: every route
of the table (``routes.api_routes``) behind :func:`~mailer.web.api.core.endpoint`, the
OpenAPI document at ``/openapi.json``, the docs at ``/docs``, and a problem (JSON, never a
page) for an unknown path (404), a wrong method (405) and anything unexpected (500).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mailer.clock import Clock, utc_now
from mailer.settings import Settings
from mailer.storage import Store
from mailer.web.api import docs
from mailer.web.api.core import ApiContext, endpoint
from mailer.web.api.openapi import document
from mailer.web.api.problems import Problem
from mailer.web.api.routes import api_routes

log = logging.getLogger("mailer.web.api")


def api_app(
    settings: Settings,
    store: Store,
    *,
    on_send: Callable[[int], None] | None = None,
    clock: Clock = utc_now,
) -> Starlette:
    """The API's app (paths below ``/api/v1``)."""
    ctx = ApiContext(settings, store, clock, on_send)
    table = api_routes()
    openapi = docs.document_response(lambda: document(table))

    async def openapi_json(request: Request) -> Response:
        return openapi()

    async def docs_page(request: Request) -> Response:
        return docs.docs_page()

    async def static(request: Request) -> Response:
        return docs.static_file(str(request.path_params["name"]), request)

    routes = [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs_page, methods=["GET"]),
        Route("/docs/static/{name}", static, methods=["GET"]),
    ]
    routes += [Route(r.path, endpoint(r, ctx), methods=[r.method]) for r in table]
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_problem, Exception: _unexpected},
    )
    app.router.redirect_slashes = False
    return app


async def _http_problem(request: Request, exc: Exception) -> Response:
    code = exc.status_code if isinstance(exc, HTTPException) else 500
    if code == 405:
        allowed = (exc.headers or {}).get("Allow", "") if isinstance(exc, HTTPException) else ""
        return Problem(
            405,
            f"{request.method} is not allowed here; use {allowed or 'another method'}",
            headers={"Allow": allowed} if allowed else None,
        ).response()
    if code == 404:
        return Problem(
            404, "no such resource in the API (see /api/v1/openapi.json)", slug="not-found"
        ).response()
    return Problem(code, str(getattr(exc, "detail", "")) or "refused").response()


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("%s %s: unexpected %s: %s", request.method, request.url.path,
              type(exc).__name__, exc)  # fmt: skip
    return Problem(500, "an unexpected error; it is logged").response()
