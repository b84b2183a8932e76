"""What the web app tells the operators: ``/healthz`` (JSON; 503 when the database or the
scheduler is not well), ``/metrics`` (the Prometheus collector, figures read from storage so
every daemon reports the same), and the event loop's lag (:class:`LoopLag`).

Reads storage and the scheduler's probe; changes nothing, and knows nothing of the
subscriber pages.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mailer.clock import Clock, utc_now
from mailer.models import BounceKind, Metrics
from mailer.storage import Store
from mailer.web.headers import NO_STORE


class SchedulerProbe(Protocol):
    """What ``/healthz`` and ``/metrics`` read from the daemon's scheduler."""

    sync_interval: float
    last_sync: datetime | None
    last_lateness: float | None

    def alive(self) -> bool: ...


class LoopLag:
    """How late the event loop wakes up: the daemon's scheduling lag, for ``/metrics``."""

    def __init__(self, period: float = 0.25, window: float = 60.0) -> None:
        self.period = period
        self._recent: deque[tuple[float, float]] = deque()
        self.window = window

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(self.period)
            now = loop.time()
            self._recent.append((now, max(0.0, now - start - self.period)))
            while self._recent and now - self._recent[0][0] > self.window:
                self._recent.popleft()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Measure while the block runs (the app's lifespan)."""
        task = asyncio.create_task(self.run(), name="mailer-loop-lag")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def worst(self) -> float:
        return max((lag for _, lag in self._recent), default=0.0)


@dataclass
class Monitor:
    """The two operator endpoints, over the store, the scheduler's probe and the loop lag."""

    store: Store
    scheduler: SchedulerProbe | None = None
    clock: Clock = utc_now
    lag: LoopLag = field(default_factory=LoopLag)

    async def healthz(self, request: Request) -> Response:
        await self.store.ping()
        body: dict[str, Any] = {"status": "ok", "database": "ok"}
        healthy = True
        probe = self.scheduler
        if probe is None:
            body["scheduler"] = "not in this process"
        else:
            age = None
            if probe.last_sync is not None:
                age = round((self.clock() - probe.last_sync).total_seconds(), 3)
            stale = age is None or age > 3 * probe.sync_interval + 5
            alive = probe.alive()
            body["scheduler"] = "ok" if alive and not stale else ("stale" if alive else "stopped")
            body["last_sync_age_seconds"] = age
            healthy = alive and not stale
        if not healthy:
            body["status"] = "unhealthy"
        return JSONResponse(body, status_code=200 if healthy else 503, headers=NO_STORE)

    async def metrics(self, request: Request) -> Response:
        figures = await self.store.figures.metrics(now=self.clock(), recent=timedelta(days=1))
        bounces = await self.store.bounces.counts(), await self.store.bounces.forged()
        registry = CollectorRegistry()
        registry.register(_Snapshot(figures, self, bounces))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Snapshot(Collector):
    """One scrape's figures, as Prometheus metric families."""

    def __init__(
        self, figures: Metrics, monitor: Monitor, bounces: tuple[dict[str, int], int]
    ) -> None:
        self.figures = figures
        self.monitor = monitor
        self.bounces = bounces

    def _bounces(self) -> Iterator[CounterMetricFamily]:
        by_kind, forged = self.bounces
        total = CounterMetricFamily(
            "mailer_bounces",
            "Recipients of bounces and complaints stored, by kind (every daemon, all time).",
            labels=["kind"],
        )
        for kind in BounceKind:
            total.add_metric([kind.value], by_kind.get(kind.value, 0))
        yield total
        yield CounterMetricFamily(
            "mailer_bounces_forged",
            "Bounces whose return path's signature did not check out (kept, counted for nothing).",
            value=forged,
        )

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        f = self.figures
        deliveries = GaugeMetricFamily(
            "mailer_deliveries",
            "Deliveries of recent sends (running, paused, or finished in the last day) by status.",
            labels=["send", "campaign", "action", "status"],
        )
        rate = GaugeMetricFamily(
            "mailer_send_rate",
            "Messages accepted per second over the last minute, by send.",
            labels=["send", "campaign"],
        )
        for s in f.sends:
            for status, n in s.counts.items():
                deliveries.add_metric([str(s.send_id), s.campaign, s.action, status], n)
            rate.add_metric([str(s.send_id), s.campaign], s.rate)
        yield deliveries
        yield rate
        replies = GaugeMetricFamily(
            "mailer_smtp_replies",
            "Deliveries of recent sends by the SMTP reply code of their last attempt.",
            labels=["code"],
        )
        for code, n in sorted(f.replies.items()):
            replies.add_metric([str(code)], n)
        yield replies
        yield GaugeMetricFamily(
            "mailer_queue_depth",
            "Deliveries queued or deferred in running and paused sends.",
            value=f.queue_depth,
        )
        sends = GaugeMetricFamily("mailer_sends", "Sends by status.", labels=["status"])
        for status, n in f.sends_by_status.items():
            sends.add_metric([status], n)
        yield sends
        yield from self._bounces()
        yield GaugeMetricFamily(
            "mailer_event_loop_lag_seconds",
            "Worst lateness of this process's event loop over the last minute.",
            value=self.monitor.lag.worst,
        )
        probe = self.monitor.scheduler
        if probe is not None:
            if probe.last_sync is not None:
                yield GaugeMetricFamily(
                    "mailer_scheduler_last_sync_age_seconds",
                    "Seconds since the scheduler last rebuilt its jobs from storage.",
                    value=(self.monitor.clock() - probe.last_sync).total_seconds(),
                )
            if probe.last_lateness is not None:
                yield GaugeMetricFamily(
                    "mailer_scheduler_lag_seconds",
                    "How late the last scheduled send was queued after its due time.",
                    value=probe.last_lateness,
                )
