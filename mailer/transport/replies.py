"""Reply classification: what an SMTP reply means for the message, as one table.

:data:`REPLY_RULES` maps a reply (its code, its enhanced status code, the command it
answered, and whether its text says "no such user") to an :class:`~.contract.Outcome` and to
what the caller should do: slow down (``throttled``), suppress the address (``suppress``),
or pause the send because the relay refuses our sending as a whole (``policy``). The first
rule that matches decides; :func:`rule_for` is the only reader of the table and
:func:`classify_reply` turns its rule into a :class:`~.contract.Result`.

It must not look at anything but the reply: retries and suppressions are ``dispatch``'s.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass

from mailer.transport.contract import Outcome, Result

_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
_NO_SUCH_USER = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|user not found"
    r"|mailbox (?:not found|does not exist)|recipient not found|address does not exist",
    re.IGNORECASE,
)

EVERY_STAGE: frozenset[str] = frozenset()  # no stage named: the rule covers every stage
ABOUT_RECIPIENT = frozenset({"RCPT", "DATA"})  # replies that may speak of the recipient


@dataclass(frozen=True, slots=True)
class ReplyRule:
    """One row of the table: which replies it covers, and what they mean."""

    codes: Container[int]  # reply codes covered (a range or a set)
    outcome: Outcome
    why: str  # the reason, in words, for readers and failing tests
    status: str = ""  # enhanced status "5.1" (class.subject, any detail) or "5.1.7"; "": any
    stages: frozenset[str] = EVERY_STAGE  # commands answered (MAIL, RCPT, DATA, AUTH...)
    says_no_such_user: bool = False  # the text must say the mailbox does not exist
    throttled: bool = False  # the relay asks us to slow down
    suppress: bool = False  # the address does not exist: suppress it
    policy: bool = False  # the relay refuses our sending as a whole: pause the send
    unexpected: bool = False  # not an SMTP verdict: the result's text says so

    def matches(self, code: int, status: str, stage: str, text: str) -> bool:
        return (
            code in self.codes
            and (not self.status or status == self.status or status.startswith(self.status + "."))
            and (not self.stages or stage in self.stages)
            and (not self.says_no_such_user or _NO_SUCH_USER.search(text) is not None)
        )


_2XX, _4XX, _5XX = range(200, 300), range(400, 500), range(500, 600)
_EVERY_CODE = range(-(2**63), 2**63)  # any int (aiosmtplib reports an unreadable reply as -1)

REPLY_RULES: tuple[ReplyRule, ...] = (
    ReplyRule(_2XX, Outcome.SENT, "accepted"),
    ReplyRule(
        frozenset({421, 454}),
        Outcome.DEFERRED,
        "the relay closes or lacks resources: slow down",
        throttled=True,
    ),
    ReplyRule(
        _4XX, Outcome.DEFERRED, "4.7.x: a rate or policy limit: slow down", "4.7", throttled=True
    ),
    ReplyRule(
        _4XX,
        Outcome.DEFERRED,
        "one mailbox's trouble (greylisting, busy, 450/451/452 on RCPT): that message waits",
    ),
    # 5.7.x (policy, authentication, reputation) is never the address's fault, never a
    # suppression. At RCPT it may be one recipient's own policy ("blocked by the recipient"):
    # it fails that recipient alone, and a relay refusing everyone so trips the broken-relay
    # watch of dispatch. At MAIL, DATA or AUTH it refuses our sending as a whole.
    ReplyRule(
        _5XX, Outcome.FAILED, "5.7.x at RCPT: this recipient's policy", "5.7", frozenset({"RCPT"})
    ),
    ReplyRule(_5XX, Outcome.FAILED, "5.7.x: our sending is refused", "5.7", policy=True),
    ReplyRule(_5XX, Outcome.FAILED, "5.1.7: it speaks of our sender's address", "5.1.7"),
    ReplyRule(_5XX, Outcome.FAILED, "5.1.8: it speaks of our sender's domain", "5.1.8"),
    ReplyRule(
        _5XX,
        Outcome.FAILED,
        "5.1.x about the recipient: no such mailbox",
        "5.1",
        ABOUT_RECIPIENT,
        suppress=True,
    ),
    ReplyRule(
        frozenset({550, 551, 553}),
        Outcome.FAILED,
        "a refusal of the recipient whose text says 'no such user'",
        stages=ABOUT_RECIPIENT,
        says_no_such_user=True,
        suppress=True,
    ),
    ReplyRule(_5XX, Outcome.FAILED, "refused for good; the address stays usable"),
    ReplyRule(_EVERY_CODE, Outcome.DEFERRED, "not an SMTP verdict: try later", unexpected=True),
)


def enhanced_status(reply: str) -> str:
    """The enhanced status code (RFC 3463) opening the reply's first line, or ``""``."""
    first_line = reply.strip().split("\n", 1)[0].strip()
    match = _ENHANCED.match(first_line)
    return ".".join(match.groups()) if match else ""


def rule_for(code: int, reply: str, *, stage: str = "RCPT") -> ReplyRule:
    """The first rule of :data:`REPLY_RULES` that covers this reply to ``stage``."""
    status = enhanced_status(reply)
    text = reply.strip()
    for rule in REPLY_RULES:
        if rule.matches(code, status, stage, text):
            return rule
    raise AssertionError(f"no reply rule covers {code}")  # pragma: no cover - last rule: all


def classify_reply(code: int, reply: str, *, stage: str = "RCPT") -> Result:
    """The :class:`Result` of an SMTP reply to ``stage`` (MAIL, RCPT, DATA...); see the table.

    2xx is sent; 4xx deferred (throttled for 421, 454 and 4.7.x); 5xx failed, with
    ``suppress`` for a "no such user" refusal of the recipient and ``policy`` for 5.7.x
    outside RCPT; anything else is deferred as an unexpected reply.
    """
    rule = rule_for(code, reply, stage=stage)
    text = reply.strip()
    if rule.unexpected:
        text = f"unexpected reply to {stage}: {code} {text}"
    return Result(
        rule.outcome,
        code,
        text,
        suppress=rule.suppress,
        throttled=rule.throttled,
        policy=rule.policy,
    )
