"""What a transport is and what it returns: the :class:`Transport` protocol, the
:class:`Result` of one message with its :class:`Outcome`, and :class:`TransportFatal`.

The vocabulary every caller of the transport speaks (``dispatch``, the CLI, the bench).
This module imports no SMTP library and decides nothing: the replies are classified in
``replies``, the exceptions translated in ``failures``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, Self

from mailer.errors import MailerError
from mailer.message import Built


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
