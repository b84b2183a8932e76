"""Migration 0003 on a database of the previous release: every subscriber gets its own
public id, nothing is lost (a batch rebuild of `subscribers` on SQLite would cascade-delete the
subscriptions), and the suppressions start their history. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select, text

from mailer.settings import Settings
from mailer.storage import Store
from mailer.storage.engine import head_revision
from mailer.storage.tables import subscribers, subscriptions, suppression_events

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_upgrade_from_0002_gives_public_ids_and_keeps_every_row(
    app_settings: Settings, backend: str
) -> None:
    from mailer.storage import engine as _engine

    t = datetime(2026, 11, 30, 9, 0, tzinfo=UTC).replace(tzinfo=None)
    async with Store.open(app_settings) as store:
        assert await _engine.upgrade(store.engine, "0002") == (None, "0002")
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO lists (slug, title, default_locale, opt_in, public, created_at,"
                    " updated_at) VALUES ('r', 'R', 'fr', 'single', false, :t, :t)"
                ),
                {"t": t},
            )
            for i in range(1, 51):
                await conn.execute(
                    text(
                        "INSERT INTO subscribers (email, email_key, name, attributes, status,"
                        " smtputf8, created_at, updated_at) VALUES (:e, :e, 'A', '{}', 'active',"
                        " false, :t, :t)"
                    ),
                    {"e": f"m{i}@example.org", "t": t},
                )
                status = "unsubscribed" if i % 2 else "subscribed"
                await conn.execute(
                    text(
                        "INSERT INTO subscriptions (subscriber_id, list_id, status, source,"
                        " created_at, updated_at) VALUES (:i, 1, :s, 'import:r.csv', :t, :t)"
                    ),
                    {"i": i, "s": status, "t": t},
                )
            await conn.execute(
                text(
                    "INSERT INTO suppressions (email_key, reason, detail, created_at)"
                    " VALUES ('m3@example.org', 'hard_bounce', '550 5.1.1', :t)"
                ),
                {"t": t},
            )
        assert await store.upgrade() == ("0002", head_revision())
        async with store.engine.connect() as conn:
            ids = (await conn.execute(select(subscribers.c.public_id))).scalars().all()
            kept = (await conn.execute(select(subscriptions.c.status))).scalars().all()
            history = (await conn.execute(select(suppression_events))).mappings().all()
    assert len(ids) == 50
    assert all(isinstance(i, str) and len(i) >= 20 for i in ids)
    assert len(set(ids)) == 50
    assert sorted(kept) == sorted(["unsubscribed", "subscribed"] * 25)
    assert [(h["email_key"], h["action"], h["reason"]) for h in history] == [
        ("m3@example.org", "suppress", "hard_bounce")
    ]


async def test_every_way_in_gives_a_public_id(store: Store) -> None:
    """The import (many rows at once), the CLI and the form all go through the column's
    default: no subscriber without a public id."""
    from mailer.addresses import normalize
    from mailer.storage import ListMeta, SubscriberRow

    now = datetime.now(UTC)
    await store.lists.upsert(ListMeta("r", "R"), now=now)
    rows = [
        SubscriberRow(i, v.email, v.key, v.smtputf8, name="X")
        for i, v in enumerate((normalize(f"p{i}@example.org") for i in range(20)), 1)
    ]
    async with store.lists.import_list(ListMeta("r", "R"), source="import:r.csv", now=now) as job:
        await job.add(rows)
        await job.finish({r.key for r in rows}, prune=False)
    valid = normalize("one@example.org")
    await store.subscribers.add(
        SubscriberRow(1, valid.email, valid.key, valid.smtputf8), slug="r", source="cli", now=now
    )
    async with store.engine.connect() as conn:
        ids = (await conn.execute(select(subscribers.c.public_id))).scalars().all()
    assert len(ids) == 21
    assert None not in ids
    assert len(set(ids)) == 21


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_links_mailed_before_the_upgrade_keep_working_for_their_subscriber_alone(
    app_settings: Settings, backend: str
) -> None:
    """Unsubscribe links never expire (RFC 8058): one mailed before 0003 names the row id and
    still unsubscribes its subscriber; once that subscriber is erased, the next one to get
    the row id (SQLite gives it again) is not reached by it."""
    import httpx

    from mailer.addresses import normalize
    from mailer.storage import SubscriberRow
    from mailer.storage import engine as _engine
    from mailer.tokens import Purpose, Signer
    from mailer.web import create_app

    t = datetime(2026, 11, 30, 9, 0, tzinfo=UTC).replace(tzinfo=None)
    key = "legacy-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"
    settings = app_settings.model_copy(
        update={
            "paths": app_settings.paths.model_copy(update={"templates_dir": ROOT / "templates"})
        }
    )
    async with Store.open(settings) as store:
        await _engine.upgrade(store.engine, "0002")
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO lists (slug, title, default_locale, opt_in, public, created_at,"
                    " updated_at) VALUES ('r', 'R', 'fr', 'single', false, :t, :t)"
                ),
                {"t": t},
            )
            for i in (1, 2):
                await conn.execute(
                    text(
                        "INSERT INTO subscribers (email, email_key, name, attributes, status,"
                        " smtputf8, created_at, updated_at) VALUES (:e, :e, '', '{}', 'active',"
                        " false, :t, :t)"
                    ),
                    {"e": f"old{i}@example.org", "t": t},
                )
                await conn.execute(
                    text(
                        "INSERT INTO subscriptions (subscriber_id, list_id, status, source,"
                        " created_at, updated_at) VALUES (:i, 1, 'subscribed', 'import', :t, :t)"
                    ),
                    {"i": i, "t": t},
                )
        await store.upgrade()
        signer = Signer([key])
        old_link = [f"/u/{signer.sign(Purpose.UNSUBSCRIBE, [i, 1])}" for i in (1, 2)]
        app = create_app(settings, store, signer=signer)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://l.test") as client:
            page = await client.post(old_link[0], data={"List-Unsubscribe": "One-Click"})
            assert page.status_code == 200
            await store.subscribers.remove("old2@example.org", slug=None)
            valid = normalize("newcomer@example.org")
            row = SubscriberRow(1, valid.email, valid.key, valid.smtputf8)
            await store.subscribers.add(row, slug="r", source="cli", now=datetime.now(UTC))
            stale = await client.post(old_link[1], data={"List-Unsubscribe": "One-Click"})
            assert stale.status_code == 404
        async with store.engine.connect() as conn:
            statuses = dict(
                (
                    await conn.execute(
                        select(subscribers.c.email, subscriptions.c.status).join(
                            subscriptions, subscriptions.c.subscriber_id == subscribers.c.id
                        )
                    )
                ).all()
            )
    assert statuses == {"old1@example.org": "unsubscribed", "newcomer@example.org": "subscribed"}
