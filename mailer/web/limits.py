"""What the web app accepts from a client: a bounded body (:class:`BodyLimit`), a checked
client address behind the trusted proxies only (:func:`client_ip`, :class:`TrustedProxies`),
and so many sign-ups per address an hour (:class:`IpLimit`).

Pure request handling: no storage, no templates (a refused body gets a plain-text 413 here,
or the page's own 413 from the app factory when a view meets :class:`TooLarge`).
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("mailer.web")

MAX_BODY = 64 * 1024  # a form of ours is a few hundred bytes


class TooLarge(Exception):
    """A body without Content-Length grew past the limit while a view read it."""


class BodyLimit:
    """Refuse a request body over ``limit`` bytes with 413, before anything reads it all;
    ``wider`` says which paths are allowed more (the console's CSV upload, its campaign form),
    ``page`` makes the 413 answer (a page in the reader's language; plain text without)."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        *,
        wider: Callable[[str], int | None] | None = None,
        page: Callable[[Scope], Response] | None = None,
    ) -> None:
        self.app = app
        self.limit = limit
        self.wider = wider or (lambda path: None)
        self.page = page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.wider(str(scope.get("path", ""))) or self.limit
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await self._too_large(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise TooLarge
            return message

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited, watch)
        except TooLarge:
            if not started:
                await self._too_large(scope, receive, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.page is not None:
            response = self.page(scope)
        else:
            response = Response(
                "request body too large\n", status_code=413, media_type="text/plain"
            )
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """Whose ``X-Forwarded-For`` the server believes (``MAILER_WEB__TRUSTED_PROXIES``):
    nobody's by default, so the client address is the peer's. uvicorn applies it before
    any view runs; :func:`client_ip` then checks what it made of it."""

    addresses: list[str]

    @property
    def proxy_headers(self) -> bool:
        return bool(self.addresses)

    @property
    def forwarded_allow_ips(self) -> list[str] | None:
        return self.addresses or None


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
