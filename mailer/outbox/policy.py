"""When a webhook event is tried again, and what an endpoint's answer means: pure values.

- **Delivered**: a 2xx answer. Nothing else: a 3xx is not followed (a redirect could aim the
  daemon elsewhere, past the address check) and counts as a failure, retried; so do 4xx and
  5xx, timeouts and refused connections, as the Standard Webhooks guidance says.
- **410 Gone** is the receiver saying the endpoint no longer exists: the endpoint is disabled
  at once (with the alert), its events kept pending, so that ``mailer webhooks enable ID``
  delivers what it missed.
- **Backoff**: ``5 s x 3^n`` after the n-th failed attempt (5 s, 15 s, 45 s, 2 min 15 s,
  6 min 45 s, 20 min, 1 h, 3 h, 9 h), capped at 12 h, each jittered by +/-20 % (an injected
  random in [0, 1)) so that the retries of a backlog spread out; a ``Retry-After`` answer
  (429, 503) is honoured up to the cap. The last attempt is made at the event's deadline,
  ``MAILER_WEBHOOKS__MAX_AGE`` hours after it was written; after that it is given up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Answer:
    """What one POST got: the status code (``None``: no answer) or the error, in one line."""

    code: int | None
    error: str | None
    took_ms: int
    text: str = ""
    retry_after: str | None = None


BASE = timedelta(seconds=5)
FACTOR = 3
CAP = timedelta(hours=12)
JITTER = 0.2  # +/- 20 %

Random = Callable[[], float]
"""A number in [0, 1): ``random.random``, or a fixed one in the tests."""


class Verdict(StrEnum):
    """What one attempt's answer means."""

    DELIVERED = "delivered"
    RETRY = "retry"
    GONE = "gone"  # 410: disable the endpoint, keep its events


def verdict(code: int | None) -> Verdict:
    """The meaning of an answer's status code (``None``: no answer came)."""
    if code is not None and 200 <= code < 300:
        return Verdict.DELIVERED
    if code == 410:
        return Verdict.GONE
    return Verdict.RETRY


def backoff(failures: int, rand: Random, retry_after: float | None = None) -> timedelta:
    """The wait after the ``failures``-th failed attempt in a row (1 for the first)."""
    exponent = max(0, failures - 1)
    plain = CAP if exponent > 20 else min(CAP, BASE * FACTOR**exponent)
    jittered = plain * (1 - JITTER + 2 * JITTER * min(max(rand(), 0.0), 1.0))
    if retry_after is not None and retry_after > 0:
        jittered = max(jittered, timedelta(seconds=min(retry_after, CAP.total_seconds())))
    return min(jittered, CAP)


def next_attempt(
    *,
    created_at: datetime,
    failures: int,
    now: datetime,
    max_age: timedelta,
    rand: Random,
    retry_after: float | None = None,
) -> datetime | None:
    """When to try an event again after its ``failures``-th failed attempt at ``now``;
    ``None``: given up, the event is ``max_age`` old."""
    deadline = created_at + max_age
    if now >= deadline:
        return None
    return min(now + backoff(failures, rand, retry_after), deadline)


def retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` header's seconds (the delta form only; a date is ignored)."""
    digits = (value or "").strip()[:9]
    if not digits or not (digits.isascii() and digits.isdecimal()):  # "²" is a digit too
        return None
    return float(int(digits))
