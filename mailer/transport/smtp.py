"""The SMTP transport: a pool of long-lived connections to one relay (TLS, AUTH, timeouts,
recycling, reconnection) behind one :class:`~.limiter.RateLimiter`.

It owns the lifecycle of the connections and the order of a transaction (ready, check the
extensions and the size, MAIL/RCPT/DATA, the result); what a reply means is ``replies``'s,
what an exception means is ``failures``'s, and how DATA reaches the wire is ``fast_data``'s
(with MAIL and RCPT in the same write when the relay offers PIPELINING: ``client``).
It must not build or alter message bytes (``message`` does), retry or record results
(``dispatch`` does), log message bodies or passwords, or log recipient addresses above DEBUG.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Self

import aiosmtplib

from mailer.message import Built
from mailer.settings import SMTPSettings
from mailer.transport.client import Client
from mailer.transport.contract import Outcome, Result, TransportFatal
from mailer.transport.failures import Unreachable, connect_error, transaction_failure
from mailer.transport.fast_data import FastData, OutOfStep
from mailer.transport.limiter import RateLimiter
from mailer.transport.replies import classify_reply

log = logging.getLogger("mailer.transport")

CONNECT_ATTEMPTS = 3  # per send, before it returns DEFERRED "cannot connect"
MAX_RECONNECT_DELAY = 30.0
IDLE_PROBE_AFTER = 30.0  # seconds idle before a pooled connection is checked with NOOP


@dataclass(eq=False, slots=True)
class _Connection:
    client: Client
    number: int
    messages: int = 0  # transactions since it connected
    last_used: float = 0.0


def _is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SmtpTransport:
    """A pool of long-lived SMTP connections to one relay, behind one rate limit.

    Connections are lent to one task at a time through a LIFO queue (so a quiet period uses
    one connection and the others stay closed), opened when first needed, reused, renewed with
    QUIT after ``recycle_after`` messages and reopened after a drop or a 421.

    ``__aenter__`` checks the settings and opens the first connection, to fail fast: a
    configuration error, a refused login or a TLS failure raises :class:`TransportFatal`
    there. A relay that is merely down is logged, and ``eight_bit``/``smtputf8`` stay False
    until a connection succeeds. Later, ``send()`` raises :class:`TransportFatal` each time a
    connection meets such a failure, and works again once the relay is fixed.
    """

    def __init__(
        self,
        smtp: SMTPSettings,
        *,
        rate_per_second: float = 0,
        rate_per_hour: int = 0,
        reconnect_delay: float = 1.0,
        fast_data: FastData | None = None,
    ) -> None:
        self.eight_bit = False
        self.smtputf8 = False
        self.pipelining = False  # MAIL, RCPT and DATA go in one write (known once connected)
        self._settings = smtp
        self._where = f"{smtp.host}:{smtp.port}"
        self._limiter = RateLimiter(rate_per_second, rate_per_hour)
        self._reconnect_delay = reconnect_delay
        # How DATA reaches the wire, shared by the connections (FastData(public_only=True):
        # aiosmtplib's public API only).
        self.fast_data = fast_data if fast_data is not None else FastData()
        # The wall-clock cap of one transaction: the reply timeout plus a connect timeout's
        # grace, so the per-reply timeout (clearer message) normally fires first.
        self._transaction_cap = smtp.timeout + smtp.connect_timeout
        self._connections: list[_Connection] = []
        self._idle: asyncio.LifoQueue[_Connection] | None = None
        self._state = "new"

    @property
    def current_rate(self) -> float | None:
        """Messages per second the limiter allows now (None: unlimited); for metrics."""
        return self._limiter.current_rate

    # lifecycle ---------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(f"an SmtpTransport is entered once; this one is {self._state}")
        self._state = "closed"  # until everything below succeeded
        self._check_settings()
        context = await asyncio.to_thread(self._tls_context)
        self._connections = [
            _Connection(self._client(context), number)
            for number in range(1, self._settings.pool_size + 1)
        ]
        self._idle = asyncio.LifoQueue()
        for connection in reversed(self._connections):
            self._idle.put_nowait(connection)
        try:
            await self._open(self._connections[0])
        except Unreachable as exc:
            log.warning(
                "cannot connect to the relay %s yet (%s); will retry when sending",
                self._where,
                exc.reason,
            )
        else:
            log.info(
                "SMTP relay %s ready (%s%s, 8BITMIME %s, SMTPUTF8 %s, PIPELINING %s)",
                self._where,
                self._settings.security,
                ", AUTH" if self._settings.username else "",
                "yes" if self.eight_bit else "no",
                "yes" if self.smtputf8 else "no",
                "yes" if self.pipelining else "no",
            )
        self._state = "open"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._state = "closed"
        await asyncio.gather(
            *(self._quit(c) for c in self._connections if c.client.is_connected),
            return_exceptions=True,
        )
        for connection in self._connections:
            connection.client.close()

    def _check_settings(self) -> None:
        s = self._settings
        if s.host is None:
            raise TransportFatal("no SMTP relay configured (MAILER_SMTP__HOST is empty)")
        if s.security == "none" and not _is_loopback(s.host):
            raise TransportFatal(
                f"MAILER_SMTP__SECURITY=none sends in clear text, allowed only to this machine "
                f"(127.0.0.1, ::1, localhost), not to {self._where}: use starttls (port 587) "
                f"or tls (port 465)"
            )
        if s.password is not None and s.username is None:
            raise TransportFatal("MAILER_SMTP__PASSWORD is set without MAILER_SMTP__USERNAME")

    def _tls_context(self) -> ssl.SSLContext | None:
        s = self._settings
        if s.security == "none":
            return None
        try:
            # Verification always on: CERT_REQUIRED and the host name checked.
            return ssl.create_default_context(cafile=str(s.ca_file) if s.ca_file else None)
        except (OSError, ValueError) as exc:
            raise TransportFatal(
                f"cannot load the CA certificates of MAILER_SMTP__CA_FILE={s.ca_file}: {exc}"
            ) from None

    def _client(self, context: ssl.SSLContext | None) -> Client:
        s = self._settings
        try:
            return Client(
                hostname=s.host,
                port=s.port,
                local_hostname=s.local_hostname,
                timeout=s.connect_timeout,  # connect, greeting, EHLO, STARTTLS, AUTH, QUIT
                use_tls=s.security == "tls",
                start_tls=s.security == "starttls",  # True: required, never opportunistic
                tls_context=context,
                fast_data=self.fast_data,
            )
        except ValueError as exc:
            raise TransportFatal(f"invalid SMTP settings for {self._where}: {exc}") from None

    # connections -------------------------------------------------------------------------------

    async def _open(self, connection: _Connection) -> None:
        """Connect, STARTTLS, AUTH and EHLO; raise TransportFatal or Unreachable."""
        client = connection.client
        s = self._settings
        password = s.password.get_secret_value() if s.password is not None else None
        try:
            # Each step (connect, EHLO, STARTTLS, AUTH) has connect_timeout; the whole, three.
            async with asyncio.timeout(s.connect_timeout * 3):
                await client.connect(username=s.username, password=password)
                if client.is_ehlo_or_helo_needed:  # after STARTTLS without AUTH
                    await client.ehlo()
        except Exception as exc:
            client.close()
            raise connect_error(
                client.failed_stage or "connect",
                exc,
                where=self._where,
                username=s.username,
            ) from exc
        except BaseException:
            client.close()
            raise
        connection.messages = 0
        connection.last_used = time.monotonic()
        self.eight_bit = client.supports_extension("8bitmime")
        self.smtputf8 = client.supports_extension("smtputf8")
        self.pipelining = self.fast_data.pipe(client, None) is not None
        log.debug(
            "connection %d to %s open (%s, 8BITMIME %s, SMTPUTF8 %s, SIZE %s)",
            connection.number,
            self._where,
            s.security,
            self.eight_bit,
            self.smtputf8,
            self._size_limit(client) or "unlimited",
        )

    async def _quit(self, connection: _Connection) -> None:
        try:
            async with asyncio.timeout(self._settings.connect_timeout):
                await connection.client.quit()
        except Exception as exc:  # a QUIT that fails changes nothing: we close anyway
            log.debug("QUIT on connection %d: %s", connection.number, exc)
        finally:
            connection.client.close()

    async def _ready(self, connection: _Connection) -> Result | None:
        """Make ``connection`` usable; a DEFERRED result when the relay cannot be reached."""
        client = connection.client
        if client.is_connected and connection.messages >= self._settings.recycle_after:
            await self._quit(connection)
        if client.is_connected and time.monotonic() - connection.last_used > IDLE_PROBE_AFTER:
            try:
                async with asyncio.timeout(self._settings.connect_timeout):
                    await client.noop()
            except Exception:  # a stale connection: open a new one
                client.close()
        if client.is_connected:
            return None
        delay = self._reconnect_delay
        failure = Unreachable("no attempt")
        for attempt in range(CONNECT_ATTEMPTS):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)
            try:
                await self._open(connection)
            except Unreachable as exc:
                failure = exc
                log.debug("connect to %s: %s", self._where, exc.reason)
            else:
                return None
        log.warning("cannot connect to the relay %s: %s", self._where, failure.reason)
        return Result(
            Outcome.DEFERRED,
            failure.code,
            f"cannot connect to {self._where}: {failure.reason}",
            throttled=failure.throttled,
        )

    @staticmethod
    def _size_limit(client: Client) -> int:
        value = client.esmtp_extensions.get("size", "").strip()
        return int(value) if value.isdigit() else 0

    # sending -----------------------------------------------------------------------------------

    async def send(self, message: Built) -> Result:
        """Send one message; never raises for a per-message problem (see :class:`Result`).

        Raises :class:`TransportFatal` when the relay cannot be used at all. Safe to call from
        many tasks at once: each waits for its turn at the rate limit, then for a connection.
        """
        if self._state != "open" or self._idle is None:
            raise RuntimeError(f"the transport is {self._state}; use it inside `async with`")
        await self._limiter.acquire()
        connection = await self._idle.get()
        try:
            result = await self._send_on(connection, message)
        except BaseException:
            connection.client.close()  # cancelled or fatal mid-transaction: state unknown
            raise
        finally:
            self._idle.put_nowait(connection)
        self._limiter.record(result)
        log.debug(
            "%s to %s: %s %s %s",
            message.message_id,
            message.recipient,
            result.outcome,
            result.code,
            result.reply,
        )
        return result

    async def _send_on(self, connection: _Connection, message: Built) -> Result:
        client = connection.client
        for attempt in (1, 2):
            not_ready = await self._ready(connection)
            if not_ready is not None:
                return not_ready
            unsupported = self._unsupported(client, message)
            if unsupported is not None:
                return unsupported
            result = await self._transaction(connection, message)
            if result is None:
                client.close()
                if attempt == 1:
                    log.debug("connection %d was closed by the relay; reopening", connection.number)
                    continue
                result = Result(Outcome.DEFERRED, None, "connection dropped after MAIL")
            if result.code == 421 or (result.outcome is Outcome.DEFERRED and result.code is None):
                client.close()  # the relay is closing, or the session state is unknown
            if client.out_of_step:
                client.close()
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _transaction(self, connection: _Connection, message: Built) -> Result | None:
        """MAIL, RCPT, DATA and the result; None if the relay had closed the connection.

        A connection the relay closed while it sat idle is noticed at MAIL: nothing of this
        message reached the relay, so the caller may try once more on a new connection.
        """
        client = connection.client
        options = []
        if message.smtputf8:
            options.append("SMTPUTF8")
        if message.eight_bit:
            options.append("BODY=8BITMIME")
        connection.messages += 1
        connection.last_used = time.monotonic()
        try:
            # aiosmtplib adds SIZE=<n> itself when the relay offers SIZE.
            async with asyncio.timeout(self._transaction_cap):
                refused, reply = await client.sendmail(
                    message.sender,
                    [message.recipient],
                    message.data,
                    mail_options=options,
                    timeout=self._settings.timeout,
                    crlf=message.crlf,
                )
        except Exception as exc:
            stage = client.failed_stage or "MAIL"
            if stage == "MAIL" and isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                return None
            if client.out_of_step or isinstance(exc, OutOfStep):
                # Whatever reply was read may belong to another command: never a verdict
                # on this recipient. Reset the connection and try again later.
                log.warning(
                    "the relay %s wrote a line nobody asked for; connection %d reset",
                    self._where,
                    connection.number,
                )
                return Result(
                    Outcome.DEFERRED,
                    None,
                    f"the relay's replies were out of step at {stage} (an unsolicited line); "
                    "connection reset",
                )
            return transaction_failure(stage, exc, message, where=self._where)
        if client.out_of_step:
            log.warning(
                "the relay %s wrote a line nobody asked for after accepting a message; "
                "connection %d reset",
                self._where,
                connection.number,
            )
            client.close()
        if refused:  # not reached with one recipient (all refused raises); kept for safety
            code, text = next(iter(refused.values()))
            return classify_reply(code, text, stage="RCPT")
        return Result(Outcome.SENT, 250, reply.strip())

    def _unsupported(self, client: Client, message: Built) -> Result | None:
        if message.smtputf8 and not client.supports_extension("smtputf8"):
            return Result(
                Outcome.FAILED,
                None,
                f"the relay does not offer SMTPUTF8, needed for {message.recipient}",
            )
        if message.eight_bit and not client.supports_extension("8bitmime"):
            return Result(
                Outcome.FAILED,
                None,
                "the relay does not offer 8BITMIME, needed for this 8bit message "
                "(build it 7bit when transport.eight_bit is False)",
            )
        limit = self._size_limit(client)
        size = len(message.data) + (0 if message.data.endswith(b"\r\n") else 2)
        if limit and size > limit:
            return Result(
                Outcome.FAILED,
                552,
                f"message of {size} bytes is larger than the relay's limit of {limit} bytes "
                f"(EHLO SIZE); not sent",
            )
        return None
