"""The daemon's bounce listener (``mailer.inbound.listener``) on a loopback port, spoken to by a
real SMTP client, storing through a real intake (SQLite and PostgreSQL): 250 only once the
bounce is stored, and what a listener facing the world must bear: recipients outside the bounce
domain, mail over the size limit, a client over the rate, a storage failure (451, the MTA
keeps the message), garbage, a silent client and too many connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiosmtplib
import pytest

from mailer.errors import StorageUnavailable
from mailer.inbound import listener as listener_module
from mailer.inbound.listener import BounceListener, RateLimit
from mailer.intake import Intake
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import return_path
from tests.postfix_support import free_port
from tests.test_bounce_intake import (
    DOMAIN,
    SIGNER,
    Clock,
    delivery_lines,
    hard,
    sent,
    settings_for,
    suppressed,
)

pytestmark = pytest.mark.timeout(60)
HOST = "127.0.0.1"


def bounce_settings(tmp_path: Path, database_url: str, **extra: object) -> Settings:
    return settings_for(tmp_path, database_url, listen=f"{HOST}:{free_port()}", **extra)


async def started(settings: Settings, accept: listener_module.Accept) -> BounceListener:
    listener = BounceListener(settings.bounces, accept)
    where = await listener.start()
    assert where == settings.bounces.listen
    return listener


@pytest.fixture
async def running(
    store: Store, tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[BounceListener, Intake]]:
    """A listener on a free port taking bounces into the test's store (rate 5 a minute)."""
    settings = bounce_settings(tmp_path, database_url, rate=5)
    intake = Intake(store, settings, clock=Clock(), signer=SIGNER)

    async def accept(raw: bytes, recipients: Sequence[str]) -> None:
        await intake.message(raw, source="smtp", envelope_to=recipients)

    listener = await started(settings, accept)
    try:
        yield listener, intake
    finally:
        await listener.stop()


async def send(listener: BounceListener, raw: bytes, rcpt: str, sender: str = "") -> str:
    """One message; the server's last reply, as ``code text``."""
    host, port = listener.settings.listen_at or ("", 0)
    async with aiosmtplib.SMTP(hostname=host, port=port, timeout=20) as client:
        await client.mail(sender)
        await client.rcpt(rcpt)
        reply = await client.data(raw)
    return f"{reply.code} {reply.message}"


async def test_a_dsn_is_stored_before_the_250_and_its_delivery_bounced(
    store: Store, tmp_path: Path, running: tuple[BounceListener, Intake]
) -> None:
    listener, _ = running
    send_id, ids = await sent(store, tmp_path)
    to = return_path(SIGNER, ids[1], DOMAIN)
    assert await send(listener, hard(to, "person1@example.org"), to.upper()) == "250 2.0.0 stored"
    # the reply came after storing: no wait needed to see it
    assert [line.status for line in await delivery_lines(store, send_id)] == [
        "sent", "bounced", "sent",
    ]  # fmt: skip
    assert await suppressed(store, "person1@example.org")
    (line,) = await store.bounces.lines(limit=5)
    assert (line.source, line.kind) == ("smtp", "hard")


async def test_recipients_outside_the_bounce_domain_are_refused(
    running: tuple[BounceListener, Intake],
) -> None:
    listener, _ = running
    host, port = listener.settings.listen_at or ("", 0)
    async with aiosmtplib.SMTP(hostname=host, port=port, timeout=20) as client:
        await client.mail("")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt("postmaster@example.org")
    assert refused.value.code == 550
    assert f"only bounces to @{DOMAIN}" in refused.value.message


async def test_mail_over_the_size_is_refused_and_the_listener_goes_on(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    settings = bounce_settings(tmp_path, database_url, max_size=10_000)
    got: list[bytes] = []

    async def accept(raw: bytes, recipients: Sequence[str]) -> None:
        got.append(raw)

    listener = await started(settings, accept)
    try:
        big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 20
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(listener, big, f"b+x@{DOMAIN}")
        assert refused.value.code == 552
        assert got == []
        long_line = b"Subject: long\r\n\r\n" + b"y" * 5000 + b"\r\n"  # over 998: still taken
        assert await send(listener, long_line, f"b+x@{DOMAIN}") == "250 2.0.0 stored"
        assert got == [long_line]
    finally:
        await listener.stop()


async def test_over_the_rate_a_client_is_told_to_come_back(
    running: tuple[BounceListener, Intake],
) -> None:
    """Rate 5 a minute: the sixth message from 127.0.0.1 gets 421 and the connection closes."""
    listener, _ = running
    for i in range(5):
        garbage = f"not a bounce {i}\r\n".encode()
        assert await send(listener, garbage, f"b+x@{DOMAIN}") == "250 2.0.0 stored"
    with pytest.raises((aiosmtplib.SMTPResponseException, aiosmtplib.SMTPServerDisconnected)) as e:
        await send(listener, b"one more\r\n", f"b+x@{DOMAIN}")
    if isinstance(e.value, aiosmtplib.SMTPResponseException):
        assert e.value.code == 421


def test_the_rate_is_a_sliding_minute_per_address() -> None:
    at = [0.0]
    rate = RateLimit(2, clock=lambda: at[0])
    assert [rate.allow("a"), rate.allow("a"), rate.allow("a"), rate.allow("b")] == [
        True, True, False, True,
    ]  # fmt: skip
    at[0] = 60.5
    assert rate.allow("a")


async def test_a_storage_failure_is_451_and_nothing_is_lost(
    tmp_path: Path, database_url: str
) -> None:
    """The MTA keeps a message answered 451 and tries again: the second try is stored."""
    settings = bounce_settings(tmp_path, database_url)
    stored: list[bytes] = []
    down = [True]

    async def accept(raw: bytes, recipients: Sequence[str]) -> None:
        if down[0]:
            raise StorageUnavailable("the database is unreachable")
        stored.append(raw)

    listener = await started(settings, accept)
    try:
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await send(listener, b"Subject: b\r\n\r\nbounce\r\n", f"b+x@{DOMAIN}")
        assert refused.value.code == 451
        down[0] = False
        assert await send(listener, b"Subject: b\r\n\r\nbounce\r\n", f"b+x@{DOMAIN}") == (
            "250 2.0.0 stored"
        )
        assert stored == [b"Subject: b\r\n\r\nbounce\r\n"]
    finally:
        await listener.stop()


async def test_garbage_to_a_forged_return_path_is_kept_and_counts_for_nobody(
    store: Store, running: tuple[BounceListener, Intake]
) -> None:
    listener, _ = running
    garbage = bytes(range(1, 256)).replace(b"\r", b"").replace(b"\n", b"") + b"\r\n"
    assert await send(listener, garbage, f"b+zzz@{DOMAIN}") == "250 2.0.0 stored"
    assert await store.bounces.message(1) == ([], garbage)  # kept, as it came, for nobody
    assert await store.bounces.forged() == 1  # a return path of the domain, not ours
    assert await store.bounces.counts() == {}


async def test_silent_clients_are_dropped_and_connections_capped(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two connections allowed: a third is told 421 and closed; a client silent past the idle
    timeout is disconnected, and its place is free again."""
    monkeypatch.setattr(listener_module, "MAX_CONNECTIONS", 2)
    monkeypatch.setattr(listener_module, "IDLE_TIMEOUT", 1.0)
    settings = bounce_settings(tmp_path, database_url)

    async def accept(raw: bytes, recipients: Sequence[str]) -> None:
        return None

    listener = await started(settings, accept)
    host, port = settings.bounces.listen_at or ("", 0)
    try:
        silent = [await asyncio.open_connection(host, port) for _ in range(2)]
        for reader, _ in silent:
            assert (await reader.readline()).startswith(b"220 ")
        reader, writer = await asyncio.open_connection(host, port)
        assert (await reader.readline()).startswith(b"421 4.3.2")
        assert await reader.read() == b""  # closed
        writer.close()
        for reader, writer in silent:  # the idle timeout closes them (no reply awaited)
            async with asyncio.timeout(20):
                assert await reader.read() == b""
            writer.close()
        async with asyncio.timeout(20):
            while listener.connections:  # noqa: ASYNC110 - the count drops as they close
                await asyncio.sleep(0.05)
        assert await send(listener, b"Subject: b\r\n\r\nx\r\n", f"b+x@{DOMAIN}") == (
            "250 2.0.0 stored"
        )
    finally:
        await listener.stop()


async def test_a_port_in_use_is_one_line_naming_the_setting(
    tmp_path: Path, database_url: str
) -> None:
    settings = bounce_settings(tmp_path, database_url)

    async def accept(raw: bytes, recipients: Sequence[str]) -> None:
        return None

    first = await started(settings, accept)
    try:
        with pytest.raises(Exception, match=r"MAILER_BOUNCES__LISTEN=127\.0\.0\.1:\d+: cannot"):
            await BounceListener(settings.bounces, accept).start()
    finally:
        await first.stop()
