"""The rate limiter: the one choke point every connection of a transport passes, with
back-pressure (AIMD) when the relay asks us to slow down.

It only spaces the starts of messages and learns from results; it sends nothing, and it
knows nothing of SMTP but a :class:`~.contract.Result`'s ``throttled`` and ``outcome``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable

from mailer.transport.contract import Outcome, Result

log = logging.getLogger("mailer.transport")


class RateLimiter:
    """The one choke point for every connection: messages per second, per rolling hour, AIMD.

    Starts are spaced ``1/rate`` apart (no burst), and at most ``per_hour`` starts fall in any
    hour. Back-pressure: a throttled reply halves the rate (at most once a second, never below
    ``floor``; with no rate configured it starts from the rate observed over the last seconds);
    each message sent then adds ``RECOVERY`` msg/s, so the rate grows by about a fifth per
    second of sending (from 1 msg/s back to 1,000 in about 35 s), up to the configured rate,
    or back to unlimited once the rate that drew the throttle is reached.
    """

    OBSERVE_WINDOW = 10.0
    DECREASE_INTERVAL = 1.0
    RECOVERY = 0.2  # msg/s added per message sent

    def __init__(
        self,
        per_second: float = 0,
        per_hour: int = 0,
        *,
        floor: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._configured = per_second if per_second > 0 else None
        self._rate = self._configured
        self._ceiling = self._configured
        self._floor = min(floor, self._configured) if self._configured else floor
        self._per_hour = per_hour
        self._clock = clock
        self._next = -math.inf  # earliest start of the next message
        self._hour: deque[float] = deque(maxlen=per_hour or 1)  # last starts (when per_hour)
        self._sent: deque[float] = deque()  # completion times, for the observed rate
        self._last_decrease = -math.inf

    @property
    def current_rate(self) -> float | None:
        """Messages per second now allowed; ``None`` when unlimited."""
        return self._rate

    def reserve(self) -> float:
        """Book the next start; return how many seconds to wait for it (0: go now)."""
        now = self._clock()
        start = max(now, self._next)
        if self._per_hour and len(self._hour) == self._per_hour:
            start = max(start, self._hour[0] + 3600.0)
        self._next = start + (1.0 / self._rate if self._rate else 0.0)
        if self._per_hour:
            self._hour.append(start)
        return start - now

    async def acquire(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)

    def record(self, result: Result) -> None:
        """Feed a result back: throttled slows down, sent speeds up again."""
        now = self._clock()
        while self._sent and self._sent[0] < now - self.OBSERVE_WINDOW:
            self._sent.popleft()
        if result.throttled:
            self._slow_down(now)
        elif result.outcome is Outcome.SENT:
            self._sent.append(now)
            self._speed_up()

    def _observed(self, now: float) -> float:
        if not self._sent:
            return self._floor
        return len(self._sent) / max(now - self._sent[0], 1.0)

    def _slow_down(self, now: float) -> None:
        if now - self._last_decrease < self.DECREASE_INTERVAL:
            return  # one decrease per burst of throttled replies, not one per connection
        self._last_decrease = now
        base = self._rate if self._rate is not None else self._observed(now)
        if self._configured is None:
            self._ceiling = max(base, self._floor)
        self._rate = max(self._floor, base / 2)
        self._next = max(self._next, now + 1.0 / self._rate)
        log.info("the relay asks to slow down: %.1f messages per second", self._rate)

    def _speed_up(self) -> None:
        if self._rate is None:
            return
        self._rate += self.RECOVERY
        if self._ceiling is not None and self._rate >= self._ceiling:
            self._rate = self._configured
            log.info(
                "sending rate recovered: %s",
                f"{self._rate:.1f} messages per second" if self._rate else "unlimited",
            )
