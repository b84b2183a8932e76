"""The pre-flights running in this process (:class:`PreflightRuns`), one per campaign version:
each a task that renders every recipient of the campaign's lists in a worker thread, its
progress (:class:`PreflightRun`) read by the pre-flight page and its outcome
(:class:`PreflightResult`) by the approval page. Held by the console's context; closed when
the app stops. Also the one :class:`~mailer.render.Renderer` the console's previews share,
made again when a template file changes, and each staff member's test sends of the last
minute (:meth:`PreflightRuns.allow_test`).

Kept in memory: per process, forgotten at a restart. The work itself (what to render, how)
is handed in by :mod:`mailer.web.console.preflight`; this module only keeps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mailer.render import CheckReport, LanguageTally, Renderer

log = logging.getLogger("mailer.console")

KEEP_FAILURES = 100  # the failures a run names (address and reason); the others are counted
KEEP_RUNS = 50  # finished runs kept; the oldest go first
TESTS_PER_MINUTE = 10  # test sends one staff member may make in a minute


@dataclass(frozen=True, slots=True)
class PreflightResult:
    """What a pre-flight found: how many recipients, how many could not be rendered, and
    whether it has finished (the approval snapshot's ``preflight``)."""

    total: int
    failed: int
    finished: bool


@dataclass
class PreflightRun:
    """One campaign version's pre-flight, as it goes."""

    campaign_id: int
    version: int
    name: str
    started_by: str
    started_at: datetime
    stage: str = "counting"  # counting -> checking -> done | failed
    total: int = 0  # the distinct recipients (known once counted)
    done: int = 0
    failed: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # address, reason
    tally: LanguageTally = field(default_factory=LanguageTally)
    error: str | None = None  # what stopped it (a template error for everyone, say)
    finished_at: datetime | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def finished(self) -> bool:
        return self.stage in ("done", "failed")

    def add(self, report: CheckReport) -> None:
        """A chunk's check added to the run's figures (its first failures named)."""
        self.done += report.total
        self.failed += report.failed
        self.failures.extend(report.reasons[: max(KEEP_FAILURES - len(self.failures), 0)])
        other = report.languages
        for locale, count in other.counts.items():
            self.tally.counts[locale] = self.tally.counts.get(locale, 0) + count
        self.tally.without += other.without
        self.tally.fallbacks += other.fallbacks
        room = 5 - len(self.tally.examples)
        self.tally.examples.extend(other.examples[: max(room, 0)])

    def result(self) -> PreflightResult:
        """Its figures; a run stopped for everyone (a template error) failed everyone."""
        failed = self.total if self.stage == "failed" else self.failed
        return PreflightResult(self.total, failed, self.finished)


Work = Callable[[PreflightRun], Awaitable[None]]


class PreflightRuns:
    """The pre-flights of this process, by campaign id and version."""

    def __init__(self) -> None:
        self._runs: dict[tuple[int, int], PreflightRun] = {}
        self._renderer: tuple[Path, int, Renderer] | None = None
        self._lock = threading.Lock()
        self._tests: dict[str, deque[float]] = {}

    def get(self, campaign_id: int, version: int) -> PreflightRun | None:
        return self._runs.get((campaign_id, version))

    def latest(self, campaign_id: int) -> PreflightRun | None:
        """The campaign's most recent run, whatever its version (to say it is stale)."""
        runs = [r for (cid, _), r in self._runs.items() if cid == campaign_id]
        return max(runs, key=lambda r: r.version, default=None)

    def result(self, campaign_id: int, version: int) -> PreflightResult | None:
        """The pre-flight of that version (None: none was run in this process)."""
        run = self.get(campaign_id, version)
        return None if run is None else run.result()

    def start(self, run: PreflightRun, work: Work) -> tuple[PreflightRun, bool]:
        """Start ``work`` on ``run`` unless that version's pre-flight is running already;
        the run shown, and whether it is a new one. Runs of older versions are dropped."""
        key = (run.campaign_id, run.version)
        current = self._runs.get(key)
        if current is not None and not current.finished:
            return current, False
        for old in [k for k in self._runs if k[0] == run.campaign_id and k[1] < run.version]:
            self._drop(old)
        self._runs.pop(key, None)
        self._runs[key] = run
        run.task = asyncio.get_running_loop().create_task(self._run(run, work))
        self._trim()
        return run, True

    async def _run(self, run: PreflightRun, work: Work) -> None:
        try:
            await work(run)
        except asyncio.CancelledError:
            run.stage, run.error = "failed", run.error or "stopped"
            raise
        except Exception as exc:  # a database gone away: said on the page, not lost
            log.exception("console: the pre-flight of %s v%d failed", run.name, run.version)
            run.stage, run.error = "failed", str(exc) or type(exc).__name__
        else:
            if run.stage != "failed":
                run.stage = "done"

    def _drop(self, key: tuple[int, int]) -> None:
        run = self._runs.pop(key)
        if run.task is not None and not run.task.done():
            run.task.cancel()

    def _trim(self) -> None:
        finished = [k for k, r in self._runs.items() if r.finished]
        for key in finished[: max(len(finished) - KEEP_RUNS, 0)]:
            self._drop(key)

    def renderer(self, folder: Path) -> Renderer:
        """One Renderer (its Jinja environment, compiled templates) for the console, made
        again when a file of the templates folder changes; safe to use from worker threads."""
        stamp = max((p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()), default=0)
        with self._lock:
            kept = self._renderer
            if kept is None or kept[0] != folder or kept[1] != stamp:
                kept = (folder, stamp, Renderer(folder))
                self._renderer = kept
            return kept[2]

    def allow_test(self, who: str) -> bool:
        """Whether ``who`` may make one more test send now (counted if so): at most
        :data:`TESTS_PER_MINUTE` in any minute."""
        now = time.monotonic()
        times = self._tests.setdefault(who, deque())
        while times and now - times[0] >= 60:
            times.popleft()
        if len(times) >= TESTS_PER_MINUTE:
            return False
        times.append(now)
        if len(self._tests) > 1000:  # people who tested long ago
            for key in [k for k, v in self._tests.items() if not v or now - v[-1] >= 60]:
                del self._tests[key]
        return True

    async def close(self) -> None:
        """Stop the pre-flights still running (the app is stopping)."""
        tasks = [r.task for r in self._runs.values() if r.task is not None and not r.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
