"""Calendar invitations as Outlook and Gmail read them: each recipient's iTIP file (parsed
with icalendar and, independently, with vobject), the MIME structure that carries it, and
the "add to calendar" links."""

from __future__ import annotations

import email
from dataclasses import replace
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
import vobject
from hypothesis import given
from hypothesis import strategies as st
from icalendar import Calendar

from mailer import ics
from mailer.addresses import first_control
from mailer.errors import MessageError
from mailer.message import CalendarPart, Identity, MessageBuilder
from mailer.models import EventInfo, Recipient, Rendered

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2024, 1, 8, 10, 0, tzinfo=PARIS)
EVENT = EventInfo(
    uid="journee-2024@example.org",
    title="8e journée de recherche CRI-IMIDIATE / FAI²R",
    start=datetime(2024, 1, 15, 9, 0, tzinfo=PARIS),
    end=datetime(2024, 1, 15, 17, 30, tzinfo=PARIS),
    timezone="Europe/Paris",
    place="Hôpital Pitié-Salpêtrière, Paris",
    link="https://example.org/journee",
    description="Chercheurs, soignants et associations.",
    sequence=1,
)
IDENTITY = Identity(
    from_name="Réseau CRI-IMIDIATE",
    from_address="news@example.org",
    domain="example.org",
    list_slug="researchers",
    list_title="Chercheurs du réseau",
    trace="c1/announcement",
)
RENDERED = Rendered(locale="fr", subject="Invitation", html="<p>Bonjour</p>\n", text="Bonjour\n")
CLAIRE = Recipient(id=7, email="claire.dubois@example.org", name="Claire Dubois")


def template(method: str = "REQUEST", event: EventInfo = EVENT, **kw: bool) -> ics.IcsTemplate:
    return ics.prepare(event, method=method, organizer_name="Réseau CRI-IMIDIATE",
                       organizer_address="news@example.org", now=NOW, **kw)  # fmt: skip


def vevent(data: bytes) -> tuple[Calendar, Calendar]:
    calendar = Calendar.from_ical(data)
    return calendar, calendar.walk("VEVENT")[0]


def lines(data: bytes) -> list[bytes]:
    assert data.endswith(b"\r\n")
    return data[:-2].split(b"\r\n")


def attendee_lines(data: bytes) -> list[bytes]:
    """The ATTENDEE content line as on the wire, its folded lines."""
    all_lines = lines(data)
    at = next(i for i, line in enumerate(all_lines) if line.startswith(b"ATTENDEE"))
    end = next(i for i in range(at + 1, len(all_lines)) if not all_lines[i].startswith(b" "))
    return all_lines[at:end]


# --- the recipient's file ---------------------------------------------------------------------


def test_a_request_names_its_recipient_and_parses_with_both_parsers() -> None:
    """REQUEST: the recipient as ATTENDEE (CN, RSVP=FALSE), the sender as ORGANIZER, the
    Paris VTIMEZONE, and everything iTIP asks; icalendar and vobject read the same."""
    data = template().for_attendee(CLAIRE.email, CLAIRE.name)
    calendar, event = vevent(data)
    assert calendar["METHOD"] == "REQUEST"
    attendee = event["ATTENDEE"]
    assert str(attendee) == "mailto:claire.dubois@example.org"
    assert dict(attendee.params) == {"CN": "Claire Dubois", "ROLE": "REQ-PARTICIPANT",
                                     "PARTSTAT": "NEEDS-ACTION", "RSVP": "FALSE"}  # fmt: skip
    assert str(event["ORGANIZER"]) == "mailto:news@example.org"
    assert event["ORGANIZER"].params["CN"] == "Réseau CRI-IMIDIATE"
    assert [tz["TZID"] for tz in calendar.walk("VTIMEZONE")] == ["Europe/Paris"]
    assert b"DTSTART;TZID=Europe/Paris:20240115T090000\r\n" in data
    assert event.decoded("DTEND").astimezone(UTC) == datetime(2024, 1, 15, 16, 30, tzinfo=UTC)
    assert event.decoded("DTSTAMP") == NOW.astimezone(UTC)
    assert b"DTSTAMP:20240108T090000Z\r\n" in data
    assert (str(event["UID"]), int(event["SEQUENCE"])) == ("journee-2024@example.org", 1)
    assert (str(event["STATUS"]), str(event["TRANSP"])) == ("CONFIRMED", "OPAQUE")
    assert str(event["SUMMARY"]) == EVENT.title
    assert str(event["LOCATION"]) == EVENT.place
    assert str(event["DESCRIPTION"]) == EVENT.description
    assert str(event["URL"]) == EVENT.link
    assert all(len(line) <= 75 for line in lines(data))

    other = vobject.readOne(data.decode("utf-8"))
    assert other.method.value == "REQUEST"
    assert other.vevent.attendee.value == "mailto:claire.dubois@example.org"
    assert other.vevent.attendee.params["CN"] == ["Claire Dubois"]
    assert other.vevent.attendee.params["RSVP"] == ["FALSE"]
    assert other.vevent.organizer.value == "mailto:news@example.org"
    assert other.vevent.uid.value == "journee-2024@example.org"
    assert other.vevent.dtstart.value.astimezone(UTC) == datetime(2024, 1, 15, 8, tzinfo=UTC)
    assert other.vevent.location.value == EVENT.place
    assert other.vtimezone.tzid.value == "Europe/Paris"


def test_rsvp_asks_for_an_answer_except_in_a_cancellation() -> None:
    """rsvp=True writes RSVP=TRUE in a REQUEST; nobody answers a CANCEL (RSVP=FALSE)."""
    for method, expected in (("REQUEST", "TRUE"), ("CANCEL", "FALSE")):
        data = template(method, rsvp=True).for_attendee(CLAIRE.email, CLAIRE.name)
        assert vevent(data)[1]["ATTENDEE"].params["RSVP"] == expected
        assert vobject.readOne(data.decode()).vevent.attendee.params["RSVP"] == [expected]


def test_the_uid_stays_while_the_sequence_grows() -> None:
    """The invitation, its update and its cancellation are one event to a calendar."""
    seen = []
    for sequence, method in ((0, "REQUEST"), (1, "REQUEST"), (2, "CANCEL")):
        data = template(method, replace(EVENT, sequence=sequence)).for_attendee(CLAIRE.email, "")
        calendar, event = vevent(data)
        seen.append((str(calendar["METHOD"]), str(event["UID"]), int(event["SEQUENCE"])))
        assert vobject.readOne(data.decode()).vevent.sequence.value == str(sequence)
    assert seen == [("REQUEST", EVENT.uid, 0), ("REQUEST", EVENT.uid, 1),
                    ("CANCEL", EVENT.uid, 2)]  # fmt: skip


def test_a_cancellation_names_its_attendee_and_says_cancelled() -> None:
    """CANCEL: METHOD:CANCEL, the recipient as ATTENDEE, STATUS:CANCELLED (both parsers)."""
    data = template("CANCEL").for_attendee(CLAIRE.email, CLAIRE.name)
    calendar, event = vevent(data)
    assert calendar["METHOD"] == "CANCEL"
    assert str(event["STATUS"]) == "CANCELLED"
    assert str(event["ATTENDEE"]) == "mailto:claire.dubois@example.org"
    other = vobject.readOne(data.decode())
    assert (other.method.value, other.vevent.status.value) == ("CANCEL", "CANCELLED")
    assert other.vevent.attendee.value == "mailto:claire.dubois@example.org"


def test_publish_is_the_same_file_for_everyone_without_attendee() -> None:
    """PUBLISH: today's file, no ATTENDEE, the very same bytes whoever it is for."""
    shared = template("PUBLISH")
    data = shared.for_attendee(CLAIRE.email, CLAIRE.name)
    assert data is shared.for_attendee("other@example.org", "Other")
    assert b"ATTENDEE" not in data
    assert b"TRANSP" not in data
    assert vevent(data)[0]["METHOD"] == "PUBLISH"


def test_an_empty_name_shows_the_address() -> None:
    """Without a name, CN is the address (as Google Calendar writes its attendees)."""
    data = template().for_attendee("zoe@example.org", "")
    assert vevent(data)[1]["ATTENDEE"].params["CN"] == "zoe@example.org"


def test_a_long_utf8_name_folds_at_75_octets_and_unfolds_back() -> None:
    """A 200-character name of 1- to 4-octet characters: no line over 75 octets, no line
    ending inside a UTF-8 sequence, and both parsers read the name back."""
    name = ("Éloïse Ngọc 李小龍 🎉 " * 20)[:200]
    assert len(name) == 200
    data = template().for_attendee("eloise@example.org", name)
    folded = attendee_lines(data)
    assert len(folded) > 5
    for line in lines(data):
        assert len(line) <= 75
        line.decode("utf-8")  # each line alone is whole UTF-8
    assert vevent(data)[1]["ATTENDEE"].params["CN"] == name
    assert vobject.readOne(data.decode()).vevent.attendee.params["CN"] == [name]


@pytest.mark.parametrize(
    "name", ['Dubois, Claire "CD"', "Roux; Amélie: FAI²R", 'a"b;c:d,e^f', '"', "^'"]
)
def test_a_name_with_quotes_and_separators_parses_back(name: str) -> None:
    """``:;,`` are inside a quoted-string; a DQUOTE is RFC 6868's ``^'`` (a caret ``^^``), so
    the line stays whole. icalendar decodes RFC 6868; vobject, which does not, still reads
    the line and the address, with the name in its escaped form."""
    data = template().for_attendee("claire@example.org", name)
    attendee = vevent(data)[1]["ATTENDEE"]
    assert attendee.params["CN"] == name
    assert str(attendee) == "mailto:claire@example.org"
    other = vobject.readOne(data.decode()).vevent.attendee
    assert other.value == "mailto:claire@example.org"
    assert other.params["CN"] == [name.replace("^", "^^").replace('"', "^'")]
    assert other.params["RSVP"] == ["FALSE"]


@given(st.text(max_size=120))
def test_any_name_without_controls_round_trips(name: str) -> None:
    """Property: a name is refused for a control character, else it comes back exactly."""
    made = template()
    if first_control(name) is not None:
        with pytest.raises(MessageError):
            made.for_attendee("p@example.org", name)
        return
    data = made.for_attendee("p@example.org", name)
    assert all(len(line) <= 75 for line in lines(data))
    assert vevent(data)[1]["ATTENDEE"].params["CN"] == (name or "p@example.org")


def test_a_control_character_is_refused() -> None:
    """CR or LF in a name or an address could start a property of its own: refused."""
    for email_, name in (("a@example.org", "Claire\r\nATTENDEE:mailto:x@y"), ("a\n@x.org", "")):
        with pytest.raises(MessageError):
            template().for_attendee(email_, name)


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="REPLY"):
        template("REPLY")


# --- the message that carries it --------------------------------------------------------------


def build(method: str, recipient: Recipient = CLAIRE, **kw: object) -> tuple[bytes, bytes]:
    """(message, the recipient's .ics)."""
    data = template(method).for_attendee(recipient.email, recipient.name)
    builder = MessageBuilder(IDENTITY, calendar=CalendarPart(method), **kw)  # type: ignore[arg-type]
    built = builder.build(recipient=recipient, rendered=RENDERED, message_id="<1.7.a@example.org>",
                          unsubscribe_url="https://l.example.org/u/t", date=NOW, ics=data)  # fmt: skip
    return built.data, data


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def shape(message: EmailMessage, depth: int = 0) -> list[tuple[int, str]]:
    out = [(depth, message.get_content_type())]
    if message.is_multipart():
        for part in message.iter_parts():
            assert isinstance(part, EmailMessage)
            out += shape(part, depth + 1)
    return out


@pytest.mark.parametrize("method", ["REQUEST", "CANCEL"])
def test_an_invitation_has_the_structure_outlook_and_gmail_expect(method: str) -> None:
    """The .ics is the third alternative (text/calendar; method=..., no disposition) and an
    application/ics attachment named invite.ics: the same bytes in both."""
    data, expected = build(method)
    message = parse(data)
    assert shape(message) == [
        (0, "multipart/mixed"),
        (1, "multipart/alternative"),
        (2, "text/plain"),
        (2, "text/html"),
        (2, "text/calendar"),
        (1, "application/ics"),
    ]
    alternative, attachment = list(message.iter_parts())
    calendar = list(alternative.iter_parts())[2]
    assert calendar.get_param("method") == method
    assert calendar.get_content_charset() == "utf-8"
    assert calendar["Content-Transfer-Encoding"] == "base64"
    assert calendar["Content-Disposition"] is None
    assert attachment.get_content_disposition() == "attachment"
    assert attachment.get_filename() == "invite.ics"
    assert attachment.get_param("name") == "invite.ics"
    assert attachment["Content-Transfer-Encoding"] == "base64"
    assert calendar.get_payload(decode=True) == expected
    assert attachment.get_payload(decode=True) == expected
    assert vevent(expected)[0]["METHOD"] == method
    assert max(len(line) for line in data.split(b"\r\n")) <= 76


def test_each_recipient_gets_their_own_file() -> None:
    """One builder, two recipients: each message carries its own ATTENDEE."""
    first, _ = build("REQUEST")
    second, _ = build("REQUEST", Recipient(id=8, email="john@example.org", name="John Okafor"))
    for data, address in ((first, CLAIRE.email), (second, "john@example.org")):
        part = next(p for p in parse(data).walk() if p.get_content_type() == "text/calendar")
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        assert str(vevent(payload)[1]["ATTENDEE"]) == f"mailto:{address}"


def test_publish_keeps_the_attachment_structure() -> None:
    """PUBLISH: the alternative then a text/calendar attachment, invitation.ics."""
    data, expected = build("PUBLISH")
    message = parse(data)
    assert shape(message) == [(0, "multipart/mixed"), (1, "multipart/alternative"),
                              (2, "text/plain"), (2, "text/html"), (1, "text/calendar")]  # fmt: skip
    attachment = list(message.iter_parts())[1]
    assert attachment.get_param("method") == "PUBLISH"
    assert attachment.get_filename() == "invitation.ics"
    assert attachment.get_payload(decode=True) == expected


def test_the_calendar_file_is_given_exactly_when_the_send_has_one() -> None:
    """A calendar part without a file, a file without a calendar part, a file whose METHOD is
    not the part's (Outlook refuses it), an unknown method: each a MessageError."""
    request = template().for_attendee(CLAIRE.email, CLAIRE.name)
    common = {"recipient": CLAIRE, "rendered": RENDERED, "message_id": "<m@example.org>",
              "unsubscribe_url": "https://l.example.org/u/t", "date": NOW}  # fmt: skip
    with pytest.raises(MessageError, match="each recipient"):
        MessageBuilder(IDENTITY, calendar=CalendarPart("REQUEST")).build(**common)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="without a calendar part"):
        MessageBuilder(IDENTITY).build(**common, ics=request)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="METHOD:CANCEL"):
        MessageBuilder(IDENTITY, calendar=CalendarPart("CANCEL")).build(**common, ics=request)  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="method"):
        MessageBuilder(IDENTITY, calendar=CalendarPart("REPLY"))
    with pytest.raises(MessageError, match="file name"):
        MessageBuilder(IDENTITY, calendar=CalendarPart("REQUEST", filename='a".ics'))


def test_the_send_wide_file_still_goes_when_none_is_given() -> None:
    """The path of before: one file on the CalendarPart, build() without ``ics``."""
    shared = template("PUBLISH").shared
    builder = MessageBuilder(IDENTITY, calendar=CalendarPart("PUBLISH", ics=shared))
    built = builder.build(recipient=CLAIRE, rendered=RENDERED, message_id="<m@example.org>",
                          unsubscribe_url="https://l.example.org/u/t", date=NOW)  # fmt: skip
    part = list(parse(built.data).iter_parts())[1]
    assert part.get_payload(decode=True) == shared


# --- add to calendar links --------------------------------------------------------------------


def query(url: str) -> dict[str, str]:
    pairs = parse_qs(urlsplit(url).query, keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in pairs.values())
    return {key: values[0] for key, values in pairs.items()}


def test_calendar_links_parse_back_to_the_event() -> None:
    """Google's and Outlook.com's links: the title, the UTC start and end, the place, the
    description with the link; ASCII, every value percent-encoded."""
    links = ics.calendar_links(EVENT)
    assert links.google.isascii()
    assert links.outlook.isascii()
    assert " " not in links.google + links.outlook
    google = urlsplit(links.google)
    assert (google.scheme, google.netloc, google.path) == ("https", "calendar.google.com",
                                                           "/calendar/render")  # fmt: skip
    assert query(links.google) == {
        "action": "TEMPLATE",
        "text": EVENT.title,
        "dates": "20240115T080000Z/20240115T163000Z",
        "details": "Chercheurs, soignants et associations.\n\nhttps://example.org/journee",
        "location": EVENT.place,
        "ctz": "Europe/Paris",
    }
    outlook = urlsplit(links.outlook)
    assert (outlook.netloc, outlook.path) == ("outlook.live.com", "/calendar/0/deeplink/compose")
    assert query(links.outlook) == {
        "path": "/calendar/action/compose",
        "rru": "addevent",
        "subject": EVENT.title,
        "startdt": "2024-01-15T08:00:00Z",
        "enddt": "2024-01-15T16:30:00Z",
        "body": "Chercheurs, soignants et associations.\n\nhttps://example.org/journee",
        "location": EVENT.place,
    }


def test_calendar_links_of_a_bare_summer_event() -> None:
    """No end: one hour; no place or description: those parameters are left out; a June
    date is UTC+2; ``&`` and ``#`` in a title stay inside their value."""
    summer = EventInfo(uid="u@example.org", title="Q&A #2 été", timezone="Europe/Paris",
                       start=datetime(2024, 6, 20, 14, 0, tzinfo=PARIS), end=None)  # fmt: skip
    links = ics.calendar_links(summer)
    google, outlook = query(links.google), query(links.outlook)
    assert google["dates"] == "20240620T120000Z/20240620T130000Z"
    assert google["text"] == outlook["subject"] == "Q&A #2 été"
    assert "location" not in google
    assert "details" not in google
    assert "body" not in outlook
    assert (outlook["startdt"], outlook["enddt"]) == (
        "2024-06-20T12:00:00Z",
        "2024-06-20T13:00:00Z",
    )
