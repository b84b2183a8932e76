"""The daemon's inbound SMTP listener for bounces (``MAILER_BOUNCES__LISTEN``): the MTA relays
the bounce domain's mail to it, and each message is handed to ``accept`` (the intake), which
stores it. The reply is 250 only once ``accept`` has returned: a message that could not be
stored gets 451 and the MTA keeps it and tries again.

What a listener exposed to mail must bear, it bears here: recipients outside the bounce domain
refused (550 5.1.1) when a domain is set; messages over ``MAX_SIZE`` refused (552, read and
dropped as they come, never held); more than ``RATE`` messages a minute from one client address
answered 421 and the connection closed; at most :data:`MAX_CONNECTIONS` at once (421 beyond);
a client silent for :data:`IDLE_TIMEOUT` seconds disconnected; lines up to 64 KiB accepted
(broken MTAs write long ones; a bounce refused for that is a bounce lost). aiosmtpd speaks the
protocol; this module decides only what to accept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailer.errors import ConfigError, StorageError
from mailer.settings.bounces import BounceSettings

log = logging.getLogger("mailer.bounces")
logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd: one line per connection

Accept = Callable[[bytes, Sequence[str]], Awaitable[object]]

MAX_CONNECTIONS = 100
IDLE_TIMEOUT = 60.0  # seconds a client may stay silent (and a DATA transfer may last)
MAX_RECIPIENTS = 100  # a bounce is addressed to one return path; an MTA batches a few


class RateLimit:
    """Messages accepted per client address in a sliding minute."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.seen: defaultdict[str, deque[float]] = defaultdict(deque)

    def allow(self, address: str) -> bool:
        now = self.clock()
        times = self.seen[address]
        while times and times[0] <= now - 60:
            times.popleft()
        if len(times) >= self.per_minute:
            return False
        times.append(now)
        if len(self.seen) > 10_000:  # forget the quiet addresses: memory stays bounded
            for key in [k for k, v in self.seen.items() if not v or v[-1] <= now - 60]:
                del self.seen[key]
        return True


class _Protocol(SMTP):
    """aiosmtpd's SMTP with a cap on connections and lenient line lengths."""

    line_length_limit = 65536

    def __init__(self, listener: BounceListener, **kwargs: Any) -> None:
        super().__init__(listener, **kwargs)
        self.listener = listener
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.listener.connections >= MAX_CONNECTIONS:
            self.refused = True  # a connection beyond the cap: told, then closed
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(b"421 4.3.2 too many connections, try again later\r\n")
            transport.close()
            return
        self.listener.connections += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.refused:
            return
        self.listener.connections -= 1
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self.refused else super().eof_received()

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            super().data_received(data)


class BounceListener:
    """An SMTP server on the daemon's loop that stores what it receives through ``accept``
    (``await accept(raw, envelope_recipients)``; raises if the message was not stored)."""

    def __init__(self, settings: BounceSettings, accept: Accept) -> None:
        self.settings = settings
        self.accept = accept
        self.domain = settings.domain.lower() if settings.domain else None
        self.rate = RateLimit(settings.rate)
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen on ``MAILER_BOUNCES__LISTEN``; the address listened on, as ``host:port``."""
        where = self.settings.listen_at
        assert where is not None, "no MAILER_BOUNCES__LISTEN"
        host, port = where
        loop = asyncio.get_running_loop()

        def protocol() -> _Protocol:
            return _Protocol(
                self, data_size_limit=self.settings.max_size, hostname=self.domain or "mailer",
                ident="mailer bounces", timeout=IDLE_TIMEOUT, loop=loop,
            )  # fmt: skip

        try:
            self.server = await loop.create_server(protocol, host, port)
        except OSError as exc:
            raise ConfigError(
                f"MAILER_BOUNCES__LISTEN={self.settings.listen}: cannot listen there "
                f"({exc.strerror or exc}); choose a free port or stop what uses it"
            ) from None
        bound = self.server.sockets[0].getsockname()
        return f"{bound[0]}:{bound[1]}" if ":" not in bound[0] else f"[{bound[0]}]:{bound[1]}"

    async def stop(self) -> None:
        """Stop accepting; the messages being stored finish (their replies are sent)."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    # --- aiosmtpd's hooks -------------------------------------------------------------------

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        if not self.rate.allow(peer):
            log.warning(
                "bounce listener: %s sent over %d messages a minute", peer, self.rate.per_minute
            )
            loop = asyncio.get_running_loop()
            if server.transport is not None:
                loop.call_soon(server.transport.close)  # after the reply is written
            return "421 4.7.0 too many messages from your address, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if self.domain is not None and domain != self.domain:
            return f"550 5.1.1 only bounces to @{self.domain} are taken here"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            await self.accept(raw, tuple(envelope.rcpt_tos))
        except StorageError as exc:
            log.warning("bounce listener: could not store a bounce (%s); the MTA will retry", exc)
            return "451 4.3.0 the bounce could not be stored, try again later"
        except Exception:
            log.exception("bounce listener: a bounce could not be taken in; the MTA will retry")
            return "451 4.3.0 the bounce could not be taken in, try again later"
        return "250 2.0.0 stored"


__all__ = ["IDLE_TIMEOUT", "MAX_CONNECTIONS", "BounceListener", "RateLimit"]
