"""Reply classification (mailer.transport.replies): one table, one reader, decisions pinned."""

from __future__ import annotations

import itertools
import re

import pytest

from mailer.transport import Outcome, Result, classify_reply
from mailer.transport.replies import REPLY_RULES, ReplyRule, rule_for

# (code, reply, stage) -> (outcome, throttled, suppress, policy): one case or more per rule.
CASES: list[tuple[int, str, str, tuple[Outcome, bool, bool, bool]]] = [
    (250, "2.0.0 Ok: queued", "DATA", (Outcome.SENT, False, False, False)),
    (251, "User not local; will forward", "RCPT", (Outcome.SENT, False, False, False)),
    (421, "4.3.2 Service shutting down", "DATA", (Outcome.DEFERRED, True, False, False)),
    (421, "Too many connections", "MAIL", (Outcome.DEFERRED, True, False, False)),
    (454, "4.3.0 TLS not available", "MAIL", (Outcome.DEFERRED, True, False, False)),
    (450, "4.7.1 Rate limited", "RCPT", (Outcome.DEFERRED, True, False, False)),
    (451, "4.7.12 Slow down", "DATA", (Outcome.DEFERRED, True, False, False)),
    (450, "4.2.1 Mailbox busy", "RCPT", (Outcome.DEFERRED, False, False, False)),
    (451, "4.3.0 Local error", "DATA", (Outcome.DEFERRED, False, False, False)),
    (452, "4.5.3 Too many recipients", "RCPT", (Outcome.DEFERRED, False, False, False)),
    (451, "4.70.1 not a 4.7 status", "RCPT", (Outcome.DEFERRED, False, False, False)),
    (554, "5.7.1 Relay access denied", "RCPT", (Outcome.FAILED, False, False, False)),
    (550, "5.7.1 user unknown here, policy", "RCPT", (Outcome.FAILED, False, False, False)),
    (550, "5.7.1 Message rejected as spam", "DATA", (Outcome.FAILED, False, False, True)),
    (550, "5.7.1 Sender rejected", "MAIL", (Outcome.FAILED, False, False, True)),
    (535, "5.7.8 Bad credentials", "AUTH", (Outcome.FAILED, False, False, True)),
    (553, "5.1.7 Bad sender mailbox, no such user", "RCPT", (Outcome.FAILED, False, False, False)),
    (553, "5.1.8 Bad sender's system address", "MAIL", (Outcome.FAILED, False, False, False)),
    (550, "5.1.8 Sender domain: user unknown", "DATA", (Outcome.FAILED, False, False, False)),
    (550, "5.1.1 No such user", "RCPT", (Outcome.FAILED, False, True, False)),
    (551, "5.1.6 User has moved", "RCPT", (Outcome.FAILED, False, True, False)),
    (550, "5.1.1 The email account does not exist", "DATA", (Outcome.FAILED, False, True, False)),
    (550, "5.1.0 Sender address rejected", "MAIL", (Outcome.FAILED, False, False, False)),
    (550, "Requested action not taken: User unknown", "RCPT", (Outcome.FAILED, False, True, False)),
    (553, "5.0.0 mailbox does not exist", "DATA", (Outcome.FAILED, False, True, False)),
    (552, "5.2.2 Mailbox full, user not found", "RCPT", (Outcome.FAILED, False, False, False)),
    (550, "No such user here", "MAIL", (Outcome.FAILED, False, False, False)),
    (552, "5.2.2 Mailbox full", "RCPT", (Outcome.FAILED, False, False, False)),
    (554, "5.0.0 Transaction failed", "DATA", (Outcome.FAILED, False, False, False)),
    (354, "End data with <CR><LF>.<CR><LF>", "MAIL", (Outcome.DEFERRED, False, False, False)),
    (199, "?", "RCPT", (Outcome.DEFERRED, False, False, False)),
    (600, "6.0.0 from the future", "DATA", (Outcome.DEFERRED, False, False, False)),
]


@pytest.mark.parametrize(("code", "reply", "stage", "expected"), CASES)
def test_each_reply_has_its_outcome_and_what_to_do(
    code: int, reply: str, stage: str, expected: tuple[Outcome, bool, bool, bool]
) -> None:
    """A reply's outcome, throttle, suppression and policy flag are the table's."""
    result = classify_reply(code, reply, stage=stage)
    assert expected == (result.outcome, result.throttled, result.suppress, result.policy)
    assert result.code == code


def test_every_rule_of_the_table_is_pinned_by_a_case() -> None:
    """No row of REPLY_RULES goes untested, and each case lands on the row its flags say."""
    used = {rule_for(code, reply, stage=stage) for code, reply, stage, _ in CASES}
    assert [r.why for r in REPLY_RULES if r not in used] == []
    for code, reply, stage, (outcome, throttled, suppress, policy) in CASES:
        rule = rule_for(code, reply, stage=stage)
        assert (outcome, throttled, suppress, policy) == (
            rule.outcome,
            rule.throttled,
            rule.suppress,
            rule.policy,
        ), rule.why


def test_an_unexpected_code_says_so_in_the_reply() -> None:
    """A code outside 2xx/4xx/5xx is deferred with a reply naming the stage and the code."""
    assert classify_reply(354, " go ahead ", stage="MAIL") == Result(
        Outcome.DEFERRED, 354, "unexpected reply to MAIL: 354 go ahead"
    )


def test_the_table_ends_with_a_rule_for_every_reply() -> None:
    """The last row covers any code at any stage, so rule_for always answers."""
    last = REPLY_RULES[-1]
    assert isinstance(last, ReplyRule)
    assert (last.stages, last.status, last.says_no_such_user) == (frozenset(), "", False)
    assert all(code in last.codes for code in (-1, 0, 999, 10**6))


# The if-chains the table replaced (mailer/transport.py before issue 12), kept as the
# oracle: the table must decide every reply as they did.
_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?!\d)")
_NO_SUCH_USER = re.compile(
    r"user unknown|unknown user|no such (?:user|mailbox|recipient)|user not found"
    r"|mailbox (?:not found|does not exist)|recipient not found|address does not exist",
    re.IGNORECASE,
)


def _before(code: int, reply: str, stage: str) -> Result:
    text = reply.strip()
    first_line = text.split("\n", 1)[0].strip()
    match = _ENHANCED.match(first_line)
    status = ".".join(match.groups()) if match else ""
    if 200 <= code < 300:
        return Result(Outcome.SENT, code, text)
    if 400 <= code < 500:
        throttled = code in {421, 454} or status.startswith("4.7.")
        return Result(Outcome.DEFERRED, code, text, throttled=throttled)
    if 500 <= code < 600:
        if status.startswith("5.7."):
            return Result(Outcome.FAILED, code, text, policy=stage != "RCPT")
        about_recipient = stage in {"RCPT", "DATA"} and status not in {"5.1.7", "5.1.8"}
        no_such_user = status.startswith("5.1.") or (
            code in {550, 551, 553} and _NO_SUCH_USER.search(text) is not None
        )
        return Result(Outcome.FAILED, code, text, suppress=about_recipient and no_such_user)
    return Result(Outcome.DEFERRED, code, f"unexpected reply to {stage}: {code} {text}")


_CODES = [-1, 0, 199, 200, 250, 251, 299, 354, 399, 400, 421, 450, 451, 452, 454, 499]
_CODES += [500, 530, 535, 550, 551, 552, 553, 554, 599, 600]
_STATUSES = ["", "2.0.0", "4.2.1", "4.7.0", "4.7.12", "4.70.1", "5.0.0", "5.1.0", "5.1.1"]
_STATUSES += ["5.1.7", "5.1.8", "5.1.70", "5.10.1", "5.2.2", "5.7.1", "5.7.26", "4.1.1"]
_TEXTS = ["", "Ok", "User unknown", "no such mailbox", "Mailbox full", "recipient NOT FOUND"]
_STAGES = ["connect", "EHLO", "AUTH", "MAIL", "RCPT", "DATA"]


def test_the_table_decides_every_reply_as_the_if_chains_did() -> None:
    """Over a grid of codes, enhanced statuses, texts (one line or two) and stages, the
    table's result equals the one of the code it replaced."""
    checked = 0
    for code, status, text, stage in itertools.product(_CODES, _STATUSES, _TEXTS, _STAGES):
        for reply in (f"{status} {text}", f" {status} first line\n{text} ", f"{text} {status}"):
            assert _before(code, reply, stage) == classify_reply(code, reply, stage=stage), (
                code,
                reply,
                stage,
            )
            checked += 1
    assert checked > 40_000
