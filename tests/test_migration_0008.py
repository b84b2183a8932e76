"""Migration 0008 (bounces) on a database of the previous release: the sends and deliveries
stored before are kept and can be bounced by a DSN afterwards; the downgrade drops the bounce
tables and turns what the previous release cannot read back into its words (a bounced delivery
``sent``, a soft-bounce suppression ``hard_bounce``), the address still suppressed. SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Connection, inspect, text

from mailer.intake import Intake
from mailer.storage import Store
from mailer.storage.engine import head_revision
from tests.test_bounce_intake import SIGNER, Clock, delivery_lines, hard, sent, settings_for
from tests.test_migration_0007 import _downgrade

pytestmark = pytest.mark.timeout(60)
TABLES = {"bounce_messages", "bounce_events"}


async def _tables(store: Store) -> set[str]:
    def _names(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    async with store.engine.connect() as conn:
        return await conn.run_sync(_names)


async def test_upgrade_from_0007_keeps_the_ledger_and_downgrade_speaks_its_words(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    """0007 with a send of three sent deliveries (stored by today's writers, then taken down to
    0007) -> 0008: the deliveries are there and a DSN
    bounces one; a soft-bounce suppression is made by hand; 0008 -> 0007: no bounce table,
    the delivery ``sent`` again, the suppression ``hard_bounce``; upgrading again works."""
    send_id, ids = await sent(store, tmp_path)  # today's writers touch later tables
    await _downgrade(store, "0007")
    assert not TABLES & await _tables(store)
    assert [line.status for line in await delivery_lines(store, send_id)] == ["sent"] * 3
    assert await store.upgrade() == ("0007", head_revision())
    assert await _tables(store) >= TABLES
    intake = Intake(store, settings_for(tmp_path, database_url), clock=Clock(), signer=SIGNER)
    raw = hard("news@example.org", "person0@example.org", returned=f"Message-ID: <{ids[0]}@test>\n")
    await intake.message(raw, source="smtp")
    assert [line.status for line in await delivery_lines(store, send_id)] == [
        "bounced", "sent", "sent",
    ]  # fmt: skip
    async with store.engine.begin() as conn:
        await conn.execute(
            text("UPDATE suppressions SET reason = 'soft_bounce' WHERE email_key = :k"),
            {"k": "person0@example.org"},
        )
    await _downgrade(store, "0007")
    assert not TABLES & await _tables(store)
    assert [line.status for line in await delivery_lines(store, send_id)] == ["sent"] * 3
    async with store.engine.connect() as conn:
        reasons = (await conn.execute(text("SELECT email_key, reason FROM suppressions"))).all()
    assert [tuple(r) for r in reasons] == [("person0@example.org", "hard_bounce")]
    assert await store.upgrade() == ("0007", head_revision())
    again = await intake.message(raw, source="smtp")
    assert not again.duplicate  # the bounces went with the tables
