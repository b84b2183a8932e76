"""The IMAP reader's batch hand-over (``ImapReader(..., accept_batch=...)``) against a real
Dovecot (tests/dovecot_support.py): a fetch's DSNs go to ``Intake.messages`` at once and their
deliveries bounce; a batch refused goes to ``accept`` one by one, so that a message refused
stays and the others are stored and moved."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mailer.errors import StorageUnavailable
from mailer.inbound.imap import ImapReader
from mailer.intake import Intake
from mailer.storage import Store
from mailer.tokens import return_path
from tests.dovecot_support import Dovecot, dovecot_server
from tests.test_bounce_intake import DOMAIN, SIGNER, delivery_lines, hard, sent, settings_for

pytestmark = pytest.mark.timeout(60)
DONE = "mailer-processed"


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    with dovecot_server() as running:
        yield running


def dsns(ids: list[int]) -> list[bytes]:
    return [
        hard(return_path(SIGNER, delivery_id, DOMAIN), f"person{i}@example.org",
             head=f"Message-ID: <imap-batch-{i}@mx.example.net>\n")
        for i, delivery_id in enumerate(ids)
    ]  # fmt: skip


async def test_a_fetch_is_stored_in_one_batch(
    dovecot: Dovecot, store: Store, tmp_path: Path, database_url: str
) -> None:
    send_id, ids = await sent(store, tmp_path)
    intake = Intake(store, settings_for(tmp_path, database_url), signer=SIGNER)
    batches: list[int] = []

    async def one(raw: bytes) -> None:
        raise AssertionError("the batch was stored: nothing one by one")

    async def many(raws: Sequence[bytes]) -> None:
        batches.append(len(raws))
        await intake.messages(raws, source="imap")

    user = dovecot.user()
    await asyncio.to_thread(dovecot.append, user, *dsns(ids))
    assert await ImapReader(dovecot.settings(user), one, accept_batch=many).sweep() == 3
    assert batches == [3]
    assert [line.status for line in await delivery_lines(store, send_id)] == ["bounced"] * 3
    assert await asyncio.to_thread(dovecot.messages, user, "INBOX") == []
    assert len(await asyncio.to_thread(dovecot.messages, user, DONE)) == 3
    assert (await store.bounces.counts(send_id)) == {"hard": 3}


async def test_a_batch_refused_is_taken_one_by_one(
    dovecot: Dovecot, store: Store, tmp_path: Path, database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    send_id, ids = await sent(store, tmp_path)
    intake = Intake(store, settings_for(tmp_path, database_url), signer=SIGNER)
    raws = dsns(ids)

    async def one(raw: bytes) -> None:
        if b"imap-batch-1@" in raw:
            raise StorageUnavailable("the database is down")
        await intake.message(raw, source="imap")

    async def many(raws: Sequence[bytes]) -> None:
        raise StorageUnavailable("the database is down")

    user = dovecot.user()
    await asyncio.to_thread(dovecot.append, user, *raws)
    assert await ImapReader(dovecot.settings(user), one, accept_batch=many).sweep() == 2
    assert [line.status for line in await delivery_lines(store, send_id)] == [
        "bounced", "sent", "bounced",
    ]  # fmt: skip
    left = await asyncio.to_thread(dovecot.messages, user, "INBOX")
    assert len(left) == 1
    assert b"imap-batch-1@" in left[0]
    said = [r.getMessage() for r in caplog.records if r.name == "mailer.bounces.imap"]
    assert any("a batch of 3 messages not stored" in s and "one by one" in s for s in said)
