"""Calendar files (iCalendar, RFC 5545; iTIP, RFC 5546) for event invitations, reminders,
updates and cancellations, and the "add to calendar" links of an event. Pure: built from the
event and ``now``; no I/O, no clock.

:func:`prepare` renders an event once per send and language, with icalendar, into an
:class:`IcsTemplate`; :meth:`IcsTemplate.for_attendee` then makes each recipient's file by
splicing one pre-rendered ``ATTENDEE`` content line into those bytes (no icalendar per
recipient). Every file has the event's stable UID, its SEQUENCE (which grows with every
change), DTSTAMP, DTSTART/DTEND in the event's zone with that zone's VTIMEZONE, and the
sender as ORGANIZER. The methods:

- ``REQUEST``: an invitation, the recipient as ATTENDEE (``PARTSTAT=NEEDS-ACTION``,
  ``RSVP=FALSE`` unless answers are asked for), ``STATUS:CONFIRMED``, ``TRANSP:OPAQUE`` (the
  time shows as busy, as Google Calendar and Outlook write their own invitations). Outlook and
  Gmail offer the invitation card and apply a later REQUEST or CANCEL of the same UID.
- ``CANCEL``: the same, ``STATUS:CANCELLED``; the ATTENDEE says whose copy is cancelled.
- ``PUBLISH``: an entry to add by hand, no attendee: the same bytes for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote
from zoneinfo import ZoneInfo

from mailer.addresses import first_control
from mailer.errors import MessageError
from mailer.models import EventInfo

if TYPE_CHECKING:
    import icalendar

PRODID = "-//mailer//mailer 0.1//FR"
METHODS = ("REQUEST", "PUBLISH", "CANCEL")
FOLD = 75  # octets per content line, CRLF not counted (RFC 5545 3.1)
GOOGLE = "https://calendar.google.com/calendar/render?action=TEMPLATE"
OUTLOOK = (
    "https://outlook.live.com/calendar/0/deeplink/compose"
    "?path=/calendar/action/compose&rru=addevent"
)


@dataclass(frozen=True, slots=True)
class IcsTemplate:
    """One event's calendar file for one send and language, ready to be made per recipient.

    ``head`` ends with the ORGANIZER content line, ``tail`` is the rest: a recipient's file is
    ``head + ATTENDEE line + tail``. For PUBLISH, ``head`` is the whole file and ``tail`` empty.
    """

    method: str
    head: bytes
    tail: bytes = b""
    attendee_params: str = ""  # what follows CN in the ATTENDEE line, up to the ":"

    @property
    def shared(self) -> bytes:
        """The file without an attendee (PUBLISH's file, the same for everyone)."""
        return self.head + self.tail if self.tail else self.head

    def for_attendee(self, email: str, name: str) -> bytes:
        """The recipient's .ics: the shared file with ``email`` (shown as ``name``, else as
        the address) as ATTENDEE; for PUBLISH the shared file itself, the same object each time.

        A control character in either is a :class:`~mailer.errors.MessageError`, the same
        rule as the message's headers.
        """
        if self.method == "PUBLISH":
            return self.head
        for value, what in ((email, "the attendee address"), (name, "the attendee name")):
            # isprintable() is false for every character first_control refuses (and for a
            # few it accepts: those are looked at again); it runs at C speed.
            bad = None if value.isprintable() else first_control(value)
            if bad is not None:
                raise MessageError(f"{what} contains a control character ({bad}): {value[:60]!r}")
        line = f"ATTENDEE;CN={param_value(name or email)}{self.attendee_params}:mailto:{email}"
        return b"".join((self.head, fold(line.encode("utf-8")), self.tail))


@dataclass(frozen=True, slots=True)
class CalendarLinks:
    """An event's "add to calendar" links (ASCII, every value percent-encoded)."""

    google: str
    outlook: str


def param_value(text: str) -> str:
    """``text`` as an iCalendar parameter value: always a quoted-string (RFC 5545 3.2, valid
    for any value and needed for ``:;,``), a DQUOTE written ``^'`` and a caret ``^^`` (RFC 6868,
    as icalendar writes the ORGANIZER's CN). No control character may reach here."""
    return '"' + text.replace("^", "^^").replace('"', "^'") + '"'


def fold(line: bytes) -> bytes:
    """One content line folded at 75 octets, never inside a UTF-8 sequence, with its CRLF."""
    if len(line) <= FOLD:
        return line + b"\r\n"
    pieces = []
    start, limit = 0, FOLD
    while len(line) - start > limit:
        cut = start + limit
        while line[cut] & 0xC0 == 0x80:  # a continuation byte: the character moves down
            cut -= 1
        pieces.append(line[start:cut])
        start, limit = cut, FOLD - 1  # a continuation line begins with its space
    pieces.append(line[start:])
    return b"\r\n ".join(pieces) + b"\r\n"


def _end(event: EventInfo) -> datetime:
    return event.end or event.start + timedelta(hours=1)


def _calendar(
    event: EventInfo, *, method: str, organizer_name: str, organizer_address: str, now: datetime
) -> icalendar.Calendar:
    from icalendar import Calendar, Event, vCalAddress, vText  # for event sends only

    zone = ZoneInfo(event.timezone)
    start = event.start.astimezone(zone)
    end = _end(event).astimezone(zone)
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", method)
    entry = Event()
    entry.add("uid", event.uid)
    entry.add("dtstamp", now.astimezone(UTC))
    entry.add("dtstart", start)
    entry.add("dtend", end)
    entry.add("summary", event.title)
    entry.add("sequence", event.sequence)
    entry.add("status", "CANCELLED" if method == "CANCEL" else "CONFIRMED")
    if method != "PUBLISH":
        entry.add("transp", "OPAQUE")
    if event.place:
        entry.add("location", event.place)
    if event.link:
        entry.add("url", event.link)
    if event.description:
        entry.add("description", event.description)
    organizer = vCalAddress(f"mailto:{organizer_address}")
    organizer.params["cn"] = vText(organizer_name)
    entry.add("organizer", organizer)  # the ATTENDEE line goes right after this one
    calendar.add_component(entry)
    # VTIMEZONE covering the event's year on either side keeps the file small.
    calendar.add_missing_timezones(
        first_date=(start - timedelta(days=366)).date(),
        last_date=(end + timedelta(days=366)).date(),
    )
    return calendar


def _after_organizer(data: bytes) -> int:
    """Where the ORGANIZER content line of the VEVENT ends (after its CRLF, folds included)."""
    at = data.index(b"\r\nORGANIZER", data.index(b"BEGIN:VEVENT")) + 2
    while True:
        at = data.index(b"\r\n", at) + 2
        if data[at : at + 1] not in (b" ", b"\t"):
            return at


def prepare(
    event: EventInfo,
    *,
    method: str,
    organizer_name: str,
    organizer_address: str,
    now: datetime,
    rsvp: bool = False,
) -> IcsTemplate:
    """The calendar file of ``event`` (already in the send's language) for ``method``, made
    once per send and language; :meth:`IcsTemplate.for_attendee` makes each recipient's."""
    if method not in METHODS:
        raise ValueError(f"iTIP method {method!r} is not one of {', '.join(METHODS)}")
    data = bytes(
        _calendar(
            event,
            method=method,
            organizer_name=organizer_name,
            organizer_address=organizer_address,
            now=now,
        ).to_ical()
    )
    if method == "PUBLISH":
        return IcsTemplate(method=method, head=data)
    at = _after_organizer(data)
    answer = "TRUE" if rsvp and method == "REQUEST" else "FALSE"  # nobody answers a CANCEL
    return IcsTemplate(
        method=method,
        head=data[:at],
        tail=data[at:],
        attendee_params=f";ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP={answer}",
    )


def _query(pairs: list[tuple[str, str]]) -> str:
    return "".join(f"&{key}={quote(value, safe='')}" for key, value in pairs if value)


def calendar_links(event: EventInfo) -> CalendarLinks:
    """ "Add to Google Calendar" and "add to Outlook.com" links for ``event`` (its title,
    start and end in UTC, description and link, place; Google is also told the zone)."""
    start, end = event.start.astimezone(UTC), _end(event).astimezone(UTC)
    details = "\n\n".join(part for part in (event.description, event.link or "") if part)
    google = GOOGLE + _query(
        [
            ("text", event.title),
            ("dates", f"{start:%Y%m%dT%H%M%SZ}/{end:%Y%m%dT%H%M%SZ}"),
            ("details", details),
            ("location", event.place),
            ("ctz", event.timezone),
        ]
    )
    outlook = OUTLOOK + _query(
        [
            ("subject", event.title),
            ("startdt", f"{start:%Y-%m-%dT%H:%M:%SZ}"),
            ("enddt", f"{end:%Y-%m-%dT%H:%M:%SZ}"),
            ("body", details),
            ("location", event.place),
        ]
    )
    return CalendarLinks(google=google, outlook=outlook)
