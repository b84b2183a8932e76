"""Console sessions: the cookie, the server-side row it names, the CSRF token, and sign-in
through a trusted reverse proxy's header.

The cookie (``mailer_console``) holds a random 256-bit id; storage keeps only its SHA-256, so a
copy of the database signs nobody in. The cookie is ``HttpOnly``, ``SameSite=Lax``,
``Path=/admin`` and ``Secure`` when the base URL is https. A session ends after
``MAILER_CONSOLE__SESSION_IDLE`` seconds unused or ``MAILER_CONSOLE__SESSION_MAX`` after sign-in,
at sign-out, and when its user's password, role, TOTP or status changes (storage ends them).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets

from starlette.requests import Request
from starlette.responses import Response

from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.limits import client_ip
from mailer.web.locales import pick_locale

log = logging.getLogger("mailer.console")

COOKIE = "mailer_console"
LOGIN_COOKIE = "mailer_signin"  # the sign-in form's CSRF token, before any session exists
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
PATH = "/admin"


def new_secret() -> str:
    """256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogateescape")).hexdigest()


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def set_cookie(
    ctx: ConsoleContext,
    request: Request,
    response: Response,
    name: str,
    value: str,
    **extra: object,
) -> None:
    response.set_cookie(
        name,
        value,
        path=str(extra.get("path", PATH)),
        httponly=True,
        samesite=str(extra.get("samesite", "lax")),  # type: ignore[arg-type]
        secure=ctx.secure_cookies(request),
    )


def clear_cookie(
    ctx: ConsoleContext, request: Request, response: Response, name: str = COOKIE
) -> None:
    response.delete_cookie(
        name, path=PATH, httponly=True, samesite="lax", secure=ctx.secure_cookies(request)
    )


def language(ctx: ConsoleContext, request: Request, locale: str | None) -> str:
    """The staff member's language: theirs, else the browser's (French or English)."""
    return pick_locale(request, locale) if locale in ("fr", "en") else pick_locale(request)


async def current(ctx: ConsoleContext, request: Request) -> Staffer | None:
    """The staff member the request's cookie names, if the session is alive."""
    raw = request.cookies.get(COOKIE)
    if not raw or len(raw) > 100:
        return None
    found = await ctx.store.staff.session(
        digest(raw), now=ctx.clock(), idle=ctx.idle, absolute=ctx.absolute
    )
    if found is None:
        return None
    lang = language(ctx, request, found.user.locale)
    return Staffer(user=found.user, csrf=found.csrf, lang=lang, session_hash=digest(raw))


async def open_session(ctx: ConsoleContext, request: Request, user_id: int) -> tuple[str, str]:
    """A new session for ``user_id`` (a fresh id at every sign-in): its cookie value and CSRF
    token. A session the request already carried is ended first (no fixation)."""
    old = request.cookies.get(COOKIE)
    if old and len(old) <= 100:
        await ctx.store.staff.close_session(digest(old))
    session_id, csrf = new_secret(), new_secret()
    await ctx.store.staff.open_session(
        user_id, id_hash=digest(session_id), csrf=csrf, client=client_ip(request), now=ctx.clock()
    )
    return session_id, csrf


def proxy_user(ctx: ConsoleContext, request: Request) -> str | None:
    """The address a trusted reverse proxy signed the request in as
    (``MAILER_CONSOLE__TRUSTED_HEADER``), only when the request comes straight from one of
    ``MAILER_WEB__TRUSTED_PROXIES``; else None."""
    header = ctx.settings.console.trusted_header
    if not header or request.client is None:
        return None
    values = request.headers.getlist(header)
    if not values or not values[0]:
        return None
    if len(values) > 1:  # the proxy's and a client's: which is which cannot be told
        log.warning("%s header sent %d times: ignored", header, len(values))
        return None
    value = values[0]
    if not _from_trusted_proxy(ctx, request):
        log.warning("%s header from %s ignored: not a trusted proxy", header, client_ip(request))
        return None
    return value.strip().lower()[:320] or None


def _from_trusted_proxy(ctx: ConsoleContext, request: Request) -> bool:
    # uvicorn has already replaced request.client by X-Forwarded-For's client when the peer
    # is a trusted proxy, so look at the raw peer address in the ASGI scope's "client".
    peer = request.scope.get("mailer.peer") or (request.client.host if request.client else "")
    try:
        address = ipaddress.ip_address(str(peer))
    except ValueError:
        return False
    for entry in ctx.settings.web.trusted_proxies:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False
