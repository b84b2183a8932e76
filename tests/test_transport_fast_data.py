"""The DATA fast path (mailer.transport.fast_data): pinned to the aiosmtplib versions it was
written for, and giving the same messages and results as aiosmtplib's public DATA."""

from __future__ import annotations

import asyncio
from typing import Any

import aiosmtplib
import pytest

from mailer.message import Built
from mailer.transport import FastData, Outcome, Result, SmtpTransport
from mailer.transport import fast_data as fast_data_module
from mailer.transport.fast_data import (
    CLIENT_ATTRIBUTES,
    PROTOCOL_ATTRIBUTES,
    WRITTEN_FOR,
    version_fits,
)
from tests.smtpd import SmtpServer

pytestmark = pytest.mark.timeout(20)

SENDER = "news@example.org"
PATHS = ["fast", "public"]


def built(recipient: str, number: int, body: str = "Hello.") -> Built:
    data = (
        f"From: News <{SENDER}>\r\nTo: {recipient}\r\nSubject: Test {number}\r\n"
        f"Message-ID: <{number}.test@example.org>\r\n\r\n{body}\r\n"
    ).encode()
    return Built(
        data=data,
        sender=SENDER,
        recipient=recipient,
        message_id=f"<{number}.test@example.org>",
        smtputf8=False,
        eight_bit=False,
    )


def transport(server: SmtpServer, path: str, **overrides: Any) -> SmtpTransport:
    return SmtpTransport(
        server.settings(**overrides),
        reconnect_delay=0.01,
        fast_data=FastData(public_only=path == "public"),
    )


# --- the pin ---------------------------------------------------------------------------------


def test_the_installed_aiosmtplib_is_one_the_fast_path_was_written_for() -> None:
    """Fails when aiosmtplib leaves WRITTEN_FOR: read fast_data.py against the new release
    (the private attributes it touches, SMTPProtocol.execute_data_command), then move the
    range. Until then the transport sends through the public API, slower."""
    low, high = (".".join(map(str, v)) for v in WRITTEN_FOR)
    assert version_fits(aiosmtplib.__version__), (
        f"aiosmtplib {aiosmtplib.__version__} is outside >={low},<{high}"
    )
    assert fast_data_module.INSTALLED_FITS


async def test_the_private_attributes_it_touches_are_there(smtp_server: SmtpServer) -> None:
    """A connected aiosmtplib client has every private name the fast path reads or writes."""
    client = aiosmtplib.SMTP(hostname=smtp_server.host, port=smtp_server.port)
    await client.connect()
    protocol = client.protocol
    assert protocol is not None
    try:
        assert [n for n in CLIENT_ATTRIBUTES if not hasattr(client, n)] == []
        assert [n for n in PROTOCOL_ATTRIBUTES if not hasattr(protocol, n)] == []
        assert isinstance(protocol._command_lock, asyncio.Lock)
        assert isinstance(protocol._buffer, bytearray)
    finally:
        await client.quit()


@pytest.mark.parametrize(
    ("version", "fits"),
    [
        ("5.1.3", True),
        ("5.1.9", True),
        ("5.1.3.post1", True),
        ("5.1.2", False),
        ("5.2.0", False),
        ("5.2.0rc1", False),
        ("6.0", False),
        ("4.0.2", False),
        ("unknown", False),
    ],
)
def test_version_fits_reads_the_declared_range(version: str, fits: bool) -> None:
    """The range is lowest included, highest excluded, on the numeric release."""
    assert version_fits(version) is fits


async def test_outside_the_range_the_public_path_is_used(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An aiosmtplib the fast path was not written for sends through the public API."""
    monkeypatch.setattr(fast_data_module, "INSTALLED_FITS", False)
    data = FastData()
    assert not data.enabled
    async with SmtpTransport(smtp_server.settings(), fast_data=data) as relay:
        result = await relay.send(built("ada@example.org", 1))
    assert result.outcome is Outcome.SENT
    assert (data.fast, data.public) == (0, 1)


# --- the same messages and results either way ------------------------------------------------


def plan_faults(server: SmtpServer) -> None:
    server.plan.reply("RCPT", "451 4.3.0 Mailbox busy", recipient="busy@example.org")
    server.plan.reply("RCPT", "550 5.1.1 No such user", recipient="gone@example.org")
    server.plan.reply("DATA", "452 4.3.1 Insufficient storage", recipient="full@example.org")
    server.plan.reply("DATA", "554 5.7.1 Rejected as spam", recipient="spam@example.org")
    server.plan.reply("DATA", "421 4.7.0 Try again later", recipient="slow@example.org")


RECIPIENTS = [
    "ada@example.org",
    "busy@example.org",
    "gone@example.org",
    "full@example.org",
    "spam@example.org",
    "slow@example.org",
    "bob@example.org",
]
BODIES = ["Hello.", ".starts with a period\r\n..two\r\n.\r\nend", ("x" * 900 + "\r\n") * 20]


async def deliver(server: SmtpServer, path: str) -> tuple[list[Result], list[tuple[Any, ...]]]:
    plan_faults(server)
    messages = [built(r, n, BODIES[n % 3]) for n, r in enumerate(RECIPIENTS)]
    async with transport(server, path, pool_size=1) as relay:
        results = [await relay.send(m) for m in messages]
        counts = (relay.fast_data.fast, relay.fast_data.public)
    reached_data = 5  # ada, full, spam, slow and bob; busy and gone are refused at RCPT
    assert counts == ((reached_data, 0) if path == "fast" else (0, reached_data))
    received = [(r.mail_from, r.rcpt_tos, r.data, r.mail_options) for r in server.received]
    return results, received


@pytest.mark.parametrize("path", PATHS)
async def test_each_path_delivers_the_planned_results(smtp_server: SmtpServer, path: str) -> None:
    """250, 4xx and 5xx at RCPT and DATA: the same results on the fast and the public path,
    and the relay receives the accepted messages byte for byte."""
    results, received = await deliver(smtp_server, path)
    assert results == [
        Result(Outcome.SENT, 250, results[0].reply),
        Result(Outcome.DEFERRED, 451, "4.3.0 Mailbox busy"),
        Result(Outcome.FAILED, 550, "5.1.1 No such user", suppress=True),
        Result(Outcome.DEFERRED, 452, "4.3.1 Insufficient storage"),
        Result(Outcome.FAILED, 554, "5.7.1 Rejected as spam", policy=True),
        Result(Outcome.DEFERRED, 421, "4.7.0 Try again later", throttled=True),
        Result(Outcome.SENT, 250, results[6].reply),
    ]
    messages = [built(r, n, BODIES[n % 3]) for n, r in enumerate(RECIPIENTS)]
    assert [(f, rcpt, data) for f, rcpt, data, _ in received] == [
        (SENDER, (m.recipient,), m.data) for m in (messages[0], messages[6])
    ]
    assert smtp_server.connections == 2  # the 421 closed the first


async def test_the_forced_public_path_equals_the_fast_path(
    smtp_server: SmtpServer,
) -> None:
    """Run one then the other against the same server: envelopes, bytes, options, results."""
    fast = await deliver(smtp_server, "fast")
    smtp_server.received.clear()
    smtp_server.plan.clear()
    public = await deliver(smtp_server, "public")
    assert public == fast


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("line", ["554 5.0.0 Unsolicited complaint", "250 2.0.0 Stray"])
async def test_an_unsolicited_line_after_data_fails_nobody_on_either_path(
    smtp_server: SmtpServer, path: str, line: str
) -> None:
    """A line written unasked after DATA's 250 resets the connection on both paths; the
    following messages go on a new one, none refused by the stale line."""
    smtp_server.plan.unsolicited("DATA", line, times=1)
    async with transport(smtp_server, path, pool_size=1) as relay:
        results = [await relay.send(built(f"u{n}@example.org", n)) for n in range(3)]
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert smtp_server.recipients() == ["u0@example.org", "u1@example.org", "u2@example.org"]
    assert smtp_server.connections == 2
