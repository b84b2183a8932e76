"""The console's imports in progress (:class:`ImportDesk`, one per console app): each
:class:`ImportJob` with its upload's path, its :class:`Stage`, its progress and its report.

In the memory of this process only: another daemon does not see an import, a restart forgets
it. A job is forgotten, and its file deleted, once closed or cancelled, and after a day in
any case; uploads a previous process left are swept after a day.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from mailer import lists
from mailer.models import ListMeta
from mailer.web.console.context import ConsoleContext

log = logging.getLogger("mailer.console")

KEPT = 24 * 3600.0  # seconds an upload (and its report) is kept, applied or not


class Stage(StrEnum):
    CHECKING = "checking"  # the dry run is running
    CHECKED = "checked"  # the dry run's report is ready: apply or cancel
    APPLYING = "applying"
    APPLIED = "applied"
    FAILED = "failed"  # the file could not be imported; nothing was stored


@dataclass(eq=False)
class ImportJob:
    """One upload on its way into a list."""

    id: str
    path: Path
    name: str  # the uploaded file's name, as shown (and in the consent source)
    meta: ListMeta
    new_list: bool
    prune: bool
    size: int
    owner: str
    created_at: datetime
    started: float = field(default_factory=time.monotonic)
    stage: Stage = Stage.CHECKING
    done: int = 0  # bytes of the file read by the running pass
    report: lists.ImportReport | None = None
    error: str | None = None  # the reason the file was refused (English, as the CLI says it)
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None

    @property
    def running(self) -> bool:
        return self.stage in (Stage.CHECKING, Stage.APPLYING)

    @property
    def percent(self) -> int:
        return 100 if self.size <= 0 else min(100, self.done * 100 // self.size)

    def advance(self, done: int) -> None:
        self.done = done


class ImportDesk:
    """The imports this process holds, by id; their files under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.jobs: dict[str, ImportJob] = {}
        self._swept = float("-inf")

    def get(self, job_id: str) -> ImportJob | None:
        return self.jobs.get(job_id)

    def add(self, job: ImportJob) -> None:
        self.jobs[job.id] = job
        job.timer = asyncio.get_running_loop().call_later(KEPT, self._expire, job.id)

    def drop(self, job: ImportJob) -> None:
        """Forget ``job``: its task cancelled, its file deleted."""
        self.jobs.pop(job.id, None)
        if job.timer is not None:
            job.timer.cancel()
        if job.task is not None and not job.task.done():
            job.task.cancel()
        job.path.unlink(missing_ok=True)

    def _expire(self, job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is None:
            return
        if job.running:  # an apply past a day: look again in an hour
            job.timer = asyncio.get_running_loop().call_later(3600, self._expire, job_id)
        else:
            self.drop(job)

    def sweep(self) -> None:
        """Delete the uploads older than a day that no import holds (a previous process's),
        at most once an hour."""
        now = time.monotonic()
        if now - self._swept < 3600:
            return
        self._swept = now
        cutoff = time.time() - KEPT
        try:
            for path in self.folder.glob("*.csv"):
                if path.stem not in self.jobs and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("console: cannot clean %s: %s", self.folder, exc)


_desks: dict[int, ImportDesk] = {}


def desk(ctx: ConsoleContext) -> ImportDesk:
    """The import desk of this console (one per app built, forgotten with it)."""
    found = _desks.get(id(ctx))
    if found is None:
        found = _desks[id(ctx)] = ImportDesk(ctx.settings.paths.data_dir / "uploads")
        weakref.finalize(ctx, _desks.pop, id(ctx), None)
    return found


def find(job_id: str) -> ImportJob | None:
    """The import ``job_id`` in any console of this process (tests await its ``task``)."""
    return next((d.jobs[job_id] for d in _desks.values() if job_id in d.jobs), None)


__all__ = ["KEPT", "ImportDesk", "ImportJob", "Stage", "desk", "find"]
