"""Migration 0005 on a database of the previous release: the staff tables arrive beside the
rows already there, work at once, and the downgrade takes them away again. SQLite and
PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import Connection, inspect, text

from mailer.models import Role
from mailer.settings import Settings
from mailer.storage import Store
from mailer.storage import engine as _engine
from mailer.storage.engine import head_revision

pytestmark = pytest.mark.timeout(60)
STAFF_TABLES = {"staff_users", "staff_sessions", "audit_log"}


async def _tables(store: Store) -> set[str]:
    def _names(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    async with store.engine.connect() as conn:
        return await conn.run_sync(_names)


async def test_upgrade_from_0004_adds_the_staff_tables_and_downgrade_removes_them(
    app_settings: Settings,
) -> None:
    """0004 -> 0005 keeps the lists and makes a working store.staff / store.audit; 0005 ->
    0004 drops only the staff tables; upgrading again works."""
    now = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    async with Store.open(app_settings) as store:
        assert await _engine.upgrade(store.engine, "0004") == (None, "0004")
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO lists (slug, title, default_locale, opt_in, public, created_at,"
                    " updated_at) VALUES ('r', 'R', 'fr', 'single', false, :t, :t)"
                ),
                {"t": now.replace(tzinfo=None)},
            )
        assert await store.upgrade() == ("0004", head_revision())
        user = await store.staff.add("a@example.org", name=None, role=Role.ADMIN,
                                     password_hash=None, now=now)  # fmt: skip
        await store.staff.open_session(user.id, id_hash="0" * 64, csrf="c", client=None, now=now)
        await store.audit.record(actor="cli:root", action="user.add", target=user.email,
                                 details={"role": "admin"}, client=None, now=now)  # fmt: skip
        assert [s.slug for s in await store.lists.summaries()] == ["r"]

        def _downgrade(connection: Connection) -> None:
            config = _engine._alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")

        async with store.engine.begin() as conn:
            await conn.run_sync(_downgrade)
        assert await store.revision() == "0004"
        assert not STAFF_TABLES & await _tables(store)
        assert [s.slug for s in await store.lists.summaries()] == ["r"]
        assert await store.upgrade() == ("0004", head_revision())
        assert await _tables(store) >= STAFF_TABLES
        assert await store.staff.all() == []
