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

import uvicorn
from starlette.types import ASGIApp

from mailer.errors import ConfigError
from mailer.settings import Settings
from mailer.web.limits import TrustedProxies


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the daemon (or `mailer web`) owns SIGTERM and SIGINT


class WebServer:
    """uvicorn in the running loop, on a socket bound before it starts (a port in use is a
    clear ConfigError, not uvicorn's exit). ``start`` returns once it accepts connections."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.settings = settings
        trusted = TrustedProxies(settings.web.trusted_proxies)
        self.config = uvicorn.Config(
            app,
            lifespan="on",
            log_config=None,
            access_log=False,  # URLs carry tokens: keep them out of the logs
            proxy_headers=trusted.proxy_headers,
            forwarded_allow_ips=trusted.forwarded_allow_ips,
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
