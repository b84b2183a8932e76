"""The IMAP bounce reader (``mailer.inbound.imap``) against a real Dovecot (tests/dovecot_support.py):
a sweep hands every message to ``accept`` and moves it to the done folder (UID MOVE, or COPY,
\\Deleted and EXPUNGE on a server without MOVE and UIDPLUS); a message ``accept`` refuses
stays; ``run`` takes new mail at once with IDLE, polls without it, reconnects after the
server ends the session and logs out when cancelled; what a user can get wrong is one line
naming the setting; plain text on loopback, STARTTLS and implicit TLS; a DSN in the mailbox
ends with its delivery bounced. Every wait is on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.errors import ConfigError, StorageUnavailable
from mailer.inbound import imap_wire as wire
from mailer.inbound.imap import MAX_MESSAGE, ImapError, ImapReader
from mailer.intake import Intake
from mailer.storage import Store
from mailer.tokens import return_path
from tests.dovecot_support import (
    LEGACY_CAPABILITIES,
    PASSWORD,
    Dovecot,
    dovecot_server,
    free_port,
)
from tests.test_bounce_intake import DOMAIN, SIGNER, delivery_lines, hard, sent, settings_for

pytestmark = pytest.mark.timeout(60)
DEADLINE = 20.0  # seconds for anything to happen, however loaded the machine
DONE = "mailer-processed"


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    """Dovecot as it comes: MOVE, UIDPLUS, IDLE; plain text, STARTTLS and implicit TLS."""
    with dovecot_server() as running:
        yield running


@pytest.fixture(scope="session")
def legacy() -> Iterator[Dovecot]:
    """A server that offers neither MOVE, UIDPLUS nor IDLE."""
    with dovecot_server(capabilities=LEGACY_CAPABILITIES) as running:
        yield running


def message(n: int, size: int = 0) -> bytes:
    body = b"Hello.\r\n" + b"x" * 76 + b"\r\n" if not size else (b"x" * 998 + b"\r\n") * size
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: b+x@bounces.example.org\r\n"
        f"Subject: bounce {n}\r\nMessage-ID: <{n}@mx.example.net>\r\n\r\n"
    ).encode() + body


class Accepted:
    """An ``accept`` that keeps what it was given, refusing the Message-IDs in ``refuse``."""

    def __init__(self, *refuse: int) -> None:
        self.raws: list[bytes] = []
        self.refuse = {f"<{n}@mx.example.net>".encode() for n in refuse}

    async def __call__(self, raw: bytes) -> None:
        if any(mid in raw for mid in self.refuse):
            raise StorageUnavailable("the database is down")
        self.raws.append(raw)


async def eventually(what: str, check: Callable[[], Awaitable[bool]], server: Dovecot) -> None:
    """Wait until ``check()`` holds; on timeout, fail with what Dovecot logged."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"{what}: not within {DEADLINE:.0f} s\n{server.report()}")
        await asyncio.sleep(0.05)  # a poll interval, not a wait for something to happen


def context(server: Dovecot) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    server.ca.configure_trust(ctx)
    return ctx


async def inbox(server: Dovecot, user: str, folder: str = "INBOX") -> list[bytes]:
    return await asyncio.to_thread(server.messages, user, folder)


async def append(server: Dovecot, user: str, *raws: bytes) -> None:
    await asyncio.to_thread(server.append, user, *raws)


def mine(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("mailer") and r.levelno >= level]


# --- sweeping ---------------------------------------------------------------------------------


async def test_a_sweep_hands_every_message_to_accept_and_moves_them_unread(
    dovecot: Dovecot,
) -> None:
    user = dovecot.user()
    raws = [message(n) for n in range(1, 4)]
    await append(dovecot, user, *raws)
    accepted = Accepted()
    reader = ImapReader(dovecot.settings(user), accepted)
    assert await reader.sweep() == 3
    assert accepted.raws == raws
    assert await inbox(dovecot, user) == []
    assert await inbox(dovecot, user, DONE) == raws
    assert DONE in await asyncio.to_thread(dovecot.folders, user)  # created
    flags = await asyncio.to_thread(dovecot.flags, user, DONE)
    assert len(flags) == 3
    assert not [f for f in flags if b"\\Seen" in f]  # BODY.PEEK[]: not marked read
    assert await reader.sweep() == 0


async def test_more_messages_than_a_batch_are_all_taken(dovecot: Dovecot) -> None:
    user = dovecot.user()
    count = wire.BATCH_MESSAGES + 7
    await append(dovecot, user, *[message(n) for n in range(count)])
    accepted = Accepted()
    assert await ImapReader(dovecot.settings(user), accepted).sweep() == count
    assert len(accepted.raws) == count
    assert await inbox(dovecot, user) == []


async def test_a_message_accept_refuses_stays_for_the_next_sweep(
    dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    user = dovecot.user()
    raws = [message(n) for n in range(1, 4)]
    await append(dovecot, user, *raws)
    refusing = Accepted(2)
    assert await ImapReader(dovecot.settings(user), refusing).sweep() == 2
    assert refusing.raws == [raws[0], raws[2]]
    assert await inbox(dovecot, user) == [raws[1]]
    [warning] = mine(caplog)
    assert "UID 2" in warning.getMessage()
    assert "StorageUnavailable: the database is down" in warning.getMessage()
    assert "next sweep" in warning.getMessage()
    assert not warning.exc_info  # a MailerError: one line, no traceback
    accepted = Accepted()
    assert await ImapReader(dovecot.settings(user), accepted).sweep() == 1
    assert accepted.raws == [raws[1]]
    assert await inbox(dovecot, user) == []
    assert len(await inbox(dovecot, user, DONE)) == 3


async def test_a_server_without_move_or_uidplus_gets_copy_deleted_expunge(
    legacy: Dovecot,
) -> None:
    """And a done folder whose name has a space and an accent (modified UTF-7 on the wire)."""
    user = legacy.user()
    raws = [message(n) for n in range(1, 4)]
    await append(legacy, user, *raws)
    accepted = Accepted(3)
    settings = legacy.settings(user, done_folder="Bounces traités")
    assert await ImapReader(settings, accepted).sweep() == 2
    assert "Bounces trait&AOk-s" in await asyncio.to_thread(legacy.folders, user)
    assert await inbox(legacy, user, '"Bounces trait&AOk-s"') == raws[:2]
    assert await inbox(legacy, user) == [raws[2]]  # expunged: the two moved, the third left
    flags = await asyncio.to_thread(legacy.flags, user)
    assert not [f for f in flags if b"\\Deleted" in f]


async def test_a_message_over_10_mib_is_moved_unread_with_a_warning(
    dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    user = dovecot.user()
    large = message(1, size=MAX_MESSAGE // 1000 + 10)
    assert len(large) > MAX_MESSAGE
    await append(dovecot, user, large, message(2))
    accepted = Accepted()
    assert await ImapReader(dovecot.settings(user), accepted).sweep() == 1
    assert accepted.raws == [message(2)]
    assert await inbox(dovecot, user) == []
    assert len(await inbox(dovecot, user, DONE)) == 2
    [warning] = mine(caplog)
    assert "UID 1" in warning.getMessage()
    assert "over 10 MiB" in warning.getMessage()


async def test_a_dsn_in_the_mailbox_bounces_its_delivery(
    dovecot: Dovecot, store: Store, tmp_path: Path, database_url: str
) -> None:
    send_id, ids = await sent(store, tmp_path)
    intake = Intake(store, settings_for(tmp_path, database_url), signer=SIGNER)

    async def accept(raw: bytes) -> None:
        await intake.message(raw, source="imap")

    user = dovecot.user()
    dsn = hard(return_path(SIGNER, ids[1], DOMAIN), "person1@example.org")
    await append(dovecot, user, dsn)
    assert await ImapReader(dovecot.settings(user), accept).sweep() == 1
    lines = await delivery_lines(store, send_id)
    assert [line.status for line in lines] == ["sent", "bounced", "sent"]
    assert "5.1.1" in (lines[1].reason or "")
    assert await inbox(dovecot, user) == []
    assert len(await inbox(dovecot, user, DONE)) == 1
    assert (await store.bounces.counts(send_id)) == {"hard": 1}


# --- running ----------------------------------------------------------------------------------


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_run_takes_new_mail_at_once_with_idle_and_logs_out_when_cancelled(
    dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    user = dovecot.user()
    await append(dovecot, user, message(1))
    accepted = Accepted()
    # an hour between looks: only IDLE can bring the second message within the deadline
    reader = ImapReader(dovecot.settings(user, poll=3600), accepted)
    task = asyncio.create_task(reader.run())
    try:
        await eventually("the first message", lambda: _count(accepted, 1), dovecot)
        await append(dovecot, user, message(2))
        await eventually("the message sent during IDLE", lambda: _count(accepted, 2), dovecot)
        await eventually("the INBOX emptied", lambda: _empty(dovecot, user), dovecot)
    finally:
        await stop(task)
    assert accepted.raws == [message(1), message(2)]

    async def logged_out() -> bool:
        return any(
            f"imap({user})" in line and "Logged out" in line for line in dovecot.log().splitlines()
        )

    await eventually("Dovecot's 'Logged out'", logged_out, dovecot)
    assert mine(caplog) == []  # cancelling is no error


async def test_idle_is_renewed_and_still_sees_new_mail(
    dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="aioimaplib.aioimaplib")
    user = dovecot.user()
    accepted = Accepted()
    reader = ImapReader(dovecot.settings(user, poll=3600), accepted, idle_renew=0.1)
    task = asyncio.create_task(reader.run())

    async def renewed() -> bool:
        return sum("DONE" in r.getMessage() for r in caplog.records) >= 3

    try:
        await eventually("three IDLE renewals", renewed, dovecot)
        await append(dovecot, user, message(1))
        await eventually("the message", lambda: _count(accepted, 1), dovecot)
    finally:
        await stop(task)
    assert mine(caplog) == []


async def test_run_polls_a_server_without_idle(legacy: Dovecot) -> None:
    user = legacy.user()
    accepted = Accepted()
    task = asyncio.create_task(ImapReader(legacy.settings(user, poll=0.1), accepted).run())
    try:
        await append(legacy, user, message(1))
        await eventually("the message", lambda: _count(accepted, 1), legacy)
        await append(legacy, user, message(2))
        await eventually("the second message", lambda: _count(accepted, 2), legacy)
    finally:
        await stop(task)


async def test_run_reconnects_when_the_server_ends_the_session(
    dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailer")
    user = dovecot.user()
    await append(dovecot, user, message(1))
    accepted = Accepted()
    task = asyncio.create_task(ImapReader(dovecot.settings(user, poll=3600), accepted).run())
    try:
        await eventually("the first message", lambda: _count(accepted, 1), dovecot)

        async def kicked() -> bool:  # once its IDLE has begun, doveadm finds the session
            said = await asyncio.to_thread(dovecot.kick, user)
            return said.startswith("exit 0")

        await eventually("doveadm kick", kicked, dovecot)

        async def warned() -> bool:
            return bool(mine(caplog))

        await eventually("the warning", warned, dovecot)
        await append(dovecot, user, message(2))

        async def again() -> bool:  # logged once the new session's first sweep is over
            return any("reading 'INBOX' again" in r.getMessage() for r in caplog.records)

        await eventually("the reconnection", again, dovecot)
    finally:
        await stop(task)
    assert accepted.raws == [message(1), message(2)]
    [warning] = mine(caplog)
    text = warning.getMessage()
    assert f"user {user}" in text
    assert "retrying in 1 s" in text
    assert not warning.exc_info


# --- what a user can get wrong ------------------------------------------------------------------


async def test_a_wrong_password_is_one_line_naming_the_settings_and_never_the_password(
    dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # aioimaplib's debug lines too: LOGIN is masked there
    user = dovecot.user()
    with pytest.raises(ImapError) as raised:
        await ImapReader(dovecot.settings(user, password="wrong"), Accepted()).sweep()
    text = str(raised.value)
    assert "login refused" in text
    assert "MAILER_BOUNCES__IMAP__USER and MAILER_BOUNCES__IMAP__PASSWORD" in text
    assert f"{dovecot.host}:{dovecot.port} (user {user})" in text
    assert "wrong" not in text

    # the right password for a user that does not exist: it must show nowhere
    reader = ImapReader(dovecot.settings("nobody-here"), Accepted())
    task = asyncio.create_task(reader.run())
    try:
        await eventually("the warning", lambda: _warned(caplog), dovecot)
    finally:
        await stop(task)
    warning = mine(caplog)[0]  # a second one if the machine was slow to cancel
    assert "login refused" in warning.getMessage()
    assert "retrying in 1 s" in warning.getMessage()
    assert "\n" not in warning.getMessage()
    assert not warning.exc_info
    assert "cret" not in caplog.text  # the password, in any quoting
    assert "cret" not in str(raised.value)
    assert PASSWORD.endswith("cret\\ 7")


async def test_an_unknown_folder_names_the_folder_setting(dovecot: Dovecot) -> None:
    user = dovecot.user()
    with pytest.raises(ImapError) as raised:
        await ImapReader(dovecot.settings(user, folder="Bounces"), Accepted()).sweep()
    assert "cannot open the folder 'Bounces'" in str(raised.value)
    assert "check MAILER_BOUNCES__IMAP__FOLDER" in str(raised.value)


async def test_tls_to_the_plain_port_names_the_security_setting(dovecot: Dovecot) -> None:
    settings = dovecot.settings(dovecot.user(), security="tls")
    with pytest.raises(ImapError) as raised:
        await ImapReader(settings, Accepted(), ssl_context=context(dovecot)).sweep()
    assert "TLS handshake failed" in str(raised.value)
    assert "check MAILER_BOUNCES__IMAP__SECURITY" in str(raised.value)


async def test_a_server_that_is_down_names_host_and_port(dovecot: Dovecot) -> None:
    settings = dovecot.settings(dovecot.user(), port=free_port())
    with pytest.raises(ImapError) as raised:
        await ImapReader(settings, Accepted()).sweep()
    assert "cannot connect" in str(raised.value)
    assert "check MAILER_BOUNCES__IMAP__HOST and MAILER_BOUNCES__IMAP__PORT" in str(raised.value)


async def test_an_untrusted_certificate_is_refused(dovecot: Dovecot) -> None:
    settings = dovecot.settings(dovecot.user(), security="tls", port=dovecot.tls_port)
    with pytest.raises(ImapError) as raised:
        await ImapReader(settings, Accepted()).sweep()  # the system's CAs: trustme's is not one
    assert "TLS certificate is not trusted" in str(raised.value)


def test_settings_that_cannot_work_are_refused_before_connecting(dovecot: Dovecot) -> None:
    user = dovecot.user()
    with pytest.raises(ConfigError, match="clear text"):
        ImapReader(dovecot.settings(user, host="imap.example.org"), Accepted())
    with pytest.raises(ConfigError, match="DONE_FOLDER must differ"):
        ImapReader(dovecot.settings(user, done_folder="INBOX"), Accepted())


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_starttls_and_implicit_tls_with_a_trusted_certificate(
    dovecot: Dovecot, security: str
) -> None:
    user = dovecot.user()
    await append(dovecot, user, message(1))
    port = dovecot.port if security == "starttls" else dovecot.tls_port
    settings = dovecot.settings(user, security=security, port=port)
    accepted = Accepted()
    assert await ImapReader(settings, accepted, ssl_context=context(dovecot)).sweep() == 1
    assert accepted.raws == [message(1)]

    def logins() -> list[str]:  # the first: the test's own APPEND, in plain text
        return [line for line in dovecot.log().splitlines() if f"Login: user=<{user}>" in line]

    async def logged() -> bool:  # Dovecot's log process writes it a moment later
        return len(logins()) >= 2

    await eventually("Dovecot's log of the login", logged, dovecot)
    assert ", TLS," not in logins()[0]
    assert ", TLS," in logins()[1]


# --- the wire -----------------------------------------------------------------------------------


def test_folder_names_are_written_in_modified_utf7() -> None:
    assert wire.mailbox("INBOX") == '"INBOX"'
    assert (
        wire.mailbox("~peter/mail/台北/日本語") == '"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'
    )  # RFC 3501
    assert wire.mailbox('a&b "q"\\') == '"a&-b \\"q\\"\\\\"'


def test_uid_sets_and_fetched_bodies() -> None:
    assert wire.uid_set([9, 1, 2, 3, 7, 10]) == "1:3,7,9:10"
    lines: list[Any] = [
        b"1 FETCH (UID 4 BODY[] {3}",
        bytearray(b"abc"),
        b")",
        b"2 FETCH (FLAGS (\\Seen))",  # unsolicited, no body
        b"3 FETCH (BODY[] {2}",
        bytearray(b"de"),
        b" UID 9)",  # the UID after the literal
    ]
    assert wire.bodies(lines) == {4: b"abc", 9: b"de"}
    assert wire.sizes([b"1 FETCH (UID 4 RFC822.SIZE 120)", b"2 FETCH (FLAGS ())"]) == {4: 120}
    mib = 1024 * 1024
    sizes = {1: 7 * mib, 2: MAX_MESSAGE + 1, 4: 9 * mib + mib // 2}  # 3: expunged meanwhile
    assert wire.batch([1, 2, 3, 4], sizes) == [1, 2]  # 2 is not fetched; 1 and 4: over 16 MiB
    assert wire.batch([4, 1], sizes) == [4]


async def _count(accepted: Accepted, count: int) -> bool:
    return len(accepted.raws) >= count


async def _empty(server: Dovecot, user: str) -> bool:
    return await inbox(server, user) == []


async def _warned(caplog: pytest.LogCaptureFixture) -> bool:
    return bool(mine(caplog))
