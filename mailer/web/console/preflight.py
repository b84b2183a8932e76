"""Console pages: The pre-flight of a campaign (every recipient rendered, with progress, those who
cannot be named with why) and its test send.

(Being written: issue 15.)
"""

from __future__ import annotations

from mailer.web.console.guard import ConsoleRoute

ROUTES: tuple[ConsoleRoute, ...] = ()
