"""The one gate every console route goes through (:func:`guarded`): who is signed in, whether
their role may use the route with this method, and, for every ``POST``, the CSRF token.

- No live session: a ``GET`` is sent to ``/admin/login`` (``HX-Redirect`` for htmx), a
  ``POST`` gets 403 and changes nothing.
- A role below the route's: 403, nothing changed.
- ``POST`` without the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``):
  403, nothing changed. The form is parsed here (urlencoded, or multipart with at most one
  file, spooled to disk by Starlette) and the view reads it again from the request's cache.

Every answer carries ``Cache-Control: no-store``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response

from mailer.models import Role
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.session import (
    COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    current,
    digest,
    language,
    open_session,
    proxy_user,
    same,
    set_cookie,
)
from mailer.web.locales import pick_locale

log = logging.getLogger("mailer.console")

ConsoleView = Callable[[ConsoleContext, Request, Staffer], Awaitable[Response]]
READ_METHODS = ("GET", "HEAD")
MAX_FIELDS = 200
MAX_ID = 2**63 - 1  # the largest row id either database stores


@dataclass(frozen=True, slots=True)
class ConsoleRoute:
    """One console route: its path under ``/admin``, its view, the role a ``GET`` needs and
    the role a ``POST`` needs (None: the route takes no ``POST``)."""

    path: str
    view: ConsoleView
    read: Role = Role.VIEWER
    write: Role | None = None

    @property
    def methods(self) -> list[str]:
        return [*READ_METHODS, *(["POST"] if self.write is not None else [])]

    def needs(self, method: str) -> Role | None:
        return self.read if method in READ_METHODS else self.write


async def form_of(request: Request) -> FormData:
    """The form the guard already parsed (Starlette caches it on the request)."""
    return await request.form()


def guarded(ctx: ConsoleContext, route: ConsoleRoute) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await answer(request)
        finally:
            await request.close()  # the parsed form's spooled upload, whatever the answer

    async def answer(request: Request) -> Response:
        staff = await current(ctx, request)
        fresh_cookie: str | None = None
        proxied = proxy_user(ctx, request)
        if staff is not None and proxied is not None and proxied != staff.user.email:
            # the proxy now vouches for someone else (a shared machine): the old session ends
            await ctx.store.staff.close_session(staff.session_hash)
            staff = None
        if staff is None:
            staff, fresh_cookie = await _from_proxy(ctx, request, proxied)
        if staff is None:
            return _to_login(ctx, request)
        needed = route.needs(request.method)
        if needed is None or not staff.can(needed):
            return forbidden(ctx, staff, "forbidden_role")
        odd = _odd_input(ctx, request, staff)
        if odd is not None:
            return odd
        if request.method not in READ_METHODS:
            refused = await _check_csrf(ctx, request, staff)
            if refused is not None:
                return refused
        response = await route.view(ctx, request, staff)
        response.headers["Cache-Control"] = "no-store"
        response.headers.setdefault("Vary", "Cookie, HX-Request")
        if fresh_cookie is not None:
            set_cookie(ctx, request, response, COOKIE, fresh_cookie)
        return response

    return endpoint


def forbidden(ctx: ConsoleContext, staff: Staffer, key: str) -> Response:
    return ctx.views.render(
        "message.html",
        staff.lang,
        title=ctx.views.say(staff.lang, "forbidden_title"),
        text=ctx.views.say(staff.lang, key),
        staff=staff,
        status=403,
    )


def _odd_input(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response | None:
    """A path naming no possible row (an id past any database's, a NUL byte) is 404; a query
    holding a NUL byte, which PostgreSQL cannot compare, is 400. Nothing reaches storage."""
    for value in request.path_params.values():
        if (isinstance(value, int) and value > MAX_ID) or (
            isinstance(value, str) and "\0" in value
        ):
            return refusal(ctx, staff, "notfound", 404)
    if "\0" in str(request.url.query) or "%00" in str(request.url.query):
        return refusal(ctx, staff, "bad_form", 400)
    return None


def refusal(ctx: ConsoleContext, staff: Staffer, key: str, status: int) -> Response:
    return ctx.views.render(
        "message.html",
        staff.lang,
        title=ctx.views.say(staff.lang, f"{key}_title"),
        text=ctx.views.say(staff.lang, key),
        staff=staff,
        status=status,
    )


async def _check_csrf(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response | None:
    token = request.headers.get(CSRF_HEADER)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if token is None or kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        # parsed here, with our limits, whether the token comes in it or in the header
        upload = ctx.settings.console.upload_max_bytes
        try:
            form = await request.form(max_files=1, max_fields=MAX_FIELDS, max_part_size=upload)
        except (HTTPException, ValueError, AssertionError):
            return forbidden(ctx, staff, "bad_form")
        except ClientDisconnect:
            return Response(status_code=400)
        if any(isinstance(v, str) and "\0" in k + v for k, v in form.multi_items()):
            return refusal(ctx, staff, "bad_form", 400)
        if token is None:
            value = form.get(CSRF_FIELD)
            token = value if isinstance(value, str) else None
    if not same(token, staff.csrf):
        log.warning("console: POST %s refused: missing or wrong CSRF token", request.url.path)
        return forbidden(ctx, staff, "forbidden_csrf")
    return None


async def _from_proxy(
    ctx: ConsoleContext, request: Request, email: str | None
) -> tuple[Staffer | None, str | None]:
    """Sign in through the trusted proxy's header (an existing, enabled user only)."""
    if email is None:
        return None, None
    user = await ctx.store.staff.get(email)
    if user is None or user.disabled:
        log.warning("console: proxy user %r has no enabled staff account", email[:80])
        return None, None
    await ctx.store.staff.purge_sessions(now=ctx.clock(), idle=ctx.idle, absolute=ctx.absolute)
    session_id, csrf = await open_session(ctx, request, user.id)
    staff = Staffer(user, csrf, language(ctx, request, user.locale), digest(session_id))
    await ctx.audit(staff, request, "staff.sign_in", user.email, {"how": "trusted header"})
    return staff, session_id


def _to_login(ctx: ConsoleContext, request: Request) -> Response:
    if request.method not in READ_METHODS:
        lang = pick_locale(request)
        return ctx.views.render(
            "message.html",
            lang,
            title=ctx.views.say(lang, "signed_out_title"),
            text=ctx.views.say(lang, "signed_out_text"),
            staff=None,
            status=403,
        )
    target = "/admin/login?next=" + quote(request.url.path, safe="/")
    if request.headers.get("hx-request"):
        return Response(
            status_code=204, headers={"HX-Redirect": target, "Cache-Control": "no-store"}
        )
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
