"""Relay bounce webhooks: ``POST /hooks/bounces/{provider}`` for ``ses`` (Amazon SNS),
``mailgun``, ``postmark`` and ``sendgrid`` (:func:`hook_routes`).

The route only carries bytes: ``mailer.bounces.providers`` verifies and reads them, and
``accept`` (the daemon's ``Intake.events``) stores the events. Its answers are what the
relays act on:

- 404 for a provider unknown or not configured (the same answer for both); 413 for a body
  over 1 MB; 400 for a body that is not the relay's JSON;
- 401 (with ``WWW-Authenticate``) for Postmark's basic auth, 403 for a signature, topic,
  certificate URL or timestamp that fails: a JSON ``{"error": ...}`` and one log line each
  (provider, reason, client address; never a secret); nothing is accepted;
- 200 once ``accept`` has returned; 503 when it raised, or when SNS's certificate or
  SubscribeURL could not be fetched: the relay tries again later.

An SNS SubscriptionConfirmation of an allowed topic, verified, is confirmed by GETting its
SubscribeURL. SNS signing certificates are fetched over https only (10 s, 64 KB, no
redirect) and kept in memory by URL once a signature checked out with them.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import SecretStr
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailer.bounces.providers import (
    HookRefused,
    ProviderEvent,
    Refusal,
    Subscription,
    check_basic_auth,
    mailgun_events,
    postmark_events,
    sendgrid_events,
    sendgrid_key,
    sns_envelope,
    sns_read,
    sns_verify,
)
from mailer.clock import Clock, utc_now
from mailer.errors import ConfigError
from mailer.settings.bounces import HookSettings
from mailer.web.limits import client_ip

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

log = logging.getLogger("mailer.bounces")

HOOK_PATH = "/hooks/bounces/{provider}"
HOOK_PREFIX = "/hooks/bounces/"
MAX_HOOK_BODY = 1 << 20  # bytes: a SendGrid batch is well under it
FETCH_TIMEOUT = 10.0  # seconds
FETCH_LIMIT = 64 * 1024  # bytes: an SNS certificate is about 2 KB
CERTIFICATES_KEPT = 32

Accept = Callable[[Sequence[ProviderEvent]], Awaitable[object]]
Fetch = Callable[[str], Awaitable[bytes]]
_STATUS = {Refusal.MALFORMED: 400, Refusal.UNAUTHENTICATED: 401, Refusal.FORBIDDEN: 403}


class FetchError(Exception):
    """A URL that could not be fetched as :func:`fetch_https` allows."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect is answered as the error it then is


def _get(url: str) -> bytes:
    opener = urllib.request.build_opener(_NoRedirect())
    with opener.open(url, timeout=FETCH_TIMEOUT) as response:
        data: bytes = response.read(FETCH_LIMIT + 1)
    if len(data) > FETCH_LIMIT:
        raise FetchError(f"more than {FETCH_LIMIT} bytes")
    return data


async def fetch_https(url: str) -> bytes:
    """GET ``url`` (https only, 10 s, at most 64 KB, no redirect), in a worker thread."""
    if urlsplit(url).scheme != "https":
        raise FetchError("only https URLs are fetched")
    return await asyncio.to_thread(_get, url)


class _Unavailable(Exception):
    """Something the relay's call needs could not be had now: 503, the relay tries again."""


class _Hooks:
    def __init__(self, settings: HookSettings, accept: Accept, fetch: Fetch, clock: Clock):
        self.settings = settings
        self.accept = accept
        self.fetch = fetch
        self.clock = clock
        self.certificates: OrderedDict[str, bytes] = OrderedDict()
        self.sendgrid: EllipticCurvePublicKey | None = None
        if settings.sendgrid_public_key is not None:
            try:
                self.sendgrid = sendgrid_key(settings.sendgrid_public_key)
            except ValueError as exc:
                raise ConfigError(
                    f"MAILER_BOUNCES__WEBHOOKS__SENDGRID_PUBLIC_KEY: {exc} (paste the "
                    "verification key SendGrid shows for the signed event webhook)"
                ) from None
        self.enabled = {
            name
            for name, on in (
                ("ses", bool(settings.ses_topics)),
                ("mailgun", settings.mailgun_signing_key is not None),
                ("postmark", settings.postmark_user is not None),
                ("sendgrid", self.sendgrid is not None),
            )
            if on
        }

    async def endpoint(self, request: Request) -> Response:
        provider = str(request.path_params.get("provider", ""))
        if provider not in self.enabled:
            return _error(404, "no such webhook")
        try:
            if provider == "postmark":  # credentials before the body is read
                check_basic_auth(
                    request.headers.get("authorization"), self.settings.postmark_user or "",
                    _secret(self.settings.postmark_password),
                )  # fmt: skip
            body = await _body(request)
            if body is None:
                log.warning("bounce webhook %s refused from %s: body over 1 MB", provider,
                            client_ip(request))  # fmt: skip
                return _error(413, "body too large", close=True)
            events = await self._read(provider, request, body)
        except HookRefused as refused:
            log.warning(
                "bounce webhook %s refused from %s: %s", provider, client_ip(request),
                refused.reason,
            )  # fmt: skip
            return _refused(refused)
        except _Unavailable as exc:
            log.error("bounce webhook %s from %s: %s", provider, client_ip(request), exc)
            return _error(503, str(exc))
        except ClientDisconnect:
            return Response(status_code=400)
        if events:
            try:
                await self.accept(events)
            except Exception as exc:
                log.error(
                    "bounce webhook %s: %d events not stored (%s: %s); the relay will retry",
                    provider, len(events), type(exc).__name__, exc,
                )  # fmt: skip
                return _error(503, "the events could not be stored; try again later")
        return JSONResponse({"accepted": len(events)})

    async def _read(self, provider: str, request: Request, body: bytes) -> list[ProviderEvent]:
        now = self.clock()
        if provider == "mailgun":
            key = _secret(self.settings.mailgun_signing_key)
            return mailgun_events(body, key=key, now=now)
        if provider == "postmark":
            return postmark_events(body)
        if provider == "sendgrid":
            assert self.sendgrid is not None
            return sendgrid_events(
                body, key=self.sendgrid, now=now,
                signature=request.headers.get("x-twilio-email-event-webhook-signature"),
                timestamp=request.headers.get("x-twilio-email-event-webhook-timestamp"),
            )  # fmt: skip
        return await self._sns(body, now)

    async def _sns(self, body: bytes, now: datetime) -> list[ProviderEvent]:
        envelope = sns_envelope(body, topics=self.settings.ses_topics, now=now)
        pem = self.certificates.get(envelope.cert_url)
        if pem is None:
            try:
                pem = await self.fetch(envelope.cert_url)
            except Exception as exc:
                raise _Unavailable(
                    f"the SNS signing certificate could not be fetched ({type(exc).__name__})"
                ) from None
        sns_verify(envelope, pem, now=now)
        self._keep(envelope.cert_url, pem)
        found = sns_read(envelope)
        if not isinstance(found, Subscription):
            return found
        try:
            await self.fetch(found.url)
        except Exception as exc:
            raise _Unavailable(
                f"the SNS subscription could not be confirmed ({type(exc).__name__})"
            ) from None
        log.info("bounce webhook ses: subscription to %s confirmed", found.topic_arn)
        return []

    def _keep(self, url: str, pem: bytes) -> None:
        self.certificates[url] = pem
        self.certificates.move_to_end(url)
        while len(self.certificates) > CERTIFICATES_KEPT:
            self.certificates.popitem(last=False)


def hook_routes(
    settings: HookSettings,
    accept: Accept,
    fetch: Fetch | None = None,
    *,
    clock: Clock = utc_now,
) -> list[Route]:
    """``POST /hooks/bounces/{provider}``: each configured relay's webhook, its events
    handed to ``accept`` (``Intake.events``); ``fetch`` GETs SNS's certificates and
    SubscribeURLs (:func:`fetch_https` unless a test gives its own). ConfigError for a
    SendGrid key that is not one."""
    hooks = _Hooks(settings, accept, fetch or fetch_https, clock)
    return [Route(HOOK_PATH, hooks.endpoint, methods=["POST"])]


async def _body(request: Request) -> bytes | None:
    """The body, or None once it is over :data:`MAX_HOOK_BODY`."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_HOOK_BODY):
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_HOOK_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def _refused(refused: HookRefused) -> Response:
    response = _error(_STATUS[refused.refusal], refused.reason)
    if refused.refusal is Refusal.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = 'Basic realm="mailer bounces", charset="UTF-8"'
    return response


def _error(status: int, reason: str, *, close: bool = False) -> Response:
    response = JSONResponse({"error": reason}, status_code=status)
    if close:
        response.headers["Connection"] = "close"  # the rest of the body is not read
    return response


__all__ = [
    "FETCH_LIMIT",
    "FETCH_TIMEOUT",
    "HOOK_PATH",
    "HOOK_PREFIX",
    "MAX_HOOK_BODY",
    "Accept",
    "Fetch",
    "FetchError",
    "fetch_https",
    "hook_routes",
]
