"""The SMTP client of one pooled connection: aiosmtplib's ``SMTP``, noting which command
failed first (for a precise reply) and whether the relay's reply stream fell out of step
with the commands.

A relay that writes an unsolicited line (a ``554`` right after its ``250``) leaves it in the
protocol's buffer, where it would be read as the reply to our next command: the next
recipient refused by a stale line. Whenever a reply leaves bytes behind, the connection is
marked ``out_of_step``; a command that would read them raises :class:`OutOfStep` instead,
and the pool resets the connection. DATA goes through :class:`~.fast_data.FastData`.

It must not classify replies or translate exceptions (``replies``, ``failures``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import aiosmtplib
from aiosmtplib import SMTPResponse

from mailer.transport.fast_data import FastData, OutOfStep, unread_bytes

_T = TypeVar("_T")


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

    async def sendmail(self, *args: Any, **kwargs: Any) -> tuple[dict[str, SMTPResponse], str]:
        self.failed_stage = None
        return await super().sendmail(*args, **kwargs)

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
