"""Composing one send: rendered content and message building joined, per recipient.

Pure per recipient; making a composer reads the DKIM key file once, when one is set.

A :class:`Composer` is made once per send: it compiles the templates, prepares the
message builder (shared headers, calendar part, DKIM) and then turns each recipient into
the bytes for the transport. Dispatch, preview and test sends all go through it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from mailer.errors import ConfigError
from mailer.message import (
    Built,
    CalendarPart,
    DkimSigner,
    Identity,
    MessageBuilder,
    check,
    check_address,
    make_message_id,
)
from mailer.models import CONFIRM_ACTION, Links, Recipient, Rendered, SendInfo
from mailer.render import CheckReport, CompiledSend, Renderer, preflight
from mailer.settings import Settings
from mailer.tokens import Signer, links_for

EVENT_ACTIONS = ("invitation", "reminder", "update", "cancellation")


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
    ) -> None:
        self.compiled = compiled
        self.builder = builder
        self.signer = signer
        self.base_url = base_url
        self.domain = domain
        self.send_id = send_id
        self._sample_links: Links | None = None

    def compose(
        self, recipient: Recipient, *, date: datetime, message_id: str | None = None
    ) -> Composed:
        links = links_for(
            self.signer,
            self.base_url,
            subscriber_id=recipient.id,
            list_id=self.compiled.send.list.id,
            confirm=self.compiled.send.action == CONFIRM_ACTION,
        )
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
        )
        return Composed(rendered, built)

    def check_one(self, recipient: Recipient) -> None:
        """What can fail for one recipient, cheaply: the templates and the header values.

        The pre-flight check runs this for every recipient before the first message leaves;
        CSS inlining, text derivation and MIME assembly cannot fail for one recipient alone.
        """
        if self._sample_links is None:
            self._sample_links = links_for(
                self.signer,
                self.base_url,
                subscriber_id=0,
                list_id=self.compiled.send.list.id,
                confirm=self.compiled.send.action == CONFIRM_ACTION,
            )
        subject = self.compiled.check(recipient, self._sample_links)
        check(subject, "the subject")
        check_address(recipient.email, "the recipient address")
        check(recipient.name, "the recipient name")

    def compose_test(self, recipient: Recipient, *, to: str, date: datetime) -> Composed:
        """What ``recipient`` would get, addressed to ``to`` and marked as a test."""
        links = links_for(
            self.signer,
            self.base_url,
            subscriber_id=recipient.id,
            list_id=self.compiled.send.list.id,
        )
        rendered = self.compiled.render(recipient, links)
        rendered = replace(rendered, subject=f"[TEST] {rendered.subject}")
        staff = Recipient(id=recipient.id, email=to, name="", smtputf8=not to.isascii())
        built = self.builder.build(
            recipient=staff,
            rendered=rendered,
            message_id=make_message_id(send_id=self.send_id, subscriber_id=0, domain=self.domain),
            unsubscribe_url=links.unsubscribe,
            date=date.astimezone(self.compiled.zone),
        )
        return Composed(rendered, built)

    def check(self, recipients: Iterable[Recipient], *, date: datetime) -> CheckReport:
        """The pre-flight check: render and build every recipient, send nothing."""
        pairs = (
            (
                r,
                links_for(
                    self.signer,
                    self.base_url,
                    subscriber_id=r.id,
                    list_id=self.compiled.send.list.id,
                ),
            )
            for r in recipients
        )
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
    calendar = None
    if send.event is not None:
        from mailer import ics  # icalendar weighs 4 MiB: loaded only for event sends

        cancel = send.action == "cancellation"
        calendar = CalendarPart(
            ics=ics.build(
                send.event,
                cancel=cancel,
                organizer_name=send.sender_name,
                organizer_address=send.sender_address,
                now=send.now,
            ),
            method="CANCEL" if cancel else "PUBLISH",
            filename="cancellation.ics" if cancel else "invitation.ics",
        )
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
        compiled=renderer.compile(send),
        builder=MessageBuilder(identity, calendar=calendar, eight_bit=eight_bit, sign=sign),
        signer=signer,
        base_url=settings.web.base_url,
        domain=sender.domain,
        send_id=send_id,
    )
