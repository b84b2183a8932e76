"""The sign-in throttle: failed attempts counted per account and per client address in a
sliding 15 minutes, in this process (:class:`SignInThrottle`).

An unknown account is counted like a known one, so the throttle's answer says nothing about
whether an address has an account. Several daemons each count their own attempts.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque

WINDOW = 15 * 60.0
KEPT = 10_000  # keys remembered at most (the oldest forgotten first)


class _Window:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _times(self, key: str, now: float) -> deque[float]:
        times = self._seen.pop(key, None) or deque()
        while times and now - times[0] > WINDOW:
            times.popleft()
        self._seen[key] = times
        while len(self._seen) > KEPT:
            self._seen.popitem(last=False)
        return times

    def full(self, key: str, now: float) -> bool:
        return len(self._times(key, now)) >= self.limit

    def add(self, key: str, now: float) -> None:
        self._times(key, now).append(now)

    def clear(self, key: str) -> None:
        self._seen.pop(key, None)

    def wait(self, key: str, now: float) -> float:
        times = self._times(key, now)
        return max(0.0, WINDOW - (now - times[0])) if times else 0.0


class SignInThrottle:
    """At most ``per_account`` failures per account and ``per_address`` per client address
    in 15 minutes; then sign-in is refused, right password or not, until the window moves."""

    def __init__(self, *, per_account: int, per_address: int) -> None:
        self._accounts = _Window(per_account)
        self._addresses = _Window(per_address)

    def blocked(self, account: str, address: str, now: float | None = None) -> float:
        """Seconds to wait before trying again (0: go ahead)."""
        now = time.monotonic() if now is None else now
        account = account.strip().lower()
        waits = [
            self._accounts.wait(account, now) if self._accounts.full(account, now) else 0.0,
            self._addresses.wait(address, now) if self._addresses.full(address, now) else 0.0,
        ]
        return max(waits)

    def failed(self, account: str, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._accounts.add(account.strip().lower(), now)
        self._addresses.add(address, now)

    def succeeded(self, account: str) -> None:
        """A successful sign-in clears the account's failures (not the address's)."""
        self._accounts.clear(account.strip().lower())
