"""Console pages: A campaign's approval: submit (editor), approve or send back (sender), schedule
(sender), each a confirmation page whose POST does it.

(Being written: issue 15.)
"""

from __future__ import annotations

from mailer.web.console.guard import ConsoleRoute

ROUTES: tuple[ConsoleRoute, ...] = ()
