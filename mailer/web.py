"""The subscriber pages, ``/healthz`` and ``/metrics``: a Starlette app served by uvicorn.

- ``/u/TOKEN``: unsubscribe. ``GET`` shows a page and changes nothing (link scanners fetch
  URLs); ``POST`` from its buttons, or the RFC 8058 one-click request (a body of
  ``List-Unsubscribe=One-Click``, urlencoded or multipart, no cookie), unsubscribes from
  the link's list (or every list), records when and how, is idempotent and answers 200.
- ``/s/SLUG``: the sign-up form of a public list (double opt-in); ``/c/TOKEN``: the
  confirmation link of the mail it sends (a page with a button: ``GET`` changes nothing).
- ``/p/TOKEN``: preferences (lists and language).
- ``/healthz`` (JSON; 503 when the database or the scheduler is not well) and ``/metrics``
  (Prometheus text format, read from storage, so every daemon reports the same figures).

Only ``POST`` changes anything: ``GET``, ``HEAD`` and ``OPTIONS`` show or refuse, whatever
body they carry. A bad, tampered, foreign, expired or wrong-purpose token, or one naming an
erased subscriber, gets the same generic 404 page and changes nothing; the links of a test
send get a page saying so. Every response, error pages included, carries a CSP that forbids
framing and ``<base>``. Redirects go to ``MAILER_WEB__BASE_URL``, never to the Host header.
Pages speak the subscriber's language, else the browser's
``Accept-Language``, else the list's. Storage failures answer 503 with nothing half-written
(every change is one transaction). The daemon embeds the server (:class:`WebServer`) and
keeps the signals for itself; ``mailer web`` runs it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
import tomllib
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl

import uvicorn
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailer.addresses import MAX_NAME, check_name, normalize
from mailer.errors import AddressError, ConfigError, StorageError, StorageUnavailable
from mailer.models import (
    FALLBACK_LOCALE,
    Confirmed,
    LinkTarget,
    Metrics,
    PublicList,
    Requested,
)
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import BadToken, Purpose, Signer

log = logging.getLogger("mailer.web")

LOCALES = ("fr", "en")
MAX_BODY = 64 * 1024  # a form of ours is a few hundred bytes
MAX_ID = 2**63 - 1  # a list id beyond a BIGINT is no list of ours
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058 section 3.2


class SchedulerProbe(Protocol):
    """What ``/healthz`` and ``/metrics`` read from the daemon's scheduler."""

    sync_interval: float
    last_sync: datetime | None
    last_lateness: float | None

    def alive(self) -> bool: ...


def now_utc() -> datetime:
    return datetime.now(UTC)


# --- words and pages -------------------------------------------------------------------------


class Views:
    """The page templates and their words, per language."""

    def __init__(self, templates_dir: Path) -> None:
        folder = templates_dir / "web"
        strings = folder / "strings.toml"
        try:
            table = tomllib.loads(strings.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(
                f"{strings}: cannot read the words of the web pages ({exc.strerror}); "
                "check MAILER_PATHS__TEMPLATES_DIR"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{strings}: {exc}") from None
        missing = [lang for lang in LOCALES if lang not in table]
        if missing:
            raise ConfigError(f"{strings}: no [{missing[0]}] table")
        keys = set(table[LOCALES[0]])
        for lang in LOCALES[1:]:
            if set(table[lang]) != keys:
                diff = sorted(keys ^ set(table[lang]))
                raise ConfigError(f"{strings}: [{lang}] and [{LOCALES[0]}] differ on {diff}")
        self.words: dict[str, dict[str, str]] = {lang: table[lang] for lang in LOCALES}
        self.env = Environment(
            loader=FileSystemLoader(folder),
            autoescape=select_autoescape(default=True),
            auto_reload=False,
        )

    def render(
        self, template: str, lang: str, /, *, title: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = self.env.get_template(template).render(
            lang=lang,
            t=self.words[lang],
            title=title,
            languages=[(code, self.words[code]["lang_name"]) for code in LOCALES],
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=_NO_STORE)

    def say(self, lang: str, key: str, **values: str) -> str:
        return self.words[lang][key].format(**values)

    def message(
        self, lang: str, key: str, *, status: int, notice: str | None = None, **values: str
    ) -> HTMLResponse:
        """A page of one title and one paragraph (``KEY_title``, ``KEY_text``)."""
        return self.render(
            "message.html",
            lang,
            title=self.say(lang, f"{key}_title", **values),
            status=status,
            notice=notice,
            paragraphs=[self.say(lang, f"{key}_text", **values)],
        )


_NO_STORE = {"Cache-Control": "no-store"}

# Set on every response by :class:`SecurityHeaders`, error pages and 500s included.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # the token is in the URL: keep it out of Referer
)


def pick_locale(request: Request, *preferred: str | None) -> str:
    """``?lang=``, else the first known of ``preferred`` (the subscriber's locale), else the
    browser's Accept-Language, else the fallback."""
    asked = request.query_params.get("lang")
    if asked in LOCALES:
        return str(asked)
    for value in preferred[:1]:
        if value and value.split("-")[0].split("_")[0].lower() in LOCALES:
            return value.split("-")[0].split("_")[0].lower()
    header = request.headers.get("accept-language", "")
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        lang = tag.strip().split("-")[0].lower()
        if lang in LOCALES and quality > 0:
            ranked.append((-quality, position, lang))
    if ranked:
        return min(ranked)[2]
    for value in preferred[1:]:
        if value and value.split("-")[0].lower() in LOCALES:
            return value.split("-")[0].lower()
    return FALLBACK_LOCALE


# --- limits --------------------------------------------------------------------------------


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, before anything reads it all."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await _too_large(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watch)
        except _TooLarge:
            if not started:
                await _too_large(scope, receive, send)


class _TooLarge(Exception):
    pass


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every HTTP response, whoever made it (a view, an
    error handler, Starlette's own 500 page)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in SECURITY_HEADERS}
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
    response = Response("request body too large\n", status_code=413, media_type="text/plain")
    await response(scope, receive, send)


class IpLimit:
    """At most ``count`` events per client address in a sliding hour (in this process)."""

    def __init__(self, count: int, window: float = 3600.0, size: int = 10_000) -> None:
        self.count = count
        self.window = window
        self.size = size
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, ip: str, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        times = self._seen.pop(ip, None) or deque()
        while times and now - times[0] > self.window:
            times.popleft()
        allowed = len(times) < self.count
        if allowed:
            times.append(now)
        self._seen[ip] = times
        while len(self._seen) > self.size:  # bounded memory under a flood of addresses
            self._seen.popitem(last=False)
        return allowed


class LoopLag:
    """How late the event loop wakes up: the daemon's scheduling lag, for ``/metrics``."""

    def __init__(self, period: float = 0.25, window: float = 60.0) -> None:
        self.period = period
        self._recent: deque[tuple[float, float]] = deque()
        self.window = window

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.period)
            now = loop.time()
            self._recent.append((now, max(0.0, now - start - self.period)))
            while self._recent and now - self._recent[0][0] > self.window:
                self._recent.popleft()

    @property
    def worst(self) -> float:
        return max((lag for _, lag in self._recent), default=0.0)


# --- the application -------------------------------------------------------------------------


@dataclass
class Web:
    settings: Settings
    store: Store
    signer: Signer
    pages: Views
    scheduler: SchedulerProbe | None = None
    on_send: Callable[[int], None] | None = None
    clock: Callable[[], datetime] = now_utc
    lag: LoopLag = field(default_factory=LoopLag)
    signups: IpLimit = field(init=False)

    def __post_init__(self) -> None:
        self.signups = IpLimit(self.settings.web.signups_per_ip)


def create_app(
    settings: Settings,
    store: Store,
    *,
    signer: Signer,
    scheduler: SchedulerProbe | None = None,
    on_send: Callable[[int], None] | None = None,
    clock: Callable[[], datetime] = now_utc,
) -> ASGIApp:
    web = Web(
        settings,
        store,
        signer,
        Views(settings.paths.templates_dir),
        scheduler=scheduler,
        on_send=on_send,
        clock=clock,
    )

    def handler(
        fn: Callable[[Web, Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return await fn(web, request)
            except _TooLarge:  # a body without Content-Length grew past the limit
                return web.pages.message(pick_locale(request), "too_large", status=413)
            except ClientDisconnect:
                # the client went away mid-body: nothing was read, nothing changes
                log.debug("%s %s: client disconnected", request.method, _route_name(request))
                return Response(status_code=400)
            except StorageError as exc:
                log.error("%s %s: %s", request.method, _route_name(request), exc)
                if request.url.path in ("/healthz", "/metrics"):
                    return JSONResponse(
                        {"status": "unavailable", "database": str(exc)}, status_code=503
                    )
                lang = pick_locale(request)
                return web.pages.message(lang, "unavailable", status=503)

        return endpoint

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(web.lag.run(), name="mailer-loop-lag")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def not_found(request: Request, exc: Exception) -> Response:
        code = exc.status_code if isinstance(exc, HTTPException) else 500
        lang = pick_locale(request)
        if code == 405:
            allowed = (exc.headers or {}).get("Allow", "") if isinstance(exc, HTTPException) else ""
            response = web.pages.message(lang, "bad_request", status=405)
            if allowed:
                response.headers["Allow"] = allowed
            return response
        path = request.url.path
        if path.endswith("/") and path.rstrip("/") and _is_route(app, path.rstrip("/")):
            # /s/list/ -> /s/list, on the configured base URL (never the Host header)
            target = web.settings.web.base_url + path.rstrip("/")
            if request.url.query:
                target += "?" + request.url.query
            return RedirectResponse(target, status_code=308 if request.method != "GET" else 307)
        return web.pages.message(lang, "notfound", status=404)

    async def server_error(request: Request, exc: Exception) -> Response:
        # Starlette re-raises after this answer, so the server logs the traceback once.
        log.error("%s %s: unexpected %s: %s", request.method, _route_name(request),
                  type(exc).__name__, exc)  # fmt: skip
        return web.pages.message(pick_locale(request), "error", status=500)

    app = Starlette(
        routes=[
            Route("/", handler(index)),
            Route("/u/{token}", handler(unsubscribe), methods=["GET", "POST"]),
            Route("/s/{slug}", handler(subscribe), methods=["GET", "POST"]),
            Route("/c/{token}", handler(confirm), methods=["GET", "POST"]),
            Route("/p/{token}", handler(preferences), methods=["GET", "POST"]),
            Route("/healthz", handler(healthz)),
            Route("/metrics", handler(metrics)),
        ],
        exception_handlers={404: not_found, 405: not_found, Exception: server_error},
        lifespan=lifespan,
    )
    # Starlette's own trailing-slash redirect builds its URL from the Host header.
    app.router.redirect_slashes = False
    return SecurityHeaders(BodyLimit(app, MAX_BODY))


def _is_route(app: Starlette, path: str) -> bool:
    from starlette.routing import Match

    scope: Scope = {"type": "http", "path": path, "method": "GET"}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


def _route_name(request: Request) -> str:
    """The first segment of the path: never the token, which is a credential."""
    return "/" + request.url.path.split("/")[1][:20]


def client_ip(request: Request) -> str:
    """The client's address (uvicorn has applied the trusted proxies' headers), checked to
    be an IP address: a proxy's X-Forwarded-For may hold anything."""
    host = request.client.host if request.client else ""
    try:
        return str(ipaddress.ip_address(host.strip()))
    except ValueError:
        if host:
            log.warning("client address %r is not an IP address: recorded as unknown", host[:80])
        return "unknown"


async def read_form(request: Request) -> dict[str, str] | None:
    """The fields of a urlencoded or multipart form (first value of each); None if the
    body is neither, or has a file, or too many fields."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/x-www-form-urlencoded":
        body = await request.body()
        try:
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                max_num_fields=50,
                strict_parsing=False,
            )
        except (UnicodeDecodeError, ValueError):
            return None
        fields: dict[str, str] = {}
        for key, value in pairs:
            fields.setdefault(key, value)
        return fields
    if kind == "multipart/form-data":
        try:
            async with request.form(max_files=0, max_fields=50, max_part_size=MAX_BODY) as form:
                out: dict[str, str] = {}
                for key, item in form.multi_items():
                    if not isinstance(item, str):
                        return None
                    out.setdefault(key, item)
                return out
        except HTTPException:
            return None
        except (ValueError, AssertionError):
            return None
    return None


@dataclass(frozen=True, slots=True)
class Link:
    """What a valid token names: a subscriber's public id and a list (and, for a
    confirmation, the nonce of the sign-up request it was mailed for)."""

    public_id: str
    list_id: int
    nonce: str | None = None
    legacy_id: int | None = None  # a link mailed before public ids: the subscriber's row id


def read_token(web: Web, purpose: Purpose, token: str) -> Link | None:
    """The link a token names; None for anything not made by us for this purpose."""
    if len(token) > 400:
        return None
    max_age = int(web.settings.web.confirm_max_age) if purpose is Purpose.CONFIRM else None
    try:
        payload = web.signer.read(purpose, token, max_age=max_age)
    except (BadToken, ValueError, TypeError, UnicodeError, OverflowError):
        return None
    size = 3 if purpose is Purpose.CONFIRM else 2
    if not isinstance(payload, list) or len(payload) != size:
        return None
    public_id, list_id = payload[0], payload[1]
    if purpose is not Purpose.CONFIRM and _an_id(public_id) and _an_id(list_id):
        # an unsubscribe or preference link mailed before links named public ids (they
        # never expire): the storage honours it only for a subscriber of that time
        return Link("", list_id, legacy_id=public_id)
    if (
        not isinstance(public_id, str)
        or not 0 < len(public_id) <= 32
        or isinstance(list_id, bool)
        or not isinstance(list_id, int)
        or not 0 < list_id <= MAX_ID
    ):
        return None
    nonce = payload[2] if size == 3 else None
    if size == 3 and (not isinstance(nonce, str) or not 0 < len(nonce) <= 32):
        return None
    return Link(public_id, list_id, nonce)


def _an_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def is_test_token(web: Web, token: str) -> bool:
    """A link of a test send (``mailer campaign test``): it names nobody."""
    if len(token) > 400:
        return False
    try:
        payload = web.signer.read(Purpose.TEST, token)
    except (BadToken, ValueError, TypeError, UnicodeError, OverflowError):
        return False
    return isinstance(payload, list) and payload[:1] == ["test"]


async def linked(
    web: Web, request: Request, purpose: Purpose
) -> tuple[LinkTarget, Link] | Response:
    """The target of the token in the URL; else the test-message page for a test send's
    link, else the generic invalid-link page. None of these changes anything."""
    token = request.path_params["token"]
    link = read_token(web, purpose, token)
    target = (
        None
        if link is None
        else await web.store.consent.target(link.public_id, link.list_id, legacy_id=link.legacy_id)
    )
    if target is None or link is None:
        lang = pick_locale(request)
        if is_test_token(web, token):
            log.info("%s %s: a test message's link, nothing changed",
                     request.method, _route_name(request))  # fmt: skip
            return web.pages.message(lang, "test", status=200)
        return web.pages.message(lang, "invalid", status=404)
    return target, link


# --- unsubscribe ---------------------------------------------------------------------------


async def unsubscribe(web: Web, request: Request) -> Response:
    found = await linked(web, request, Purpose.UNSUBSCRIBE)
    if isinstance(found, Response):
        return found
    target, _ = found
    lang = pick_locale(request, target.locale, target.list_locale)
    words = {"email": target.email, "list": target.list_title}
    title = web.pages.say(lang, "unsubscribe_title")
    common: dict[str, Any] = {
        "action": request.url.path,
        "preferences": _preferences_url(web, target),
    }
    if request.method != "POST":  # GET, HEAD: show, whatever the body says
        already = target.status != "subscribed"
        return web.pages.render(
            "unsubscribe.html",
            lang,
            title=title,
            already=already,
            intro=web.pages.say(lang, "unsubscribe_already" if already else "unsubscribe_intro",
                                **words),
            list_button=web.pages.say(lang, "unsubscribe_button", **words),
            **common,
        )  # fmt: skip
    form = await read_form(request)
    if form is not None and (ONE_CLICK[0], ONE_CLICK[1]) in form.items():
        how, everywhere = "one-click (RFC 8058)", False
    elif form is not None and form.get("action") in ("list", "all"):
        how, everywhere = "unsubscribe page", form["action"] == "all"
    else:
        return web.pages.message(lang, "bad_request", status=400)
    changed = await web.store.consent.unsubscribe(
        target.subscriber_id,
        target.list_id,
        everywhere=everywhere,
        source=f"{how} from {client_ip(request)}",
        now=web.clock(),
    )
    log.info(
        "unsubscribe (%s%s) of subscriber %s from %s: %s subscription(s) changed",
        how, ", all lists" if everywhere else "", target.subscriber_id,
        target.list_slug, changed,
    )  # fmt: skip
    done_key = "unsubscribed_all_text" if everywhere else "unsubscribed_text"
    return web.pages.render(
        "unsubscribe.html",
        lang,
        title=web.pages.say(lang, "unsubscribed_title"),
        done=web.pages.say(lang, done_key, **words),
        offer_all=not everywhere,
        **common,
    )


def _preferences_url(web: Web, target: LinkTarget) -> str:
    token = web.signer.sign(Purpose.PREFERENCES, [target.public_id, target.list_id])
    return f"/p/{token}"


# --- sign-up with double opt-in -----------------------------------------------------------


async def index(web: Web, request: Request) -> Response:
    lang = pick_locale(request)
    found = await web.store.lists.public_lists()
    return web.pages.render(
        "lists.html",
        lang,
        title=web.pages.say(lang, "lists_title"),
        lists=[{"title": p.title, "url": f"/s/{p.slug}"} for p in found],
    )


async def subscribe(web: Web, request: Request) -> Response:
    public = await web.store.lists.public_list(request.path_params["slug"])
    if public is None:
        return web.pages.message(pick_locale(request), "notfound", status=404)
    lang = pick_locale(request, None, public.default_locale)
    if request.method != "POST":
        return _signup_form(web, lang, public, request)
    if not web.signups.allow(client_ip(request)):
        log.warning("sign-up refused: too many from %s this hour", client_ip(request))
        return web.pages.message(lang, "too_many", status=429)
    form = await read_form(request)
    if form is None:
        return web.pages.message(lang, "bad_request", status=400)
    raw_email, name = form.get("email", ""), form.get("name", "").strip()
    locale = form.get("locale", "") if form.get("locale") in LOCALES else lang
    lang = locale
    try:
        address = normalize(raw_email)
    except AddressError as exc:
        error = web.pages.say(lang, "error_email", detail=str(exc))
        return _signup_form(web, lang, public, request, error=error, email=raw_email, name=name)
    try:
        check_name(name)  # the rule of the import and the message builder
    except AddressError:
        error = web.pages.say(lang, "error_name")
        return _signup_form(
            web, lang, public, request, error=error, email=address.email, name=name[:MAX_NAME]
        )
    for attempt in (1, 2):
        try:
            outcome, send_id = await web.store.consent.request(
                public,
                address,
                name=name,
                locale=locale,
                ip=client_ip(request),
                timezone=web.settings.scheduler.timezone,
                now=web.clock(),
                interval=timedelta(seconds=web.settings.web.confirm_interval),
                per_day=web.settings.web.confirm_per_day,
            )
            break
        except StorageUnavailable:
            raise
        except StorageError:
            # two sign-ups for a new address at the same instant: the second insert meets
            # the first one's row; once more, it finds it
            if attempt == 2:
                raise
    log.info("sign-up for %s: %s", public.slug, outcome.value)
    if outcome is Requested.MAIL_QUEUED and send_id is not None and web.on_send is not None:
        web.on_send(send_id)
    # The same page whatever happened: it must not tell who is subscribed.
    return web.pages.message(lang, "check", status=200, list=public.title)


def _signup_form(
    web: Web,
    lang: str,
    public: PublicList,
    request: Request,
    *,
    error: str | None = None,
    email: str = "",
    name: str = "",
) -> Response:
    return web.pages.render(
        "subscribe.html",
        lang,
        title=web.pages.say(lang, "subscribe_title", list=public.title),
        status=400 if error else 200,
        action=request.url.path,
        error=error,
        email=email,
        name=name,
        locale=lang,
    )


async def confirm(web: Web, request: Request) -> Response:
    found = await linked(web, request, Purpose.CONFIRM)
    if isinstance(found, Response):
        return found
    target, link = found
    lang = pick_locale(request, target.locale, target.list_locale)
    words = {"email": target.email, "list": target.list_title}
    current = target.confirm_nonce is not None and target.confirm_nonce == link.nonce
    if request.method != "POST":
        if not current and target.status == "subscribed":
            return web.pages.message(lang, "confirmed", status=200, **words)
        if not current or target.suppressed:
            return web.pages.message(lang, "invalid", status=404)
        return web.pages.render(
            "confirm.html",
            lang,
            title=web.pages.say(lang, "confirm_title"),
            intro=web.pages.say(lang, "confirm_intro", **words),
            action=request.url.path,
        )
    assert link.nonce is not None
    result = await web.store.consent.confirm(
        target.public_id, target.list_id, link.nonce, ip=client_ip(request), now=web.clock()
    )
    log.info("confirmation of subscriber %s to %s: %s",
             target.subscriber_id, target.list_slug, result.value)  # fmt: skip
    if result is Confirmed.INVALID:
        return web.pages.message(lang, "invalid", status=404)
    return web.pages.render(
        "message.html",
        lang,
        title=web.pages.say(lang, "confirmed_title"),
        notice=web.pages.say(
            lang, "confirmed_text" if result is Confirmed.CONFIRMED else "already_text", **words
        ),
        paragraphs=[],
    )


# --- preferences ---------------------------------------------------------------------------


async def preferences(web: Web, request: Request) -> Response:
    found = await linked(web, request, Purpose.PREFERENCES)
    if isinstance(found, Response):
        return found
    target, _ = found
    saved = False
    if request.method == "POST":
        form_items = await _multi_form(request)
        if form_items is None:
            return web.pages.message(pick_locale(request, target.locale), "bad_request", status=400)
        chosen = {int(v) for k, v in form_items if k == "list" and v.isdigit() and len(v) < 19}
        locale = next((v for k, v in form_items if k == "locale" and v in LOCALES), None)
        joined, left = await web.store.consent.save_preferences(
            target.subscriber_id,
            chosen=chosen,
            locale=locale,
            source=f"preferences page from {client_ip(request)}",
            now=web.clock(),
        )
        log.info("preferences of subscriber %s: joined %s, left %s",
                 target.subscriber_id, joined, left)  # fmt: skip
        saved = True
    prefs = await web.store.consent.preferences(target.subscriber_id)
    if prefs is None:
        return web.pages.message(pick_locale(request), "invalid", status=404)
    lang = pick_locale(request, prefs.locale, target.list_locale)
    return web.pages.render(
        "preferences.html",
        lang,
        title=web.pages.say(lang, "preferences_title"),
        intro=web.pages.say(lang, "preferences_intro", email=prefs.email),
        lists=prefs.lists,
        locale=prefs.locale or lang,
        saved=saved,
        action=request.url.path,
    )


async def _multi_form(request: Request) -> list[tuple[str, str]] | None:
    """Every field of a urlencoded form, repeated names kept (the list checkboxes)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    try:
        return parse_qsl((await request.body()).decode("utf-8"), max_num_fields=200)
    except (UnicodeDecodeError, ValueError):
        return None


# --- health and metrics ---------------------------------------------------------------------


async def healthz(web: Web, request: Request) -> Response:
    await web.store.ping()
    body: dict[str, Any] = {"status": "ok", "database": "ok"}
    healthy = True
    probe = web.scheduler
    if probe is None:
        body["scheduler"] = "not in this process"
    else:
        age = None
        if probe.last_sync is not None:
            age = round((web.clock() - probe.last_sync).total_seconds(), 3)
        stale = age is None or age > 3 * probe.sync_interval + 5
        alive = probe.alive()
        body["scheduler"] = "ok" if alive and not stale else ("stale" if alive else "stopped")
        body["last_sync_age_seconds"] = age
        healthy = alive and not stale
    if not healthy:
        body["status"] = "unhealthy"
    return JSONResponse(body, status_code=200 if healthy else 503, headers=_NO_STORE)


async def metrics(web: Web, request: Request) -> Response:
    figures = await web.store.figures.metrics(now=web.clock(), recent=timedelta(days=1))
    registry = CollectorRegistry()
    registry.register(_Snapshot(figures, web))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Snapshot(Collector):
    """One scrape's figures, as Prometheus metric families."""

    def __init__(self, figures: Metrics, web: Web) -> None:
        self.figures = figures
        self.web = web

    def collect(self) -> Iterator[GaugeMetricFamily]:
        f = self.figures
        deliveries = GaugeMetricFamily(
            "mailer_deliveries",
            "Deliveries of recent sends (running, paused, or finished in the last day) by status.",
            labels=["send", "campaign", "action", "status"],
        )
        rate = GaugeMetricFamily(
            "mailer_send_rate",
            "Messages accepted per second over the last minute, by send.",
            labels=["send", "campaign"],
        )
        for s in f.sends:
            for status, n in s.counts.items():
                deliveries.add_metric([str(s.send_id), s.campaign, s.action, status], n)
            rate.add_metric([str(s.send_id), s.campaign], s.rate)
        yield deliveries
        yield rate
        replies = GaugeMetricFamily(
            "mailer_smtp_replies",
            "Deliveries of recent sends by the SMTP reply code of their last attempt.",
            labels=["code"],
        )
        for code, n in sorted(f.replies.items()):
            replies.add_metric([str(code)], n)
        yield replies
        yield GaugeMetricFamily(
            "mailer_queue_depth",
            "Deliveries queued or deferred in running and paused sends.",
            value=f.queue_depth,
        )
        sends = GaugeMetricFamily("mailer_sends", "Sends by status.", labels=["status"])
        for status, n in f.sends_by_status.items():
            sends.add_metric([status], n)
        yield sends
        yield GaugeMetricFamily(
            "mailer_event_loop_lag_seconds",
            "Worst lateness of this process's event loop over the last minute.",
            value=self.web.lag.worst,
        )
        probe = self.web.scheduler
        if probe is not None:
            if probe.last_sync is not None:
                yield GaugeMetricFamily(
                    "mailer_scheduler_last_sync_age_seconds",
                    "Seconds since the scheduler last rebuilt its jobs from storage.",
                    value=(self.web.clock() - probe.last_sync).total_seconds(),
                )
            if probe.last_lateness is not None:
                yield GaugeMetricFamily(
                    "mailer_scheduler_lag_seconds",
                    "How late the last scheduled send was queued after its due time.",
                    value=probe.last_lateness,
                )


# --- the server ----------------------------------------------------------------------------


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon (or `mailer web`) owns SIGTERM and SIGINT


class WebServer:
    """uvicorn in the running loop, on a socket bound before it starts (a port in use is a
    clear ConfigError, not uvicorn's exit). ``start`` returns once it accepts connections."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.settings = settings
        trusted = settings.web.trusted_proxies
        self.config = uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            access_log=False,  # URLs carry tokens: keep them out of the logs
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted or None,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self.server = _Server(self.config)
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> str:
        web = self.settings.web
        try:
            sock = socket.create_server((web.host, web.port), reuse_port=False)
        except OSError as exc:
            raise ConfigError(
                f"MAILER_WEB__HOST/MAILER_WEB__PORT: cannot listen on {web.host}:{web.port} "
                f"({exc.strerror}); choose another port, or MAILER_WEB__ENABLED=false"
            ) from None
        sock.setblocking(False)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        self._task = asyncio.create_task(self.server.serve(sockets=[sock]), name="mailer-web")
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise ConfigError("the web server stopped while starting")
            await asyncio.sleep(0.01)
        return self.url

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
