"""Console pages: A campaign's controls once scheduled: pause, resume, cancel; an event's update
(new time or place) and cancellation, each behind a confirmation that says who will get what.

(Being written: issue 15.)
"""

from __future__ import annotations

from mailer.web.console.guard import ConsoleRoute

ROUTES: tuple[ConsoleRoute, ...] = ()
