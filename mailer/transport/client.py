"""The SMTP client of one pooled connection: aiosmtplib's ``SMTP``, noting which command
failed first (for a precise reply) and whether the relay's reply stream fell out of step
with the commands.

A relay that writes an unsolicited line (a ``554`` right after its ``250``) leaves it in the
protocol's buffer, where it would be read as the reply to our next command: the next
recipient refused by a stale line. Whenever a reply leaves bytes behind, the connection is
marked ``out_of_step``; a command that would read them raises :class:`OutOfStep` instead,
and the pool resets the connection. DATA goes through :class:`~.fast_data.FastData`.

When the relay offers PIPELINING (RFC 2920), a one-recipient transaction writes MAIL, RCPT
and DATA at once (:meth:`Client.sendmail`, through a :class:`~.fast_data.Pipe`) and reads the
three replies in order; what they mean is what they would mean one command at a time: the
first refusal (MAIL, then RCPT, then DATA) raises aiosmtplib's exception for that command,
after the replies behind it were read (and a lone ``.`` sent if DATA was accepted anyway),
then RSET, as ``SMTP.sendmail`` does. A 421 closes the connection at once. A reply that
cannot belong to its command (a 354 before DATA, a 2xx where DATA's 354 is due, bytes left
after the group) means the replies are out of step: :class:`OutOfStep`, nothing sent.

It must not classify replies or translate exceptions (``replies``, ``failures``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Iterable, Sequence
from typing import Any, Literal, TypeVar

import aiosmtplib
from aiosmtplib import SMTPResponse
from aiosmtplib.email import quote_address
from aiosmtplib.typing import Default

from mailer.transport.fast_data import FastData, OutOfStep, Pipe, unread_bytes, wire_form

_T = TypeVar("_T")

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")  # what aiosmtplib refuses in a command argument
_ACCEPTED = {"MAIL": (250,), "RCPT": (250, 251), "DATA": (354,)}


# A plain address (dot-atom-like local part, a host name): what aiosmtplib's quote_address
# (email.utils.parseaddr, about 35 µs) gives back unchanged inside angle brackets.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9+_=-]+(?:\.[A-Za-z0-9+_=-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def quoted(address: str) -> str:
    """``<address>`` as aiosmtplib's ``quote_address`` makes it, at once for a plain one."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return quote_address(address)


class Client(aiosmtplib.SMTP):
    """One connection's client; see the module docstring."""

    failed_stage: str | None = None
    out_of_step: bool = False

    def __init__(self, *, fast_data: FastData | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fast_data = fast_data if fast_data is not None else FastData()

    def _leftover(self) -> bool:
        return unread_bytes(self.protocol)

    def _refuse_out_of_step(self) -> None:
        if self.out_of_step or self._leftover():
            self.out_of_step = True
            raise OutOfStep("the relay's replies are out of step with the commands")

    async def execute_command(self, *args: bytes, **kwargs: Any) -> SMTPResponse:
        self._refuse_out_of_step()
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

    async def sendmail(
        self,
        sender: str,
        recipients: str | Sequence[str],
        message: str | bytes,
        /,
        *,
        mail_options: Iterable[str] | None = None,
        rcpt_options: Iterable[str] | None = None,
        timeout: float | Literal[Default.token] | None = Default.token,  # noqa: ASYNC109
        crlf: bool = False,
    ) -> tuple[dict[str, SMTPResponse], str]:
        """aiosmtplib's ``sendmail``, pipelined for one recipient when the relay allows;
        ``crlf``: the message's lines are known to end in CRLF only (see ``wire_form``)."""
        self.failed_stage = None
        if isinstance(recipients, str):
            recipients = [recipients]
        if len(recipients) == 1 and isinstance(message, bytes):
            await self._ehlo_or_helo_if_needed()
            reply_timeout = self.timeout if timeout is Default.token else timeout
            wire = wire_form(message, crlf=crlf)
            pipe = self.fast_data.pipe(self, reply_timeout) if wire is not None else None
            if wire is not None and pipe is not None:
                envelope = self._envelope(
                    sender, recipients[0], message, mail_options, rcpt_options
                )
                return await self._pipelined(pipe, (sender, recipients[0]), envelope, wire, timeout)
        return await super().sendmail(
            sender,
            recipients,
            message,
            mail_options=mail_options,
            rcpt_options=rcpt_options,
            timeout=timeout,
        )

    def _envelope(
        self,
        sender: str,
        recipient: str,
        message: bytes,
        mail_options: Iterable[str] | None,
        rcpt_options: Iterable[str] | None,
    ) -> bytes:
        """MAIL, RCPT and DATA as aiosmtplib writes them one at a time (SIZE first when the
        relay offers it); ValueError and SMTPNotSupported as it raises them, before any."""
        options = list(mail_options or ())
        utf8 = any(option.lower() == "smtputf8" for option in options)
        if utf8 and not self.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
        if self.supports_extension("size"):
            options.insert(0, f"size={len(message)}")  # CRLF only: the wire length
        encoding = "utf-8" if utf8 else "ascii"
        mail = [b"MAIL", b"FROM:" + quoted(sender).encode(encoding)]
        rcpt = [b"RCPT", b"TO:" + quoted(recipient).encode(encoding)]
        mail += [option.encode("ascii") for option in options]
        rcpt += [option.encode("ascii") for option in rcpt_options or ()]
        if any(_CONTROL.search(arg) for arg in (*mail, *rcpt)):
            raise ValueError("Command arg contains a prohibited control character")
        return b" ".join(mail) + b"\r\n" + b" ".join(rcpt) + b"\r\nDATA\r\n"

    async def _pipelined(
        self,
        pipe: Pipe,
        addresses: tuple[str, str],
        envelope: bytes,
        wire: bytes,
        rset_timeout: float | Literal[Default.token] | None,
    ) -> tuple[dict[str, SMTPResponse], str]:
        """One pipelined transaction; on a refusal, RSET as ``SMTP.sendmail`` does."""
        self._refuse_out_of_step()
        try:
            try:
                async with pipe:
                    response = await self._group(pipe, addresses, envelope, wire)
            except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
                self.close()  # state unknown: as aiosmtplib does after a lost or late reply
                raise
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            # as aiosmtplib: a failed RSET is not the reason to report
            with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
                await self.rset(timeout=rset_timeout)
            raise
        return {}, response.message

    async def _group(
        self, pipe: Pipe, addresses: tuple[str, str], envelope: bytes, wire: bytes
    ) -> SMTPResponse:
        """Write the group, read its replies in order, then the message if all accepted."""
        self.fast_data.pipelined += 1
        pipe.write(envelope)
        replies: dict[str, SMTPResponse] = {}
        for stage in _ACCEPTED:
            replies[stage] = reply = await self._in(stage, pipe.reply())
            if reply.code == 421:  # the relay closes: nothing more will come
                self.close()
                break
        self._check_in_step(replies, pipe)
        refused = next((s for s, r in replies.items() if r.code not in _ACCEPTED[s]), None)
        if refused is None:
            self.fast_data.fast += 1
            pipe.write(wire)
            response = await self._in("DATA", pipe.reply())
            if pipe.unread():
                self.out_of_step = True  # the reply read stands; the connection does not
            if response.code != 250:
                raise aiosmtplib.SMTPDataError(response.code, response.message)
            return response
        self.failed_stage = refused
        if replies.get("DATA", SMTPResponse(0, "")).code == 354:
            # DATA accepted though the envelope was not (RFC 2920 3.1): an empty message
            pipe.write(b".\r\n")
            await pipe.reply()
            if pipe.unread():
                self.out_of_step = True
        reply = replies[refused]
        if refused == "MAIL":
            raise aiosmtplib.SMTPSenderRefused(reply.code, reply.message, addresses[0])
        if refused == "RCPT":
            one = aiosmtplib.SMTPRecipientRefused(reply.code, reply.message, addresses[1])
            raise aiosmtplib.SMTPRecipientsRefused([one])
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)

    def _check_in_step(self, replies: dict[str, SMTPResponse], pipe: Pipe) -> None:
        """OutOfStep when a reply cannot be its command's: a 354 before DATA, a 2xx where
        DATA's 354 is due (the replies shifted by a stale line), bytes left after the group."""
        data = replies.get("DATA")
        shifted = any(replies[s].code == 354 for s in ("MAIL", "RCPT") if s in replies)
        if (
            shifted
            or (data is not None and 200 <= data.code < 300)
            or (len(replies) == 3 and pipe.unread())
        ):
            self.out_of_step = True
            raise OutOfStep("the relay's replies to a pipelined group are out of step")

    async def mail(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        return await self._in("MAIL", super().mail(*args, **kwargs))

    async def rcpt(self, *args: Any, **kwargs: Any) -> SMTPResponse:
        return await self._in("RCPT", super().rcpt(*args, **kwargs))

    async def data(self, message: str | bytes, /, **kwargs: Any) -> SMTPResponse:
        return await self._in("DATA", self._data(message, kwargs.get("timeout", self.timeout)))

    async def _data(self, message: str | bytes, reply_timeout: Any) -> SMTPResponse:
        self._refuse_out_of_step()
        try:
            response = await self.fast_data.send(self, message, reply_timeout)
        except OutOfStep:
            self.out_of_step = True
            raise
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        finally:
            if self._leftover():
                self.out_of_step = True  # the reply read stands; the connection does not
        return response
