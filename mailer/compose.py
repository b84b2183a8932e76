"""Composing one send: rendered content and message building joined, per recipient.

Pure per recipient; making a composer reads the DKIM key file once, when one is set.

A :class:`Composer` is made once per send: it compiles the templates, prepares the
message builder (shared headers, calendar part, DKIM) and then turns each recipient into
the bytes for the transport. Dispatch, preview and test sends all go through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailer.errors import ConfigError
from mailer.message import (
    Built,
    CalendarPart,
    DkimSigner,
    Identity,
    MessageBuilder,
    ascii_address,
    check,
    check_address,
    make_message_id,
)
from mailer.models import (
    CONFIRM_ACTION,
    InviteMode,
    Links,
    Recipient,
    Rendered,
    SendAction,
    SendInfo,
)
from mailer.render import CheckReport, CompiledSend, Renderer, preflight
from mailer.settings import Settings
from mailer.tokens import Signer, calendar_url, links_for

if TYPE_CHECKING:
    from mailer.ics import IcsTemplate


@dataclass(frozen=True, slots=True)
class Composed:
    rendered: Rendered
    message: Built


class Composer:
    def __init__(
        self,
        *,
        compiled: CompiledSend,
        builder: MessageBuilder,
        signer: Signer,
        base_url: str,
        domain: str,
        send_id: int,
        calendars: Mapping[str, IcsTemplate] | None = None,
        test_calendars: Mapping[str, IcsTemplate] | None = None,
    ) -> None:
        self.compiled = compiled
        self.builder = builder
        self.signer = signer
        self.base_url = base_url
        self.domain = domain
        self.send_id = send_id
        self.calendars = calendars or {}  # an event's calendar file per language
        # a test send's: another UID, so a staff copy never changes a real invitee's entry
        self.test_calendars = test_calendars or {}
        self._sample_links: Links | None = None

    def _ics(
        self, locale: str, email: str, name: str, smtputf8: bool, *, test: bool = False
    ) -> bytes | None:
        """The recipient's calendar file in their language (None without an event): the
        attendee's address as the envelope has it (IDNA unless sent with SMTPUTF8), which
        Gmail and Outlook match against the mailbox to offer their buttons."""
        template = (self.test_calendars if test else self.calendars).get(locale)
        if template is None:
            return None
        address = email if smtputf8 and not email.isascii() else ascii_address(email)
        return template.for_attendee(address, name)

    def compose(
        self,
        recipient: Recipient,
        *,
        date: datetime,
        message_id: str | None = None,
        inert: bool = False,
    ) -> Composed:
        """``recipient``'s mail; ``inert``: with the test links (and calendar) instead of
        theirs, for a preview that staff see (a copied link changes nothing for them)."""
        if self.compiled.send.action == CONFIRM_ACTION:
            # The name was typed in the sign-up form by whoever typed the address: a
            # confirmation mail must not carry a stranger's words (in To: or the greeting).
            recipient = replace(recipient, name="", attributes={})
        links = self.test_links() if inert else self.links(recipient)
        rendered = self.compiled.render(recipient, links)
        built = self.builder.build(
            recipient=recipient,
            rendered=rendered,
            message_id=message_id
            or make_message_id(
                send_id=self.send_id, subscriber_id=recipient.id, domain=self.domain
            ),
            unsubscribe_url=links.unsubscribe,
            date=date,
            ics=self._ics(
                rendered.locale, recipient.email, recipient.name, recipient.smtputf8, test=inert
            ),
        )
        return Composed(rendered, built)

    def test_links(self) -> Links:
        """Links of the test purpose: they open the pages but change nothing for anyone."""
        return links_for(
            self.signer,
            self.base_url,
            public_id="",
            list_id=self.compiled.send.list.id,
            confirm_nonce="" if self.compiled.send.action == CONFIRM_ACTION else None,
            test=True,
        )

    def links(self, recipient: Recipient) -> Links:
        """The links of ``recipient``'s mail (its confirmation link in a confirmation)."""
        confirming = self.compiled.send.action == CONFIRM_ACTION
        return links_for(
            self.signer,
            self.base_url,
            public_id=recipient.public_id,
            list_id=self.compiled.send.list.id,
            confirm_nonce=(recipient.confirm_nonce or "") if confirming else None,
        )

    def check_one(self, recipient: Recipient) -> None:
        """What can fail for one recipient, cheaply: the templates and the header values.

        The pre-flight check runs this for every recipient before the first message leaves;
        CSS inlining, text derivation and MIME assembly cannot fail for one recipient alone.
        """
        self.check_recipient(recipient)
        if self._sample_links is None:
            self._sample_links = self.links(Recipient(id=0, email="", public_id="x" * 22))
        subject = self.compiled.check(recipient, self._sample_links)
        check(subject, "the subject")

    def check_recipient(self, recipient: Recipient) -> None:
        """What the recipient's own data must be to go in a header: their address, and their
        name (which a confirmation mail leaves out). MessageError names what is wrong: a
        failure that belongs to this recipient, not to the campaign."""
        check_address(recipient.email, "the recipient address")
        if self.compiled.send.action != CONFIRM_ACTION:
            check(recipient.name, "the recipient name")

    def compose_test(self, recipient: Recipient, *, to: str, date: datetime) -> Composed:
        """What ``recipient`` would get, addressed to ``to`` and marked as a test: its links
        (and List-Unsubscribe) are of the test purpose, so a click on the staff copy changes
        nothing for the subscriber it shows."""
        links = self.test_links()
        rendered = self.compiled.render(recipient, links)
        rendered = replace(rendered, subject=f"[TEST] {rendered.subject}")
        staff = Recipient(id=recipient.id, email=to, name="", smtputf8=not to.isascii())
        built = self.builder.build(
            recipient=staff,
            rendered=rendered,
            message_id=make_message_id(send_id=self.send_id, subscriber_id=0, domain=self.domain),
            unsubscribe_url=links.unsubscribe,
            date=date.astimezone(self.compiled.zone),
            ics=self._ics(rendered.locale, to, "", staff.smtputf8, test=True),
        )
        return Composed(rendered, built)

    def check(self, recipients: Iterable[Recipient], *, date: datetime) -> CheckReport:
        """The pre-flight check: render and build every recipient, send nothing."""
        pairs = ((r, self.links(r)) for r in recipients)
        return preflight(
            self.compiled,
            pairs,
            build=lambda recipient, _: self.compose(recipient, date=date),
        )


def make_composer(
    settings: Settings,
    *,
    renderer: Renderer,
    signer: Signer,
    send: SendInfo,
    send_id: int,
    trace: str,
    eight_bit: bool = False,
) -> Composer:
    """Compile a send and prepare its message builder (TemplateError/MessageError if wrong)."""
    sender = settings.sender
    identity = Identity(
        from_name=send.sender_name,
        from_address=send.sender_address,
        domain=sender.domain,
        list_slug=send.list.slug,
        list_title=send.list.title,
        trace=trace,
        reply_to=sender.reply_to,
        unsubscribe_mailto=sender.unsubscribe_mailto,
    )
    languages = renderer.languages(send.content)
    calendar, calendars, tests, extra = _calendars(settings, signer, send, languages)
    sign = None
    if sender.dkim_selector and sender.dkim_key_file:
        try:
            key = Path(sender.dkim_key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"MAILER_SENDER__DKIM_KEY_FILE: cannot read {sender.dkim_key_file} ({exc.strerror})"
            ) from None
        sign = DkimSigner(
            selector=sender.dkim_selector,
            domain=send.sender_address.rpartition("@")[2],
            private_key=key,
        )
    return Composer(
        compiled=renderer.compile(send, extra=extra),
        builder=MessageBuilder(identity, calendar=calendar, eight_bit=eight_bit, sign=sign),
        signer=signer,
        base_url=settings.web.base_url,
        domain=sender.domain,
        send_id=send_id,
        calendars=calendars,
        test_calendars=tests,
    )


def _calendars(
    settings: Settings, signer: Signer, send: SendInfo, languages: Iterable[str]
) -> tuple[
    CalendarPart | None, dict[str, IcsTemplate], dict[str, IcsTemplate], dict[str, dict[str, Any]]
]:
    """For an event's send: the message's calendar part, the calendar file per language
    (an iTIP REQUEST with each recipient as ATTENDEE by default, CANCEL for a cancellation,
    PUBLISH when the event says ``invite = "publish"``), and per language the "add to
    calendar" links the templates show (Google, Outlook.com, the /e/TOKEN.ics page). A test
    send's files have their own UID ("test-" and the event's): a staff member who is also
    invited keeps their real entry whatever the test says."""
    event = send.event
    if event is None:
        return None, {}, {}, {}
    from mailer import ics  # icalendar weighs 4 MiB: loaded only for event sends

    if send.action == SendAction.CANCELLATION:
        method = "CANCEL"
    elif event.invite == InviteMode.REQUEST:
        method = "REQUEST"
    else:
        method = "PUBLISH"
    calendars: dict[str, IcsTemplate] = {}
    tests: dict[str, IcsTemplate] = {}
    extra: dict[str, dict[str, Any]] = {}
    for locale in languages:
        words = event.localized(locale)
        for target, uid in ((calendars, words.uid), (tests, f"test-{words.uid}")):
            target[locale] = ics.prepare(
                replace(words, uid=uid), method=method, organizer_name=send.sender_name,
                organizer_address=send.sender_address, now=send.now, rsvp=event.rsvp,
            )  # fmt: skip
        found = ics.calendar_links(words)
        extra[locale] = {
            "calendar": {
                "google": found.google,
                "outlook": found.outlook,
                "ics": calendar_url(signer, settings.web.base_url, uid=event.uid, locale=locale),
            }
        }
    return CalendarPart(method), calendars, tests, extra
