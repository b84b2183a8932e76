"""Console pages: Composing a campaign: the form of each kind (new, edit), saved as a draft, and
the campaign downloaded as a campaign file.

(Being written: issue 15.)
"""

from __future__ import annotations

from mailer.web.console.guard import ConsoleRoute

ROUTES: tuple[ConsoleRoute, ...] = ()
