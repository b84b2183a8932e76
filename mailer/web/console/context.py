"""What every console page is handed (:class:`ConsoleContext`): the settings, the store, the
console's views, the clock, the sign-in throttle, the daemon's ``on_send`` and ``test_mail``
(how a test send leaves: the console never imports the transport), the pre-flights running;
and the signed-in staff member of a request (:class:`Staffer`).

Built once by :func:`mailer.web.console.routes.console_routes`; holds no route.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from starlette.requests import Request

from mailer.clock import Clock, utc_now
from mailer.message import Built
from mailer.models import Role, StaffUser, role_allows
from mailer.settings import Settings
from mailer.storage import Store
from mailer.web.console.live import CHEAP, LiveProgress
from mailer.web.console.preflight_runs import PreflightRuns
from mailer.web.console.throttle import SignInThrottle
from mailer.web.console.views import ConsoleViews
from mailer.web.limits import client_ip


@dataclass(frozen=True, slots=True)
class Staffer:
    """The staff member a request is signed in as, with its session's CSRF token."""

    user: StaffUser
    csrf: str
    lang: str
    session_hash: str

    def can(self, needed: Role) -> bool:
        return role_allows(self.user.role, needed)


@dataclass(frozen=True, slots=True)
class TestResult:
    """What the relay answered to a test send."""

    delivered: bool
    reply: str


TestMail = Callable[[Built], Awaitable[TestResult]]


@dataclass
class ConsoleContext:
    settings: Settings
    store: Store
    views: ConsoleViews
    on_send: Callable[[int], None] | None = None
    test_mail: TestMail | None = None  # None: test sends are unavailable here
    clock: Clock = utc_now
    throttle: SignInThrottle = field(init=False)
    live: LiveProgress = field(init=False)
    preflights: PreflightRuns = field(init=False)

    def __post_init__(self) -> None:
        cheap = CHEAP if self.settings.console.cache_counts else float("inf")
        self.live = LiveProgress(self.store, self.clock, cheap=cheap)
        self.preflights = PreflightRuns()
        console = self.settings.console
        self.throttle = SignInThrottle(
            per_account=console.login_attempts, per_address=console.login_attempts_per_ip
        )

    async def close(self) -> None:
        """What the app awaits when it stops: counts in flight, pre-flights running."""
        await self.live.close()
        await self.preflights.close()

    @property
    def idle(self) -> timedelta:
        return timedelta(seconds=self.settings.console.session_idle)

    @property
    def absolute(self) -> timedelta:
        return timedelta(seconds=self.settings.console.session_max)

    def secure_cookies(self, request: Request) -> bool:
        """``Secure`` cookies when the console is reached over https: the request says so
        (a trusted proxy's X-Forwarded-Proto included), or, on the web port, the public base
        URL is https. The console's own listener may be plain http on an internal address
        while the public base URL is https: there, only the request decides."""
        if request.url.scheme == "https":
            return True
        own_listener = self.settings.console.port is not None
        return not own_listener and self.settings.web.base_url.startswith("https://")

    async def audit(
        self,
        staff: Staffer,
        request: Request,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Write what ``staff`` just changed to the audit log (who, what, when, from where);
        the slow figures kept in memory are read again at the next look."""
        self.live.forget()
        await self.store.audit.record(
            actor=staff.user.email,
            action=action,
            target=target,
            details=details,
            client=client_ip(request),
            now=self.clock(),
        )
