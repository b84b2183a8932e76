"""SMTP PIPELINING (RFC 2920) in the transport: MAIL, RCPT and DATA in one write when the relay
offers it, and every reply meaning what it means one command at a time.

Three relays: aiosmtpd (which does not offer PIPELINING: a server of this file adds it, and
checks at each MAIL that the RCPT and DATA behind it came in the same write), Postfix's
``smtp-sink`` (offers it; ``-Q RCPT`` answers 421 and hangs up mid-group; ``-p`` does not
offer it), and a real Postfix instance (tests/postfix_support.py) whose access maps refuse at
MAIL, RCPT, DATA and after the content, compared with the same messages sent one command at
a time. Waits are on conditions with a deadline.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import Envelope, Session

from mailer.message import Built
from mailer.transport import FastData, Outcome, Result, SmtpTransport
from mailer.transport import fast_data as fast_data_module
from tests.postfix_support import HOST, PostfixRelay, free_port, postfix_relay
from tests.smtpd import _SMTPD, Certificates, Security, SmtpServer, _Handler

pytestmark = pytest.mark.timeout(60)

SENDER = "news@example.org"
GROUP_WAIT = 5.0  # seconds the server waits for RCPT and DATA behind a pipelined MAIL


def built(recipient: str, number: int, body: str = "Hello.", sender: str = SENDER) -> Built:
    data = (
        f"From: News <{sender}>\r\nTo: {recipient}\r\nSubject: Test {number}\r\n"
        f"Message-ID: <{number}.pipe@example.org>\r\n\r\n{body}\r\n"
    ).encode()
    return Built(
        data=data,
        sender=sender,
        recipient=recipient,
        message_id=f"<{number}.pipe@example.org>",
        smtputf8=False,
        eight_bit=False,
    )


# --- aiosmtpd, offering PIPELINING -----------------------------------------------------------


class _PipeliningHandler(_Handler):
    owner: PipeliningServer

    async def handle_EHLO(
        self,
        server: _SMTPD,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        lines = await super().handle_EHLO(server, session, envelope, hostname, responses)
        if self.owner.pipelining and len(lines) > 1:
            lines.insert(1, "250-PIPELINING")
        return lines

    async def handle_MAIL(
        self,
        server: _SMTPD,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        self.owner.grouped.append(await self._group_behind(server))
        reply = await super().handle_MAIL(server, session, envelope, address, mail_options)
        if self.owner.stale_after_mail and reply.startswith("250"):
            self.owner.stale_after_mail = False
            reply += "\r\n554 5.0.0 A line nobody asked for"  # in the same packet
        return reply

    async def _group_behind(self, server: _SMTPD) -> bool:
        """Whether RCPT and DATA were already read behind this MAIL (one write). A client that
        must pipeline (PIPELINING offered) gets GROUP_WAIT seconds for its bytes to arrive; a
        server not offering it only looks."""
        reader: Any = server._reader
        deadline = time.monotonic() + (GROUP_WAIT if self.owner.pipelining else 0)
        while True:
            pending = bytes(reader._buffer)
            if pending.startswith(b"RCPT TO:") and pending.endswith(b"\r\nDATA\r\n"):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)  # a poll interval while the rest of the write arrives


@dataclass(eq=False)
class PipeliningServer(SmtpServer):
    """aiosmtpd offering PIPELINING (or not); ``grouped``: for each MAIL, whether RCPT and
    DATA came with it; ``stale_after_mail``: the next MAIL's 250 carries an unsolicited line."""

    pipelining: bool = True
    stale_after_mail: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.grouped: list[bool] = []
        self.handler = _PipeliningHandler(self)


@pytest.fixture
async def pipelining_server(smtp_certificates: Certificates) -> AsyncIterator[PipeliningServer]:
    server = PipeliningServer(certificates=smtp_certificates)
    await server.start()
    yield server
    await server.stop()


def transport(server: SmtpServer, data: FastData | None = None, **overrides: Any) -> SmtpTransport:
    return SmtpTransport(
        server.settings(pool_size=1, **overrides), reconnect_delay=0.01, fast_data=data
    )


def plan_faults(server: SmtpServer) -> None:
    server.plan.reply("RCPT", "451 4.3.0 Mailbox busy", recipient="busy@example.org")
    server.plan.reply("RCPT", "550 5.1.1 No such user", recipient="gone@example.org")
    server.plan.reply("DATA", "452 4.3.1 Insufficient storage", recipient="full@example.org")
    server.plan.reply("DATA", "554 5.7.1 Rejected as spam", recipient="spam@example.org")
    server.plan.reply("RCPT", "421 4.7.0 Closing", recipient="closing@example.org")


RECIPIENTS = [
    "ada@example.org",
    "busy@example.org",
    "gone@example.org",
    "full@example.org",
    "spam@example.org",
    "closing@example.org",
    "bob@example.org",
]
BODIES = ["Hello.", ".starts with a period\r\n..two\r\n.\r\nend", ("x" * 900 + "\r\n") * 20]
EXPECTED = [
    (Outcome.SENT, 250),
    (Outcome.DEFERRED, 451),
    (Outcome.FAILED, 550),
    (Outcome.DEFERRED, 452),
    (Outcome.FAILED, 554),
    (Outcome.DEFERRED, 421),
    (Outcome.SENT, 250),
]


async def deliver(server: PipeliningServer, data: FastData) -> list[Result]:
    plan_faults(server)
    messages = [built(r, n, BODIES[n % 3]) for n, r in enumerate(RECIPIENTS)]
    async with transport(server, data) as relay:
        return [await relay.send(m) for m in messages]


async def test_the_group_goes_in_one_write_with_the_same_results(
    pipelining_server: PipeliningServer, smtp_server: SmtpServer
) -> None:
    """Against a relay offering PIPELINING, each MAIL arrives with its RCPT and DATA; the
    results (250, 4xx and 5xx at RCPT and DATA, a 421 at RCPT that ends the connection) are
    those of the same messages sent one command at a time, and the relay receives the same
    bytes. (A 421 slows the transport down for a second: one per run.)"""
    data = FastData()
    results = await deliver(pipelining_server, data)
    assert [(r.outcome, r.code) for r in results] == EXPECTED
    assert pipelining_server.grouped == [True] * len(RECIPIENTS)
    assert data.pipelined == len(RECIPIENTS)
    assert data.fast == 4  # ada, full, spam and bob: the others refused before DATA
    assert pipelining_server.connections == 2  # the 421 closed the first

    one_at_a_time = PipeliningServer(pipelining=False, port=0)
    await one_at_a_time.start()
    try:
        plain = FastData()
        expected = await deliver(one_at_a_time, plain)
    finally:
        await one_at_a_time.stop()
    assert plain.pipelined == 0
    assert one_at_a_time.grouped == [False] * len(RECIPIENTS)
    assert [r.reply for r in results[1:6]] == [r.reply for r in expected[1:6]]
    assert [(r.outcome, r.code, r.suppress, r.throttled, r.policy) for r in results] == [
        (r.outcome, r.code, r.suppress, r.throttled, r.policy) for r in expected
    ]
    assert [
        (m.mail_from, m.rcpt_tos, m.data, m.mail_options) for m in pipelining_server.received
    ] == [(m.mail_from, m.rcpt_tos, m.data, m.mail_options) for m in one_at_a_time.received]


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_pipelined_over_tls(smtp_certificates: Certificates, security: Security) -> None:
    """Over STARTTLS (the extensions of the second EHLO) and implicit TLS, the group goes in
    one write and the replies come through the TLS layer in order."""
    server = PipeliningServer(security=security, certificates=smtp_certificates)
    await server.start()
    try:
        plan_faults(server)
        data = FastData()
        recipients = [r for r in RECIPIENTS if r != "closing@example.org"]  # no slow-down
        async with transport(server, data) as relay:
            results = [await relay.send(built(r, n)) for n, r in enumerate(recipients)]
    finally:
        await server.stop()
    assert [(r.outcome, r.code) for r in results] == [e for e in EXPECTED if e[1] != 421]
    assert server.grouped == [True] * len(recipients)
    assert all(m.tls for m in server.received)


async def test_a_refused_mail_is_classified_by_its_reply_and_reset(
    pipelining_server: PipeliningServer,
) -> None:
    """A MAIL refused in a group: the RCPT and DATA behind it are answered 503, the result is
    the MAIL reply's, RSET follows, and the next message goes on the same connection."""
    pipelining_server.plan.reply("MAIL", "550 5.1.8 Sender domain refused", times=1)
    async with transport(pipelining_server) as relay:
        refused = await relay.send(built("ada@example.org", 1))
        after = await relay.send(built("bob@example.org", 2))
    assert refused == Result(Outcome.FAILED, 550, "5.1.8 Sender domain refused")
    assert after.outcome is Outcome.SENT
    assert pipelining_server.commands.count("RSET") == 1
    assert pipelining_server.connections == 1
    assert pipelining_server.recipients() == ["bob@example.org"]


async def test_a_57x_at_mail_is_a_policy_refusal_as_before(
    pipelining_server: PipeliningServer,
) -> None:
    pipelining_server.plan.reply("MAIL", "554 5.7.1 Your IP is listed", times=1)
    async with transport(pipelining_server) as relay:
        result = await relay.send(built("ada@example.org", 1))
    assert result == Result(Outcome.FAILED, 554, "5.7.1 Your IP is listed", policy=True)


async def test_a_connection_the_relay_closed_is_reopened_as_before(
    pipelining_server: PipeliningServer,
) -> None:
    """Hung up at MAIL: nothing of the message reached the relay, so it goes on a new
    connection; hung up after the content: deferred, the relay may have it."""
    pipelining_server.plan.drop("MAIL", times=1)
    async with transport(pipelining_server) as relay:
        first = await relay.send(built("ada@example.org", 1))
        pipelining_server.plan.drop("DATA", times=1)
        second = await relay.send(built("bob@example.org", 2))
    assert first.outcome is Outcome.SENT
    assert second == Result(
        Outcome.DEFERRED, None, "connection dropped after DATA (the relay may have accepted "
        "the message)"
    )  # fmt: skip
    assert pipelining_server.connections == 2


async def test_a_late_reply_in_the_group_times_out_at_its_command(
    pipelining_server: PipeliningServer,
) -> None:
    pipelining_server.plan.delay("RCPT", 30.0, times=1)
    async with transport(pipelining_server, timeout=0.3) as relay:
        late = await relay.send(built("ada@example.org", 1))
        after = await relay.send(built("bob@example.org", 2))
    assert late == Result(Outcome.DEFERRED, None, "timed out waiting for the reply to RCPT")
    assert after.outcome is Outcome.SENT
    assert pipelining_server.recipients() == ["bob@example.org"]


async def test_a_stale_line_in_the_group_fails_nobody(
    pipelining_server: PipeliningServer,
) -> None:
    """A line written unasked behind MAIL's 250 shifts the replies: RCPT would read it and DATA
    the RCPT's 250. That is seen (a 2xx where 354 is due): deferred, nothing sent, the
    connection reset, and the message goes on the next one."""
    pipelining_server.stale_after_mail = True
    async with transport(pipelining_server) as relay:
        shifted = await relay.send(built("ada@example.org", 1))
        again = await relay.send(built("ada@example.org", 1))
    assert shifted.outcome is Outcome.DEFERRED
    assert shifted.code is None
    assert "out of step" in shifted.reply
    assert again.outcome is Outcome.SENT
    assert pipelining_server.recipients() == ["ada@example.org"]
    assert pipelining_server.connections == 2


@pytest.mark.parametrize("line", ["554 5.0.0 Unsolicited complaint", "250 2.0.0 Stray"])
async def test_an_unsolicited_line_after_data_fails_nobody(
    pipelining_server: PipeliningServer, line: str
) -> None:
    pipelining_server.plan.unsolicited("DATA", line, times=1)
    async with transport(pipelining_server) as relay:
        results = [await relay.send(built(f"u{n}@example.org", n)) for n in range(3)]
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert pipelining_server.connections == 2


@pytest.mark.parametrize(
    "data",
    [FastData(pipelining=False), FastData(public_only=True)],
    ids=["pipelining-off", "public-only"],
)
async def test_told_not_to_it_sends_one_command_at_a_time(
    pipelining_server: PipeliningServer, data: FastData
) -> None:
    """FastData(pipelining=False) and the public path never pipeline; the relay then waits
    for nothing (each MAIL is alone when it is read)."""
    pipelining_server.pipelining = False  # it only looks at what came with MAIL
    async with transport(pipelining_server, data) as relay:
        result = await relay.send(built("ada@example.org", 1))
    assert result.outcome is Outcome.SENT
    assert data.pipelined == 0
    assert pipelining_server.grouped == [False]


async def test_without_a_private_name_it_sends_one_command_at_a_time(
    pipelining_server: PipeliningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A protocol without one of the names the pipe reads is not pipelined on."""
    names = (*fast_data_module.PROTOCOL_ATTRIBUTES, "_gone_in_a_later_release")
    monkeypatch.setattr(fast_data_module, "PROTOCOL_ATTRIBUTES", names)
    pipelining_server.pipelining = False
    data = FastData()
    async with transport(pipelining_server, data) as relay:
        result = await relay.send(built("ada@example.org", 1))
    assert result.outcome is Outcome.SENT
    assert (data.pipelined, data.fast) == (0, 1)


async def test_the_private_names_of_the_pipe_are_there(smtp_server: SmtpServer) -> None:
    client = aiosmtplib.SMTP(hostname=smtp_server.host, port=smtp_server.port)
    await client.connect()
    protocol: Any = client.protocol
    try:
        assert isinstance(protocol._response_waiter, asyncio.Future)
        assert callable(protocol._read_response_from_buffer)
        assert protocol._read_response_from_buffer() is None  # an empty buffer: no reply
        assert isinstance(protocol._response_pending, bool)
    finally:
        await client.quit()


# --- Postfix's smtp-sink ---------------------------------------------------------------------

SINK = Path("/usr/sbin/smtp-sink")


@contextmanager
def smtp_sink(*flags: str) -> Iterator[int]:
    """smtp-sink on a free loopback port with ``flags``; its port. Stopped (by its pid) after."""
    if not SINK.exists():
        if os.environ.get("CI"):
            pytest.fail("no /usr/sbin/smtp-sink; CI must have it (.ci/run installs postfix)")
        pytest.skip("no /usr/sbin/smtp-sink on this machine: apt-get install postfix")
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # required when root
    process = subprocess.Popen(
        [str(SINK), *flags, *user, f"{HOST}:{port}", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                error = process.stderr.read() if process.stderr else b""
                pytest.fail(f"smtp-sink exited at once: {error.decode(errors='replace')}")
            try:
                with socket.create_connection((HOST, port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"smtp-sink does not listen on {port}")
                time.sleep(0.05)  # a poll interval while it starts
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def sink_settings(port: int, **overrides: Any) -> Any:
    from mailer.settings import SMTPSettings

    values = {"host": HOST, "port": port, "security": "none", "local_hostname": "client.test"}
    return SMTPSettings.model_validate(
        values | {"connect_timeout": 5.0, "timeout": 10.0} | overrides
    )


@pytest.mark.parametrize(("flags", "pipelined"), [((), True), (("-p",), False)])
async def test_smtp_sink_takes_pipelined_groups_and_a_sink_without_gets_one_at_a_time(
    flags: tuple[str, ...], pipelined: bool
) -> None:
    """smtp-sink offers PIPELINING: every transaction goes as one group; with -p it does
    not, and the same messages go one command at a time. Both accept all of them."""
    data = FastData()
    with smtp_sink(*flags) as port:
        async with SmtpTransport(sink_settings(port, pool_size=2), fast_data=data) as relay:
            messages = [built(f"r{n}@example.org", n, BODIES[n % 3]) for n in range(40)]
            results = await asyncio.gather(*(relay.send(m) for m in messages))
    assert {(r.outcome, r.code) for r in results} == {(Outcome.SENT, 250)}
    assert data.pipelined == (40 if pipelined else 0)
    assert data.fast == 40


async def test_a_421_mid_group_defers_and_closes() -> None:
    """smtp-sink -Q RCPT answers RCPT with 421 and hangs up: MAIL's 250 was read, DATA's reply
    never comes. Deferred (throttled), never failed; the next message opens a new connection
    and meets the same."""
    with smtp_sink("-Q", "RCPT") as port:
        async with SmtpTransport(sink_settings(port, pool_size=1)) as relay:
            first = await relay.send(built("ada@example.org", 1))
            second = await relay.send(built("bob@example.org", 2))
    for result in (first, second):
        assert (result.outcome, result.code, result.throttled) == (Outcome.DEFERRED, 421, True)
    assert relay.fast_data.pipelined == 2
    assert relay.fast_data.fast == 0


# --- a real Postfix: refusals at every stage -------------------------------------------------

REFUSALS = {
    "smtpd_delay_reject": "no",  # a sender refused at MAIL, not at RCPT
    "smtpd_sender_restrictions": (
        "check_sender_access inline:{ { banned@example.org = 550 5.1.8 Sender refused here } }"
    ),
    "smtpd_recipient_restrictions": (
        "check_recipient_access inline:{ { gone@example.org = 550 5.1.1 No such user here }, "
        "{ busy@example.org = 450 4.2.1 Busy here }, "
        "{ closing@example.org = 421 4.7.0 Closing here } }, permit_mynetworks, reject"
    ),
    "smtpd_data_restrictions": (
        "check_sender_access inline:{ { nodata@example.org = 550 5.6.0 No data from you } }"
    ),
    "smtpd_end_of_data_restrictions": (
        "check_sender_access inline:{ { late@example.org = 552 5.3.4 Refused after the content } }"
    ),
}
# (sender, recipient): what Postfix answers
CASES = [
    (SENDER, "ada@example.org"),  # accepted
    ("banned@example.org", "ada@example.org"),  # MAIL
    (SENDER, "gone@example.org"),  # RCPT, 5xx
    (SENDER, "busy@example.org"),  # RCPT, 4xx
    ("nodata@example.org", "ada@example.org"),  # DATA
    ("late@example.org", "ada@example.org"),  # after the content
    (SENDER, "closing@example.org"),  # RCPT, 421: the connection ends
    (SENDER, "bob@example.org"),  # accepted, on a new connection
]


@pytest.fixture(scope="module")
def postfix() -> Iterator[PostfixRelay]:
    """A Postfix refusing at each stage; what it accepts waits in its queue (its next hop is
    a port nobody listens on) and goes with the instance."""
    hops = {"next_hop": (HOST, free_port()), "bounce_hop": (HOST, free_port())}
    with postfix_relay(**hops, overrides=REFUSALS) as relay:
        yield relay


async def send_cases(relay: PostfixRelay, data: FastData) -> list[Result]:
    async with SmtpTransport(relay.settings(pool_size=1), fast_data=data) as transport:
        return [
            await transport.send(built(recipient, n, BODIES[n % 3], sender=sender))
            for n, (sender, recipient) in enumerate(CASES)
        ]


def same(result: Result) -> Result:
    """A result without what differs from one message to the next (the queue id)."""
    return replace(result, reply="") if result.outcome is Outcome.SENT else result


async def test_postfix_refusals_mean_the_same_pipelined_or_not(postfix: PostfixRelay) -> None:
    """Refused at MAIL, at RCPT (5xx, 4xx, 421), at DATA and after the content: the results
    are the same pipelined (Postfix offers PIPELINING) and one command at a time, and
    Postfix never calls our pipelining improper."""
    pipelined, one_at_a_time = FastData(), FastData(pipelining=False)
    results = await send_cases(postfix, pipelined)
    expected = await send_cases(postfix, one_at_a_time)
    assert pipelined.pipelined == len(CASES)
    assert one_at_a_time.pipelined == 0
    assert [same(r) for r in results] == [same(r) for r in expected], postfix.report()
    assert [(r.outcome, r.code) for r in results] == [
        (Outcome.SENT, 250),
        (Outcome.FAILED, 550),
        (Outcome.FAILED, 550),
        (Outcome.DEFERRED, 450),
        (Outcome.FAILED, 550),
        (Outcome.FAILED, 552),
        (Outcome.DEFERRED, 421),
        (Outcome.SENT, 250),
    ], postfix.report()
    assert results[1].reply.startswith("5.1.8 ")
    assert results[2].suppress
    assert results[6].throttled
    assert "improper command pipelining" not in postfix.log()
