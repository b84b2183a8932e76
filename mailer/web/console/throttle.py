"""The sign-in throttle: attempts counted per account and per client address in a sliding
15 minutes, in this process (:class:`SignInThrottle`).

An attempt is counted when it starts, before its password is checked, so that attempts sent
all at once are counted like attempts sent one after another; a successful one is then taken
back (the account's count is cleared, the address's last attempt removed), so that an office
behind one address is not throttled by its own sign-ins. An unknown account is counted like a
known one, so the throttle's answer says nothing about whether an address has an account.
Looking does not remember anything, so looks cannot push counted attempts out of memory; IPv6
addresses are counted by their /64 (one host's share). Several daemons each count their own.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque

WINDOW = 15 * 60.0
KEPT = 50_000  # keys remembered at most (the oldest forgotten first)


class _Window:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _current(self, key: str, now: float) -> deque[float] | None:
        times = self._seen.get(key)
        if times is None:
            return None
        while times and now - times[0] > WINDOW:
            times.popleft()
        if not times:
            del self._seen[key]
            return None
        return times

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        times = self._current(key, now)
        if times is None or len(times) < self.limit:
            return 0.0
        return max(0.0, WINDOW - (now - times[-self.limit]))

    def add(self, key: str, now: float) -> None:
        times = self._current(key, now) or deque()
        times.append(now)
        self._seen.pop(key, None)
        self._seen[key] = times
        while len(self._seen) > KEPT:
            self._seen.popitem(last=False)

    def take_back(self, key: str) -> None:
        times = self._seen.get(key)
        if times:
            times.pop()

    def clear(self, key: str) -> None:
        self._seen.pop(key, None)


def address_key(address: str) -> str:
    """The throttle's key for a client address: itself, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class SignInThrottle:
    """At most ``per_account`` attempts per account and ``per_address`` per client address
    in 15 minutes, successful ones not counted; then sign-in is refused, right password or
    not, until the window moves."""

    def __init__(self, *, per_account: int, per_address: int) -> None:
        self._accounts = _Window(per_account)
        self._addresses = _Window(per_address)

    def begin(self, account: str, address: str, now: float | None = None) -> float:
        """Start an attempt: the seconds to wait if it is refused (nothing counted), else 0,
        and the attempt is counted until :meth:`succeeded` takes it back."""
        now = time.monotonic() if now is None else now
        account, address = account.strip().lower(), address_key(address)
        wait = max(self._accounts.wait(account, now), self._addresses.wait(address, now))
        if wait:
            return wait
        self._accounts.add(account, now)
        self._addresses.add(address, now)
        return 0.0

    def succeeded(self, account: str, address: str) -> None:
        """The attempt was right: the account's count is cleared, the address's last one
        taken back."""
        self._accounts.clear(account.strip().lower())
        self._addresses.take_back(address_key(address))
