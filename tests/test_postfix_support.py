"""The real Postfix of tests/postfix_support.py, as issue 16's relay case needs it.

A message goes from the mailer (or a plain SMTP client) to the Postfix instance, which relays it
to a next hop (aiosmtpd, refusing dead@example.net at RCPT); the DSN Postfix then writes to the
envelope sender ``b+abc@bounces.example.org`` comes back to a stand-in for the mailer's bounce
listener, and the bounce parser reads it. Every wait is on a condition with a deadline; when
one times out, the instance's log and queue are in the message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import aiosmtplib
import pytest

from mailer import bounces
from mailer.bounces import BounceKind
from mailer.message import Built
from mailer.transport import Outcome, SmtpTransport
from tests.postfix_support import HOST, PostfixRelay, free_port, postfix_relay
from tests.smtpd import SmtpServer

pytestmark = pytest.mark.timeout(90)

RETURN_PATH = "b+abc@bounces.example.org"
DEAD = "dead@example.net"
ALIVE = "alive@example.net"
USER_UNKNOWN = f"550 5.1.1 <{DEAD}>: user unknown"
DEADLINE = 30.0  # seconds for Postfix to deliver, however loaded the machine


def message(subject: str, message_id: str) -> bytes:
    return (
        "From: News <news@example.org>\r\n"
        "To: readers@example.net\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Hello.\r\n"
    ).encode()


@pytest.fixture(scope="session")
def relay() -> Iterator[PostfixRelay]:
    """One instance for the tests that can share it; the servers' ports are chosen first."""
    with postfix_relay(next_hop=(HOST, free_port()), bounce_hop=(HOST, free_port())) as running:
        yield running


async def servers(relay: PostfixRelay) -> tuple[SmtpServer, SmtpServer]:
    """The next hop (refusing DEAD) and the bounce listener's stand-in, on the relay's ports."""
    hop = SmtpServer(port=relay.next_hop[1])
    listener = SmtpServer(port=relay.bounce_hop[1])
    hop.plan.reply("RCPT", USER_UNKNOWN, recipient=DEAD)
    await hop.start()
    await listener.start()
    return hop, listener


@pytest.fixture
async def hop_and_listener(relay: PostfixRelay) -> AsyncIterator[tuple[SmtpServer, SmtpServer]]:
    hop, listener = await servers(relay)
    try:
        yield hop, listener
    finally:
        await hop.stop()
        await listener.stop()
        await asyncio.to_thread(relay.clear)  # nothing of this test is retried in the next


async def arrived(
    server: SmtpServer, relay: PostfixRelay, what: str, found: Callable[[], bool]
) -> None:
    """Wait until ``found()`` holds for ``server``'s messages; on timeout, say what Postfix did."""
    try:
        async with asyncio.timeout(DEADLINE), server.arrived:
            await server.arrived.wait_for(found)
    except TimeoutError:
        report = await asyncio.to_thread(relay.report)
        pytest.fail(f"{what} not received in {DEADLINE:.0f} s\n{report}")


async def test_a_refused_recipient_comes_back_as_a_dsn_to_the_return_path(
    relay: PostfixRelay, hop_and_listener: tuple[SmtpServer, SmtpServer]
) -> None:
    hop, listener = hop_and_listener
    refused, _ = await aiosmtplib.send(
        message("Issue 1", "<issue-1@example.org>"),
        sender=RETURN_PATH,
        recipients=[DEAD, ALIVE],
        hostname=relay.host,
        port=relay.port,
        local_hostname="mailer.test",
    )
    assert refused == {}  # Postfix accepts both: it learns of the refusal later, as relays do

    await arrived(hop, relay, "alive's message", lambda: bool(hop.received))
    await arrived(listener, relay, "the DSN", lambda: bool(listener.received))

    assert [(m.mail_from, m.rcpt_tos) for m in hop.received] == [(RETURN_PATH, (ALIVE,))]
    assert b"Subject: Issue 1" in hop.received[0].data
    [dsn] = listener.received
    assert (dsn.mail_from, dsn.rcpt_tos) == ("<>", (RETURN_PATH,)), relay.log()
    report = bounces.parse(dsn.data)
    assert [(f.recipient, f.kind, f.status) for f in report.findings] == [
        (DEAD, BounceKind.HARD, "5.1.1")
    ]
    assert report.findings[0].final
    assert report.message_id == "<issue-1@example.org>"
    assert report.bounce_to == RETURN_PATH


async def test_the_mailer_transport_sends_through_it(
    relay: PostfixRelay, hop_and_listener: tuple[SmtpServer, SmtpServer]
) -> None:
    """The mailer's own SMTP client, one recipient a message: Postfix's 250 is SENT, and the
    refusal arrives later as a DSN, which is issue 16's whole point."""
    hop, listener = hop_and_listener
    built = [
        Built(
            data=message("Issue 2", f"<issue-2.{n}@example.org>"),
            sender=RETURN_PATH,
            recipient=recipient,
            message_id=f"<issue-2.{n}@example.org>",
            smtputf8=False,
            eight_bit=False,
        )
        for n, recipient in enumerate([DEAD, ALIVE])
    ]
    async with SmtpTransport(relay.settings()) as transport:
        results = [await transport.send(b) for b in built]
    assert [r.outcome for r in results] == [Outcome.SENT, Outcome.SENT]

    await arrived(hop, relay, "alive's message", lambda: bool(hop.received))
    await arrived(listener, relay, "the DSN", lambda: bool(listener.received))
    assert hop.recipients() == [ALIVE]
    [finding] = bounces.parse(listener.received[0].data).findings
    assert (finding.recipient, finding.kind, finding.status) == (DEAD, BounceKind.HARD, "5.1.1")


async def test_a_soft_failure_becomes_a_dsn_when_the_queue_lifetime_is_zero() -> None:
    """An instance of its own, trying each message once; then nothing of it is left."""
    hop_port, listener_port = free_port(), free_port()
    with postfix_relay(
        next_hop=(HOST, hop_port), bounce_hop=(HOST, listener_port), queue_lifetime="0"
    ) as once:
        hop = SmtpServer(port=hop_port)
        listener = SmtpServer(port=listener_port)
        hop.plan.reply("RCPT", "452 4.2.2 <full@example.net>: mailbox full")
        await hop.start()
        await listener.start()
        try:
            await aiosmtplib.send(
                message("Issue 3", "<issue-3@example.org>"),
                sender=RETURN_PATH,
                recipients=["full@example.net"],
                hostname=once.host,
                port=once.port,
            )
            await arrived(listener, once, "the DSN", lambda: bool(listener.received))
        finally:
            await hop.stop()
            await listener.stop()
        assert hop.received == []
        [finding] = bounces.parse(listener.received[0].data).findings
        assert (finding.recipient, finding.status) == ("full@example.net", "4.2.2")
        assert finding.kind != BounceKind.HARD  # a full mailbox is no reason to suppress
        base, running = once.base, once.processes()
        assert running, "the instance's processes are found by their MAIL_CONFIG"
    assert once.processes() == []
    assert not await asyncio.to_thread(base.exists)
