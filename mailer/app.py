"""The daemon (``mailer run``): opens storage and waits for work until SIGTERM or SIGINT.

It owns the process's signals. Today it holds the store only; the scheduler, the dispatch
workers and the web server join it (each an async context manager on the same exit stack).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from mailer.errors import StorageError
from mailer.settings import Settings, mask_url
from mailer.storage import Store, ensure_data_dir, head_revision

log = logging.getLogger("mailer.daemon")


async def prepare(settings: Settings, store: Store) -> str | None:
    """Check the data folder and the schema (upgrading it when configured); return revision."""
    ensure_data_dir(settings.paths.data_dir)
    if settings.database.auto_upgrade:
        before, after = await store.upgrade()
        if before != after:
            log.info("database upgraded from %s to %s", before or "empty", after)
        return after
    current, head = await store.revision(), head_revision()
    if current != head:
        raise StorageError(
            f"the database schema is at {current or 'nothing'} and this version needs {head}: "
            "run `mailer db upgrade` (or set MAILER_DATABASE__AUTO_UPGRADE=true)"
        )
    return current


async def run(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set or the process gets SIGTERM/SIGINT."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
            stack.callback(loop.remove_signal_handler, signum)
        store = await stack.enter_async_context(Store.open(settings))
        revision = await prepare(settings, store)
        transport = (
            f"smtp {settings.smtp.host}:{settings.smtp.port}"
            if settings.smtp.host
            else f"capture to {settings.paths.data_dir / 'outbox'}"
        )
        log.info(
            "mailer started: database %s (schema %s), transport %s; waiting for work",
            mask_url(settings.database_url),
            revision,
            transport,
        )
        await stop.wait()
        log.info("stop requested; shutting down")
    log.info("mailer stopped cleanly")
