"""The next batch of due deliveries costs the same wherever the send stands.

A send is read in keyset batches (``id > after``, by id). The due rows are the queued ones
and the deferred ones whose retry time has come; a query that asks for both with one ``OR``
made SQLite gather every due row after ``after`` (all the send's remaining recipients), sort
them and keep the first few: a million-recipient pre-flight spent most of its time there,
each batch costing more the larger the list. The work of one batch is counted here in SQLite
virtual-machine steps (a progress handler on the connections), not in seconds.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.util import await_only

from mailer.models import DeliveryResult, DeliveryStatus
from mailer.storage import Store
from tests.test_dispatch import NOW, prepare

pytestmark = pytest.mark.timeout(120)

COUNT = 1500
LIMIT = 50


class Steps:
    """SQLite VM steps of the store's connections (counted by 100s)."""

    def __init__(self, store: Store) -> None:
        self.count = 0
        event.listen(store.engine.sync_engine, "checkout", self._on_checkout)

    def _on_checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        await_only(dbapi_connection._connection.set_progress_handler(self._step, 100))

    def _step(self) -> int:
        self.count += 1
        return 0


async def _ids(store: Store, send_id: int) -> list[int]:
    every = await store.deliveries.due(send_id, after=0, limit=COUNT * 2, now=NOW)
    return [d.id for d in every]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("node", [None, "node-a"])
async def test_a_batch_near_the_start_costs_what_one_near_the_end_does(
    store: Store, tmp_path: Path, node: str | None
) -> None:
    send_id = await prepare(store, tmp_path, COUNT)
    spec = await store.sends.spec(send_id)
    assert await store.sends.start(spec, node="node-a", now=NOW)
    ids = await _ids(store, send_id)
    assert len(ids) == COUNT
    steps = Steps(store)

    async def cost(after: int) -> int:
        before = steps.count
        batch = await store.deliveries.due(
            send_id, after=after, limit=LIMIT, now=NOW, node=node, lease=60.0
        )
        assert [d.id for d in batch] == [i for i in ids if i > after][:LIMIT]
        return steps.count - before

    near_end = await cost(ids[-2 * LIMIT])
    at_start = await cost(0)
    assert at_start < 2 * near_end, (at_start, near_end)


async def test_a_batch_takes_due_retries_and_queued_rows_in_id_order(
    store: Store, tmp_path: Path
) -> None:
    """Deferred deliveries whose retry time has come go with the queued ones, by id; those
    not yet due are passed over; the batch is the first ``limit`` of them."""
    send_id = await prepare(store, tmp_path, 60)
    spec = await store.sends.spec(send_id)
    assert await store.sends.start(spec, node="node-a", now=NOW)
    ids = await _ids(store, send_id)
    due_later = {ids[i] for i in range(0, 60, 4)}
    due_now = {ids[i] for i in range(1, 60, 4)}
    sent = {ids[i] for i in range(2, 60, 8)}
    results = [
        DeliveryResult(i, DeliveryStatus.DEFERRED, next_attempt_at=NOW + timedelta(hours=1))
        for i in due_later
    ]
    results += [
        DeliveryResult(i, DeliveryStatus.DEFERRED, next_attempt_at=NOW - timedelta(minutes=1))
        for i in due_now
    ]
    results += [DeliveryResult(i, DeliveryStatus.SENT, code=250) for i in sent]
    await store.deliveries.record(results, now=NOW)
    expected = [i for i in ids if i not in due_later and i not in sent]
    for node in (None, "node-a"):
        after, seen = 0, []
        while batch := await store.deliveries.due(
            send_id, after=after, limit=7, now=NOW, node=node, lease=60.0
        ):
            assert len(batch) <= 7
            seen += [d.id for d in batch]
            after = batch[-1].id
        assert seen == expected


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_the_heartbeat_never_waits_for_a_row_being_recorded(
    store: Store, tmp_path: Path
) -> None:
    """The heartbeat renews a node's leases in one UPDATE while the recorder writes results
    row by row: each took the other's rows in its own order, and PostgreSQL found them
    deadlocked in a million-recipient send (one was cancelled, the send failed). The
    heartbeat passes over the rows another transaction holds (they are being recorded:
    their lease is about to end anyway) instead of waiting for them."""
    import asyncio

    from sqlalchemy import update

    from mailer.storage.tables import deliveries

    send_id = await prepare(store, tmp_path, 3)
    spec = await store.sends.spec(send_id)
    assert await store.sends.start(spec, node="node-a", now=NOW)
    leased = await store.deliveries.due(
        send_id, after=0, limit=10, now=NOW, node="node-a", lease=60.0
    )
    ids = [d.id for d in leased]
    assert len(ids) == 3
    async with store.engine.connect() as recorder:
        await recorder.execute(
            update(deliveries).where(deliveries.c.id == ids[1]).values(updated_at=NOW)
        )  # the recorder holds the middle row, its transaction open
        renewed = await asyncio.wait_for(
            store.deliveries.renew(
                send_id, node="node-a", until=NOW + timedelta(minutes=2), now=NOW
            ),
            timeout=10,
        )
        await recorder.rollback()
    assert sorted(renewed) == [ids[0], ids[2]]
