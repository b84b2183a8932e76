"""Dates in templates: the ``date``, ``time`` and ``datetime`` filters.

The filters format in the recipient's locale and the send's time zone (both read from the
template context, French and Europe/Paris when absent); in French the first day of a month
reads "1er" before its month's name ("lundi 1er décembre 2026"), never in "11", "21",
"01/12/2026" or a time (:func:`first_of_month`, which :mod:`mailer.render.moments` uses too).
This module reads no clock.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, format_time
from jinja2 import pass_context
from jinja2.runtime import Context

# "1" alone (no digit, slash, dot, colon or dash before it) then a French month's name, as
# babel writes them in full and abbreviated ("janv.", "févr.", "avr.", "juil.", "sept."...).
_FIRST_OF_MONTH = re.compile(
    r"(?<![\d/.:\-])1(?=[ \u00a0\u202f]"
    r"(?:janv|févr|mars|avr|mai|juin|juil|août|sept|oct|nov|déc))"
)


def first_of_month(text: str, locale: object) -> str:
    """``text`` with "1er" for the first of a month, in French; as it is otherwise."""
    if "1" in text and str(locale).startswith("fr"):
        return _FIRST_OF_MONTH.sub("1er", text, count=1)
    return text


def _zone(context: Context) -> ZoneInfo:
    zone = context.get("timezone")
    return zone if isinstance(zone, ZoneInfo) else ZoneInfo("Europe/Paris")


@pass_context
def date_filter(context: Context, value: datetime, fmt: str = "long") -> str:
    locale = context.get("locale", "fr")
    return first_of_month(format_date(value.astimezone(_zone(context)), fmt, locale=locale), locale)


@pass_context
def time_filter(context: Context, value: datetime, fmt: str = "short") -> str:
    return format_time(value, fmt, tzinfo=_zone(context), locale=context.get("locale", "fr"))


@pass_context
def datetime_filter(context: Context, value: datetime, fmt: str = "long") -> str:
    locale = context.get("locale", "fr")
    return first_of_month(format_datetime(value, fmt, tzinfo=_zone(context), locale=locale), locale)
