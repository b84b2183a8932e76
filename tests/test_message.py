"""Messages on the wire: parsed back with the standard parser, header by header, part by part."""

from __future__ import annotations

import email
import subprocess
from datetime import UTC, datetime, timedelta
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from pathlib import Path
from zoneinfo import ZoneInfo

import dkim
import pytest
from hypothesis import given
from hypothesis import strategies as st
from icalendar import Calendar

from mailer import ics
from mailer.addresses import first_control
from mailer.errors import MessageError
from mailer.message import (
    MAX_LINE,
    CalendarPart,
    DkimSigner,
    Identity,
    MessageBuilder,
    build_reference,
)
from mailer.models import EventInfo, Recipient, Rendered

PARIS = ZoneInfo("Europe/Paris")
DATE = datetime(2024, 1, 8, 10, 0, tzinfo=PARIS)
IDENTITY = Identity(
    from_name="Réseau CRI-IMIDIATE",
    from_address="news@example.org",
    domain="example.org",
    list_slug="researchers",
    list_title="Chercheurs du réseau",
    trace="c1/announce",
    reply_to="contact@example.org",
    unsubscribe_mailto="unsubscribe@example.org",
)
LONG_URL = "https://lists.example.org/u/" + "Wz" * 60 + ".signature-part-that-is-long-too"
RENDERED = Rendered(
    locale="fr",
    subject="Journée de recherche : « inscriptions ouvertes » 15 janvier",
    html="<p>Bonjour Claire,</p><p>L’événement a lieu à la Pitié-Salpêtrière.</p>\n",
    text="Bonjour Claire,\n\nL’événement a lieu à la Pitié-Salpêtrière.\n",
)
CLAIRE = Recipient(id=7, email="claire.dubois@example.org", name="Claire Dubois")
EVENT = EventInfo(
    uid="journee-2024@example.org",
    title="8e journée de recherche CRI-IMIDIATE / FAI²R",
    start=datetime(2024, 1, 15, 9, 0, tzinfo=PARIS),
    end=datetime(2024, 1, 15, 17, 30, tzinfo=PARIS),
    timezone="Europe/Paris",
    place="Hôpital Pitié-Salpêtrière, Paris",
    link="https://example.org/journee",
    description="Chercheurs, soignants et associations.",
    sequence=2,
)


def build(
    recipient: Recipient = CLAIRE,
    rendered: Rendered = RENDERED,
    *,
    builder: MessageBuilder | None = None,
    url: str = LONG_URL,
) -> bytes:
    builder = builder or MessageBuilder(IDENTITY)
    return builder.build(
        recipient=recipient,
        rendered=rendered,
        message_id="<1.7.abc@example.org>",
        unsubscribe_url=url,
        date=DATE,
    ).data


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def raw_header(data: bytes, name: str) -> bytes:
    """A header exactly as on the wire, continuation lines joined."""
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    for i, line in enumerate(lines):
        if line.lower().startswith(name.lower().encode() + b":"):
            value = [line]
            for follow in lines[i + 1 :]:
                if not follow[:1].isspace():
                    break
                value.append(follow)
            return b"\r\n".join(value)
    raise AssertionError(f"no {name} header")


def decoded(value: str) -> str:
    """Decode encoded words with the legacy decoder (CPython #128110 trips the new one)."""
    return str(make_header(decode_header(value)))


def test_headers_parse_back_to_what_was_given() -> None:
    """Every header a subscriber's client shows decodes to the intended text."""
    data = build()
    message = parse(data)
    assert message["Subject"] == RENDERED.subject
    assert message["From"].addresses[0].display_name == "Réseau CRI-IMIDIATE"
    assert message["From"].addresses[0].addr_spec == "news@example.org"
    assert message["To"].addresses[0].addr_spec == "claire.dubois@example.org"
    assert message["Reply-To"] == "contact@example.org"
    assert message["Message-ID"] == "<1.7.abc@example.org>"
    assert message["List-Id"] == "Chercheurs du réseau <researchers.example.org>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["X-Mailer-Send"] == "c1/announce"
    assert message["Date"].datetime == DATE
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")


def test_the_long_unsubscribe_url_stays_a_url_on_the_wire() -> None:
    """List-Unsubscribe is never folded into encoded words (the default policy's trap)."""
    header = raw_header(build(), "List-Unsubscribe")
    assert b"=?" not in header
    assert f"<{LONG_URL}>".encode() in header
    assert b"<mailto:unsubscribe@example.org?subject=unsubscribe>" in header
    assert all(len(line) <= MAX_LINE for line in header.split(b"\r\n"))


def test_parts_charsets_and_order() -> None:
    """multipart/alternative with text first, then HTML, both UTF-8 and decoding exactly."""
    message = parse(build())
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    # Bodies travel with CRLF line ends; the parser hands them back as they travelled.
    assert parts[0].get_content().replace("\r\n", "\n") == RENDERED.text
    assert parts[1].get_content().replace("\r\n", "\n") == RENDERED.html


def calendar_file(method: str = "PUBLISH", recipient: Recipient = CLAIRE) -> bytes:
    """``recipient``'s calendar file of EVENT (for PUBLISH, everyone's)."""
    made = ics.prepare(EVENT, method=method, organizer_name="Réseau",
                       organizer_address="news@example.org", now=DATE)  # fmt: skip
    return made.for_attendee(recipient.email, recipient.name)


def test_event_mail_carries_the_calendar_file() -> None:
    """A PUBLISH event mail is multipart/mixed: the alternative, then a text/calendar
    attachment (REQUEST and CANCEL: test_invitations)."""
    part = CalendarPart(ics=calendar_file(), method="PUBLISH")
    message = parse(build(builder=MessageBuilder(IDENTITY, calendar=part)))
    assert message.get_content_type() == "multipart/mixed"
    alternative, attachment = list(message.iter_parts())
    assert alternative.get_content_type() == "multipart/alternative"
    assert attachment.get_content_type() == "text/calendar"
    assert attachment.get_param("method") == "PUBLISH"
    assert attachment.get_filename() == "invitation.ics"
    assert attachment.get_content().encode() == part.ics


def test_long_lines_are_encoded_to_fit_998_octets() -> None:
    """A 5,000-character HTML line becomes quoted-printable; no wire line passes 998 octets."""
    long_html = "<p>" + "é" * 5000 + "</p>"
    rendered = Rendered(locale="fr", subject="S", html=long_html, text="court")
    for eight_bit in (False, True):
        data = build(rendered=rendered, builder=MessageBuilder(IDENTITY, eight_bit=eight_bit))
        assert max(len(line) for line in data.split(b"\r\n")) <= MAX_LINE
        html = next(p for p in parse(data).walk() if p.get_content_type() == "text/html")
        assert html["Content-Transfer-Encoding"] == "quoted-printable"
        assert html.get_content() == long_html + "\r\n"


def test_eight_bit_bodies_when_the_relay_offers_8bitmime() -> None:
    """With 8BITMIME, short-lined UTF-8 bodies go as 8bit, and the result says so."""
    built = MessageBuilder(IDENTITY, eight_bit=True).build(
        recipient=CLAIRE, rendered=RENDERED, message_id="<x@example.org>",
        unsubscribe_url="https://l.example.org/u/t", date=DATE,
    )  # fmt: skip
    assert built.eight_bit
    assert "L’événement".encode() in built.data
    body = parse(built.data).get_body(("plain",))
    assert body is not None
    assert body.get_content().replace("\r\n", "\n") == RENDERED.text


def test_display_names_with_quotes_commas_and_accents() -> None:
    """Names with specials are quoted, with accents encoded; both read back intact."""
    for name in ('Dubois, Claire "CD"', "Amélie Roux, FAI²R", "O'Brien"):
        data = build(recipient=Recipient(id=8, email="a@example.org", name=name))
        assert parse(data)["To"].addresses[0].display_name == name


def test_non_ascii_local_part_needs_smtputf8() -> None:
    """Only an address that needs it asks for SMTPUTF8; its To header is raw UTF-8."""
    zoe = Recipient(id=9, email="zoé@exemple.fr", name="Zoé", smtputf8=True)
    builder = MessageBuilder(IDENTITY)
    built = builder.build(recipient=zoe, rendered=RENDERED, message_id="<z@example.org>",
                          unsubscribe_url="https://l.example.org/u/t", date=DATE)  # fmt: skip
    assert built.smtputf8
    assert built.recipient == "zoé@exemple.fr"
    assert "zoé@exemple.fr".encode() in raw_header(built.data, "To")
    ascii_one = builder.build(recipient=CLAIRE, rendered=RENDERED, message_id="<c@example.org>",
                              unsubscribe_url="https://l.example.org/u/t", date=DATE)  # fmt: skip
    assert not ascii_one.smtputf8


def test_internationalised_domain_goes_as_idna_without_smtputf8() -> None:
    """An ASCII local part at an accented domain is written in xn-- form, no SMTPUTF8 needed."""
    built = MessageBuilder(IDENTITY).build(
        recipient=Recipient(id=10, email="info@société.example", name=""),
        rendered=RENDERED, message_id="<i@example.org>",
        unsubscribe_url="https://l.example.org/u/t", date=DATE,
    )  # fmt: skip
    assert not built.smtputf8
    assert built.recipient == "info@xn--socit-esab.example"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "Bonjour\r\nBcc: all@example.org"),
        ("subject", "Bonjour\nX-Evil: 1"),
        ("name", "Claire\rDubois"),
        ("name", "Claire\x00"),
        ("email", "claire@example.org\r\nBcc: x@example.org"),
        ("email", "claire@example.org>, <x@example.org"),
    ],
)
def test_header_injection_is_refused(field: str, value: str) -> None:
    """CR, LF, NUL or address smuggling in any value is an error, never an extra header."""
    recipient, rendered = CLAIRE, RENDERED
    if field == "subject":
        rendered = Rendered(locale="fr", subject=value, html="<p>x</p>", text="x")
    elif field == "name":
        recipient = Recipient(id=11, email="c@example.org", name=value)
    else:
        recipient = Recipient(id=11, email=value)
    with pytest.raises(MessageError):
        build(recipient=recipient, rendered=rendered)


@given(st.text(max_size=80), st.text(max_size=40))
def test_no_line_break_ever_reaches_a_header(subject: str, name: str) -> None:
    """Property: a value with a control character is refused; any other round-trips exactly."""
    rendered = Rendered(locale="fr", subject=subject, html="<p>x</p>", text="x")
    recipient = Recipient(id=12, email="p@example.org", name=name)
    bad = first_control(subject + name) is not None  # the one rule, see test_addresses
    if bad:
        with pytest.raises(MessageError):
            build(recipient=recipient, rendered=rendered)
        return
    data = build(recipient=recipient, rendered=rendered)
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    names = [line.split(":", 1)[0] for line in head.split("\r\n") if not line[:1].isspace()]
    assert names == ["Date", "From", "Reply-To", "List-Id", "To", "Subject", "Message-ID",
                     "List-Unsubscribe", "List-Unsubscribe-Post", "X-Mailer-Send",
                     "MIME-Version", "Content-Type"]  # fmt: skip
    assert all(len(line) <= MAX_LINE for line in head.split("\r\n"))
    message = email.message_from_bytes(data, policy=policy.compat32)
    assert decoded(message["Subject"]) == subject.strip() or decoded(message["Subject"]) == subject


def _structure(message: Message) -> list[tuple[str, dict[str, str], str]]:
    out = []
    for part in message.walk():
        if part.is_multipart():
            out.append((part.get_content_type(), {}, ""))
            continue
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        params = {k: v for k, v in part.get_params() or [] if k not in ("boundary",)}
        params["disposition"] = part.get_content_disposition() or ""
        params["filename"] = part.get_filename() or ""
        out.append((part.get_content_type(), params, payload.decode("utf-8").replace("\r\n", "\n")))
    return out


@pytest.mark.parametrize("method", [None, "PUBLISH", "REQUEST", "CANCEL"])
def test_fast_path_and_reference_path_agree(method: str | None) -> None:
    """The per-send builder and the EmailMessage reference make the same message, with each
    kind of calendar part (the recipient's own file for REQUEST and CANCEL)."""
    recipient = Recipient(id=13, email="amelie+fai2r@example.org", name="Amélie Roux, FAI²R")
    calendar = CalendarPart(method) if method else None
    data = calendar_file(method, recipient) if method else None
    fast = parse(
        MessageBuilder(IDENTITY, calendar=calendar).build(
            recipient=recipient, rendered=RENDERED, message_id="<1.7.abc@example.org>",
            unsubscribe_url=LONG_URL, date=DATE, ics=data,
        ).data
    )  # fmt: skip
    reference = parse(
        build_reference(
            IDENTITY, recipient=recipient, rendered=RENDERED, message_id="<1.7.abc@example.org>",
            unsubscribe_url=LONG_URL, date=DATE, calendar=calendar, ics=data,
        )
    )  # fmt: skip
    for name in ("Date", "From", "To", "Subject", "Message-ID", "Reply-To", "List-Id",
                 "List-Unsubscribe", "List-Unsubscribe-Post", "X-Mailer-Send", "MIME-Version"):  # fmt: skip
        assert decoded(str(fast[name])) == decoded(str(reference[name])), name
    assert _structure(fast) == _structure(reference)


# --- calendar files -------------------------------------------------------------------------


def test_ics_parses_with_the_right_instants() -> None:
    """The .ics has a stable UID, Paris wall time with VTIMEZONE, and the right UTC instant."""
    data = calendar_file()
    calendar = Calendar.from_ical(data)
    assert calendar["METHOD"] == "PUBLISH"
    event = calendar.walk("VEVENT")[0]
    start = event.decoded("DTSTART")
    assert start == datetime(2024, 1, 15, 9, 0, tzinfo=PARIS)
    assert start.astimezone(UTC) == datetime(2024, 1, 15, 8, 0, tzinfo=UTC)
    assert event.decoded("DTEND").astimezone(UTC) == datetime(2024, 1, 15, 16, 30, tzinfo=UTC)
    assert str(event["UID"]) == "journee-2024@example.org"
    assert int(event["SEQUENCE"]) == 2
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["LOCATION"]) == "Hôpital Pitié-Salpêtrière, Paris"
    assert b"TZID=Europe/Paris" in data
    assert [tz["TZID"] for tz in calendar.walk("VTIMEZONE")] == ["Europe/Paris"]
    assert all(len(line) <= 75 for line in data.split(b"\r\n"))


def test_ics_summer_event_and_cancellation() -> None:
    """A June event is at UTC+2; a cancellation says METHOD:CANCEL and STATUS:CANCELLED."""
    summer = EventInfo(uid="u@example.org", title="Été", start=datetime(2024, 6, 20, 14, 0, tzinfo=PARIS),
                       end=None, timezone="Europe/Paris", sequence=3)  # fmt: skip
    calendar = Calendar.from_ical(
        ics.prepare(
            summer, method="CANCEL", organizer_name="R", organizer_address="n@example.org", now=DATE
        ).for_attendee("c@example.org", "C")
    )
    event = calendar.walk("VEVENT")[0]
    assert calendar["METHOD"] == "CANCEL"
    assert str(event["STATUS"]) == "CANCELLED"
    assert event.decoded("DTSTART").astimezone(UTC) == datetime(2024, 6, 20, 12, 0, tzinfo=UTC)
    assert event.decoded("DTEND") - event.decoded("DTSTART") == timedelta(hours=1)


# --- DKIM -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    folder: Path = tmp_path_factory.mktemp("dkim")
    private = folder / "key.pem"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(private), "2048"], check=True, capture_output=True
    )
    public = subprocess.run(
        ["openssl", "rsa", "-in", str(private), "-pubout", "-outform", "DER"],
        check=True, capture_output=True,
    ).stdout  # fmt: skip
    return private.read_bytes(), public


def test_dkim_signature_verifies_offline_and_covers_unsubscribe(
    rsa_key: tuple[bytes, bytes],
) -> None:
    """A signed message verifies against the published key; h= includes both unsubscribe headers."""
    import base64

    private, public = rsa_key
    signer = DkimSigner(selector="mail2024", domain="example.org", private_key=private)
    data = build(builder=MessageBuilder(IDENTITY, sign=signer))
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == b"mail2024._domainkey.example.org." else None

    assert dkim.verify(data, dnsfunc=dns)
    signature = parse(data)["DKIM-Signature"]
    signed = signature.replace(" ", "").split("h=")[1].split(";")[0].lower().split(":")
    for header in ("from", "subject", "date", "to", "message-id", "list-id", "list-unsubscribe",
                   "list-unsubscribe-post"):  # fmt: skip
        assert header in signed
    tampered = data.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)
    # An invitation is signed whole too: its calendar parts are in the body hash.
    invitation = MessageBuilder(IDENTITY, calendar=CalendarPart("REQUEST"), sign=signer).build(
        recipient=CLAIRE, rendered=RENDERED, message_id="<1.7.abc@example.org>",
        unsubscribe_url=LONG_URL, date=DATE, ics=calendar_file("REQUEST"),
    ).data  # fmt: skip
    assert dkim.verify(invitation, dnsfunc=dns)
    assert not dkim.verify(invitation.replace(b"QkVHSU46VkNBTEVOREFS", b"QkVHSU46VkNBTEVOREFT"),
                           dnsfunc=dns)  # fmt: skip


def test_a_bad_dkim_key_fails_when_the_send_is_prepared() -> None:
    """A key that cannot sign is found before any message is built."""
    with pytest.raises(MessageError, match="DKIM signing failed"):
        DkimSigner(selector="s", domain="example.org", private_key=b"not a key")


def _crlf_only(data: bytes) -> bool:
    pairs = data.count(b"\r\n")
    return data.count(b"\r") == pairs == data.count(b"\n")


@given(
    st.text(alphabet=st.sampled_from("ab .é\r\n\t"), max_size=300),
    st.text(alphabet=st.sampled_from("<p>x .é\r\n"), max_size=300),
    st.sampled_from([None, "PUBLISH", "REQUEST", "CANCEL"]),
    st.booleans(),
)
def test_what_the_builder_says_is_crlf_only_is(
    text: str, html: str, method: str | None, eight_bit: bool
) -> None:
    """Property: the builder marks its messages ``crlf`` (the transport then skips its own
    look at the line ends); whatever the bodies hold (lone CR, lone LF, CRLF, lines
    starting with a period), with each kind of calendar part, every line ends in CRLF."""
    calendar = CalendarPart(method) if method else None
    built = MessageBuilder(IDENTITY, calendar=calendar, eight_bit=eight_bit).build(
        recipient=CLAIRE, rendered=Rendered(locale="fr", subject="s", html=html, text=text),
        message_id="<1.7.abc@example.org>", unsubscribe_url=LONG_URL, date=DATE,
        ics=calendar_file(method, CLAIRE) if method else None,
    )  # fmt: skip
    assert built.crlf
    assert _crlf_only(built.data)


def test_a_signed_message_is_crlf_only(rsa_key: tuple[bytes, bytes]) -> None:
    """The DKIM-Signature header the signer adds keeps the promise too."""
    signer = DkimSigner(selector="mail2024", domain="example.org", private_key=rsa_key[0])
    built = MessageBuilder(IDENTITY, sign=signer).build(
        recipient=CLAIRE, rendered=RENDERED, message_id="<1.7.abc@example.org>",
        unsubscribe_url=LONG_URL, date=DATE,
    )  # fmt: skip
    assert built.crlf
    assert _crlf_only(built.data)
    assert built.data.startswith(b"DKIM-Signature:")
