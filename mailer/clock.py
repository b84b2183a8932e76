"""The one clock: what time it is, in UTC, for every part that needs to know.

Pure stages never read it (they are handed ``now``); the parts that do (dispatch, the
scheduler, the web app, the CLI) take a ``Clock`` so tests can pass their own. Durations are
measured with ``time.monotonic``, never with this wall clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Something that says what time it is now, as an aware UTC datetime."""


def utc_now() -> datetime:
    """Now, as an aware datetime in UTC."""
    return datetime.now(UTC)
