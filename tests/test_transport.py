"""Transport against a real SMTP server (tests/smtpd.py): pool, TLS, AUTH, faults, rate limit."""

from __future__ import annotations

import asyncio
import mailbox
import time
from pathlib import Path
from typing import Any

import pytest
from aiosmtplib.email import quote_address
from hypothesis import given
from hypothesis import strategies as st

from mailer.message import Built
from mailer.settings import SMTPSettings
from mailer.transport import (
    CaptureTransport,
    Outcome,
    RateLimiter,
    Result,
    SmtpTransport,
    TransportFatal,
    classify_reply,
    open_transport,
    wire_form,
)
from mailer.transport.client import quoted
from tests.conftest import make_settings
from tests.smtpd import PASSWORD, USER, SmtpFactory, SmtpServer

pytestmark = pytest.mark.timeout(20)

SENDER = "news@example.org"


def built(
    recipient: str = "ada@example.org",
    *,
    number: int = 0,
    body: str = "Hello, this is a test.",
    smtputf8: bool = False,
    eight_bit: bool = False,
) -> Built:
    """A small RFC 5322 message with CRLF line ends."""
    encoding = "8bit" if eight_bit else "7bit"
    data = (
        f"From: News <{SENDER}>\r\n"
        f"To: {recipient}\r\n"
        f"Subject: Test {number}\r\n"
        f"Message-ID: <{number}.test@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Transfer-Encoding: {encoding}\r\n"
        "\r\n"
        f"{body}\r\n"
    ).encode()
    return Built(
        data=data,
        sender=SENDER,
        recipient=recipient,
        message_id=f"<{number}.test@example.org>",
        smtputf8=smtputf8,
        eight_bit=eight_bit,
    )


def smtp(server: SmtpServer, **overrides: Any) -> SmtpTransport:
    rates = {k: overrides.pop(k) for k in ("rate_per_second", "rate_per_hour") if k in overrides}
    return SmtpTransport(server.settings(**overrides), reconnect_delay=0.01, **rates)


# --- the DATA payload ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        ".starts with a period\r\n..two\r\n.\r\nend",
        "line\r\n.\r\n",  # a lone period line must not end the message early
        "lone LF\nand lone CR\rhere",  # not plain CRLF: aiosmtplib's own path
    ],
)
async def test_periods_and_line_ends_arrive_as_written(smtp_server: SmtpServer, body: str) -> None:
    """Lines starting with a period are doubled on the wire and undone by the server; the
    message arrives byte for byte (line ends normalised to CRLF)."""
    message = built(body=body)
    async with smtp(smtp_server) as transport:
        assert (await transport.send(message)).outcome is Outcome.SENT
    expected = message.data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    expected = expected.replace(b"\n", b"\r\n")
    assert smtp_server.received[0].data == expected


def test_wire_form_doubles_periods_and_ends_the_data() -> None:
    assert wire_form(b".a\r\nb\r\n.c\r\n") == b"..a\r\nb\r\n..c\r\n.\r\n"
    assert wire_form(b"no final line end") == b"no final line end\r\n.\r\n"
    assert wire_form(b"lone\nLF\r\n") is None
    assert wire_form(b"lone\rCR\r\n") is None
    for known in (b".a\r\nb\r\n.c\r\n", b"no final line end", b"a\r\n.\r\n..b\r\n", b"plain\r\n"):
        assert wire_form(known, crlf=True) == wire_form(known)  # the same, without the look


@given(
    st.from_regex(r"[A-Za-z0-9+_=.-]{1,12}@[A-Za-z0-9.-]{1,12}", fullmatch=True)
    | st.text(alphabet=st.sampled_from('ab.@+<>() "\\,;:é-'), max_size=20)
)
def test_an_address_is_quoted_as_aiosmtplib_quotes_it(address: str) -> None:
    """The quick path for a plain address gives what aiosmtplib's quote_address gives (or
    raises what it raises: another address goes to it)."""

    def outcome(quote: Any) -> object:
        try:
            return quote(address)
        except ValueError as exc:
            return type(exc)

    assert outcome(quoted) == outcome(quote_address)


# --- the pool --------------------------------------------------------------------------------


async def test_connections_are_reused_for_many_messages(smtp_server: SmtpServer) -> None:
    """Ten messages in a row travel over one connection of a pool of four."""
    async with smtp(smtp_server, pool_size=4) as transport:
        results = [await transport.send(built(f"u{n}@example.org", number=n)) for n in range(10)]
    assert [r.outcome for r in results] == [Outcome.SENT] * 10
    assert smtp_server.connections == 1
    assert len(smtp_server.received) == 10
    assert smtp_server.commands[-1] == "QUIT"


async def test_a_connection_is_recycled_after_recycle_after_messages(
    smtp_server: SmtpServer,
) -> None:
    """With recycle_after=3, seven messages need three connections, each ended by QUIT."""
    async with smtp(smtp_server, pool_size=1, recycle_after=3) as transport:
        for n in range(7):
            assert (await transport.send(built(number=n))).outcome is Outcome.SENT
    assert smtp_server.connections == 3
    assert [m.connection for m in smtp_server.received] == [1, 1, 1, 2, 2, 2, 3]
    assert smtp_server.commands.count("QUIT") == 3


async def test_200_messages_from_20_tasks_arrive_exactly_once(smtp_server: SmtpServer) -> None:
    """Concurrent senders share pool_size connections and no message is lost or doubled."""
    addresses = [f"user{n}@example.org" for n in range(200)]

    async with smtp(smtp_server, pool_size=4) as transport:

        async def worker(mine: list[str]) -> list[Result]:
            return [await transport.send(built(a)) for a in mine]

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(worker(addresses[i::20])) for i in range(20)]

    results = [r for task in tasks for r in task.result()]
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert sorted(smtp_server.recipients()) == sorted(addresses)
    assert smtp_server.duplicates() == {}
    assert smtp_server.connections <= 4


# --- replies and faults ------------------------------------------------------------------------


async def test_421_mid_session_defers_throttled_and_reconnects(smtp_server: SmtpServer) -> None:
    """A 421 to DATA is deferred and throttled; the next message goes on a new connection."""
    async with smtp(smtp_server, pool_size=1) as transport:
        first = await transport.send(built(number=1))
        smtp_server.plan.reply("DATA", "421 4.7.0 Try again later", times=1)
        second = await transport.send(built(number=2))
        third = await transport.send(built(number=3))
    assert first.outcome is Outcome.SENT
    assert second == Result(Outcome.DEFERRED, 421, "4.7.0 Try again later", throttled=True)
    assert third.outcome is Outcome.SENT
    assert smtp_server.connections == 2
    assert [m.connection for m in smtp_server.received] == [1, 2]


async def test_451_to_rcpt_is_deferred_and_the_connection_kept(smtp_server: SmtpServer) -> None:
    """A transient refusal of the recipient defers that message only."""
    smtp_server.plan.reply("RCPT", "451 4.3.0 Mailbox busy", recipient="busy@example.org")
    async with smtp(smtp_server) as transport:
        busy = await transport.send(built("busy@example.org"))
        other = await transport.send(built("other@example.org"))
    assert busy == Result(Outcome.DEFERRED, 451, "4.3.0 Mailbox busy", throttled=False)
    assert other.outcome is Outcome.SENT
    assert smtp_server.recipients() == ["other@example.org"]
    assert smtp_server.connections == 1


async def test_550_511_fails_with_a_suppression(smtp_server: SmtpServer) -> None:
    """'No such user' is a permanent failure that asks for a suppression."""
    smtp_server.plan.reply("RCPT", "550 5.1.1 No such user", recipient="gone@example.org")
    async with smtp(smtp_server) as transport:
        result = await transport.send(built("gone@example.org"))
    assert result == Result(Outcome.FAILED, 550, "5.1.1 No such user", suppress=True)
    assert smtp_server.received == []


async def test_552_to_data_fails_without_suppression(smtp_server: SmtpServer) -> None:
    """A permanent refusal of the content fails the message; the address stays usable."""
    smtp_server.plan.reply("DATA", "552 5.3.4 Message too big for system")
    async with smtp(smtp_server) as transport:
        result = await transport.send(built())
    assert result == Result(Outcome.FAILED, 552, "5.3.4 Message too big for system")
    assert smtp_server.received == []


async def test_drop_after_data_is_deferred_though_the_server_has_it(
    smtp_server: SmtpServer,
) -> None:
    """A connection lost before the reply to DATA defers: the duplicate case, by design."""
    smtp_server.plan.drop("DATA", times=1)
    async with smtp(smtp_server, pool_size=1) as transport:
        dropped = await transport.send(built(number=1))
        retried = await transport.send(built(number=1))
    assert dropped.outcome is Outcome.DEFERRED
    assert dropped.code is None
    assert "DATA" in dropped.reply
    assert "may have accepted" in dropped.reply
    assert retried.outcome is Outcome.SENT
    assert smtp_server.duplicates() == {"ada@example.org": 2}


async def test_connection_closed_before_mail_is_retried_once(smtp_server: SmtpServer) -> None:
    """A connection the relay dropped at MAIL carried nothing: one retry on a new one."""
    async with smtp(smtp_server, pool_size=1) as transport:
        smtp_server.plan.drop("MAIL", times=1)
        retried = await transport.send(built(number=1))
        smtp_server.plan.drop("MAIL", times=2)
        given_up = await transport.send(built(number=2))
    assert retried.outcome is Outcome.SENT
    assert given_up == Result(Outcome.DEFERRED, None, "connection dropped after MAIL")
    assert smtp_server.recipients() == ["ada@example.org"]


async def test_an_unsolicited_line_after_250_resets_the_connection_and_fails_nobody(
    smtp_server: SmtpServer,
) -> None:
    """A relay that writes a 554 right after its 250 puts its replies out of step: the
    message it accepted is sent, the connection is reset, and the next ones go on a new
    connection instead of being refused by the stale line."""
    smtp_server.plan.unsolicited("DATA", "554 5.0.0 Unsolicited complaint", times=1)
    async with smtp(smtp_server, pool_size=1) as transport:
        results = [await transport.send(built(f"u{n}@example.org", number=n)) for n in range(3)]
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert smtp_server.recipients() == ["u0@example.org", "u1@example.org", "u2@example.org"]
    assert smtp_server.connections == 2


async def test_a_stray_250_after_data_resets_the_connection_at_once(
    smtp_server: SmtpServer,
) -> None:
    """A stray 250 after DATA's reply would be read as the next command's reply (and the
    next message wait for a 354 that never comes): the connection is reset at once and the
    next messages go on a new one."""
    smtp_server.plan.unsolicited("DATA", "250 2.0.0 Stray", times=1)
    started = time.monotonic()
    async with smtp(smtp_server, pool_size=1) as transport:
        results = [await transport.send(built(f"u{n}@example.org", number=n)) for n in range(3)]
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert smtp_server.recipients() == ["u0@example.org", "u1@example.org", "u2@example.org"]
    assert time.monotonic() - started < 5


async def test_fault_plan_fraction_picks_the_same_recipients(smtp_server: SmtpServer) -> None:
    """A seeded fraction refuses a fixed subset of addresses, about the fraction asked."""
    rule = smtp_server.plan.reply("RCPT", "550 5.1.1 No such user", fraction=0.2, seed=3)
    addresses = [f"user{n}@example.org" for n in range(60)]
    async with smtp(smtp_server) as transport:
        results = [await transport.send(built(a)) for a in addresses]
    refused = {a for a, r in zip(addresses, results, strict=True) if r.outcome is Outcome.FAILED}
    assert refused == {a for a in addresses if rule.chooses(a)}
    assert 4 <= len(refused) <= 20
    assert sorted(smtp_server.recipients()) == sorted(set(addresses) - refused)


async def test_slow_reply_beyond_timeout_is_deferred(smtp_server: SmtpServer) -> None:
    """No reply to DATA within `timeout` defers the message, without waiting for the server."""
    smtp_server.plan.delay("DATA", 10.0, times=1)
    async with smtp(smtp_server, pool_size=1, timeout=0.3) as transport:
        started = time.monotonic()
        slow = await transport.send(built(number=1))
        elapsed = time.monotonic() - started
        after = await transport.send(built(number=2))
    assert slow == Result(
        Outcome.DEFERRED,
        None,
        "timed out waiting for the reply to DATA (the relay may have accepted the message)",
    )
    assert elapsed < 3
    assert after.outcome is Outcome.SENT


async def test_cancelled_send_leaves_the_pool_usable(smtp_server: SmtpServer) -> None:
    """Cancelling a send mid-transaction closes that connection; the next send reconnects."""
    smtp_server.plan.delay("DATA", 10.0, times=1)
    async with smtp(smtp_server, pool_size=1) as transport:
        task = asyncio.create_task(transport.send(built(number=1)))
        await smtp_server.wait_received(1)  # stored; the reply is being delayed
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        result = await transport.send(built(number=2))
    assert result.outcome is Outcome.SENT
    assert smtp_server.connections == 2


async def test_server_down_then_back(smtp_server: SmtpServer) -> None:
    """While the relay is down a send is deferred after a few attempts; then it works again."""
    async with smtp(smtp_server, pool_size=2) as transport:
        assert (await transport.send(built(number=1))).outcome is Outcome.SENT
        await smtp_server.stop()
        down = await transport.send(built(number=2))
        await smtp_server.start()
        back = await transport.send(built(number=3))
    assert down.outcome is Outcome.DEFERRED
    assert down.code is None
    assert down.reply.startswith(f"cannot connect to 127.0.0.1:{smtp_server.port}:")
    assert back.outcome is Outcome.SENT
    assert len(smtp_server.received) == 2


async def test_relay_down_at_start_is_not_fatal(smtp_server: SmtpServer) -> None:
    """Entering the transport while the relay is down only logs; sending works once it is up."""
    await smtp_server.stop()
    async with smtp(smtp_server) as transport:
        assert transport.eight_bit is False
        await smtp_server.start()
        result = await transport.send(built())
        assert transport.eight_bit is True
    assert result.outcome is Outcome.SENT


async def test_421_greeting_defers_throttled_after_three_attempts(
    smtp_server: SmtpServer,
) -> None:
    """A relay that answers the connection with 421 is retried three times, then deferred."""
    async with smtp(smtp_server, pool_size=1, recycle_after=1) as transport:
        assert (await transport.send(built(number=1))).outcome is Outcome.SENT
        smtp_server.plan.reply("CONNECT", "421 4.7.0 Too many connections", times=3)
        result = await transport.send(built(number=2))
    assert result.outcome is Outcome.DEFERRED
    assert result.code == 421
    assert result.throttled
    assert result.reply.startswith("cannot connect to")
    assert smtp_server.connections == 4


# --- TLS and AUTH -------------------------------------------------------------------------------


async def test_starttls_with_the_test_ca(smtp_factory: SmtpFactory) -> None:
    """STARTTLS is negotiated and verified against ca_file; AUTH happens inside TLS."""
    server = await smtp_factory(security="starttls", auth=True)
    async with SmtpTransport(server.settings(username=USER, password=PASSWORD)) as transport:
        result = await transport.send(built())
    assert result.outcome is Outcome.SENT
    assert server.received[0].tls
    assert server.received[0].login == USER
    assert server.commands[:3] == ["EHLO", "STARTTLS", "EHLO"]


async def test_implicit_tls(smtp_factory: SmtpFactory) -> None:
    """security=tls speaks TLS from the first byte."""
    server = await smtp_factory(security="tls", auth=True)
    async with SmtpTransport(server.settings(username=USER, password=PASSWORD)) as transport:
        result = await transport.send(built())
    assert result.outcome is Outcome.SENT
    assert server.received[0].tls
    assert "STARTTLS" not in server.commands


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_untrusted_certificate_is_fatal(smtp_factory: SmtpFactory, security: str) -> None:
    """Without the test CA the certificate does not verify: fatal, with what to check."""
    server = await smtp_factory(security=security)  # type: ignore[arg-type]
    transport = SmtpTransport(server.settings(ca_file=None))
    with pytest.raises(TransportFatal, match=r"TLS with the relay 127\.0\.0\.1:\d+ failed"):
        async with transport:
            pass
    assert "MAIL" not in server.commands


async def test_starttls_required_but_not_offered_is_fatal(smtp_factory: SmtpFactory) -> None:
    """A relay that does not offer STARTTLS is never used in clear text."""
    server = await smtp_factory(security="starttls", auth=True)
    server.plan.hide("STARTTLS")
    transport = SmtpTransport(server.settings(username=USER, password=PASSWORD))
    with pytest.raises(TransportFatal, match="does not offer STARTTLS"):
        async with transport:
            pass
    assert "AUTH" not in server.commands


@pytest.mark.parametrize("how", ["wrong password", "535 from the plan"])
async def test_authentication_failure_is_fatal(smtp_factory: SmtpFactory, how: str) -> None:
    """535 to AUTH raises TransportFatal at enter, naming the settings to check."""
    server = await smtp_factory(auth=True)
    password = "wrong" if how == "wrong password" else PASSWORD
    if how == "535 from the plan":
        server.plan.reply("AUTH", "535 5.7.8 Bad credentials")
    transport = SmtpTransport(server.settings(username=USER, password=password))
    with pytest.raises(TransportFatal, match=r"535.*MAILER_SMTP__PASSWORD") as caught:
        async with transport:
            pass
    assert isinstance(caught.value, ConnectionError)
    assert password not in str(caught.value)


async def test_login_refused_while_sending_is_fatal_until_fixed(
    smtp_factory: SmtpFactory,
) -> None:
    """A login refused on reconnection raises from send(); once fixed, the same transport sends."""
    server = await smtp_factory(auth=True)
    settings = server.settings(username=USER, password=PASSWORD, pool_size=1, recycle_after=1)
    async with SmtpTransport(settings) as transport:
        assert (await transport.send(built(number=1))).outcome is Outcome.SENT
        server.plan.reply("AUTH", "535 5.7.8 Password expired")
        for n in (2, 3):
            with pytest.raises(TransportFatal, match=r"535 5\.7\.8 Password expired"):
                await transport.send(built(number=n))
        server.plan.clear()
        fixed = await transport.send(built(number=4))
    assert fixed.outcome is Outcome.SENT
    assert [m.login for m in server.received] == [USER, USER]


async def test_relay_down_at_start_then_refusing_the_login(smtp_factory: SmtpFactory) -> None:
    """Down at enter is only logged; the refused login then raises from send()."""
    server = await smtp_factory(auth=True)
    await server.stop()
    async with SmtpTransport(server.settings(username=USER, password="wrong")) as transport:
        await server.start()
        with pytest.raises(TransportFatal, match="refused the login"):
            await transport.send(built())


async def test_530_authentication_required_is_fatal(smtp_factory: SmtpFactory) -> None:
    """A relay that wants a login we were not given: fatal, not a failed recipient."""
    server = await smtp_factory(auth=True, auth_required=True)
    async with SmtpTransport(server.settings()) as transport:
        with pytest.raises(TransportFatal, match="requires authentication"):
            await transport.send(built())


async def test_clear_text_to_a_remote_host_is_refused() -> None:
    """security=none is for loopback relays only: fatal at enter, before any connection."""
    settings = SMTPSettings(host="mail.example.org", port=25, security="none")
    with pytest.raises(TransportFatal, match=r"use starttls .* or tls"):
        async with SmtpTransport(settings):
            pass


async def test_unreadable_ca_file_is_fatal_at_enter(tmp_path: Path) -> None:
    """A CA file that cannot be loaded is a local configuration error, raised at enter."""
    settings = SMTPSettings(host="127.0.0.1", ca_file=tmp_path / "missing.pem")
    with pytest.raises(TransportFatal, match="MAILER_SMTP__CA_FILE"):
        async with SmtpTransport(settings):
            pass


# --- extensions --------------------------------------------------------------------------------


async def test_smtputf8_recipient(smtp_server: SmtpServer) -> None:
    """An internationalised address travels with SMTPUTF8 and arrives flagged."""
    message = built("zoé@exemple.fr", smtputf8=True)
    async with smtp(smtp_server) as transport:
        assert transport.smtputf8
        result = await transport.send(message)
    assert result.outcome is Outcome.SENT
    (received,) = smtp_server.received
    assert received.rcpt_tos == ("zoé@exemple.fr",)
    assert received.smtp_utf8
    assert "SMTPUTF8" in received.mail_options


async def test_smtputf8_needed_but_not_offered_fails(smtp_server: SmtpServer) -> None:
    """Without SMTPUTF8 at the relay such a message fails clearly and nothing is sent."""
    smtp_server.plan.hide("SMTPUTF8")
    async with smtp(smtp_server) as transport:
        assert not transport.smtputf8
        result = await transport.send(built("zoé@exemple.fr", smtputf8=True))
    assert result == Result(
        Outcome.FAILED, None, "the relay does not offer SMTPUTF8, needed for zoé@exemple.fr"
    )
    assert "MAIL" not in smtp_server.commands


async def test_8bitmime_body_arrives_byte_for_byte(smtp_server: SmtpServer) -> None:
    """An 8bit body is declared with BODY=8BITMIME and arrives unchanged."""
    message = built(body="Réunion à 18 h, café offert.", eight_bit=True)
    async with smtp(smtp_server) as transport:
        assert transport.eight_bit
        result = await transport.send(message)
    assert result.outcome is Outcome.SENT
    (received,) = smtp_server.received
    assert received.data == message.data
    assert "BODY=8BITMIME" in received.mail_options
    assert not received.smtp_utf8


async def test_8bit_without_8bitmime_fails(smtp_server: SmtpServer) -> None:
    """An 8bit message is never sent to a relay that did not offer 8BITMIME."""
    smtp_server.plan.hide("8BITMIME")
    async with smtp(smtp_server) as transport:
        assert not transport.eight_bit
        result = await transport.send(built(body="café", eight_bit=True))
    assert result.outcome is Outcome.FAILED
    assert "8BITMIME" in result.reply
    assert smtp_server.received == []


async def test_message_over_the_advertised_size_is_not_sent(smtp_factory: SmtpFactory) -> None:
    """EHLO SIZE is honoured before MAIL: a 552-style failure and no transaction."""
    server = await smtp_factory(size_limit=1000)
    async with SmtpTransport(server.settings()) as transport:
        big = await transport.send(built(body="x" * 70 + "\r\n" * 20 + "y" * 900))
        small = await transport.send(built())
    assert big.outcome is Outcome.FAILED
    assert big.code == 552
    assert "limit of 1000 bytes" in big.reply
    assert small.outcome is Outcome.SENT
    assert server.commands.count("MAIL") == 1
    assert "SIZE=" in server.received[0].mail_options[0]


# --- rate limit and back-pressure ----------------------------------------------------------


async def test_rate_limit_spaces_messages(smtp_server: SmtpServer) -> None:
    """N messages at R per second take at least (N - 1) / R seconds, even from many tasks."""
    rate, count = 20.0, 8
    async with smtp(smtp_server, rate_per_second=rate) as transport:
        started = time.monotonic()
        async with asyncio.TaskGroup() as group:
            for n in range(count):
                group.create_task(transport.send(built(number=n)))
        elapsed = time.monotonic() - started
    assert len(smtp_server.received) == count
    assert elapsed >= (count - 1) / rate * 0.9


async def test_throttled_replies_lower_the_rate_and_successes_raise_it(
    smtp_server: SmtpServer,
) -> None:
    """AIMD: a 421 halves current_rate; each later success raises it again, up to the cap."""
    async with smtp(smtp_server, rate_per_second=50, pool_size=1) as transport:
        assert transport.current_rate == 50
        smtp_server.plan.reply("DATA", "421 4.7.0 Slow down", times=1)
        throttled = await transport.send(built(number=1))
        assert throttled.throttled
        assert transport.current_rate == 25
        for n in range(5):
            assert (await transport.send(built(number=n))).outcome is Outcome.SENT
        recovering = transport.current_rate
    assert recovering is not None
    assert 25 < recovering < 50


def test_limiter_aimd_without_a_configured_rate() -> None:
    """Unlimited until throttled; then half the observed rate, recovering to unlimited."""
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    sent = Result(Outcome.SENT, 250, "ok")
    for _ in range(40):  # 40 messages in 2 s: an observed 20 per second
        assert limiter.reserve() == 0
        limiter.record(sent)
        now[0] += 0.05
    assert limiter.current_rate is None
    limiter.record(Result(Outcome.DEFERRED, 421, "slow down", throttled=True))
    assert limiter.current_rate == pytest.approx(10, rel=0.1)
    limiter.record(Result(Outcome.DEFERRED, 421, "slow down", throttled=True))
    assert limiter.current_rate == pytest.approx(10, rel=0.1)  # once per second at most
    assert limiter.reserve() == pytest.approx(0.1, rel=0.1)  # the next start is spaced
    rates = []
    for _ in range(200):
        limiter.record(sent)
        rates.append(limiter.current_rate)
    assert rates[0] is not None
    assert rates[0] > 10
    assert rates[-1] is None  # back to unlimited


def test_limiter_floor_and_hourly_window() -> None:
    """The rate never drops below the floor; the hourly cap holds across the window."""
    now = [0.0]
    limiter = RateLimiter(per_second=4, per_hour=3, clock=lambda: now[0])
    throttled = Result(Outcome.DEFERRED, 451, "later", throttled=True)
    for _ in range(5):
        limiter.record(throttled)
        now[0] += 2
    assert limiter.current_rate == 1.0
    waits = [limiter.reserve() for _ in range(4)]
    assert waits[:3] == [0, 1.0, 2.0]
    assert waits[3] == pytest.approx(3600)


# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reply", "stage", "expected"),
    [
        (250, "2.0.0 Ok: queued", "DATA", (Outcome.SENT, False, False)),
        (421, "4.7.0 Try again later", "MAIL", (Outcome.DEFERRED, False, True)),
        (450, "4.2.1 Mailbox busy", "RCPT", (Outcome.DEFERRED, False, False)),
        (451, "4.3.0 Local error", "DATA", (Outcome.DEFERRED, False, False)),
        (452, "4.5.3 Too many recipients", "RCPT", (Outcome.DEFERRED, False, False)),
        (454, "4.7.0 TLS not available", "MAIL", (Outcome.DEFERRED, False, True)),
        (450, "4.7.1 Rate limited", "RCPT", (Outcome.DEFERRED, False, True)),
        (441, "4.4.1 No answer from host", "DATA", (Outcome.DEFERRED, False, False)),
        (
            550,
            "5.1.1 <x@example.org>: Recipient address rejected",
            "RCPT",
            (Outcome.FAILED, True, False),
        ),
        (551, "5.1.6 User has moved", "RCPT", (Outcome.FAILED, True, False)),
        (553, "5.1.3 Bad recipient address syntax", "RCPT", (Outcome.FAILED, True, False)),
        (550, "Requested action not taken: User unknown", "RCPT", (Outcome.FAILED, True, False)),
        (550, "No such user here", "RCPT", (Outcome.FAILED, True, False)),
        (550, "5.1.1 The email account does not exist", "DATA", (Outcome.FAILED, True, False)),
        (550, "5.7.1 Message rejected as spam", "DATA", (Outcome.FAILED, False, False)),
        (554, "5.7.1 Relay access denied", "RCPT", (Outcome.FAILED, False, False)),
        (552, "5.2.2 Mailbox full", "RCPT", (Outcome.FAILED, False, False)),
        (553, "5.1.8 Bad sender's system address", "MAIL", (Outcome.FAILED, False, False)),
        (550, "5.1.0 Sender address rejected", "MAIL", (Outcome.FAILED, False, False)),
    ],
)
def test_classify_reply(
    code: int, reply: str, stage: str, expected: tuple[Outcome, bool, bool]
) -> None:
    """Each reply maps to an outcome, a suppression and a throttle as the dispatcher expects."""
    result = classify_reply(code, reply, stage=stage)
    assert (result.outcome, result.suppress, result.throttled) == expected
    assert (result.code, result.reply) == (code, reply)


@pytest.mark.parametrize(
    ("code", "reply", "stage", "policy"),
    [
        (550, "5.7.1 Message rejected as spam", "DATA", True),
        (554, "5.7.1 Relay access denied", "RCPT", False),
        (550, "5.7.1 Sender rejected", "MAIL", True),
        (550, "5.7.1 user unknown here, policy", "RCPT", False),
        (550, "5.1.1 No such user", "RCPT", False),
        (552, "5.2.2 Mailbox full", "RCPT", False),
    ],
)
def test_a_57x_reply_is_about_policy_and_never_suppresses(
    code: int, reply: str, stage: str, policy: bool
) -> None:
    """5.7.x (policy, authentication, reputation) speaks of us, not of the recipient: it
    never asks for a suppression, and is marked ``policy`` (dispatch pauses the send) except
    at RCPT, where it may be one recipient's own policy (the broken-relay watch counts it)."""
    result = classify_reply(code, reply, stage=stage)
    assert result.outcome is Outcome.FAILED
    assert result.policy is policy
    if policy:
        assert not result.suppress


# --- capture ---------------------------------------------------------------------------------


async def test_capture_writes_a_maildir_that_mailbox_reads(tmp_path: Path) -> None:
    """Each message is one file in new/, as built but with LF line ends (mutt shows no ^M),
    readable by mailbox.Maildir."""
    folder = tmp_path / "outbox"
    messages = [built(f"u{n}@example.org", number=n, body="café", eight_bit=True) for n in range(3)]
    async with CaptureTransport(folder) as transport:
        assert transport.eight_bit
        assert transport.smtputf8
        results = await asyncio.gather(*(transport.send(m) for m in messages))
    assert {r.outcome for r in results} == {Outcome.SENT}
    assert all(r.reply.startswith(f"captured to {folder / 'new'}") for r in results)
    assert sorted(p.name for p in folder.iterdir()) == ["cur", "new", "tmp"]
    assert list((folder / "tmp").iterdir()) == []
    box = mailbox.Maildir(folder, create=False)
    stored = sorted(box.get_bytes(key) for key in box.iterkeys())
    assert stored == sorted(m.data.replace(b"\r\n", b"\n") for m in messages)
    assert not any(b"\r" in path.read_bytes() for path in (folder / "new").iterdir())
    assert sorted(str(box.get_message(k)["To"]) for k in box.iterkeys()) == [
        "u0@example.org",
        "u1@example.org",
        "u2@example.org",
    ]


def test_open_transport_chooses_capture_without_a_host(tmp_path: Path) -> None:
    """No SMTP host: capture under the data folder; a host: SMTP with the delivery rates."""
    capture = open_transport(make_settings(tmp_path))
    assert isinstance(capture, CaptureTransport)
    assert capture.folder == tmp_path / "data" / "outbox"
    relay = open_transport(
        make_settings(tmp_path, smtp={"host": "127.0.0.1"}, delivery={"rate_per_second": 5})
    )
    assert isinstance(relay, SmtpTransport)
    assert relay.current_rate == 5


async def test_send_outside_async_with_is_refused(tmp_path: Path) -> None:
    """A transport refuses to send before it is entered."""
    with pytest.raises(RuntimeError, match="async with"):
        await SmtpTransport(SMTPSettings(host="127.0.0.1")).send(built())
    with pytest.raises(RuntimeError, match="async with"):
        await CaptureTransport(tmp_path).send(built())
