"""The DATA fast path and PIPELINING: the one place that reaches into aiosmtplib's private
attributes.

aiosmtplib's own DATA makes the wire form with two regular-expression passes (about 190 µs
for an 18 KB message); :func:`wire_form` does it with C-level byte replacements (about
50 µs), and the sending process is CPU-bound there. :class:`FastData` writes that wire form
through the protocol the way ``SMTPProtocol.execute_data_command`` does, which needs three
private names: the protocol's ``_command_lock`` and ``_response_pending`` (written) and the
client's ``_ehlo_or_helo_if_needed``. It was written for the aiosmtplib versions in
:data:`WRITTEN_FOR`; outside them, when an attribute is missing, when the message is not
plain CRLF bytes, or when told to (``public_only``), it sends through aiosmtplib's public
``SMTP.data`` instead: the same replies and results, only slower. A test fails when the
installed aiosmtplib leaves the range, so an upgrade is reviewed here.

:func:`unread_bytes` is the other private read: the protocol's ``_buffer``, to see a line
the relay wrote unasked (:class:`OutOfStep`). It only reads, on both paths, and answers
"none" when the attribute is gone.

:class:`Pipe` is the SMTP PIPELINING of RFC 2920 (MAIL, RCPT and DATA in one write, when the
relay offers it): aiosmtplib reads one reply per command written, so a pipe holds the
protocol's command lock for the whole group and reads the replies itself, in order: first
what the protocol's ``_buffer`` holds already (``_read_response_from_buffer``; several
replies often arrive in one packet), then from its ``_response_waiter``, awaited directly
(no ``wait_for``, whose extra task step would let the next packet arrive while the parsed
reply waits to be picked up, and aiosmtplib drops a packet then). :meth:`FastData.pipe`
gives one only on the fast path, for a relay that offers PIPELINING, with every name there.

It must not classify replies or decide what becomes of a message (``client``, ``smtp``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Self

import aiosmtplib
from aiosmtplib import SMTPResponse

log = logging.getLogger("mailer.transport")

# The aiosmtplib releases this code was read against: lowest included, highest excluded.
WRITTEN_FOR: tuple[tuple[int, int, int], tuple[int, int, int]] = ((5, 1, 3), (5, 2, 0))
PROTOCOL_ATTRIBUTES = (
    "_command_lock",
    "_response_pending",
    "_buffer",
    "_response_waiter",
    "_read_response_from_buffer",
)
CLIENT_ATTRIBUTES = ("_ehlo_or_helo_if_needed",)


class OutOfStep(aiosmtplib.SMTPException):
    """The relay wrote a line nobody asked for: its replies no longer match our commands."""


def version_fits(version: str) -> bool:
    """Whether an aiosmtplib ``__version__`` lies in :data:`WRITTEN_FOR`."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if match is None:
        return False
    found = tuple(int(part or 0) for part in match.groups())
    low, high = WRITTEN_FOR
    return low <= found < high


INSTALLED_FITS = version_fits(aiosmtplib.__version__) and all(
    hasattr(aiosmtplib.SMTP, name) for name in CLIENT_ATTRIBUTES
)


def unread_bytes(protocol: object) -> bool:
    """Bytes received beyond the last reply (aiosmtplib keeps them in ``_buffer``)."""
    return bool(getattr(protocol, "_buffer", None))


def wire_form(message: bytes, *, crlf: bool = False) -> bytes | None:
    """The DATA payload of a message that uses CRLF line endings only: lines starting with
    a period doubled (RFC 5321 4.5.2), a final CRLF ensured, and the ending ``.`` line added;
    None for anything else (lone CR or LF), which aiosmtplib normalises itself. ``crlf``:
    the message is known to end its lines in CRLF only (its builder's word), which saves
    three passes over it (the sending process spent about 100 µs a message there)."""
    if not crlf:
        pairs = message.count(b"\r\n")
        if message.count(b"\r") != pairs or message.count(b"\n") != pairs:
            return None
    wire = message.replace(b"\r\n.", b"\r\n..") if b"\r\n." in message else message
    if wire.startswith(b"."):
        wire = b"." + wire
    if not wire.endswith(b"\r\n"):
        wire += b"\r\n"
    return wire + b".\r\n"


class Pipe:
    """One pipelined group on a connection: the command lock held from :meth:`write` to the
    last :meth:`reply`, the replies read in the order of the commands. Use as
    ``async with fast_data.pipe(client, timeout) as pipe`` (see the module docstring)."""

    __slots__ = ("_lock", "_protocol", "_timeout")

    def __init__(self, protocol: Any, lock: asyncio.Lock, reply_timeout: float | None) -> None:
        self._protocol = protocol
        self._lock = lock
        self._timeout = reply_timeout

    async def __aenter__(self) -> Self:
        await self._lock.acquire()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._protocol._response_pending = False
        self._lock.release()

    def write(self, data: bytes) -> None:
        """Commands (or a message's wire form) on the wire, their replies awaited."""
        self._protocol._response_pending = True
        self._protocol.write(data)

    def unread(self) -> bool:
        """Bytes received beyond the replies read so far."""
        return unread_bytes(self._protocol)

    async def reply(self) -> SMTPResponse:
        """The next reply: raises as ``SMTPProtocol.read_response`` does (disconnected, timed
        out, malformed)."""
        protocol = self._protocol
        if protocol._buffer:
            buffered: SMTPResponse | None = protocol._read_response_from_buffer()
            if buffered is not None:
                return buffered
        waiter = protocol._response_waiter
        if waiter is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        protocol._response_pending = True
        try:
            async with asyncio.timeout(self._timeout):
                response: SMTPResponse = await waiter
        except TimeoutError as exc:
            raise aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response") from exc
        finally:
            # as read_response does: a new waiter for the next reply, none once disconnected
            if protocol.transport is None:
                protocol._response_waiter = None
            else:
                protocol._response_waiter = asyncio.get_running_loop().create_future()
        return response


class FastData:
    """DATA for the connections of one transport: the fast path when it may, else the
    public API. ``fast`` and ``public`` count the DATA exchanges each path carried (a
    message's content written), ``pipelined`` the transactions sent as one group (MAIL,
    RCPT and DATA in one write); ``pipelining=False`` never pipelines (for comparisons)."""

    __slots__ = ("enabled", "fast", "pipelined", "pipelining", "public")

    _warned = False  # the "outside the range" notice is logged once per process

    def __init__(self, *, public_only: bool = False, pipelining: bool = True) -> None:
        self.enabled = INSTALLED_FITS and not public_only
        self.pipelining = pipelining
        self.fast = 0
        self.public = 0
        self.pipelined = 0
        if not INSTALLED_FITS and not FastData._warned:
            FastData._warned = True
            low, high = (".".join(map(str, v)) for v in WRITTEN_FOR)
            log.info(
                "aiosmtplib %s is outside the versions the DATA fast path was written for "
                "(>=%s, <%s): its public DATA is used (slower), without PIPELINING",
                aiosmtplib.__version__,
                low,
                high,
            )

    def pipe(self, client: aiosmtplib.SMTP, reply_timeout: float | None) -> Pipe | None:
        """A :class:`Pipe` on ``client``'s connection when the fast path may pipeline there
        (the relay offers PIPELINING, every private name is there); None: one command at a
        time, through aiosmtplib."""
        if not (self.enabled and self.pipelining and client.supports_extension("pipelining")):
            return None
        protocol = client.protocol
        lock = getattr(protocol, "_command_lock", None)
        if not isinstance(lock, asyncio.Lock) or not all(
            hasattr(protocol, name) for name in PROTOCOL_ATTRIBUTES
        ):
            return None
        return Pipe(protocol, lock, reply_timeout)

    async def send(
        self, client: aiosmtplib.SMTP, message: str | bytes, reply_timeout: float | None
    ) -> SMTPResponse:
        """DATA and the message on ``client``; raises as ``SMTP.data`` does, and
        :class:`OutOfStep` when a 2xx (or a reply with more behind it) comes where 354 is due.
        """
        protocol = client.protocol
        wire = wire_form(message) if self.enabled and isinstance(message, bytes) else None
        lock = getattr(protocol, "_command_lock", None)
        if (
            wire is None
            or protocol is None
            or not isinstance(lock, asyncio.Lock)
            or not hasattr(protocol, "_response_pending")
        ):
            self.public += 1
            return await self._public(client, message, reply_timeout)
        self.fast += 1
        await client._ehlo_or_helo_if_needed()
        async with lock:
            protocol._response_pending = True
            protocol.write(b"DATA\r\n")
            start = await protocol.read_response(timeout=reply_timeout)
            if start.code != 354:
                if 200 <= start.code < 300 or unread_bytes(protocol):
                    # a 2xx where 354 is due: a stale line; the message was not sent
                    raise OutOfStep(f"a {start.code} reply where DATA's 354 was due")
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            protocol._response_pending = True
            protocol.write(wire)
            response = await protocol.read_response(timeout=reply_timeout)
        if response.code != 250:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response

    @staticmethod
    async def _public(
        client: aiosmtplib.SMTP, message: str | bytes, reply_timeout: Any
    ) -> SMTPResponse:
        """aiosmtplib's own DATA (``SMTP.data``, not the subclass's override)."""
        try:
            return await aiosmtplib.SMTP.data(client, message, timeout=reply_timeout)
        except aiosmtplib.SMTPDataError as exc:
            if 200 <= exc.code < 300 or unread_bytes(client.protocol):
                # aiosmtplib does not say which reply it was: a 2xx is most likely a stale
                # line read where 354 was due, so the message was not sent.
                raise OutOfStep(f"a {exc.code} reply to DATA out of step") from exc
            raise
