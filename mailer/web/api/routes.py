"""The REST API's route table: every module's ``ROUTES`` (a list of
:class:`~mailer.web.api.core.ApiRoute`), in the order the OpenAPI document shows them.

A new resource module adds its import and one entry to :data:`MODULES`; the app, the
OpenAPI document, the scope test (every route without a key, with a bad key, with a key
lacking its scope) and the Schemathesis run all read :func:`api_routes`, so a new route is
mounted, documented and checked at once.
"""

from __future__ import annotations

from types import ModuleType

from mailer.web.api import (
    campaign_steps,
    campaigns,
    events,
    hooks,
    people,
    sends,
    suppressions,
)
from mailer.web.api.core import ApiRoute

# One line per resource module (its ROUTES), in the document's order.
MODULES: tuple[ModuleType, ...] = (
    people,
    suppressions,
    campaigns, campaign_steps, events, sends, hooks,  # A2's
)  # fmt: skip


def api_routes() -> list[ApiRoute]:
    """Every route of every module, checked for a duplicate (method, path) and operation."""
    found: list[ApiRoute] = []
    seen: set[tuple[str, str]] = set()
    names: set[str] = set()
    for module in MODULES:
        for route in module.ROUTES:
            where = (route.method, route.path)
            if where in seen or route.name in names:
                raise RuntimeError(f"the API route {route.method} {route.path} is declared twice")
            seen.add(where)
            names.add(route.name)
            found.append(route)
    return found
