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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
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
    try:
        trigger = CronTrigger.from_crontab(cron, timezone=zone)
    except ValueError as exc:
        raise ScheduleError(
            f"cron {cron!r}: {exc} (expected 5 fields: minute hour day month weekday)"
        ) from None
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
