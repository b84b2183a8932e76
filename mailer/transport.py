"""Transport: hands built messages to the SMTP relay, or to a Maildir when no relay is set.

Owns the only import of aiosmtplib: a pool of long-lived SMTP connections (TLS, AUTH,
timeouts, recycling, reconnection), the one global rate limit with back-pressure, and the
translation of every SMTP reply and aiosmtplib exception into a :class:`Result`, or into
:class:`TransportFatal` when the relay cannot be used at all (authentication, TLS,
configuration). Nothing above this module sees an aiosmtplib exception.

It must not build or alter message bytes (``message`` does), retry or record results
(``dispatch`` does), log message bodies or passwords, or log recipient addresses above DEBUG.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import math
import os
import re
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

import aiosmtplib
from aiosmtplib import SMTPResponse

from mailer.errors import MailerError
from mailer.message import Built
from mailer.settings import Settings, SMTPSettings

log = logging.getLogger("mailer.transport")

_T = TypeVar("_T")

CONNECT_ATTEMPTS = 3  # per send, before it returns DEFERRED "cannot connect"
MAX_RECONNECT_DELAY = 30.0
IDLE_PROBE_AFTER = 30.0  # seconds idle before a pooled connection is checked with NOOP


class Outcome(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Result:
    """What became of one message."""

    outcome: Outcome
    code: int | None  # SMTP reply code when there was one
    reply: str  # server text, or a short description of what went wrong
    suppress: bool = False  # permanent "no such user": add a suppression
    throttled: bool = False  # the relay asks us to slow down
    policy: bool = False  # 5.7.x: policy, authentication, reputation; about us, not them


class TransportFatal(MailerError, ConnectionError):
    """Authentication, TLS or configuration failure: pause the send, touch no recipient."""


class Transport(Protocol):
    eight_bit: bool  # the relay offers 8BITMIME (known after __aenter__)
    smtputf8: bool  # the relay offers SMTPUTF8

    async def __aenter__(self) -> Self: ...
    async def __aexit__(self, *exc_info: object) -> None: ...
    async def send(self, message: Built) -> Result: ...


def open_transport(settings: Settings) -> Transport:
    """The SMTP transport, or a Maildir capture under the data folder when no host is set."""
    if settings.smtp.host is None:
        return CaptureTransport(settings.paths.data_dir / "outbox")
    return SmtpTransport(
        settings.smtp,
        rate_per_second=settings.delivery.rate_per_second,
        rate_per_hour=settings.delivery.rate_per_hour,
    )


# --- reply classification -------------------------------------------------------------------

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
_THROTTLE_CODES = frozenset({421, 454})  # 450/451/452 on RCPT are one mailbox's trouble
_NO_SUCH_USER = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|user not found"
    r"|mailbox (?:not found|does not exist)|recipient not found|address does not exist",
    re.IGNORECASE,
)
_SENDER_STATUS = frozenset({"5.1.7", "5.1.8"})  # they speak of our sender, not the recipient


def classify_reply(code: int, reply: str, *, stage: str = "RCPT") -> Result:
    """The :class:`Result` of an SMTP reply to ``stage`` (MAIL, RCPT or DATA).

    2xx is sent; 4xx deferred (throttled for 421, 454 and 4.7.x: the relay asks us to slow
    down; a 450/451 for one recipient, greylisting or a busy mailbox, only defers it); 5xx
    failed, with ``suppress`` for a "no such user" refusal of the recipient (5.1.x, or
    550/551/553 saying so), and ``policy`` for 5.7.x (policy, authentication, reputation:
    it speaks of our sending, so it never suppresses the recipient).
    """
    text = reply.strip()
    first_line = text.split("\n", 1)[0].strip()
    match = _ENHANCED.match(first_line)
    status = ".".join(match.groups()) if match else ""
    if 200 <= code < 300:
        return Result(Outcome.SENT, code, text)
    if 400 <= code < 500:
        throttled = code in _THROTTLE_CODES or status.startswith("4.7.")
        return Result(Outcome.DEFERRED, code, text, throttled=throttled)
    if 500 <= code < 600:
        if status.startswith("5.7."):
            # Policy, authentication, reputation: never the address's fault, never a
            # suppression. At MAIL, DATA or AUTH it refuses our sending as a whole (the send
            # pauses); at RCPT it may be one recipient's own policy ("blocked by the
            # recipient"), so it fails that recipient alone, and a relay refusing everyone
            # so trips the broken-relay watch of dispatch.
            return Result(Outcome.FAILED, code, text, policy=stage != "RCPT")
        about_recipient = stage in {"RCPT", "DATA"} and status not in _SENDER_STATUS
        no_such_user = status.startswith("5.1.") or (
            code in {550, 551, 553} and _NO_SUCH_USER.search(text) is not None
        )
        return Result(Outcome.FAILED, code, text, suppress=about_recipient and no_such_user)
    return Result(Outcome.DEFERRED, code, f"unexpected reply to {stage}: {code} {text}")


# --- rate limit ------------------------------------------------------------------------------


class RateLimiter:
    """The one choke point for every connection: messages per second, per rolling hour, AIMD.

    Starts are spaced ``1/rate`` apart (no burst), and at most ``per_hour`` starts fall in any
    hour. Back-pressure: a throttled reply halves the rate (at most once a second, never below
    ``floor``; with no rate configured it starts from the rate observed over the last seconds);
    each message sent then adds ``RECOVERY`` msg/s, so the rate grows by about a fifth per
    second of sending (from 1 msg/s back to 1,000 in about 35 s), up to the configured rate,
    or back to unlimited once the rate that drew the throttle is reached.
    """

    OBSERVE_WINDOW = 10.0
    DECREASE_INTERVAL = 1.0
    RECOVERY = 0.2  # msg/s added per message sent

    def __init__(
        self,
        per_second: float = 0,
        per_hour: int = 0,
        *,
        floor: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._configured = per_second if per_second > 0 else None
        self._rate = self._configured
        self._ceiling = self._configured
        self._floor = min(floor, self._configured) if self._configured else floor
        self._per_hour = per_hour
        self._clock = clock
        self._next = -math.inf  # earliest start of the next message
        self._hour: deque[float] = deque(maxlen=per_hour or 1)  # last starts (when per_hour)
        self._sent: deque[float] = deque()  # completion times, for the observed rate
        self._last_decrease = -math.inf

    @property
    def current_rate(self) -> float | None:
        """Messages per second now allowed; ``None`` when unlimited."""
        return self._rate

    def reserve(self) -> float:
        """Book the next start; return how many seconds to wait for it (0: go now)."""
        now = self._clock()
        start = max(now, self._next)
        if self._per_hour and len(self._hour) == self._per_hour:
            start = max(start, self._hour[0] + 3600.0)
        self._next = start + (1.0 / self._rate if self._rate else 0.0)
        if self._per_hour:
            self._hour.append(start)
        return start - now

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    def record(self, result: Result) -> None:
        """Feed a result back: throttled slows down, sent speeds up again."""
        now = self._clock()
        while self._sent and self._sent[0] < now - self.OBSERVE_WINDOW:
            self._sent.popleft()
        if result.throttled:
            self._slow_down(now)
        elif result.outcome is Outcome.SENT:
            self._sent.append(now)
            self._speed_up()

    def _observed(self, now: float) -> float:
        if not self._sent:
            return self._floor
        return len(self._sent) / max(now - self._sent[0], 1.0)

    def _slow_down(self, now: float) -> None:
        if now - self._last_decrease < self.DECREASE_INTERVAL:
            return  # one decrease per burst of throttled replies, not one per connection
        self._last_decrease = now
        base = self._rate if self._rate is not None else self._observed(now)
        if self._configured is None:
            self._ceiling = max(base, self._floor)
        self._rate = max(self._floor, base / 2)
        self._next = max(self._next, now + 1.0 / self._rate)
        log.info("the relay asks to slow down: %.1f messages per second", self._rate)

    def _speed_up(self) -> None:
        if self._rate is None:
            return
        self._rate += self.RECOVERY
        if self._ceiling is not None and self._rate >= self._ceiling:
            self._rate = self._configured
            log.info(
                "sending rate recovered: %s",
                f"{self._rate:.1f} messages per second" if self._rate else "unlimited",
            )


# --- SMTP --------------------------------------------------------------------------------------


class OutOfStep(aiosmtplib.SMTPException):
    """The relay wrote a line nobody asked for: its replies no longer match our commands."""


class _Client(aiosmtplib.SMTP):
    """aiosmtplib's client, noting which command failed first (for a precise reply), and
    whether the relay's reply stream fell out of step with the commands.

    A relay that writes an unsolicited line (a ``554`` right after its ``250``) leaves it
    in the protocol's buffer, where it would be read as the reply to our next command: the
    next recipient refused by a stale line. Whenever a reply leaves bytes behind, the
    connection is marked ``out_of_step``; a command that would read them raises
    :class:`OutOfStep` instead, and the caller resets the connection.
    """

    failed_stage: str | None = None
    out_of_step: bool = False

    def _leftover(self) -> bool:
        """Bytes received beyond the last reply (aiosmtplib keeps them in ``_buffer``)."""
        buffer = getattr(self.protocol, "_buffer", None)
        return bool(buffer)

    async def execute_command(self, *args: bytes, **kwargs: Any) -> SMTPResponse:
        if self.out_of_step or self._leftover():
            self.out_of_step = True
            raise OutOfStep("the relay's replies are out of step with the commands")
        response = await super().execute_command(*args, **kwargs)
        if self._leftover():
            self.out_of_step = True
        return response

    async def _in(self, stage: str, call: Awaitable[_T]) -> _T:
        try:
            return await call
        except BaseException:
            if self.failed_stage is None:
                self.failed_stage = stage
            raise

    async def connect(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        self.failed_stage = None
        self.out_of_step = False
        return await self._in("connect", super().connect(*args, **kwargs))

    async def ehlo(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        return await self._in("EHLO", super().ehlo(*args, **kwargs))

    async def helo(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        return await self._in("HELO", super().helo(*args, **kwargs))

    async def starttls(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        return await self._in("STARTTLS", super().starttls(*args, **kwargs))

    async def login(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        return await self._in("AUTH", super().login(*args, **kwargs))

    async def sendmail(self, *args: Any, **kwargs: Any) -> tuple[dict[str, SMTPResponse], str]:
        self.failed_stage = None
        return await super().sendmail(*args, **kwargs)

    async def mail(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        return await self._in("MAIL", super().mail(*args, **kwargs))

    async def rcpt(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        return await self._in("RCPT", super().rcpt(*args, **kwargs))

    async def data(self, message: str | bytes, /, **kwargs: Any) -> SMTPResponse:
        return await self._in("DATA", self._data(message, **kwargs))

    async def _data(self, message: str | bytes, /, **kwargs: Any) -> SMTPResponse:
        """DATA with the message's wire form made by :func:`wire_form` (C-level byte
        replacements, about 50 µs for 18 KB) instead of aiosmtplib's two regular-expression
        passes (about 190 µs): the sending process is CPU-bound there. The exchange is
        aiosmtplib's own; where its internals differ, or the message is not plain CRLF
        bytes, aiosmtplib's path is used."""
        protocol = self.protocol
        wire = wire_form(message) if isinstance(message, bytes) else None
        lock = getattr(protocol, "_command_lock", None)
        if (
            wire is None
            or protocol is None
            or not isinstance(lock, asyncio.Lock)
            or not hasattr(protocol, "_response_pending")
        ):
            return await super().data(message, **kwargs)
        await self._ehlo_or_helo_if_needed()
        timeout = kwargs.get("timeout", self.timeout)
        if self.out_of_step or self._leftover():
            self.out_of_step = True
            raise OutOfStep("the relay's replies are out of step with the commands")
        try:
            async with lock:
                protocol._response_pending = True
                protocol.write(b"DATA\r\n")
                start = await protocol.read_response(timeout=timeout)
                if start.code != 354:
                    if 200 <= start.code < 300 or self._leftover():
                        # a 2xx where 354 is due: a stale line; the message was not sent
                        self.out_of_step = True
                        raise OutOfStep(f"a {start.code} reply where DATA's 354 was due")
                    raise aiosmtplib.SMTPDataError(start.code, start.message)
                protocol._response_pending = True
                protocol.write(wire)
                response = await protocol.read_response(timeout=timeout)
                if self._leftover():
                    self.out_of_step = True  # this reply stands; the connection does not
                if response.code != 250:
                    raise aiosmtplib.SMTPDataError(response.code, response.message)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        return response


def wire_form(message: bytes) -> bytes | None:
    """The DATA payload of a message that uses CRLF line endings only: lines starting with
    a period doubled (RFC 5321 4.5.2), a final CRLF ensured, and the ending ``.`` line added;
    None for anything else (lone CR or LF), which aiosmtplib normalises itself."""
    crlf = message.count(b"\r\n")
    if message.count(b"\r") != crlf or message.count(b"\n") != crlf:
        return None
    wire = message.replace(b"\r\n.", b"\r\n..")
    if wire.startswith(b"."):
        wire = b"." + wire
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return wire + b".\r\n"


@dataclass(eq=False, slots=True)
class _Connection:
    client: _Client
    number: int
    messages: int = 0  # transactions since it connected
    last_used: float = 0.0


class _Unreachable(Exception):
    """A connection could not be opened, for a reason that may pass."""

    def __init__(self, reason: str, code: int | None = None, *, throttled: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.throttled = throttled


def _is_loopback(host: str) -> bool:
    if host.lower() in {"localhost", "localhost."}:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind ``exc``, if any (aiosmtplib wraps some in SMTPConnectError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


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
    ) -> None:
        self.eight_bit = False
        self.smtputf8 = False
        self._settings = smtp
        self._where = f"{smtp.host}:{smtp.port}"
        self._limiter = RateLimiter(rate_per_second, rate_per_hour)
        self._reconnect_delay = reconnect_delay
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
        except _Unreachable as exc:
            log.warning(
                "cannot connect to the relay %s yet (%s); will retry when sending",
                self._where,
                exc.reason,
            )
        else:
            log.info(
                "SMTP relay %s ready (%s%s, 8BITMIME %s, SMTPUTF8 %s)",
                self._where,
                self._settings.security,
                ", AUTH" if self._settings.username else "",
                "yes" if self.eight_bit else "no",
                "yes" if self.smtputf8 else "no",
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

    def _client(self, context: ssl.SSLContext | None) -> _Client:
        s = self._settings
        try:
            return _Client(
                hostname=s.host,
                port=s.port,
                local_hostname=s.local_hostname,
                timeout=s.connect_timeout,  # connect, greeting, EHLO, STARTTLS, AUTH, QUIT
                use_tls=s.security == "tls",
                start_tls=s.security == "starttls",  # True: required, never opportunistic
                tls_context=context,
            )
        except ValueError as exc:
            raise TransportFatal(f"invalid SMTP settings for {self._where}: {exc}") from None

    # connections -------------------------------------------------------------------------------

    async def _open(self, connection: _Connection) -> None:
        """Connect, STARTTLS, AUTH and EHLO; raise TransportFatal or _Unreachable."""
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
            raise self._connect_error(client.failed_stage or "connect", exc) from exc
        except BaseException:
            client.close()
            raise
        connection.messages = 0
        connection.last_used = time.monotonic()
        self.eight_bit = client.supports_extension("8bitmime")
        self.smtputf8 = client.supports_extension("smtputf8")
        log.debug(
            "connection %d to %s open (%s, 8BITMIME %s, SMTPUTF8 %s, SIZE %s)",
            connection.number,
            self._where,
            s.security,
            self.eight_bit,
            self.smtputf8,
            self._size_limit(client) or "unlimited",
        )

    def _connect_error(self, stage: str, exc: Exception) -> TransportFatal | _Unreachable:
        where = self._where
        tls = _tls_error(exc)
        if tls is not None:
            reason = getattr(tls, "verify_message", None) or tls.reason or str(tls)
            return TransportFatal(
                f"TLS with the relay {where} failed: {reason}; check MAILER_SMTP__SECURITY "
                f"(starttls on 587, tls on 465) and MAILER_SMTP__CA_FILE (the CA that signed "
                f"the relay's certificate) and that the host name matches the certificate"
            )
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            reply = f"{exc.code} {exc.message}".strip()
            if 400 <= exc.code < 500:
                throttled = classify_reply(exc.code, exc.message).throttled
                return _Unreachable(f"{stage}: {reply}", exc.code, throttled=throttled)
            if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
                return TransportFatal(
                    f"the relay {where} refused the login of {self._settings.username!r}: "
                    f"{reply}; check MAILER_SMTP__USERNAME and MAILER_SMTP__PASSWORD"
                )
            if exc.code < 0:
                return TransportFatal(
                    f"{where} does not answer like an SMTP server ({exc.message}); "
                    f"check MAILER_SMTP__HOST, MAILER_SMTP__PORT and MAILER_SMTP__SECURITY"
                )
            return TransportFatal(
                f"the relay {where} refused the session at {stage}: {reply}; check that "
                f"this machine may send through it"
            )
        if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
            return _Unreachable(f"connection dropped at {stage}")
        if isinstance(exc, TimeoutError):
            return _Unreachable(str(exc) or f"timed out at {stage}")
        if isinstance(exc, OSError):  # refused, unreachable, reset
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            return _Unreachable(str(cause) or f"{type(cause).__name__} at {stage}")
        if isinstance(exc, aiosmtplib.SMTPException) and stage == "STARTTLS":
            return TransportFatal(
                f"the relay {where} does not offer STARTTLS, which MAILER_SMTP__SECURITY="
                f"starttls requires; use tls for an implicit-TLS port (465), or find what "
                f"strips STARTTLS between here and the relay"
            )
        if isinstance(exc, aiosmtplib.SMTPException) and stage == "AUTH":
            return TransportFatal(
                f"cannot log in to the relay {where}: {exc.message}; check "
                f"MAILER_SMTP__SECURITY and whether this relay wants a login at all"
            )
        return TransportFatal(f"cannot use the relay {where} ({stage}): {exc}")

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
        failure = _Unreachable("no attempt")
        for attempt in range(CONNECT_ATTEMPTS):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)
            try:
                await self._open(connection)
            except _Unreachable as exc:
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
    def _size_limit(client: _Client) -> int:
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
            return self._failure(stage, exc, message)
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

    def _unsupported(self, client: _Client, message: Built) -> Result | None:
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

    def _failure(self, stage: str, exc: Exception, message: Built) -> Result:
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
            refused = exc.recipients[0]
            return classify_reply(refused.code, refused.message, stage="RCPT")
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            if exc.code < 0:
                return Result(Outcome.DEFERRED, None, f"unreadable reply to {stage}: {exc}")
            if exc.code == 530:
                raise TransportFatal(
                    f"the relay {self._where} requires authentication ({exc.code} "
                    f"{exc.message}); set MAILER_SMTP__USERNAME and MAILER_SMTP__PASSWORD"
                ) from exc
            return classify_reply(exc.code, exc.message, stage=stage)
        maybe_sent = " (the relay may have accepted the message)" if stage == "DATA" else ""
        if isinstance(exc, TimeoutError):  # aiosmtplib's read timeouts, or our wall clock
            return Result(
                Outcome.DEFERRED, None, f"timed out waiting for the reply to {stage}{maybe_sent}"
            )
        if isinstance(exc, OSError | aiosmtplib.SMTPServerDisconnected):
            return Result(Outcome.DEFERRED, None, f"connection dropped after {stage}{maybe_sent}")
        if isinstance(exc, aiosmtplib.SMTPNotSupported):
            return Result(Outcome.FAILED, None, f"{exc.message} (for {message.recipient})")
        if isinstance(exc, ValueError):  # an address aiosmtplib will not put on the wire
            return Result(Outcome.FAILED, None, f"cannot be sent: {exc}")
        return Result(Outcome.DEFERRED, None, f"{stage}: {type(exc).__name__}: {exc}")


# --- capture -----------------------------------------------------------------------------------


class CaptureTransport:
    """Writes each message into a Maildir (``folder/{tmp,new,cur}``) instead of sending it.

    For development and previews without a relay: ``mutt -f folder`` or Python's
    ``mailbox.Maildir`` reads it. The bytes are stored as built, nothing prepended, but with
    LF line ends as local mail files have them (mutt would show CRLF's CR as ``^M``); the
    wire form (SMTP) stays CRLF.
    Each file is written in ``tmp/`` and renamed into ``new/``, so a reader never sees half a
    message; it is not fsynced (a capture folder is not a mail queue).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.eight_bit = True
        self.smtputf8 = True
        self._counter = itertools.count(1)
        # Maildir file names must not hold "/" or ":"; the spec escapes them in octal.
        self._host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self._open = False

    @property
    def current_rate(self) -> float | None:
        return None

    async def __aenter__(self) -> Self:
        try:
            await asyncio.to_thread(self._make_folders)
        except OSError as exc:
            raise TransportFatal(
                f"cannot create the capture Maildir {self.folder}: {exc}"
            ) from None
        self._open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._open = False

    def _make_folders(self) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)

    async def send(self, message: Built) -> Result:
        if not self._open:
            raise RuntimeError("the capture transport is not open; use it inside `async with`")
        name = f"{time.time_ns()}.{os.getpid()}_{next(self._counter)}.{self._host}"
        try:
            path = await asyncio.to_thread(self._deliver, name, message.data)
        except OSError as exc:
            return Result(Outcome.DEFERRED, None, f"cannot write to {self.folder}: {exc}")
        log.debug("%s to %s captured to %s", message.message_id, message.recipient, path)
        return Result(Outcome.SENT, 250, f"captured to {path}")

    def _deliver(self, name: str, data: bytes) -> Path:
        temporary = self.folder / "tmp" / name
        final = self.folder / "new" / name
        with temporary.open("xb") as file:
            file.write(data.replace(b"\r\n", b"\n"))  # a Maildir is a local file: LF
        os.rename(temporary, final)  # atomic within one file system
        return final
