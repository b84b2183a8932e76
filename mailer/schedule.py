"""When a campaign's sends are due: local times in the campaign's zone to UTC instants. Pure.

- A local time that does not exist (the spring-forward gap, e.g. 02:30 on 2026-03-29 in
  Paris) is refused with the two nearest valid times.
- An ambiguous one (the autumn fold, 02:30 on 2026-10-25) takes the first occurrence unless
  the campaign says ``ambiguous = "second"``; the choice is reported.
- Reminders are offsets before the event's start ("7d", "1d", "2h", "30m"); one at or after
  the start is refused; one already in the past when the campaign is created is left out.
- A newsletter's cron expression runs in the campaign's zone; each occurrence is keyed by its
  local date ("issue:2026-12-01"): at most one issue a day, so the autumn fold's double fire
  of a 02:30 job is one send, and the spring gap's missing 02:30 still gets its issue.
  Its weekday numbers are the crontab's (0 and 7 Sunday, 1 Monday), not APScheduler 3's
  (0 Monday): ``0 9 * * 1`` is every Monday.
- :func:`describe_cron` says a cron expression in French or English words, and
  :func:`next_issues` gives its next dates: what the newsletter form shows as it is typed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from mailer.errors import MailerError

OFFSET = re.compile(r"^\s*(\d+)\s*([dhm])\s*$")
UNITS = {"d": "days", "h": "hours", "m": "minutes"}
MAX_OFFSET = {"d": 365, "h": 365 * 24, "m": 365 * 24 * 60}  # a reminder at most a year ahead


class ScheduleError(MailerError, ValueError):
    """A time that cannot be scheduled; the message says why and what would work."""


@dataclass(frozen=True, slots=True)
class Planned:
    key: str  # stable within the campaign: announce, invitation, reminder:P7D, issue:2026-12-01
    action: str
    due: datetime  # aware, UTC
    note: str = ""  # e.g. the choice made for an ambiguous local time


def resolve(
    local: datetime, zone: ZoneInfo, *, ambiguous: str = "first", what: str
) -> tuple[datetime, str]:
    """A naive (or already aware) local time as an aware UTC instant, with a note."""
    if local.tzinfo is not None:
        return local.astimezone(UTC), ""
    first = local.replace(tzinfo=zone, fold=0)
    second = local.replace(tzinfo=zone, fold=1)
    if first.utcoffset() != second.utcoffset():
        # Either a gap (the wall time never happens) or a fold (it happens twice).
        round_trip = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
        if round_trip != local:
            before, after = _gap_edges(local, zone)
            raise ScheduleError(
                f"{what}: {local:%Y-%m-%d %H:%M} does not exist in {zone.key} (the clocks "
                f"go forward that night); the nearest valid times are {before:%H:%M} and "
                f"{after:%H:%M}"
            )
        chosen = second if ambiguous == "second" else first
        other = first if chosen is second else second
        note = (
            f"{what}: {local:%Y-%m-%d %H:%M} happens twice in {zone.key}; using the "
            f"{'second' if chosen is second else 'first'} ({chosen:%H:%M %Z}, "
            f"{chosen.astimezone(UTC):%H:%M} UTC), not {other:%H:%M %Z}"
        )
        return chosen.astimezone(UTC), note
    return first.astimezone(UTC), ""


def _gap_edges(local: datetime, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The last valid minute before a gap and the first after it (local wall times)."""
    before = local
    while True:
        before -= timedelta(minutes=1)
        probe = before.replace(tzinfo=zone)
        if probe.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == before:
            break
    after = local
    while True:
        after += timedelta(minutes=1)
        probe = after.replace(tzinfo=zone)
        if probe.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == after:
            break
    return before, after


def parse_offset(text: str) -> tuple[timedelta, str]:
    """ "7d" -> (7 days, "P7D"); "2h" -> (2 hours, "PT2H"); "30m" -> (30 minutes, "PT30M")."""
    match = OFFSET.match(text)
    if not match:
        raise ScheduleError(f"reminder {text!r}: expected a number and d, h or m, such as 7d or 2h")
    digits, unit = match.group(1), match.group(2)
    amount = int(digits) if len(digits) <= 9 else MAX_OFFSET[unit] + 1
    if amount <= 0:
        raise ScheduleError(f"reminder {text!r}: the offset must be more than zero")
    if amount > MAX_OFFSET[unit]:
        raise ScheduleError(
            f"reminder {text!r}: at most 365 days before the start (365d, 8760h or 525600m)"
        )
    iso = f"P{amount}D" if unit == "d" else f"PT{amount}{unit.upper()}"
    return timedelta(**{UNITS[unit]: amount}), iso


def reminders(
    start: datetime,
    offsets: list[str],
    *,
    now: datetime,
    zone: ZoneInfo,
    scale: float = 1.0,
) -> tuple[list[Planned], list[str]]:
    """Reminder sends before ``start``; those already past are left out and reported.

    Day offsets count calendar days in the event's zone (D-1 of 09:00 is 09:00 the day
    before, even across a DST change); hours and minutes are elapsed time.
    """
    planned, notes = [], []
    seen: set[str] = set()
    for text in offsets:
        offset, iso = parse_offset(text)
        if iso in seen:
            raise ScheduleError(f"reminder {text!r} is given twice")
        seen.add(iso)
        if iso.endswith("D") and scale == 1.0:
            wall = start.astimezone(zone).replace(tzinfo=None) - offset
            due, _ = resolve(wall, zone, what=f"reminder {text}")
        else:
            due = start - offset * scale
        if due <= now:
            notes.append(
                f"reminder {text}: its time ({due:%Y-%m-%d %H:%M} UTC) has passed; skipped"
            )
            continue
        planned.append(Planned(f"reminder:{iso}", "reminder", due))
    return sorted(planned, key=lambda p: p.due), notes


def newsletter_issues(
    cron: str, zone: ZoneInfo, *, after: datetime, until: datetime | None, count: int
) -> list[Planned]:
    """The next ``count`` issues of a cron schedule in ``zone``, one per local date."""
    trigger = _trigger(cron, zone)
    issues: list[Planned] = []
    moment = after.astimezone(zone)
    while len(issues) < count:
        fire = trigger.get_next_fire_time(None, moment)
        if fire is None or (until is not None and fire > until):
            break
        local_day = fire.astimezone(zone).date()
        issues.append(Planned(f"issue:{local_day.isoformat()}", "newsletter", fire.astimezone(UTC)))
        # One issue per local date: look again from the next local midnight, which also steps
        # over the second 02:30 of the autumn fold (APScheduler would return it again).
        moment = datetime.combine(local_day + timedelta(days=1), time(0), tzinfo=zone)
    return issues


def next_issues(cron: str, zone: ZoneInfo, after: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` issues' times in ``zone`` (aware local times), one per local date,
    as :func:`newsletter_issues` plans them; ScheduleError for an invalid expression."""
    issues = newsletter_issues(cron, zone, after=after, until=None, count=count)
    return [p.due.astimezone(zone) for p in issues]


# --- cron expressions: APScheduler's trigger with the crontab's weekdays ---------------------

APS_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # APScheduler's 0..6
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_EVERY = re.compile(r"\*(?:/(\d+))?$")  # the three forms of APScheduler's expressions
_RANGE = re.compile(r"(\d+)(?:-(\d+))?(?:/(\d+))?$")
_NAMES = re.compile(r"([a-z]+)(?:-([a-z]+))?", re.IGNORECASE)  # a prefix, as APScheduler reads
_LAST = re.compile(r"last", re.IGNORECASE)


def _trigger(cron: str, zone: ZoneInfo) -> CronTrigger:
    """The APScheduler trigger of a crontab line; ScheduleError saying why it is not one."""
    fields = cron.split()
    # with another number of fields, APScheduler says how many it found
    cron_line = " ".join([*fields[:4], _weekdays(fields[4])]) if len(fields) == 5 else cron
    try:
        return CronTrigger.from_crontab(cron_line, timezone=zone)
    except ValueError as exc:
        raise ScheduleError(
            f"cron {cron!r}: {exc} (expected 5 fields: minute hour day month weekday)"
        ) from None


def _weekdays(field: str) -> str:
    """A crontab weekday field (0 and 7 Sunday, 1 Monday... 6 Saturday) in words APScheduler
    3 reads the same way (it counts 0 as Monday): each number part becomes day names
    (``1-5`` -> ``mon,tue,wed,thu,fri``); names, ``*`` and any part that is not a valid
    crontab number part are left as given, for APScheduler to read or refuse as before."""
    parts = []
    for part in field.split(","):
        days = _crontab_days(part)
        parts.append(part if days is None else ",".join(APS_WEEKDAYS[(d - 1) % 7] for d in days))
    return ",".join(parts)


def _crontab_days(part: str) -> list[int] | None:
    """The crontab days (0 Sunday .. 6 Saturday, 7 read as 0) of one number part such as
    ``1``, ``1-5``, ``*/2`` or ``1-5/2``; None for ``*``, names and what is not valid."""
    every = _EVERY.match(part)
    if every is not None:
        if every.group(1) is None:
            return None  # every day: as APScheduler reads it
        first, last, step = 0, 6, int(every.group(1))
    else:
        numbers = _RANGE.match(part)
        if numbers is None:
            return None
        first = int(numbers.group(1))
        step = int(numbers.group(3)) if numbers.group(3) else 1
        default_last = 6 if numbers.group(3) else first
        last = int(numbers.group(2)) if numbers.group(2) else default_last
    if not 0 < step <= 7 or first > last or last > 7:
        return None
    return sorted({d % 7 for d in range(first, last + 1, step)})


# --- cron expressions in words (the newsletter form shows them as they are typed) ------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


WORDS: dict[str, dict[str, Any]] = {
    "en": {
        "days": _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday"),
        "months": _words(
            "January February March April May June July August September October November December"
        ),
        "and": "and",
        "or": "or",
    },
    "fr": {
        "days": _words("lundi mardi mercredi jeudi vendredi samedi dimanche"),
        "months": _words(
            "janvier février mars avril mai juin juillet août septembre octobre novembre décembre"
        ),
        "and": "et",
        "or": "ou",
    },
}
LAST_DAY = 32  # "last" in the day field: the month's last day


def describe_cron(cron: str, lang: str) -> str:
    """A cron expression in words, French (``fr``) or English (anything else): "le 1er de
    chaque mois à 9 h 00", "on the 1st of every month at 09:00". ScheduleError (the message of
    :func:`newsletter_issues`) when it is not a valid expression; for a valid one it never
    raises: what it cannot put in plain words gets a general sentence that is still right."""
    lang = "fr" if lang.lower().startswith("fr") else "en"
    _trigger(cron, ZoneInfo("UTC"))
    minute, hour, day, month, weekday = cron.split()
    fields = (
        _expand(minute, 0, 59),
        _expand(hour, 0, 23),
        _expand(day, 1, 31, last=True),
        _expand(month, 1, 12, names=MONTH_NAMES),
        _expand(_weekdays(weekday), 0, 6, names=APS_WEEKDAYS, lowest=0),
    )
    if any(f is None for f in fields):
        return _generic(cron, lang)
    minutes, hours, days, months, weekdays = (sorted(f or ()) for f in fields)
    date, condition = _date_words(days, months, weekdays, lang)
    time_words = _time_words(minutes, hours, lang)
    joiner = ", " if "," in date or time_words.startswith(("every", "toutes")) else " "
    return f"{date}{joiner}{time_words}" + (f", {condition}" if condition else "")


def _generic(cron: str, lang: str) -> str:
    if lang == "fr":
        return (
            f"selon l’expression cron «\u202f{cron}\u202f» (minute, heure, jour du mois, mois, "
            "jour de la semaine)"
        )
    return (
        f'following the cron expression "{cron}" (minute, hour, day of the month, month, weekday)'
    )


def _expand(
    field: str,
    low: int,
    high: int,
    *,
    names: tuple[str, ...] = (),
    last: bool = False,
    lowest: int = 1,
) -> set[int] | None:
    """The values a (valid) APScheduler field expression selects, read as APScheduler reads
    it; ``last`` adds :data:`LAST_DAY`. None for a form this does not know."""
    values: set[int] = set()
    for part in field.split(","):
        if every := _EVERY.match(part):
            values.update(range(low, high + 1, int(every.group(1) or 1)))
        elif numbers := _RANGE.match(part):
            first, step = int(numbers.group(1)), int(numbers.group(3) or 1)
            end = numbers.group(2) or (None if numbers.group(3) else numbers.group(1))
            values.update(range(first, (high if end is None else int(end)) + 1, step))
        elif last and _LAST.match(part):
            values.add(LAST_DAY)
        elif names and (named := _NAMES.match(part)):
            first = names.index(named.group(1).lower()) + lowest
            end = names.index(named.group(2).lower()) + lowest if named.group(2) else first
            values.update(range(first, end + 1))
        else:
            return None
    return values


def _join(items: list[str], lang: str, word: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {WORDS[lang][word]} {items[-1]}"


def _runs(values: list[int]) -> list[tuple[int, int]]:
    """Sorted values as (first, last) runs of consecutive ones."""
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def _clock(hour: int, minute: int, lang: str) -> str:
    return f"{hour}\u00a0h\u00a0{minute:02d}" if lang == "fr" else f"{hour:02d}:{minute:02d}"


def _step(values: list[int]) -> int | None:
    """The common difference of values evenly spaced (two or more), else None."""
    if len(values) < 2:
        return None
    step = values[1] - values[0]
    return step if values == list(range(values[0], values[-1] + 1, step)) else None


def _numbers(values: list[int], lang: str) -> str:
    """``0, 7 and 14``; runs of three or more as ``9 to 17`` (``9 à 17``)."""
    to = " à " if lang == "fr" else " to "
    items: list[str] = []
    for a, b in _runs(values):
        items += [f"{a}{to}{b}"] if b - a >= 2 else [str(v) for v in range(a, b + 1)]
    return _join(items, lang)


def _time_words(minutes: list[int], hours: list[int], lang: str) -> str:
    fr = lang == "fr"
    if len(minutes) * len(hours) <= 4:
        times = [_clock(h, m, lang) for h in hours for m in minutes]
        return ("à " if fr else "at ") + _join(times, lang)
    gap = _step(minutes)
    even = (len(minutes) == 60) or (gap is not None and len(minutes) * gap == 60)
    period = 1 if len(minutes) == 60 else gap
    every_minutes = (
        ("toutes les minutes" if fr else "every minute")
        if period == 1
        else (f"toutes les {period} minutes" if fr else f"every {period} minutes")
    )
    if len(hours) == 24 and even and minutes[0] == 0:
        return every_minutes
    hour_gap = _step(hours)
    if len(minutes) == 1 and hour_gap is not None:
        m = minutes[0]
        if fr:
            every = "toutes les heures" if hour_gap == 1 else f"toutes les {hour_gap} heures"
            return f"{every} de {_clock(hours[0], m, lang)} à {_clock(hours[-1], m, lang)}"
        every = "every hour" if hour_gap == 1 else f"every {hour_gap} hours"
        return f"{every} from {_clock(hours[0], m, lang)} to {_clock(hours[-1], m, lang)}"
    if even and hour_gap == 1:
        a, b = _clock(hours[0], minutes[0], lang), _clock(hours[-1], minutes[-1], lang)
        return f"{every_minutes} de {a} à {b}" if fr else f"{every_minutes} from {a} to {b}"
    if len(minutes) * len(hours) <= 12:
        times = [_clock(h, m, lang) for h in hours for m in minutes]
        return ("à " if fr else "at ") + _join(times, lang)
    many = len(minutes) > 1
    if fr:
        said = f"{'aux minutes' if many else 'à la minute'} {_numbers(minutes, lang)}"
        return said + (
            " de chaque heure" if len(hours) == 24 else f" des heures {_numbers(hours, lang)}"
        )
    said = f"at minute{'s' if many else ''} {_numbers(minutes, lang)}"
    return said + (
        " of every hour" if len(hours) == 24 else f" of the hours {_numbers(hours, lang)}"
    )


def _ordinal(day: int, lang: str) -> str:
    if lang == "fr":
        return "1er" if day == 1 else str(day)
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _weekday_words(weekdays: list[int], lang: str, *, condition: bool = False) -> str:
    """``every Monday``, ``Monday to Friday``, ``every Monday and Thursday``; as a condition:
    ``if it is a Monday or a Friday``."""
    names = [WORDS[lang]["days"][d] for d in weekdays]
    fr = lang == "fr"
    if condition:
        if fr:
            return "si c’est " + _join([f"un {n}" for n in names], lang, "or")
        return "if it is " + _join([f"a {n}" for n in names], lang, "or")
    runs = _runs(weekdays)
    if len(runs) == 1 and len(names) >= 3:
        return f"du {names[0]} au {names[-1]}" if fr else f"{names[0]} to {names[-1]}"
    return ("chaque " if fr else "every ") + _join(names, lang)


def _month_words(months: list[int], lang: str, *, within: bool) -> str:
    """The months selected: ``en janvier et juillet`` / ``in January and July`` (``within``:
    after a day or a weekday), or ``de janvier et juillet`` / ``of January and July``."""
    names = WORDS[lang]["months"]
    fr = lang == "fr"
    runs = _runs([m - 1 for m in months])
    if all(a == b for a, b in runs):
        items = [names[a] for a, _ in runs]
        if fr:
            return ("en " if within else "de ") + _join(items, lang)
        return ("in " if within else "of ") + _join(items, lang)
    parts = []
    for a, b in runs:
        if fr:
            parts.append(f"de {names[a]} à {names[b]}" if b > a else f"en {names[a]}")
        else:
            parts.append(f"{names[a]} to {names[b]}" if b > a else names[a])
    said = _join(parts, lang)
    if fr:
        return said if within else f"du mois, {said}"
    return ("from " if len(runs) == 1 else "in ") + said if within else f"of {said}"


def _day_words(days: list[int], lang: str) -> str:
    """``le 1er et le 15``, ``du 1er au 7``; ``on the 1st and the 15th``, ``from the 1st to
    the 7th``; ``le dernier jour`` / ``the last day``."""
    fr = lang == "fr"
    runs = _runs([d for d in days if d != LAST_DAY])
    items = []
    for a, b in runs:
        if b - a >= 2:
            first, end = _ordinal(a, lang), _ordinal(b, lang)
            items.append(f"du {first} au {end}" if fr else f"the {first} to the {end}")
        else:
            items += [("le " if fr else "the ") + _ordinal(d, lang) for d in range(a, b + 1)]
    if LAST_DAY in days:
        items.append("le dernier jour" if fr else "the last day")
    said = _join(items, lang)
    if fr:
        return said
    if len(items) == 1 and said.startswith("the ") and " to the " in said:
        return f"from {said}"
    return f"on {said}"


def _date_words(
    days: list[int], months: list[int], weekdays: list[int], lang: str
) -> tuple[str, str]:
    """Which days, and a condition on them: APScheduler fires only on a day that every field
    selects (a day of the month and a weekday both given: that day when it falls on one of
    those weekdays, which the condition says)."""
    fr = lang == "fr"
    every_day = set(range(1, 32)) <= set(days)
    every_month = len(months) == 12
    every_weekday = len(weekdays) == 7
    if every_day:
        said = _weekday_words(weekdays, lang) if not every_weekday else (
            "chaque jour" if fr else "every day"
        )  # fmt: skip
        if not every_month:
            said = f"{said} {_month_words(months, lang, within=True)}"
        return said, ""
    if not every_month and len(months) == 1 and len(days) == 1 and days[0] != LAST_DAY:
        month = WORDS[lang]["months"][months[0] - 1]
        said = (
            f"chaque année le {_ordinal(days[0], lang)} {month}"
            if fr
            else f"every year on {days[0]} {month}"
        )
    elif every_month:
        said = f"{_day_words(days, lang)} {'de chaque mois' if fr else 'of every month'}"
    elif fr:
        said = f"{_day_words(days, lang)} du mois, {_month_words(months, lang, within=True)}"
    else:
        said = f"{_day_words(days, lang)} {_month_words(months, lang, within=False)}"
    condition = "" if every_weekday else _weekday_words(weekdays, lang, condition=True)
    return said, condition
