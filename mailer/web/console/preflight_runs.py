"""The pre-flights running in this process (:class:`PreflightRuns`), one per campaign version:
each a task that renders every recipient of the campaign's lists in a worker thread, its
progress read by the pre-flight page. Held by the console's context; closed when the app stops.

(Being written: issue 15.)
"""

from __future__ import annotations


class PreflightRuns:
    """The pre-flights of this process, by campaign id and version."""

    async def close(self) -> None:
        """Stop the pre-flights still running (the app is stopping)."""
