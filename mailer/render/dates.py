"""Dates in templates: the ``date``, ``time`` and ``datetime`` filters, and an event's dates.

The filters format in the recipient's locale and the send's time zone (both read from the
template context, French and Europe/Paris when absent); :func:`event_context` is the event as
the templates see it, in that zone, with the days left counted from ``now``, which comes in:
this module reads no clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, format_time
from jinja2 import pass_context
from jinja2.runtime import Context

from mailer.models import EventInfo


def _zone(context: Context) -> ZoneInfo:
    zone = context.get("timezone")
    return zone if isinstance(zone, ZoneInfo) else ZoneInfo("Europe/Paris")


@pass_context
def date_filter(context: Context, value: datetime, fmt: str = "long") -> str:
    return format_date(value.astimezone(_zone(context)), fmt, locale=context.get("locale", "fr"))


@pass_context
def time_filter(context: Context, value: datetime, fmt: str = "short") -> str:
    return format_time(value, fmt, tzinfo=_zone(context), locale=context.get("locale", "fr"))


@pass_context
def datetime_filter(context: Context, value: datetime, fmt: str = "long") -> str:
    return format_datetime(value, fmt, tzinfo=_zone(context), locale=context.get("locale", "fr"))


def event_context(event: EventInfo | None, now: datetime, zone: ZoneInfo) -> dict[str, Any] | None:
    """``event`` as the templates get it (``event.start``, ``event.days_left``...)."""
    if event is None:
        return None
    start = event.start.astimezone(zone)
    days_left = (start.date() - now.astimezone(zone).date()).days
    return {
        "title": event.title,
        "start": start,
        "end": event.end.astimezone(zone) if event.end else None,
        "place": event.place,
        "link": event.link,
        "description": event.description,
        "days_left": max(days_left, 0),
        "status": event.status,
        "sequence": event.sequence,
    }
