"""The render pool: a send's messages composed in child processes, so that rendering and MIME
building use a second core while the sending process does only the database and SMTP.

A :class:`RenderPool` is opened for the pre-flight and the first pass of a large send (or
for a later pass, if large) and closed with it; the only caller is :mod:`~.feed`, which
decides when it pays. It has :func:`processes_for` ``MAILER_DELIVERY__RENDER_WORKERS``
processes (``auto``: one per usable core but one, at least 1). Each gets a picklable
:class:`Recipe` once, makes the send's composers from it (templates compiled once, as in the
sending process) and then checks batches of recipients for the pre-flight
(:func:`~.preflight.check_batch`, the results as values, with the pid that made them) or
turns them into message bytes. A recipient whose message cannot be built comes back as the
reason, never as an exception.

It must not touch the database or the network: the pool only computes, and imports nothing
of storage or transport (the fork server imports this module; ``mailer.dispatch`` loads its
other modules lazily for that reason). A process that dies raises :class:`RenderPoolLost` for
every batch it held; those recipients were neither sent nor recorded, so they are still
queued, and the feed composes them in the sending process.

A runaway template is stopped here twice over: the sandbox's own budget
(:data:`mailer.render.RENDER_BUDGET`) fails the recipient with the reason, and what it
cannot see (a C extension that does not return, a text derivation that never ends) meets
:data:`HARD_LIMIT`: the process arms a real-time timer for each recipient, and SIGALRM in its
default disposition ends the process wherever it is, like a kill from outside.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from mailer.compose import Composer, make_composer
from mailer.dispatch.preflight import Checked, check_batch
from mailer.errors import MailerError, MessageError, TemplateError
from mailer.message import Built
from mailer.models import Recipient, SendInfo
from mailer.render import RENDER_BUDGET, Renderer
from mailer.render.finishing import FINISHING_LIBRARIES
from mailer.settings import Settings
from mailer.settings.values import MAX_RENDER_WORKERS
from mailer.tokens import Signer

log = logging.getLogger("mailer.dispatch")
T = TypeVar("T")

HARD_LIMIT = 3 * RENDER_BUDGET  # seconds one recipient may take in a pool process, all included


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def processes_for(setting: int | str, cpus: int | None = None) -> int:
    """The processes ``MAILER_DELIVERY__RENDER_WORKERS`` means here: ``auto`` is one per
    core but one (the sending process keeps one), at least 1; a number is itself."""
    if setting == "auto":
        return min(MAX_RENDER_WORKERS, max(1, (cpus or usable_cpus()) - 1))
    return int(setting)


class RenderPoolLost(MailerError, RuntimeError):
    """A process of the render pool ended (killed, out of memory) with batches in hand."""


@dataclass(frozen=True, slots=True)
class Recipe:
    """What a pool process needs to make the composers of one send; pickled once per process."""

    settings: Settings
    templates_dir: Path
    keys: tuple[str, ...]
    sends: tuple[SendInfo, ...]  # one per list of the send
    send_id: int
    trace: str
    eight_bit: bool
    parent: int  # pid of the sending process
    hard_limit: float = HARD_LIMIT  # seconds per recipient before the process ends itself


# --- in a pool process ----------------------------------------------------------------------

_composers: dict[int, Composer] = {}
_hard_limit = HARD_LIMIT


def _start(recipe: Recipe) -> None:
    """Pool process initialiser. The sending process decides when it stops: Ctrl-C or a
    SIGTERM sent to the whole process group must not kill it mid-batch."""
    global _hard_limit
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)  # the hard limit: the process ends
    _hard_limit = recipe.hard_limit
    threading.Thread(target=_watch, args=(recipe.parent,), daemon=True).start()
    renderer = Renderer(recipe.templates_dir)
    signer = Signer(recipe.keys)
    _composers.clear()
    for send in recipe.sends:
        _composers[send.list.id] = make_composer(
            recipe.settings,
            renderer=renderer,
            signer=signer,
            send=send,
            send_id=recipe.send_id,
            trace=recipe.trace,
            eight_bit=recipe.eight_bit,
        )


def _watch(parent: int) -> None:
    """End this process when the sending process is gone. After a kill -9 nobody shuts the
    pool down, and the process (a child of the fork server, holding both ends of its own task
    pipe) would otherwise wait for work forever."""
    try:
        handle = os.pidfd_open(parent)
    except (AttributeError, OSError):  # not Linux 5.3+: look twice a second
        while True:
            time.sleep(0.5)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(1)
    select.select([handle], [], [])  # readable once the process has ended
    os._exit(1)


def compose_batch(
    composers: dict[int, Composer], items: list[tuple[int, Recipient]], date: datetime
) -> list[Built | str]:
    """Each (list id, recipient) as a built message, or the reason it could not be built."""
    out: list[Built | str] = []
    for list_id, recipient in items:
        try:
            out.append(composers[list_id].compose(recipient, date=date).message)
        except (TemplateError, MessageError) as exc:
            out.append(f"not built: {exc}")
        except Exception as exc:  # any other failure of a template (a RecursionError...)
            out.append(f"not built: {type(exc).__name__}: {exc}")
    return out


def _compose(items: list[tuple[int, Recipient]], date: datetime) -> list[Built | str]:
    """In a pool process: each recipient under the hard limit (the timer is re-armed for each)."""
    out: list[Built | str] = []
    try:
        for item in items:
            signal.setitimer(signal.ITIMER_REAL, _hard_limit)
            out += compose_batch(_composers, [item], date)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return out


def _check(
    items: list[tuple[int, Recipient]], date: datetime, whole: int
) -> tuple[int, list[Checked]]:
    """In a pool process: the pre-flight's check of each recipient, the first ``whole``
    that pass their header check composed whole, the others rendered, each under the hard
    limit; with this process's pid."""
    out: list[Checked] = []
    built = 0
    try:
        for item in items:
            signal.setitimer(signal.ITIMER_REAL, _hard_limit)
            [checked] = check_batch(_composers, [item], date=date, whole=int(built < whole))
            built += checked.whole
            out.append(checked)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return os.getpid(), out


# --- in the sending process ------------------------------------------------------------------


class RenderPool:
    """``processes`` child processes composing one send; use as ``async with RenderPool(...)``."""

    def __init__(self, recipe: Recipe, *, processes: int = 1) -> None:
        self._recipe = recipe
        self.processes = processes
        self.checked_by: set[int] = set()  # pids of the processes that ran pre-flight checks
        self._executor: ProcessPoolExecutor | None = None
        self._state = "new"

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(f"a RenderPool is entered once; this one is {self._state}")
        # forkserver, not fork: the sending process has threads (aiosqlite's), and a fork
        # could copy a lock held by one of them. The server imports this module once, and
        # the finishing's libraries, which only the processes load (the sending process
        # never does while it has a pool), so that each forks with them.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, *FINISHING_LIBRARIES])
        self._executor = ProcessPoolExecutor(
            max_workers=self.processes,
            mp_context=context,
            initializer=_start,
            initargs=(self._recipe,),
        )
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._state = "closed"
        executor, self._executor = self._executor, None
        if executor is not None:
            # Batches not started are dropped (their recipients stay queued); the one in
            # hand is finished, then the process exits. Waited for in a thread, off the loop.
            if _has_dead(executor):  # it may be stuck on a dead process's half answer
                _unblock(executor)
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)

    async def compose(
        self, items: list[tuple[int, Recipient]], *, date: datetime
    ) -> list[Built | str]:
        """The messages of ``items``, in order; :class:`RenderPoolLost` if its process died."""
        if self._executor is None:
            raise RuntimeError(f"the render pool is {self._state}; use it inside `async with`")
        return await self._run(_compose, items, date)

    async def check(
        self, items: list[tuple[int, Recipient]], *, date: datetime, whole: int = 0
    ) -> list[Checked]:
        """The pre-flight's check of ``items``, in order, the first ``whole`` composed whole;
        :class:`RenderPoolLost` if its process died."""
        if self._executor is None:
            raise RuntimeError(f"the render pool is {self._state}; use it inside `async with`")
        pid, checked = await self._run(_check, items, date, whole)
        self.checked_by.add(pid)
        return checked

    async def _run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a process of the pool; :class:`RenderPoolLost` if one died.

        A process killed while it wrote its answer leaves half a message in the pipe, and
        the executor's thread then waits for the rest forever (CPython 3.11): the batch
        would never come back, nor would the pool close. So while waiting, a dead process
        whose batch is still pending for a while is taken as lost: the pool's own end of
        the answers' pipe is closed, which ends that wait (the executor then breaks, as it
        does when it sees the death itself)."""
        executor = self._executor
        assert executor is not None
        future = asyncio.get_running_loop().run_in_executor(executor, work, *args)
        dead_for = 0
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=WATCH)
                if done:
                    return future.result()
                dead_for = dead_for + 1 if _has_dead(executor) else 0
                if dead_for >= 2:
                    _unblock(executor)
        except BrokenProcessPool as exc:
            raise RenderPoolLost(f"a process of the render pool ended: {exc}") from None


WATCH = 1.0  # seconds between two looks at the pool's processes while a batch is out


def _has_dead(executor: ProcessPoolExecutor) -> bool:
    """Whether one of the pool's processes has ended (private ``_processes``: read only)."""
    processes = getattr(executor, "_processes", None) or {}
    return any(p.exitcode is not None for p in list(processes.values()))


def _unblock(executor: ProcessPoolExecutor) -> None:
    """Close the pool's own copy of the answers' pipe (private ``_result_queue``), so that a
    wait for the rest of a dead process's half-written answer ends."""
    queue = getattr(executor, "_result_queue", None)
    writer = getattr(queue, "_writer", None)
    if writer is not None:
        log.warning("render pool: a process died while it answered; the pool is given up")
        writer.close()
