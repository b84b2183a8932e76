"""The daemon (``mailer run``): storage, transport and the dispatch loop, until SIGTERM.

It owns the process's signals. On start it resumes every ``running`` send; then, every
``MAILER_SCHEDULER__SYNC_INTERVAL`` seconds, it runs the sends whose time has come and the
retries that are due. SIGTERM or SIGINT stops claiming work, lets the messages in flight
finish (up to ``MAILER_DELIVERY__SHUTDOWN_GRACE`` seconds), records their results and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from contextlib import AsyncExitStack

from mailer.dispatch import Engine
from mailer.errors import MailerError, StorageError
from mailer.settings import Settings, mask_url
from mailer.storage import Store, ensure_data_dir, head_revision
from mailer.transport import open_transport

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
        sender = await stack.enter_async_context(open_transport(settings))
        engine = Engine(settings, store, sender, worker=worker_name())
        log.info(
            "mailer started: database %s (schema %s), transport %s; waiting for work",
            mask_url(settings.database_url),
            revision,
            transport,
        )
        work = asyncio.create_task(_dispatch_loop(engine, stop, settings.scheduler.sync_interval))
        await stop.wait()
        log.info("stop requested: no new work; finishing the messages in flight")
        try:
            await asyncio.wait_for(asyncio.shield(work), timeout=settings.delivery.shutdown_grace)
        except TimeoutError:
            log.warning(
                "messages still in flight after %.0f s; cutting them off (they stay queued)",
                settings.delivery.shutdown_grace,
            )
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    log.info("mailer stopped cleanly")


async def _dispatch_loop(engine: Engine, stop: asyncio.Event, interval: float) -> None:
    while not stop.is_set():
        try:
            await engine.work_once(stop)
        except MailerError as exc:
            log.error("dispatch: %s", exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"
