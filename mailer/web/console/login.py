"""Signing in and out: ``/admin/login`` (fields ``email``, ``password`` and, for an account
with TOTP, ``code``), ``/admin/logout``, and ``/admin/me`` (one's language and password).

A wrong address, a wrong password, a wrong or missing code and a disabled account all get the
same answer, and the throttle counts them alike (per account and per client address). The
sign-in form carries its own CSRF token (a cookie and a field), since no session exists yet.
A successful sign-in ends any session the browser carried and opens one with a fresh id. A
TOTP code signs in once: its step is kept, and a code of that step or an earlier one is refused.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailer import accounts
from mailer.errors import AccountError
from mailer.models import Role, StaffUser
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, form_of
from mailer.web.console.session import (
    COOKIE,
    LOGIN_COOKIE,
    clear_cookie,
    current,
    language,
    new_secret,
    open_session,
    same,
    set_cookie,
)
from mailer.web.forms import read_form
from mailer.web.limits import client_ip
from mailer.web.locales import pick_locale

log = logging.getLogger("mailer.console")

HOME = "/admin/"


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if not value or not value.startswith("/admin") or value.startswith("//"):
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or "\\" in value or any(ord(c) < 32 for c in value):
        return HOME
    return value


def _login_page(
    ctx: ConsoleContext, request: Request, *, error: str | None = None, status: int = 200,
    email: str = "",
) -> Response:  # fmt: skip
    lang = pick_locale(request)
    token = new_secret()
    response = ctx.views.render(
        "login.html",
        lang,
        title=ctx.views.say(lang, "login_title"),
        staff=None,
        csrf=token,
        error=error,
        email=email,
        next=safe_next(request.query_params.get("next")),
        status=status,
    )
    set_cookie(ctx, request, response, LOGIN_COOKIE, token, path="/admin/login", samesite="strict")
    return response


async def login(request: Request, ctx: ConsoleContext) -> Response:
    if request.method != "POST":
        if await current(ctx, request) is not None:
            return RedirectResponse(HOME, status_code=303)
        return _login_page(ctx, request)
    lang = pick_locale(request)
    form = await read_form(request) or {}
    cookie = request.cookies.get(LOGIN_COOKIE)
    if not cookie or not same(form.get("csrf"), cookie):
        return _login_page(ctx, request, error=ctx.views.say(lang, "login_expired"), status=403)
    email = form.get("email", "").strip()[:320].replace("\0", "")
    address = client_ip(request)
    wait = ctx.throttle.begin(email, address)  # counted now: parallel attempts count too
    if wait:
        minutes = max(1, round(wait / 60))
        text = ctx.views.say(lang, "login_throttled", minutes=minutes)
        response = _login_page(ctx, request, error=text, status=429, email=email)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    user = await _check(ctx, email, form.get("password", ""), form.get("code", ""))
    if user is None:
        log.info("console: sign-in refused for %r from %s", email[:80], address)
        return _login_page(
            ctx, request, error=ctx.views.say(lang, "login_failed"), status=401, email=email
        )
    ctx.throttle.succeeded(email, address)
    await ctx.store.staff.purge_sessions(now=ctx.clock(), idle=ctx.idle, absolute=ctx.absolute)
    session_id, csrf = await open_session(ctx, request, user.id)
    staff = Staffer(user, csrf, language(ctx, request, user.locale), "")
    await ctx.audit(staff, request, "staff.sign_in", user.email, {"how": "password"})
    response = RedirectResponse(safe_next(form.get("next")), status_code=303)
    set_cookie(ctx, request, response, COOKIE, session_id)
    clear_cookie(ctx, request, response, LOGIN_COOKIE)
    return response


async def _check(ctx: ConsoleContext, email: str, password: str, code: str) -> StaffUser | None:
    """The user if the address, password and code are right and the account enabled."""
    user = await ctx.store.staff.get(email) if "@" in email else None
    stored = user.password_hash if user is not None and not user.disabled else None
    # argon2 takes ~50 ms of CPU: off the event loop, and run for an unknown user too
    ok = await asyncio.to_thread(accounts.verify_password, stored, password)
    if not ok or user is None or user.disabled:
        return None
    if user.totp_secret:
        step = accounts.totp_step(user.totp_secret, code, now=ctx.clock())
        if step is None or not await ctx.store.staff.use_totp_step(user.id, step):
            return None  # a wrong code, or one already used (replayed)
    assert stored is not None
    if accounts.needs_rehash(stored):
        fresh = await asyncio.to_thread(accounts.hash_password, password)
        await ctx.store.staff.rehash(user.id, fresh)
    return user


async def logout(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    if request.method != "POST":  # signing out is a POST (a link cannot sign anyone out)
        return RedirectResponse(HOME, status_code=303)
    await ctx.store.staff.close_session(staff.session_hash)
    await ctx.audit(staff, request, "staff.sign_out", staff.user.email)
    response = RedirectResponse("/admin/login", status_code=303)
    clear_cookie(ctx, request, response)
    return response


async def me(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """One's own account: language, and a new password (which ends every session)."""
    error = notice = None
    if request.method == "POST":
        form = await form_of(request)
        what = form.get("action")
        if what == "language":
            locale = form.get("locale")
            chosen = locale if locale in ("fr", "en") else None
            await ctx.store.staff.set_locale(staff.user.id, chosen, now=ctx.clock())
            await ctx.audit(staff, request, "staff.language", staff.user.email, {"locale": chosen})
            return RedirectResponse("/admin/me", status_code=303)
        if what == "password":
            error = await _new_password(ctx, request, staff, form)
            if error is None:
                response = RedirectResponse("/admin/login", status_code=303)
                clear_cookie(ctx, request, response)
                return response
    return ctx.views.render(
        "me.html",
        staff.lang,
        title=ctx.views.say(staff.lang, "me_title"),
        staff=staff,
        error=error,
        notice=notice,
        status=400 if error else 200,
    )


async def _new_password(
    ctx: ConsoleContext, request: Request, staff: Staffer, form: object
) -> str | None:
    get = form.get  # type: ignore[attr-defined]
    lang, user = staff.lang, staff.user
    current_pw, new, again = (str(get(k) or "") for k in ("current", "new", "again"))
    address = client_ip(request)
    wait = ctx.throttle.begin(user.email, address)  # a stolen session guesses no faster
    if wait:
        return ctx.views.say(lang, "login_throttled", minutes=max(1, round(wait / 60)))
    ok = await asyncio.to_thread(accounts.verify_password, user.password_hash, current_pw)
    if not ok:
        return ctx.views.say(lang, "me_wrong_password")
    ctx.throttle.succeeded(user.email, address)
    if new != again:
        return ctx.views.say(lang, "me_mismatch")
    try:
        accounts.check_password(new, email=user.email, name=user.name)
    except AccountError as exc:
        return ctx.views.say(lang, f"password_{exc.reason}", min=accounts.MIN_PASSWORD)
    hashed = await asyncio.to_thread(accounts.hash_password, new)
    await ctx.store.staff.set_password(user.email, hashed, now=ctx.clock())
    await ctx.audit(staff, request, "user.password", user.email, {"by": "self"})
    return None


ROUTES = [
    ConsoleRoute("/logout", logout, write=Role.VIEWER),
    ConsoleRoute("/me", me, write=Role.VIEWER),
]
