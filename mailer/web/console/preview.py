"""Console pages: The preview of a campaign as the send pipeline renders it: live from the form,
and of the saved version as any member of its lists, in either language.

(Being written: issue 15.)
"""

from __future__ import annotations

from mailer.web.console.guard import ConsoleRoute

ROUTES: tuple[ConsoleRoute, ...] = ()
