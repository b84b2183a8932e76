"""The uvicorn embedding: :class:`WebServer` serves the app in the running event loop, on a
socket bound before it starts, so a port in use is a clear ``ConfigError``.

The daemon (or ``mailer web``) owns SIGTERM and SIGINT: the server never installs signal
handlers. Access logs stay off because URLs carry tokens.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from mailer.errors import ConfigError
from mailer.settings import Settings
from mailer.web.limits import TrustedProxies


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon (or `mailer web`) owns SIGTERM and SIGINT


class RecordPeer:
    """Keep the connection's own peer address in the scope (``mailer.peer``) before the
    trusted proxies' ``X-Forwarded-For`` replaces the client: the console honours a proxy's
    sign-in header only from a trusted proxy itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope.get("client"):
            scope["mailer.peer"] = scope["client"][0]
        await self.app(scope, receive, send)


class WebServer:
    """uvicorn in the running loop, on a socket bound before it starts (a port in use is a
    clear ConfigError, not uvicorn's exit). ``start`` returns once it accepts connections.

    ``listen`` is ``(host, port, setting names)``: the web port by default, or the console's
    own listener."""

    def __init__(
        self, app: ASGIApp, settings: Settings, *, listen: tuple[str, int, str] | None = None
    ) -> None:
        self.settings = settings
        self.listen = listen or (
            settings.web.host,
            settings.web.port,
            "MAILER_WEB__HOST/MAILER_WEB__PORT",
        )
        trusted = TrustedProxies(settings.web.trusted_proxies)
        if trusted.proxy_headers:
            app = cast(
                ASGIApp, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=trusted.addresses)
            )
        self.config = uvicorn.Config(
            RecordPeer(app),
            lifespan="on",
            log_config=None,
            access_log=False,  # URLs carry tokens: keep them out of the logs
            proxy_headers=False,  # applied above, inside RecordPeer
            server_header=False,
            ws="none",  # no page uses WebSockets (and wsproto stays out of the daemon)
            timeout_graceful_shutdown=5,
        )
        self.server = _Server(self.config)
        self._task: asyncio.Task[None] | None = None
        self.url = ""

    async def start(self) -> str:
        host, port, names = self.listen
        try:
            sock = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            off = names.split("__")[0] + "__ENABLED=false"
            raise ConfigError(
                f"{names}: cannot listen on {host}:{port} "
                f"({exc.strerror}); choose another port, or {off}"
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
