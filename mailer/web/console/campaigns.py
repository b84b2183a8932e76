"""Console pages: The campaigns' pages: the list (filter by kind and status) and a campaign's page
(its summary, approval panel and timeline).

(Being written: issue 15.)
"""

from __future__ import annotations

from mailer.web.console.guard import ConsoleRoute

ROUTES: tuple[ConsoleRoute, ...] = ()
