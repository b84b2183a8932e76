"""Storage: migrations on SQLite and PostgreSQL, time handling, and failures named clearly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, insert, inspect, select, text

from mailer.errors import ConfigError, StorageUnavailable
from mailer.settings import Settings
from mailer.storage import ListMeta, Store, head_revision
from mailer.storage.tables import metadata, subscriptions, suppressions
from tests.conftest import make_settings

pytestmark = pytest.mark.timeout(60)


async def test_upgrade_from_empty_builds_the_declared_schema(app_settings: Settings) -> None:
    """An empty database upgrades to head and then matches the tables the code declares."""
    async with Store.open(app_settings) as store:
        assert await store.revision() is None
        before, after = await store.upgrade()
        assert (before, after) == (None, head_revision())

        def _diff(connection: Connection) -> list[object]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))

        def _tables(connection: Connection) -> set[str]:
            return set(inspect(connection).get_table_names())

        async with store.engine.connect() as conn:
            assert await conn.run_sync(_diff) == []
            tables = await conn.run_sync(_tables)
    expected = {t.name for t in metadata.sorted_tables} | {"alembic_version"}
    assert tables == expected


async def test_upgrade_is_idempotent_and_keeps_data(app_settings: Settings) -> None:
    """Running the upgrade again changes nothing and loses no row."""
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    async with Store.open(app_settings) as store:
        await store.upgrade()
        async with store.engine.begin() as conn:
            await conn.execute(
                insert(suppressions).values(
                    email_key="x@example.org", reason="manual", detail="", created_at=now
                )
            )
        assert await store.upgrade() == (head_revision(), head_revision())
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(suppressions.c.email_key))).scalars().all()
    assert rows == ["x@example.org"]


async def test_upgrade_from_the_first_release_keeps_subscriptions(app_settings: Settings) -> None:
    """A database made by 0001 (the first release) upgrades to head with its rows intact."""
    from mailer.storage import engine as _engine

    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    async with Store.open(app_settings) as store:
        assert await _engine.upgrade(store.engine, "0001") == (None, "0001")
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO lists (slug, title, default_locale, opt_in, public, created_at,"
                    " updated_at) VALUES ('r', 'R', 'fr', 'single', false, :t, :t)"
                ),
                {"t": now.replace(tzinfo=None)},
            )
            await conn.execute(
                text(
                    "INSERT INTO subscribers (email, email_key, name, attributes, status, smtputf8,"
                    " created_at, updated_at) VALUES ('a@example.org', 'a@example.org', 'A',"
                    " '{}', 'active', false, :t, :t)"
                ),
                {"t": now.replace(tzinfo=None)},
            )
            await conn.execute(
                text(
                    "INSERT INTO subscriptions (subscriber_id, list_id, status, source, created_at,"
                    " updated_at) VALUES (1, 1, 'subscribed', 'import:r.csv', :t, :t)"
                ),
                {"t": now.replace(tzinfo=None)},
            )
        assert await store.upgrade() == ("0001", head_revision())
        async with store.engine.connect() as conn:
            row = (await conn.execute(select(subscriptions))).mappings().one()
    assert (row["status"], row["source"], row["confirmed_ip"]) == (
        "subscribed",
        "import:r.csv",
        None,
    )


async def test_times_come_back_aware_in_utc(store: Store) -> None:
    """A time stored with any offset is read back as the same instant, in UTC."""
    paris_winter = timezone(timedelta(hours=1))
    moment = datetime(2027, 1, 15, 9, 0, tzinfo=paris_winter)
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(suppressions).values(
                email_key="t@example.org", reason="manual", detail="", created_at=moment
            )
        )
        got = (await conn.execute(select(suppressions.c.created_at))).scalar_one()
    assert got == moment
    assert got.tzinfo == UTC
    assert got.hour == 8


async def test_naive_datetimes_are_refused(store: Store) -> None:
    """Storing a naive datetime is a programming error caught before it reaches the table."""
    with pytest.raises(Exception, match="naive datetime"):
        async with store.engine.begin() as conn:
            await conn.execute(
                insert(suppressions).values(
                    email_key="n@example.org",
                    reason="manual",
                    detail="",
                    created_at=datetime(2027, 1, 15, 9, 0),
                )
            )


async def test_a_batch_binding_the_same_times_stores_each_row_its_own(store: Store) -> None:
    """The datetime processing remembers the last value it processed (a batch binds the
    same ``now`` on every row): rows of one executemany with the same object, an equal one
    in another zone and other instants each come back as they went in."""
    paris = timezone(timedelta(hours=1))
    now = datetime(2027, 1, 15, 9, 0, tzinfo=UTC)
    times = [
        now,
        now,
        now.astimezone(paris),
        now + timedelta(seconds=1),
        now,
        now - timedelta(days=9),
    ]
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(suppressions),
            [
                {"email_key": f"t{i}@example.org", "reason": "manual", "created_at": moment}
                for i, moment in enumerate(times)
            ],
        )  # fmt: skip
        query = select(suppressions.c.created_at).order_by(suppressions.c.email_key)
        stored = (await conn.execute(query)).scalars().all()
    assert stored == times
    for _ in range(2):  # refused, the second time too
        with pytest.raises(Exception, match="naive datetime"):
            async with store.engine.begin() as conn:
                await conn.execute(
                    insert(suppressions).values(
                        email_key="n@example.org", reason="manual", detail="",
                        created_at=now.replace(tzinfo=None),
                    )
                )  # fmt: skip


async def test_unreachable_postgresql_is_one_clear_error(tmp_path: Path) -> None:
    """A server that does not answer gives StorageUnavailable naming the URL, password masked."""
    settings = make_settings(
        tmp_path, database={"url": "postgresql+asyncpg://mailer:s3cret@127.0.0.1:1/mailer"}
    )
    async with Store.open(settings) as store:
        with pytest.raises(StorageUnavailable) as caught:
            await store.upgrade()
    message = str(caught.value)
    assert "postgresql+asyncpg://mailer:***@127.0.0.1:1/mailer" in message
    assert "MAILER_DATABASE__URL" in message
    assert "s3cret" not in message


def test_unknown_database_kind_is_a_config_error(tmp_path: Path) -> None:
    """Only SQLite and PostgreSQL URLs are accepted, and the error says so."""
    settings = make_settings(tmp_path, database={"url": "mysql://root@localhost/mailer"})
    with pytest.raises(ConfigError, match="MAILER_DATABASE__URL: expected a sqlite or postgresql"):
        Store.open(settings)


def test_data_folder_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    """A data folder below a regular file cannot exist; the error names the setting."""
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings = make_settings(tmp_path, paths={"data_dir": blocker / "data"})
    with pytest.raises(StorageUnavailable, match=r"MAILER_PATHS__DATA_DIR\) is not writable"):
        Store.open(settings)


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    """The default SQLite database uses WAL and a busy timeout, so readers never block writers."""
    settings = make_settings(tmp_path, database={"busy_timeout_ms": 1234})
    async with Store.open(settings) as store:
        await store.upgrade()
        async with store.engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    assert (mode, timeout) == ("wal", 1234)
    assert (tmp_path / "data" / "mailer.sqlite3").is_file()


async def test_periodic_work_runs_once_across_daemons(app_settings: Settings, backend: str) -> None:
    """On PostgreSQL one process at a time holds a job's advisory lock; on SQLite (one
    daemon per file) every caller may."""
    async with Store.open(app_settings) as first, Store.open(app_settings) as second:
        await first.upgrade()
        async with first.once_across_daemons("job") as mine:
            assert mine
            async with second.once_across_daemons("job") as theirs:
                assert theirs is (backend == "sqlite")
            async with second.once_across_daemons("another job") as other:
                assert other
        async with second.once_across_daemons("job") as after:
            assert after  # released


async def test_a_suppression_is_lifted_and_its_history_kept(store: Store) -> None:
    """Suppress, lift (with a long free-text reason), suppress again: the suppressions table
    holds the current state, the history every step with who, when and why, in order."""
    from mailer.errors import StateError
    from mailer.models import SuppressionReason
    from mailer.storage import SubscriberRow

    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    await store.lists.upsert(ListMeta(slug="news", title="News"), now=now)
    row = SubscriberRow(line=0, email="ada@example.org", key="ada@example.org", smtputf8=False)
    await store.subscribers.add(row, slug="news", source="cli", now=now)
    key = "ada@example.org"
    assert await store.subscribers.suppress(
        key, reason=SuppressionReason.COMPLAINT, detail="abuse report", now=now, actor="cli:ops"
    )
    why = "the complaint was filed by mistake; confirmed by phone with the subscriber " * 3
    later = now + timedelta(hours=1)
    assert (
        await store.subscribers.unsuppress(key, why=why, actor="cli:ops", now=later) == "complaint"
    )
    with pytest.raises(StateError, match="is not suppressed"):
        await store.subscribers.unsuppress(key, why="again", actor="cli:ops", now=later)
    view = await store.subscribers.show(key)
    assert view.suppression is None
    assert [(e.action, e.reason, e.actor, e.at) for e in view.suppression_history] == [
        ("suppress", "complaint", "cli:ops", now),
        ("unsuppress", "manual", "cli:ops", later),
    ]
    assert view.suppression_history[1].detail == why
    assert await store.subscribers.suppress(
        key, reason=SuppressionReason.MANUAL, detail="", now=later + timedelta(hours=1)
    )
    view = await store.subscribers.show(key)
    assert view.suppression == "manual"
    assert [e.action for e in view.suppression_history] == ["suppress", "unsuppress", "suppress"]
