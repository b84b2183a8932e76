"""What every subscriber page is handed (:class:`PageContext`): the settings, the store, the
signer, the views, the clock and the sign-up limit, built once by the app factory.

Holds no route and no request; it must not grow a method that sends mail (the web app hands a
queued send to ``on_send`` and never imports dispatch or transport).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from mailer.clock import Clock, utc_now
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer
from mailer.web.limits import IpLimit
from mailer.web.views import Views


@dataclass
class PageContext:
    settings: Settings
    store: Store
    signer: Signer
    views: Views
    on_send: Callable[[int], None] | None = None
    clock: Clock = utc_now
    signups: IpLimit = field(init=False)

    def __post_init__(self) -> None:
        self.signups = IpLimit(self.settings.web.signups_per_ip)


def route_name(request: Request) -> str:
    """The first segment of the path, for the logs: never the token, which is a credential."""
    return "/" + request.url.path.split("/")[1][:20]
