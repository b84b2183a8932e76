"""Calendar files (iCalendar, RFC 5545) for event invitations, reminders, updates and
cancellations. Pure: built from the event and ``now``; made once per send, not per recipient.

A stable UID per event, DTSTART/DTEND in the event's zone with its VTIMEZONE, SEQUENCE that
grows with every change, ``METHOD:PUBLISH`` (an entry to add, no RSVP) or, for a
cancellation, ``METHOD:CANCEL`` with ``STATUS:CANCELLED``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, vCalAddress, vText

from mailer.models import EventInfo

PRODID = "-//mailer//mailer 0.1//FR"


def build(
    event: EventInfo, *, cancel: bool, organizer_name: str, organizer_address: str, now: datetime
) -> bytes:
    """The .ics bytes for ``event`` (CRLF line endings, folded at 75 octets)."""
    zone = ZoneInfo(event.timezone)
    start = event.start.astimezone(zone)
    end = (event.end or event.start + timedelta(hours=1)).astimezone(zone)
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", "CANCEL" if cancel else "PUBLISH")
    entry = Event()
    entry.add("uid", event.uid)
    entry.add("dtstamp", now.astimezone(UTC))
    entry.add("dtstart", start)
    entry.add("dtend", end)
    entry.add("summary", event.title)
    entry.add("sequence", event.sequence)
    entry.add("status", "CANCELLED" if cancel else "CONFIRMED")
    if event.place:
        entry.add("location", event.place)
    if event.link:
        entry.add("url", event.link)
    if event.description:
        entry.add("description", event.description)
    organizer = vCalAddress(f"mailto:{organizer_address}")
    organizer.params["cn"] = vText(organizer_name)
    entry.add("organizer", organizer)
    calendar.add_component(entry)
    # VTIMEZONE covering the event's year on either side keeps the file small.
    calendar.add_missing_timezones(
        first_date=(start - timedelta(days=366)).date(),
        last_date=(end + timedelta(days=366)).date(),
    )
    return bytes(calendar.to_ical())
