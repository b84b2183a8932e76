"""Messages: rendered content in, the bytes of an RFC 5322 message out. Pure: no I/O, no
clock (the date comes in), no SMTP.

Built for speed: a :class:`MessageBuilder` is made once per send and decides the structure,
the boundaries, the encodings and every header that is the same for all recipients (From,
Reply-To, List-Id, List-Unsubscribe-Post, the calendar part's headers). Per recipient it
fills in To, Subject, Date, Message-ID, List-Unsubscribe and the two bodies, encoded with the
C-level ``binascii`` quoted-printable encoder (or sent as 8bit when the relay offers 8BITMIME
and the lines fit), and the base64 of the recipient's calendar file. :func:`build_reference`
builds the same message with the standard ``EmailMessage``; the tests check that both paths
agree.

An event mail's calendar file (:class:`CalendarPart`), as Google Calendar sends its own
invitations, for REQUEST and CANCEL::

    multipart/mixed
      multipart/alternative
        text/plain; charset="utf-8"
        text/html; charset="utf-8"
        text/calendar; charset="UTF-8"; method=REQUEST    (base64, no disposition)
      application/ics; name="invite.ics"                  (attachment, base64)

the same bytes in both: Outlook and Gmail read the iMIP part inside the alternative (Outlook
only looks in the first child of multipart/mixed), other clients offer the attachment. For
PUBLISH the file is only an attachment, ``text/calendar; method=PUBLISH`` after the alternative.

Every header value and address is checked here: CR, LF and other control characters are a
:class:`~mailer.errors.MessageError`, never a second header. Lines stay within 998 octets;
the long ``List-Unsubscribe`` URL is written as is, never folded into encoded words.
"""

from __future__ import annotations

import binascii
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache

from mailer.addresses import first_control
from mailer.errors import MessageError
from mailer.models import Recipient, Rendered

CRLF = "\r\n"
MAX_LINE = 998
_SPECIALS = set('()<>[]:;@\\,."')
REFERENCE_POLICY = policy.SMTP.clone(max_line_length=MAX_LINE)


@dataclass(frozen=True, slots=True)
class Identity:
    """Who sends, for which list: the same for every message of a send."""

    from_name: str
    from_address: str
    domain: str  # for Message-ID and List-Id
    list_slug: str
    list_title: str
    trace: str  # value of the X-Mailer-Send header, e.g. "c12/reminder:P7D"
    reply_to: str | None = None
    unsubscribe_mailto: str | None = None


CALENDAR_METHODS = ("REQUEST", "PUBLISH", "CANCEL")


@dataclass(frozen=True, slots=True)
class CalendarPart:
    """The calendar file of an event send: its iTIP method and the attachment's file name
    (``invite.ics`` for REQUEST and CANCEL, ``invitation.ics`` for PUBLISH when not given).

    Each recipient's file is given to :meth:`MessageBuilder.build`; ``ics``, one file for
    every recipient, is what is sent when none is given (the send-wide file of before).
    """

    method: str  # REQUEST, PUBLISH or CANCEL: the file's METHOD
    filename: str = ""
    ics: bytes | None = None

    @property
    def invitation(self) -> bool:
        """REQUEST or CANCEL: the file is an alternative of the body and an attachment."""
        return self.method in ("REQUEST", "CANCEL")

    @property
    def name(self) -> str:
        """The attachment's file name."""
        return self.filename or ("invite.ics" if self.invitation else "invitation.ics")


@dataclass(frozen=True, slots=True)
class Built:
    """A message ready for the transport."""

    data: bytes
    sender: str  # envelope MAIL FROM
    recipient: str  # envelope RCPT TO
    message_id: str
    smtputf8: bool  # the relay must offer SMTPUTF8
    eight_bit: bool  # the relay must offer 8BITMIME
    # every line ends in CRLF (MessageBuilder's own word): the transport need not look
    crlf: bool = False


def make_message_id(
    *, send_id: int, subscriber_id: int, domain: str, nonce: str | None = None
) -> str:
    """A Message-ID that says which send and subscriber it is, unique by its nonce."""
    return f"<{send_id}.{subscriber_id}.{nonce or secrets.token_hex(6)}@{domain}>"


def check(value: str, what: str) -> str:
    """Refuse CR, LF and other control characters in a header value (the one rule of
    :func:`~mailer.addresses.first_control`, which the import and the forms apply too)."""
    bad = first_control(value)
    if bad is not None:
        raise MessageError(f"{what} contains a control character ({bad}): {value[:60]!r}")
    return value


def check_address(address: str, what: str) -> str:
    check(address, what)
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c in address for c in ' <>"(),;'):
        raise MessageError(f"{what} is not a plain address: {address!r}")
    return address


def ascii_address(address: str) -> str:
    """The address with an internationalised domain written in IDNA (xn--)."""
    local, _, domain = address.rpartition("@")
    if domain.isascii():
        return address
    return f"{local}@{domain.encode('idna').decode('ascii')}"


@lru_cache(maxsize=1024)
def encode_phrase(text: str) -> str:
    """A display name or subject as header text: as is, quoted, or RFC 2047 encoded words."""
    if not text.isascii():
        return Header(text, "utf-8").encode(linesep=CRLF)
    if any(c in _SPECIALS for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


@lru_cache(maxsize=1024)
def encode_text(text: str, header: str) -> str:
    """Unstructured header text (Subject): ASCII folded at spaces, else encoded words."""
    if text.isascii() and len(text) + len(header) + 2 <= 78:
        return text
    charset = "us-ascii" if text.isascii() else "utf-8"
    return Header(text, charset, header_name=header).encode(linesep=CRLF)


def _mailbox(name: str, address: str) -> str:
    return f"{encode_phrase(name)} <{address}>" if name else address


def _lines_fit(data: bytes) -> bool:
    return len(data) <= MAX_LINE or max(map(len, data.split(b"\n"))) <= MAX_LINE


def base64_lines(data: bytes) -> bytes:
    """``data`` in base64, 76 characters a line, CRLF between lines (none after the last)."""
    encoded = binascii.b2a_base64(data, newline=False)
    return b"\r\n".join([encoded[i : i + 76] for i in range(0, len(encoded), 76)])


def encode_body(text: str, *, eight_bit: bool) -> tuple[bytes, str]:
    """(encoded body with CRLF line ends, Content-Transfer-Encoding)."""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.encode("utf-8")
    if not data.endswith(b"\n"):
        data += b"\n"
    fits = _lines_fit(data)
    if fits and data.isascii():
        return data.replace(b"\n", b"\r\n"), "7bit"
    if fits and eight_bit:
        return data.replace(b"\n", b"\r\n"), "8bit"
    return binascii.b2a_qp(data.replace(b"\n", b"\r\n")), "quoted-printable"


class MessageBuilder:
    """Builds every message of one send; make one per send, call :meth:`build` per recipient."""

    def __init__(
        self,
        identity: Identity,
        *,
        calendar: CalendarPart | None = None,
        eight_bit: bool = False,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.identity = identity
        self.calendar = calendar
        self.eight_bit = eight_bit
        self._sign = sign
        check_address(identity.from_address, "the sender address")
        check(identity.from_name, "the sender name")
        check(identity.trace, "the trace header")
        check(identity.list_title, "the list title")
        if not identity.trace.isascii() or not identity.list_slug.isascii():
            raise MessageError("the trace header and the list name must be ASCII")
        token = secrets.token_hex(8)
        self._alt = f"=_alt_{token}"
        self._mixed = f"=_mixed_{token}"
        shared = [
            f"From: {_mailbox(identity.from_name, ascii_address(identity.from_address))}",
        ]
        if identity.reply_to:
            check_address(identity.reply_to, "the Reply-To address")
            shared.append(f"Reply-To: {ascii_address(identity.reply_to)}")
        shared.append(
            f"List-Id: {encode_phrase(identity.list_title)} "
            f"<{identity.list_slug}.{identity.domain}>"
        )
        self._shared = CRLF.join(shared)
        self._tail = CRLF.join(
            [
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
                f"X-Mailer-Send: {identity.trace}",
                "MIME-Version: 1.0",
            ]
        )
        self._calendar_alternative = b""  # the headers of the iMIP alternative
        self._calendar_attachment = b""  # the headers of the attachment
        self._encoded: tuple[bytes, bytes] | None = None  # the last ics and its base64
        self._method_line = b""
        if calendar is not None:
            self._prepare_calendar(calendar)

    def _prepare_calendar(self, calendar: CalendarPart) -> None:
        if calendar.method not in CALENDAR_METHODS:
            raise MessageError(
                f"calendar method {calendar.method!r} is not one of {CALENDAR_METHODS}"
            )
        name = calendar.name
        if not name.isascii() or any(c in name for c in '"\\') or first_control(name):
            raise MessageError(f"the calendar file name must be plain ASCII: {name!r}")
        self._method_line = f"\r\nMETHOD:{calendar.method}\r\n".encode()
        if calendar.invitation:
            self._calendar_alternative = (
                f"\r\n--{self._alt}\r\n"
                f'Content-Type: text/calendar; charset="UTF-8"; method={calendar.method}\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\n"
            ).encode()
            self._calendar_attachment = (
                f"--{self._mixed}\r\n"
                f'Content-Type: application/ics; name="{name}"\r\n'
                f'Content-Disposition: attachment; filename="{name}"\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\n"
            ).encode()
        else:
            self._calendar_attachment = (
                f"--{self._mixed}\r\n"
                f'Content-Type: text/calendar; charset="utf-8"; method={calendar.method}\r\n'
                "Content-Transfer-Encoding: base64\r\n"
                f'Content-Disposition: attachment; filename="{name}"\r\n\r\n'
            ).encode()
        if calendar.ics is not None:
            self._calendar_body(calendar.ics)  # checked now, encoded once

    def _calendar_body(self, ics: bytes) -> bytes:
        """The base64 of ``ics``; the same bytes as the last time are not encoded again."""
        last = self._encoded
        if last is not None and (last[0] is ics or last[0] == ics):
            return last[1]
        if ics.find(self._method_line, 0, 512) < 0:
            # Outlook refuses a file whose METHOD is not the Content-Type's method.
            raise MessageError(f"the calendar file is not a {self._method_line.strip().decode()}")
        body = base64_lines(ics)
        self._encoded = (ics, body)
        return body

    def _calendar_for(self, ics: bytes | None) -> bytes | None:
        """The base64 calendar body of one message (None without a calendar part)."""
        if self.calendar is None:
            if ics is not None:
                raise MessageError("a calendar file was given to a send without a calendar part")
            return None
        if ics is None:
            ics = self.calendar.ics
            if ics is None:
                raise MessageError("this send's calendar part needs each recipient's file")
        return self._calendar_body(ics)

    def build(
        self,
        *,
        recipient: Recipient,
        rendered: Rendered,
        message_id: str,
        unsubscribe_url: str,
        date: datetime,
        ics: bytes | None = None,
    ) -> Built:
        """The message to ``recipient``; ``ics`` is their calendar file, given exactly when
        the send has a calendar part (or that part's one file is sent)."""
        check_address(recipient.email, "the recipient address")
        check(recipient.name, "the recipient name")
        check(rendered.subject, "the subject")
        check(message_id, "the Message-ID")
        check(unsubscribe_url, "the unsubscribe URL")
        if not unsubscribe_url.isascii() or " " in unsubscribe_url:
            raise MessageError(f"the unsubscribe URL must be ASCII: {unsubscribe_url!r}")
        smtputf8 = recipient.smtputf8 and not recipient.email.isascii()
        to = recipient.email if smtputf8 else ascii_address(recipient.email)
        unsubscribe = f"<{unsubscribe_url}>"
        if self.identity.unsubscribe_mailto:
            unsubscribe += (
                f",{CRLF} <mailto:{self.identity.unsubscribe_mailto}?subject=unsubscribe>"
            )
        calendar = self._calendar_for(ics)
        text, text_cte = encode_body(rendered.text, eight_bit=self.eight_bit)
        html, html_cte = encode_body(rendered.html, eight_bit=self.eight_bit)
        head = CRLF.join(
            [
                f"Date: {format_datetime(date)}",
                self._shared,
                f"To: {_mailbox(recipient.name, to)}",
                f"Subject: {encode_text(rendered.subject, 'Subject')}",
                f"Message-ID: {message_id}",
                f"List-Unsubscribe: {unsubscribe}",
                self._tail,
            ]
        )
        if (self._alt.encode() in text or self._alt.encode() in html) and (
            text_cte != "quoted-printable" or html_cte != "quoted-printable"
        ):
            raise MessageError("a body contains the MIME boundary; cannot build the message")
        parts = [
            f"--{self._alt}\r\n"
            f'Content-Type: text/plain; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {text_cte}\r\n\r\n".encode(),
            text,
            # The CRLF before a boundary belongs to the boundary: keep the body's own.
            f"\r\n--{self._alt}\r\n"
            f'Content-Type: text/html; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {html_cte}\r\n\r\n".encode(),
            html,
        ]
        alt_type = f'Content-Type: multipart/alternative; boundary="{self._alt}"'
        if calendar is None:
            parts.insert(0, f"{head}\r\n{alt_type}\r\n\r\n".encode())
            parts.append(f"\r\n--{self._alt}--\r\n".encode())
        else:
            parts.insert(
                0,
                f'{head}\r\nContent-Type: multipart/mixed; boundary="{self._mixed}"\r\n\r\n'
                f"--{self._mixed}\r\n{alt_type}\r\n\r\n".encode(),
            )
            if self._calendar_alternative:
                parts += [self._calendar_alternative, calendar]
            parts += [f"\r\n--{self._alt}--\r\n".encode(), self._calendar_attachment, calendar]
            parts.append(f"\r\n--{self._mixed}--\r\n".encode())
        data = b"".join(parts)
        if self._sign is not None:
            data = self._sign(data)
        return Built(
            data=data,
            sender=ascii_address(self.identity.from_address),
            recipient=to,
            message_id=message_id,
            smtputf8=smtputf8,
            eight_bit="8bit" in (text_cte, html_cte),
            crlf=True,  # headers refuse CR and LF, bodies are encoded with CRLF, so is DKIM's
        )


def build_reference(
    identity: Identity,
    *,
    recipient: Recipient,
    rendered: Rendered,
    message_id: str,
    unsubscribe_url: str,
    date: datetime,
    calendar: CalendarPart | None = None,
    ics: bytes | None = None,
) -> bytes:
    """The same message built with the standard library's EmailMessage (slow; for tests)."""
    for value, what in (
        (rendered.subject, "the subject"),
        (recipient.name, "the recipient name"),
        (recipient.email, "the recipient address"),
    ):
        check(value, what)
    msg = EmailMessage(policy=REFERENCE_POLICY)
    msg["Date"] = format_datetime(date)
    msg["From"] = Address(identity.from_name, addr_spec=identity.from_address)
    if identity.reply_to:
        msg["Reply-To"] = identity.reply_to
    msg["List-Id"] = f"{identity.list_title} <{identity.list_slug}.{identity.domain}>"
    msg["To"] = Address(recipient.name, addr_spec=recipient.email)
    msg["Subject"] = rendered.subject
    msg["Message-ID"] = message_id
    unsubscribe = f"<{unsubscribe_url}>"
    if identity.unsubscribe_mailto:
        unsubscribe += f", <mailto:{identity.unsubscribe_mailto}?subject=unsubscribe>"
    msg["List-Unsubscribe"] = unsubscribe
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Mailer-Send"] = identity.trace
    msg.set_content(rendered.text, charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    if calendar is not None:
        data = ics if ics is not None else calendar.ics
        if data is None:
            raise MessageError("this send's calendar part needs each recipient's file")
        _add_calendar(msg, calendar, data)
    return msg.as_bytes()


def _add_calendar(msg: EmailMessage, calendar: CalendarPart, data: bytes) -> None:
    if calendar.invitation:
        msg.add_alternative(
            data, maintype="text", subtype="calendar",
            params={"charset": "UTF-8", "method": calendar.method},
        )  # fmt: skip
        msg.add_attachment(
            data, maintype="application", subtype="ics",
            filename=calendar.name, params={"name": calendar.name},
        )  # fmt: skip
    else:
        msg.make_mixed()
        msg.add_attachment(
            data, maintype="text", subtype="calendar", filename=calendar.name,
            params={"method": calendar.method, "charset": "utf-8"},
        )  # fmt: skip


class DkimSigner:
    """DKIM-signs whole messages (dkimpy, relaxed/relaxed, rsa-sha256 or ed25519-sha256).

    The signature covers the unsubscribe headers as RFC 8058 requires (dkimpy's default
    list leaves out List-Unsubscribe-Post).
    """

    HEADERS = (
        b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"list-id",
        b"list-unsubscribe", b"list-unsubscribe-post", b"mime-version", b"content-type",
    )  # fmt: skip

    def __init__(self, *, selector: str, domain: str, private_key: bytes) -> None:
        self.selector = selector.encode("ascii")
        self.domain = domain.encode("idna")
        self.private_key = private_key
        algorithm = b"ed25519-sha256" if b"ED25519" in private_key.upper() else b"rsa-sha256"
        self.algorithm = algorithm
        self(b"From: a@example.org\r\nSubject: probe\r\n\r\nprobe\r\n")  # fail early on a bad key

    def __call__(self, data: bytes) -> bytes:
        import dkim  # imported on first use: most installations sign at the relay

        try:
            signature = dkim.sign(
                data,
                self.selector,
                self.domain,
                self.private_key,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=self.algorithm,
                include_headers=list(self.HEADERS),
            )
        except dkim.DKIMException as exc:
            raise MessageError(f"DKIM signing failed: {exc}") from None
        return bytes(signature) + data
