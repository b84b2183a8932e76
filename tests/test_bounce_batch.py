"""Bounces stored in batches (``Intake.messages``, ``store.bounces.record_many``) do exactly
what storing them one at a time does (``Intake.message``): the same mixed sequence (hard,
soft over three days, a complaint, policy, duplicates, forged, unmatched, delayed, an
auto-reply, a DSN naming the send for two recipients, repeats of an address inside one
batch) fed to both paths, each into its own database set up alike, gives the same outcomes
and the same rows in every table bounces touch, webhook events included (an endpoint
subscribed to every type). SQLite and PostgreSQL; also in transactions of three messages."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, select

from mailer.intake import Intake
from mailer.models import BounceAction, BounceOutcome, EventType
from mailer.storage import Store, bounce_record
from mailer.storage.hook_tables import webhook_deliveries, webhook_events
from mailer.storage.tables import (
    bounce_events,
    bounce_messages,
    consent_events,
    deliveries,
    sends,
    subscribers,
    subscriptions,
    suppression_events,
    suppressions,
)
from mailer.tokens import return_path
from tests.conftest import PostgresServer, _sqlite_template, make_settings
from tests.console_support import now
from tests.test_bounce_intake import DOMAIN, SIGNER, Clock, sent, settings_for
from tests.test_bounces_parse import arf, block, dsn

pytestmark = pytest.mark.timeout(120)
LIMITS = {
    "hard 2": {"hard_limit": 2, "soft_limit": 3, "policy_pause_min": 2},
    "hard 1": {"hard_limit": 1, "soft_limit": 2, "policy_pause_min": 3},
}


@pytest.fixture
async def twin(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Store]:
    """A second store on the test's backend, its own database at head."""
    folder = tmp_path / "twin"
    folder.mkdir()
    if backend == "sqlite":
        path = folder / "data" / "mailer.sqlite3"
        path.parent.mkdir()
        shutil.copyfile(await _sqlite_template(), path)
        url = f"sqlite+aiosqlite:///{path}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = await server.create_database(migrated=True)
    async with Store.open(make_settings(folder, database={"url": url})) as opened:
        await opened.upgrade()
        yield opened


def bounce(n: int, to: str, *blocks: str, returned: str = "") -> bytes:
    """A DSN of its own (Message-ID ``<b-n@mx.example.net>``) sent to ``to``."""
    raw = dsn(*blocks, returned=returned, head=f"Message-ID: <b-{n}@mx.example.net>\n")
    return raw.replace(b"To: b+d42.sig@bounces.example.org", f"To: {to}".encode())


def person(i: int) -> str:
    return f"person{i}@example.org"


def days(ids: list[int], campaign_id: int) -> list[list[bytes]]:
    """The messages of three days, a batch each (the deliveries ``ids`` of person0..7)."""

    def verp(i: int) -> str:
        return return_path(SIGNER, ids[i], DOMAIN)

    def hard(n: int, i: int, **kw: str) -> bytes:
        return bounce(n, kw.get("to", verp(i)), block(person(i), "failed", "5.1.1", "550 5.1.1 unknown"),
                      returned=kw.get("returned", ""))  # fmt: skip

    def soft(n: int, i: int) -> bytes:
        return bounce(n, verp(i), block(person(i), "failed", "4.2.2", "452 4.2.2 mailbox full"))

    good = verp(5)
    forged = good[: -len(DOMAIN) - 2] + ("a" if good[-len(DOMAIN) - 2] != "a" else "b")
    complaint = arf(
        "Feedback-Type: abuse\nUser-Agent: fbl/1.0\nVersion: 1\n",
        f"From: news@example.org\nTo: {person(2)}\nMessage-ID: <{ids[2]}@test>\n",
    )
    auto_reply = (
        f"From: P7 <{person(7)}>\nTo: {verp(7)}\nAuto-Submitted: auto-replied\n"
        "Message-ID: <away-7@example.org>\nSubject: Re: news\n\nI am away.\n"
    ).encode()
    trace = bounce(
        20, "news@example.org",
        block(person(6), "failed", "5.1.1", "550 5.1.1 unknown"),
        block(person(7), "failed", "5.2.2", "552 5.2.2 full"),
        block(person(6), "failed", "5.1.1", "550 5.1.1 unknown again"),
        returned=f"X-Mailer-Send: c{campaign_id}/announce\n",
    )  # fmt: skip
    first = [
        hard(1, 0),
        hard(2, 0),  # the same delivery again: counted (hard 2: suppressed), not marked again
        soft(3, 1),
        soft(4, 1),  # the same day: one day counted
        complaint,
        hard(5, 2),  # after the complaint, in the same batch: already suppressed
        bounce(6, verp(3), block(person(3), "failed", "5.7.1", "550 5.7.1 blocked by policy")),
        bounce(7, verp(4), block(person(4), "failed", "5.7.1", "550 5.7.1 blocked by policy")),
        hard(1, 0),  # a copy in the same batch: a duplicate
        hard(8, 5, to=forged + "@" + DOMAIN, returned=f"Message-ID: <{ids[5]}@test>\n"),
        hard(9, 5, to="news@example.org", returned="Message-ID: <x@elsewhere>\n"),
        bounce(10, verp(6), block(person(6), "delayed", "4.4.7", "delivery delayed")),
        auto_reply,
        trace,
        hard(11, 3, to="news@example.org", returned=f"Message-ID: <{ids[3]}@test>\n"),
    ]
    second = [soft(12, 1), first[2], hard(13, 0), complaint, soft(14, 4)]
    third = [soft(15, 1), soft(16, 1), soft(17, 4), first[0]]
    return [first, second, third]


async def scene(store: Store, tmp_path: Path) -> tuple[int, list[int], int]:
    """The send to person0..7, every delivery sent, and then an endpoint of every type."""
    send_id, ids = await sent(store, tmp_path, count=8)
    await store.webhooks.add(
        url="https://example.org/h", events=list(EventType), description="", actor="cli:ops",
        now=now(),
    )  # fmt: skip
    return send_id, ids, (await store.sends.spec(send_id)).campaign_id


async def dump(store: Store) -> dict[str, list[Any]]:
    """The rows bounces write or change, without the ids that depend on the path (a
    PostgreSQL sequence is spent by a duplicate's INSERT ... ON CONFLICT) or chance."""
    picked: dict[str, tuple[Table, tuple[str, ...]]] = {
        "bounce_messages": (bounce_messages, ("fingerprint", "source", "report", "reader",
                            "received_at", "raw", "delivery_id", "message_id", "mailer_send",
                            "forged")),
        "bounce_events": (bounce_events, ("bounce_id", "email_key", "kind", "status",
                          "diagnostic", "final", "action", "delivery_id", "send_id", "day", "at")),
        "suppressions": (suppressions, ("email_key", "reason", "detail", "created_at")),
        "suppression_events": (suppression_events, ("email_key", "action", "reason", "detail",
                               "actor", "at")),
        "deliveries": (deliveries, ("id", "status", "reason")),
        "subscriptions": (subscriptions, ("id", "status", "unsubscribed_at",
                          "unsubscribe_source")),
        "consent_events": (consent_events, ("subscriber_id", "list_id", "event", "source")),
        "sends": (sends, ("id", "status", "reason")),
        "webhook_events": (webhook_events, ("type", "payload", "created_at")),
        "webhook_deliveries": (webhook_deliveries, ("endpoint_id", "status", "attempts",
                               "next_at")),
    }  # fmt: skip
    found: dict[str, list[Any]] = {}
    async with store.db.begin() as conn:
        prints = dict(
            (await conn.execute(select(bounce_messages.c.id, bounce_messages.c.fingerprint))).all()
        )
        people = dict(
            (await conn.execute(select(subscribers.c.public_id, subscribers.c.email))).all()
        )
        for name, (table, columns) in picked.items():
            rows = await conn.execute(select(*(table.c[c] for c in columns)).order_by(table.c.id))
            found[name] = [_plain(dict(r), prints, people) for r in rows.mappings()]
    # A send's pause is checked once per batch, not after each message: its event comes
    # later among the others (the same event, and the same state at the end)
    events = found.pop("webhook_events")
    found["webhook_events"] = [e for e in events if not e["type"].startswith("send.")]
    found["send events"] = sorted(
        (
            json.dumps(e, sort_keys=True, default=str)
            for e in events
            if e["type"].startswith("send.")
        ),
    )
    return found


def _plain(row: dict[str, Any], prints: dict[int, str], people: dict[str, str]) -> dict[str, Any]:
    if "bounce_id" in row:
        row["bounce_id"] = prints[row["bounce_id"]]
    if "payload" in row:
        data = row.pop("payload")["data"]
        if isinstance(data.get("send"), dict):
            data["send"].pop("due_at", None)  # the set-up's clock
        text = json.dumps(data, sort_keys=True)
        for public_id, email in people.items():
            text = text.replace(json.dumps(public_id), json.dumps(f"person:{email}"))
        row["data"] = json.loads(text)
    return row


def outcomes_of(outcomes: list[BounceOutcome], prints: dict[int, str]) -> list[Any]:
    return [(prints[o.bounce_id], o.duplicate, o.notes) for o in outcomes]


async def fingerprints(store: Store) -> dict[int, str]:
    async with store.db.begin() as conn:
        rows = await conn.execute(select(bounce_messages.c.id, bounce_messages.c.fingerprint))
        return {int(i): str(fp) for i, fp in rows.all()}


@pytest.mark.parametrize("limits", list(LIMITS), ids=list(LIMITS))
@pytest.mark.parametrize("batch", [bounce_record.MAX_BATCH, 3], ids=["batch", "batch-of-3"])
async def test_batches_store_exactly_what_one_at_a_time_stores(
    store: Store, twin: Store, tmp_path: Path, database_url: str, limits: str, batch: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(bounce_record, "MAX_BATCH", batch)
    one_send, one_ids, campaign = await scene(store, tmp_path)
    many_send, many_ids, _ = await scene(twin, tmp_path / "twin")
    assert (one_send, one_ids) == (many_send, many_ids)
    settings = settings_for(tmp_path, database_url, **LIMITS[limits])
    clock = Clock()
    one = Intake(store, settings, clock=clock, signer=SIGNER)
    many = Intake(twin, settings, clock=clock, signer=SIGNER)
    start = clock.at
    singly: list[BounceOutcome] = []
    batched: list[BounceOutcome] = []
    for day, raws in enumerate(days(one_ids, campaign)):
        clock.at = start + timedelta(days=day, hours=day)
        singly += [await one.message(raw, source="imap") for raw in raws]
        batched += await many.messages(raws, source="imap")
    assert outcomes_of(batched, await fingerprints(twin)) == outcomes_of(
        singly, await fingerprints(store)
    )
    expected, got = await dump(store), await dump(twin)
    for table in expected:
        assert got[table] == expected[table], table
    types = {e["type"] for e in expected["webhook_events"]}
    assert types == {"delivery.bounced", "complaint.received", "subscriber.unsubscribed"}
    assert bool(expected["send events"]) is (limits == "hard 2")
    actions = {n.action for o in singly for n in o.notes}
    assert actions == set(BounceAction)  # every branch taken, both ways
    assert any(o.duplicate for o in singly)
    if limits == "hard 2":
        assert (await store.overview.send(one_send)).status == "paused"  # policy, twice


async def test_a_batch_gives_one_outcome_per_message_and_an_empty_one_nothing(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    """``messages([])`` stores nothing; the outcome of a batch is one per message, in order,
    a copy inside it a duplicate of the first."""
    intake = Intake(store, settings_for(tmp_path, database_url), clock=Clock(), signer=SIGNER)
    assert await intake.messages([], source="import") == []
    _, ids = await sent(store, tmp_path)
    raw = bounce(1, return_path(SIGNER, ids[0], DOMAIN), block(person(0), "failed", "5.1.1"))
    first, again = await intake.messages([raw, raw], source="import")
    assert not first.duplicate
    assert again.duplicate
    assert again.bounce_id == first.bounce_id
    assert [n.action for n in first.notes] == [BounceAction.SUPPRESSED]
