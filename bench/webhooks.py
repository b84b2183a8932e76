"""Benchmark of the outgoing webhooks: events delivered per second to a local receiver.

A fresh database (a SQLite file in a temporary folder, or the empty database of
``--database-url``) with one endpoint and ``--events`` events (default 5,000) written to the
outbox in one transaction; then the daemon's own :class:`mailer.outbox.Poster` (its loop,
``run``) posts them, ``--concurrency`` at once, signed, to a receiver on 127.0.0.1 (uvicorn,
``tests/webhook_support.py``, in the same process and loop, which also checks every
signature), until none is pending. Printed: events delivered per second, duplicates (there
should be none), the machine and Python version. Figures are printed, never asserted.

    .venv/bin/python bench/webhooks.py [--events 5000] [--concurrency 8]
        [--database-url postgresql+asyncpg://user@host/empty_db]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailer.models import EventType
from mailer.outbox import Poster
from mailer.settings import Settings
from mailer.settings.api import WebhookSettings
from mailer.storage import Store, outbox
from tests.webhook_support import receiving


async def bench(url: str, folder: Path, events: int, concurrency: int) -> None:
    settings = Settings.model_validate(
        {"database": {"url": url}, "paths": {"data_dir": folder / "data"}}
    )
    async with Store.open(settings) as store, receiving() as receiver:
        await store.upgrade()
        endpoint = await store.webhooks.add(
            url=receiver.url + "/in", events=[EventType.DELIVERY_SENT], description="bench",
            actor="bench", now=datetime.now(UTC),
        )  # fmt: skip
        receiver.secrets["/in"] = endpoint.secret
        async with store.db.begin(write=True) as conn:
            batch = [(EventType.DELIVERY_SENT, {"delivery": i, "email": f"m{i}@example.org"})
                     for i in range(events)]  # fmt: skip
            await outbox.emit(conn, batch, now=datetime.now(UTC))
        hooks = WebhookSettings(allow_private=True, concurrency=concurrency)
        poster = Poster(store, hooks, node="bench:1", interval=0.05)
        started = time.perf_counter()
        task = asyncio.create_task(poster.run())
        while await store.webhooks.pending():  # noqa: ASYNC110 - the database has no event
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    counts = receiver.ids()
    bad = sum(1 for r in receiver.requests if not r.verified)
    backend = url.split(":", 1)[0]
    print(
        f"{backend}: {events} events in {elapsed:.2f} s = {events / elapsed:,.0f} events/s "
        f"delivered (concurrency {concurrency}); received {len(counts)}, duplicates "
        f"{sum(counts.values()) - len(counts)}, bad signatures {bad}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--database-url", help="an empty database (default: a SQLite file)")
    args = parser.parse_args()
    print(
        f"{platform.node()}: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.platform()}; Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        url = args.database_url or f"sqlite+aiosqlite:///{folder / 'bench.sqlite3'}"
        asyncio.run(bench(url, folder, args.events, args.concurrency))


if __name__ == "__main__":
    main()
