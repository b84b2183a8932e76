"""The subscriber pages: ``/u/TOKEN`` unsubscribe (its buttons and the RFC 8058 one-click
request), ``/s/SLUG`` sign-up with double opt-in and ``/c/TOKEN`` its confirmation,
``/p/TOKEN`` preferences (lists and language), ``/e/TOKEN.ics`` an event's calendar file
(:mod:`mailer.web.calendar`), and ``/`` the public lists. :data:`PAGES` says
which path and methods each answers; the app factory mounts them.

Only ``POST`` changes anything: ``GET`` and ``HEAD`` show, whatever body they carry. Every
change is one storage call (one transaction), recorded with when, how and from which address.
The pages read tokens through :mod:`mailer.web.links` and hand a queued confirmation mail to
``on_send``: they never send anything themselves.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailer.addresses import MAX_NAME, check_name, normalize
from mailer.errors import AddressError, StorageError, StorageUnavailable
from mailer.models import Confirmed, LinkTarget, PublicList, Requested
from mailer.tokens import Purpose
from mailer.web.calendar import event_calendar
from mailer.web.context import PageContext
from mailer.web.forms import read_form, read_multi_form
from mailer.web.limits import client_ip
from mailer.web.links import linked
from mailer.web.locales import KNOWN_ZONES, LOCALES, pick_locale, zone_choices

log = logging.getLogger("mailer.web")

ONE_CLICK = ("List-Unsubscribe", "One-Click")  # RFC 8058 section 3.2

PageView = Callable[[PageContext, Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Page:
    """One subscriber page: its path, its view, and the methods it answers (None: GET/HEAD)."""

    path: str
    view: PageView
    methods: tuple[str, ...] | None = None


# --- unsubscribe ---------------------------------------------------------------------------


async def unsubscribe(web: PageContext, request: Request) -> Response:
    found = await linked(web, request, Purpose.UNSUBSCRIBE)
    if isinstance(found, Response):
        return found
    target, _ = found
    lang = pick_locale(request, target.locale, target.list_locale)
    words = {"email": target.email, "list": target.list_title}
    title = web.views.say(lang, "unsubscribe_title")
    common: dict[str, Any] = {
        "action": request.url.path,
        "preferences": _preferences_url(web, target),
    }
    if request.method != "POST":  # GET, HEAD: show, whatever the body says
        already = target.status != "subscribed"
        return web.views.render(
            "unsubscribe.html",
            lang,
            title=title,
            already=already,
            intro=web.views.say(lang, "unsubscribe_already" if already else "unsubscribe_intro",
                                **words),
            list_button=web.views.say(lang, "unsubscribe_button", **words),
            **common,
        )  # fmt: skip
    form = await read_form(request)
    if form is not None and (ONE_CLICK[0], ONE_CLICK[1]) in form.items():
        how, everywhere = "one-click (RFC 8058)", False
    elif form is not None and form.get("action") in ("list", "all"):
        how, everywhere = "unsubscribe page", form["action"] == "all"
    else:
        return web.views.message(lang, "bad_request", status=400)
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
    return web.views.render(
        "unsubscribe.html",
        lang,
        title=web.views.say(lang, "unsubscribed_title"),
        done=web.views.say(lang, done_key, **words),
        offer_all=not everywhere,
        **common,
    )


def _preferences_url(web: PageContext, target: LinkTarget) -> str:
    token = web.signer.sign(Purpose.PREFERENCES, [target.public_id, target.list_id])
    return f"/p/{token}"


# --- sign-up with double opt-in -----------------------------------------------------------


async def index(web: PageContext, request: Request) -> Response:
    lang = pick_locale(request)
    found = await web.store.lists.public_lists()
    return web.views.render(
        "lists.html",
        lang,
        title=web.views.say(lang, "lists_title"),
        lists=[{"title": p.title, "url": f"/s/{p.slug}"} for p in found],
    )


async def subscribe(web: PageContext, request: Request) -> Response:
    public = await web.store.lists.public_list(request.path_params["slug"])
    if public is None:
        return web.views.message(pick_locale(request), "notfound", status=404)
    lang = pick_locale(request, None, public.default_locale)
    if request.method != "POST":
        return _signup_form(web, lang, public, request)
    if not web.signups.allow(client_ip(request)):
        log.warning("sign-up refused: too many from %s this hour", client_ip(request))
        return web.views.message(lang, "too_many", status=429)
    form = await read_form(request)
    if form is None:
        return web.views.message(lang, "bad_request", status=400)
    raw_email, name = form.get("email", ""), form.get("name", "").strip()
    locale = form.get("locale", "") if form.get("locale") in LOCALES else lang
    lang = locale
    try:
        address = normalize(raw_email)
    except AddressError as exc:
        error = web.views.say(lang, "error_email", detail=str(exc))
        return _signup_form(web, lang, public, request, error=error, email=raw_email, name=name)
    try:
        check_name(name)  # the rule of the import and the message builder
    except AddressError:
        error = web.views.say(lang, "error_name")
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
    return web.views.message(lang, "check", status=200, list=public.title)


def _signup_form(
    web: PageContext,
    lang: str,
    public: PublicList,
    request: Request,
    *,
    error: str | None = None,
    email: str = "",
    name: str = "",
) -> Response:
    return web.views.render(
        "subscribe.html",
        lang,
        title=web.views.say(lang, "subscribe_title", list=public.title),
        status=400 if error else 200,
        action=request.url.path,
        error=error,
        email=email,
        name=name,
        locale=lang,
    )


async def confirm(web: PageContext, request: Request) -> Response:
    found = await linked(web, request, Purpose.CONFIRM)
    if isinstance(found, Response):
        return found
    target, link = found
    lang = pick_locale(request, target.locale, target.list_locale)
    words = {"email": target.email, "list": target.list_title}
    current = target.confirm_nonce is not None and target.confirm_nonce == link.nonce
    if request.method != "POST":
        if not current and target.status == "subscribed":
            return web.views.message(lang, "confirmed", status=200, **words)
        if not current or target.suppressed:
            return web.views.message(lang, "invalid", status=404)
        return web.views.render(
            "confirm.html",
            lang,
            title=web.views.say(lang, "confirm_title"),
            intro=web.views.say(lang, "confirm_intro", **words),
            action=request.url.path,
        )
    assert link.nonce is not None
    result = await web.store.consent.confirm(
        target.public_id, target.list_id, link.nonce, ip=client_ip(request), now=web.clock()
    )
    log.info("confirmation of subscriber %s to %s: %s",
             target.subscriber_id, target.list_slug, result.value)  # fmt: skip
    if result is Confirmed.INVALID:
        return web.views.message(lang, "invalid", status=404)
    return web.views.render(
        "message.html",
        lang,
        title=web.views.say(lang, "confirmed_title"),
        notice=web.views.say(
            lang, "confirmed_text" if result is Confirmed.CONFIRMED else "already_text", **words
        ),
        paragraphs=[],
    )


# --- preferences ---------------------------------------------------------------------------


async def preferences(web: PageContext, request: Request) -> Response:
    found = await linked(web, request, Purpose.PREFERENCES)
    if isinstance(found, Response):
        return found
    target, _ = found
    saved = False
    if request.method == "POST":
        form_items = await read_multi_form(request)
        if form_items is None:
            return web.views.message(pick_locale(request, target.locale), "bad_request", status=400)
        chosen = {int(v) for k, v in form_items if k == "list" and v.isdigit() and len(v) < 19}
        locale = next((v for k, v in form_items if k == "locale" and v in LOCALES), None)
        zone = next(
            (v for k, v in form_items if k == "timezone" and (v == "" or v in KNOWN_ZONES)), None
        )
        joined, left = await web.store.consent.save_preferences(
            target.subscriber_id,
            chosen=chosen,
            locale=locale,
            timezone=zone,
            source=f"preferences page from {client_ip(request)}",
            now=web.clock(),
        )
        log.info("preferences of subscriber %s: joined %s, left %s",
                 target.subscriber_id, joined, left)  # fmt: skip
        saved = True
    prefs = await web.store.consent.preferences(target.subscriber_id)
    if prefs is None:
        return web.views.message(pick_locale(request), "invalid", status=404)
    lang = pick_locale(request, prefs.locale, target.list_locale)
    return web.views.render(
        "preferences.html",
        lang,
        title=web.views.say(lang, "preferences_title"),
        intro=web.views.say(lang, "preferences_intro", email=prefs.email),
        lists=prefs.lists,
        locale=prefs.locale or lang,
        timezone=prefs.timezone or "",
        zones=zone_choices(lang, prefs.timezone),
        saved=saved,
        action=request.url.path,
    )


PAGES: tuple[Page, ...] = (
    Page("/", index),
    Page("/u/{token}", unsubscribe, ("GET", "POST")),
    Page("/s/{slug}", subscribe, ("GET", "POST")),
    Page("/c/{token}", confirm, ("GET", "POST")),
    Page("/p/{token}", preferences, ("GET", "POST")),
    Page("/e/{token}.ics", event_calendar),
)
