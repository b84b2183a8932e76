"""Relay bounce webhooks (``mailer.bounces.providers``, ``mailer.web.bounce_hooks``): each
relay's documented payload, signed with keys made by the test, read into the same events;
every way a call can be wrong refused with its status and nothing accepted; one relay through
a real uvicorn; and SES's events through a real ``Intake`` on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from mailer.bounces import BounceKind, Finding, Report, ReportKind
from mailer.bounces.providers import (
    HookRefused,
    ProviderEvent,
    Refusal,
    Subscription,
    check_basic_auth,
    kind_of,
    mailgun_events,
    postmark_events,
    sendgrid_events,
    sendgrid_key,
    sns_envelope,
    sns_read,
    sns_url_ok,
    sns_verify,
)
from mailer.errors import ConfigError, StorageUnavailable
from mailer.intake import Intake
from mailer.settings.bounces import HookSettings
from mailer.storage import Store
from mailer.tokens import return_path
from mailer.web.bounce_hooks import MAX_HOOK_BODY, fetch_https, hook_routes
from tests import hook_support as hs
from tests.hook_support import TOPIC, SendGrid, Sns, body

pytestmark = pytest.mark.timeout(60)


def now() -> datetime:
    """Read at each use: a module-wide moment would age while the rest of the suite runs."""
    return datetime.now(UTC)


MID = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324"


@pytest.fixture(scope="module")
def sns() -> Sns:
    return Sns()


@pytest.fixture(scope="module")
def sendgrid() -> SendGrid:
    return SendGrid()


def dsn_event(provider: str, event_id: str, finding: Finding, **ties: str | None) -> ProviderEvent:
    kind = ReportKind.ARF if finding.kind is BounceKind.COMPLAINT else ReportKind.DSN
    report = Report(kind=kind, findings=(finding,), reader=provider, **ties)
    return ProviderEvent(provider=provider, event_id=event_id, report=report)


SES_TIES = {
    "message_id": "<m1@example.org>",
    "mailer_send": "c12/announce",
    "bounce_to": "b+d1.sig@bounces.example.org",
}


def ses_hard(sns: Sns, address: str = "person0@example.org", **kwargs: Any) -> dict[str, Any]:
    mail = hs.ses_mail(Message_ID="<m1@example.org>", X_Mailer_Send="c12/announce")
    return sns.notification(hs.ses_bounce(hs.ses_recipient(address), mail=mail), **kwargs)


def read_sns(envelope: dict[str, Any], sns: Sns, at: datetime | None = None) -> Any:
    at = at or now()
    found = sns_envelope(body(envelope), topics=[TOPIC], now=at)
    sns_verify(found, sns.pem, now=at)
    return sns_read(found)


# --- the pure readers ------------------------------------------------------------------------


def test_an_ses_hard_bounce_is_one_event_per_recipient_with_what_ties_it(sns: Sns) -> None:
    envelope = sns.notification(
        hs.ses_bounce(
            hs.ses_recipient("Person0@Example.org"),
            hs.ses_recipient("person1@example.org", "5.2.2", "smtp; 552 5.2.2 mailbox full"),
            mail=hs.ses_mail(Message_ID="<m1@example.org>", X_Mailer_Send="c12/announce"),
        )
    )
    assert read_sns(envelope, sns) == [
        dsn_event(
            "ses", f"{MID}:person0@example.org",
            Finding("person0@example.org", "5.1.1", BounceKind.HARD,
                    "550 5.1.1 <Person0@Example.org>: user unknown", reply_code="550"),
            **SES_TIES,
        ),
        dsn_event(
            "ses", f"{MID}:person1@example.org",
            Finding("person1@example.org", "5.2.2", BounceKind.SOFT, "552 5.2.2 mailbox full",
                    reply_code="552"),
            **SES_TIES,
        ),
    ]  # fmt: skip


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_sns_signature_versions_verify_and_a_tampered_message_does_not(
    sns: Sns, version: str
) -> None:
    envelope = ses_hard(sns, version=version)
    assert len(read_sns(envelope, sns)) == 1
    tampered = dict(envelope, Message=envelope["Message"].replace("person0", "victim"))
    with pytest.raises(HookRefused, match="signature does not match") as refused:
        read_sns(tampered, sns)
    assert refused.value.refusal is Refusal.FORBIDDEN
    with pytest.raises(HookRefused, match="signature does not match"):
        read_sns(dict(envelope, Subject="added after signing"), sns)
    with pytest.raises(HookRefused, match="signature does not match"):
        read_sns(envelope, Sns())  # another key's certificate at the URL


def test_an_sns_subject_is_signed_when_present(sns: Sns) -> None:
    envelope = sns.notification(hs.ses_complaint("person0@example.org"), Subject="Complaint")
    (event,) = read_sns(envelope, sns)
    assert event.report.kind is ReportKind.ARF
    assert event.report.findings == (
        Finding("person0@example.org", None, BounceKind.COMPLAINT, "complaint (abuse)"),
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"TopicArn": "arn:aws:sns:eu-west-3:999999999999:theirs"},
            "not in MAILER_BOUNCES__WEBHOOKS__SES_TOPICS",
        ),
        ({"SigningCertURL": "https://sns.eu-west-3.evil.example/x.pem"}, "not Amazon SNS's"),
        ({"SigningCertURL": "http://sns.eu-west-3.amazonaws.com/x.pem"}, "not Amazon SNS's"),
        ({"SignatureVersion": "3"}, "SignatureVersion"),
        ({"Signature": "not base64!"}, "not base64"),
    ],
)
def test_an_sns_envelope_is_refused_before_any_fetch(
    sns: Sns, change: dict[str, str], reason: str
) -> None:
    with pytest.raises(HookRefused, match=reason) as refused:
        sns_envelope(body({**ses_hard(sns), **change}), topics=[TOPIC], now=now())
    assert refused.value.refusal is Refusal.FORBIDDEN


def test_an_sns_message_over_an_hour_old_or_from_the_future_is_refused(sns: Sns) -> None:
    at = now()  # one moment for signing and checking: the test may be slow, not the rule
    old = ses_hard(sns, at=at - timedelta(hours=1, minutes=1))
    with pytest.raises(HookRefused, match="more than an hour old"):
        sns_envelope(body(old), topics=[TOPIC], now=at)
    ahead = ses_hard(sns, at=at + timedelta(minutes=6))
    with pytest.raises(HookRefused, match="future"):
        sns_envelope(body(ahead), topics=[TOPIC], now=at)
    recent = ses_hard(sns, at=at - timedelta(minutes=59))
    assert sns_envelope(body(recent), topics=[TOPIC], now=at).type == "Notification"


@pytest.mark.parametrize(
    ("url", "pem", "ok"),
    [
        ("https://sns.eu-west-3.amazonaws.com/SimpleNotificationService-1.pem", True, True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem", True, True),
        ("https://sns.eu-west-3.amazonaws.com/?Action=ConfirmSubscription&T=1", False, True),
        ("https://sns.eu-west-3.amazonaws.com/?Action=ConfirmSubscription&T=1", True, False),
        ("https://sns.eu-west-3.amazonaws.com/cert.txt", True, False),
        ("https://sns.eu-west-3.amazonaws.com.evil.example/c.pem", True, False),
        ("https://evil.example/sns.eu-west-3.amazonaws.com/c.pem", True, False),
        ("https://user@sns.eu-west-3.amazonaws.com/c.pem", True, False),
        ("https://sns.eu-west-3.amazonaws.com:8443/c.pem", True, False),
        ("https://sns.eu-west-3.amazonaws.com:99999/c.pem", True, False),
        ("https://s3.amazonaws.com/c.pem", True, False),
        ("ftp://sns.eu-west-3.amazonaws.com/c.pem", True, False),
        ("https://[::1/c.pem", True, False),
    ],
)
def test_only_amazon_sns_urls_are_fetched(url: str, pem: bool, ok: bool) -> None:
    assert sns_url_ok(url, pem=pem) is ok


def test_an_sns_certificate_that_is_not_one_is_refused(sns: Sns) -> None:
    found = sns_envelope(body(ses_hard(sns)), topics=[TOPIC], now=now())
    with pytest.raises(HookRefused, match="could not be read"):
        sns_verify(found, b"<html>not a certificate</html>", now=now())
    with pytest.raises(HookRefused, match="not valid now"):
        sns_verify(found, sns.pem, now=now() + timedelta(days=60))


def test_an_sns_subscription_is_confirmed_only_at_amazon(sns: Sns) -> None:
    assert read_sns(sns.subscription(), sns) == Subscription(TOPIC, hs.SUBSCRIBE_URL)
    with pytest.raises(HookRefused, match="SubscribeURL"):
        read_sns(sns.subscription(url="https://evil.example/?Action=ConfirmSubscription"), sns)
    assert read_sns(sns.subscription(kind="UnsubscribeConfirmation"), sns) == []


@pytest.mark.parametrize(
    "message",
    [
        {"notificationType": "Delivery", "mail": {}, "delivery": {}},
        {"eventType": "Open", "mail": {}},
        hs.ses_complaint("person0@example.org", feedback="not-spam"),
        "Successfully validated SNS topic for Amazon SES event publishing.",
        "[1, 2]",
    ],
)
def test_ses_deliveries_opens_and_other_notifications_are_no_event(
    sns: Sns, message: dict[str, Any] | str
) -> None:
    assert read_sns(sns.notification(message), sns) == []


def test_ses_event_publishing_and_bounce_types(sns: Sns) -> None:
    def kinds(bounce_type: str, sub: str, status: str, words: str) -> BounceKind:
        message = hs.ses_bounce(
            {"emailAddress": "a@example.org", "status": status, "diagnosticCode": words},
            bounce_type=bounce_type, sub_type=sub,
        )  # fmt: skip
        message["eventType"] = message.pop("notificationType")
        (event,) = read_sns(sns.notification(message), sns)
        return event.report.findings[0].kind

    assert kinds("Permanent", "Suppressed", "5.1.1", "") is BounceKind.HARD
    assert kinds("Permanent", "General", "5.7.1", "smtp; 550 5.7.1 DMARC") is BounceKind.POLICY
    assert kinds("Transient", "MailboxFull", "4.2.2", "452 4.2.2 full") is BounceKind.SOFT
    assert kinds("Transient", "ContentRejected", "5.3.0", "550 rejected") is BounceKind.POLICY
    assert kinds("Undetermined", "Undetermined", "", "") is BounceKind.UNKNOWN


def test_the_relays_hint_and_our_classifier_decide_together() -> None:
    assert kind_of("permanent", "5.1.1", "user unknown") is BounceKind.HARD
    assert kind_of("permanent", None, "") is BounceKind.HARD  # the relay stops mailing it
    assert kind_of("permanent", "5.2.2", "mailbox full") is BounceKind.SOFT
    assert kind_of("permanent", "5.7.1", "blocked") is BounceKind.POLICY
    assert kind_of("temporary", "5.1.1", "user unknown") is BounceKind.SOFT
    assert kind_of("temporary", "4.7.0", "spamhaus") is BounceKind.POLICY
    assert kind_of("undetermined", None, "something odd") is BounceKind.UNKNOWN
    assert kind_of("policy", "5.0.0", "") is BounceKind.POLICY
    assert kind_of("complaint", None, "") is BounceKind.COMPLAINT


def test_a_mailgun_failure_and_complaint_are_read() -> None:
    (hard,) = mailgun_events(body(hs.mailgun(hs.mailgun_failed())), key=hs.MAILGUN_KEY, now=now())
    assert hard == dsn_event(
        "mailgun", "G9Bn5sl1TC6nu79C8C0bwg",
        Finding("person0@example.org", "5.1.1", BounceKind.HARD,
                "550 5.1.1 The email account that you tried to reach does not exist.",
                reply_code="550"),
        message_id="<20261202100000.1.abcdef@example.org>", mailer_send="c12/announce",
        bounce_to="b+d1.sig@bounces.example.org",
    )  # fmt: skip
    temporary = hs.mailgun_failed(
        severity="temporary", code=452, enhanced="4.2.2", message="4.2.2 mailbox full"
    )
    (soft,) = mailgun_events(body(hs.mailgun(temporary)), key=hs.MAILGUN_KEY, now=now())
    assert soft.report.findings[0].kind is BounceKind.SOFT
    assert soft.report.findings[0].final is False  # Mailgun tries again
    complained = {"event": "complained", "id": "c1", "recipient": "person2@example.org"}
    (complaint,) = mailgun_events(body(hs.mailgun(complained)), key=hs.MAILGUN_KEY, now=now())
    assert complaint.report.kind is ReportKind.ARF
    assert complaint.report.findings[0].kind is BounceKind.COMPLAINT
    for ignored in (
        {"event": "delivered", "id": "d1", "recipient": "person0@example.org"},
        {"event": "opened", "id": "o1"},
        hs.mailgun_failed(reason="suppress-unsubscribe"),
    ):
        assert mailgun_events(body(hs.mailgun(ignored)), key=hs.MAILGUN_KEY, now=now()) == []


def test_a_mailgun_call_with_a_wrong_key_or_an_old_timestamp_is_refused() -> None:
    wrong = body(hs.mailgun(hs.mailgun_failed(), key="another-key"))
    with pytest.raises(HookRefused, match="Mailgun signature does not match"):
        mailgun_events(wrong, key=hs.MAILGUN_KEY, now=now())
    old = body(hs.mailgun(hs.mailgun_failed(), at=now() - timedelta(minutes=6)))
    with pytest.raises(HookRefused, match="more than 5 minutes"):
        mailgun_events(old, key=hs.MAILGUN_KEY, now=now())
    signed = hs.mailgun(hs.mailgun_failed())
    signed["signature"]["signature"] = "é" * 64  # not even hexadecimal: refused, no TypeError
    with pytest.raises(HookRefused, match="does not match"):
        mailgun_events(body(signed), key=hs.MAILGUN_KEY, now=now())


def test_postmark_bounces_and_complaints_are_read_by_type() -> None:
    (hard,) = postmark_events(body(hs.postmark_bounce()))
    assert hard == dsn_event(
        "postmark", "4323372036854775807",
        Finding("person0@example.org", "5.1.1", BounceKind.HARD,
                "550 5.1.1 The email account that you tried to reach does not exist.",
                reply_code="550"),
        mailer_send="c12/announce",
    )  # fmt: skip

    def kind(record: dict[str, Any]) -> BounceKind | None:
        found = postmark_events(body(record))
        return found[0].report.findings[0].kind if found else None

    assert kind(hs.postmark_bounce("SoftBounce", Details="mailbox full")) is BounceKind.SOFT
    assert kind(hs.postmark_bounce("Blocked", Details="550 rejected")) is BounceKind.POLICY
    assert kind(hs.postmark_bounce("SpamNotification")) is BounceKind.POLICY
    assert kind(hs.postmark_bounce("SpamComplaint", RecordType="SpamComplaint")) is (
        BounceKind.COMPLAINT
    )
    assert kind(hs.postmark_bounce("AutoResponder")) is None
    assert kind(hs.postmark_bounce("HardBounce", RecordType="Delivery")) is None
    headers = [{"Name": "Message-ID", "Value": "<m9@example.org>"}]
    (tied,) = postmark_events(body(hs.postmark_bounce(Headers=headers)))
    assert tied.report.message_id == "<m9@example.org>"


def test_postmark_basic_auth_is_checked_whole() -> None:
    check_basic_auth(hs.basic(), hs.POSTMARK_USER, hs.POSTMARK_PASSWORD)
    for header in (
        None, "", hs.basic(password="wrong"), hs.basic(user="other"),
        hs.basic().replace("Basic", "Bearer"), "Basic !!!", "Basic é",
        "Basic " + base64.b64encode(b"postmark").decode(),
    ):  # fmt: skip
        with pytest.raises(HookRefused) as refused:
            check_basic_auth(header, hs.POSTMARK_USER, hs.POSTMARK_PASSWORD)
        assert refused.value.refusal is Refusal.UNAUTHENTICATED
        assert hs.POSTMARK_PASSWORD not in refused.value.reason


def sendgrid_read(sendgrid: SendGrid, raw: bytes, **headers: str) -> list[ProviderEvent]:
    signed = {**sendgrid.headers(raw), **headers}
    return sendgrid_events(
        raw, key=sendgrid_key(sendgrid.public), now=now(),
        signature=signed.get("X-Twilio-Email-Event-Webhook-Signature"),
        timestamp=signed.get("X-Twilio-Email-Event-Webhook-Timestamp"),
    )  # fmt: skip


def test_a_sendgrid_batch_gives_its_bounces_drops_and_reports(sendgrid: SendGrid) -> None:
    events = sendgrid_read(sendgrid, body(hs.sendgrid_batch()))
    ties = {"message_id": "<14c5d75ce93.dfd.64b469@example.org>", "mailer_send": "c12/announce"}
    assert events == [
        dsn_event("sendgrid", "b1", Finding(
            "person1@example.org", "5.1.1", BounceKind.HARD,
            "550 5.1.1 The email account that you tried to reach does not exist",
            reply_code="550"), **ties),
        dsn_event("sendgrid", "b2", Finding(
            "person2@example.org", "4.0.0", BounceKind.SOFT, "421 try again later",
            reply_code="421"), **ties),
        dsn_event("sendgrid", "x3", Finding(
            "person3@example.org", "5.0.0", BounceKind.HARD, "dropped: Bounced Address"), **ties),
        dsn_event("sendgrid", "s4", Finding(
            "person4@example.org", None, BounceKind.COMPLAINT, "complaint (spamreport)"), **ties),
    ]  # fmt: skip


def test_a_sendgrid_call_tampered_unsigned_or_old_is_refused(sendgrid: SendGrid) -> None:
    raw = body(hs.sendgrid_batch())
    signed = sendgrid.headers(raw)
    key = sendgrid_key(sendgrid.public)
    sig = signed["X-Twilio-Email-Event-Webhook-Signature"]
    stamp = signed["X-Twilio-Email-Event-Webhook-Timestamp"]
    cases = [
        (raw.replace(b"person1", b"victim1"), sig, stamp, "does not match"),
        (raw, sig, str(int(stamp) + 1), "does not match"),
        (raw, None, stamp, "missing"),
        (raw, "%%%", stamp, "does not match"),
        (raw, sig, "soon", "not a number"),
        (raw, sig, str(int((now() - timedelta(minutes=6)).timestamp())), "5 minutes"),
    ]
    for raw_body, signature, timestamp, reason in cases:
        with pytest.raises(HookRefused, match=reason):
            sendgrid_events(raw_body, signature=signature, timestamp=timestamp, key=key, now=now())


def test_a_sendgrid_key_must_be_p256() -> None:
    with pytest.raises(ValueError, match="base64"):
        sendgrid_key("not a key")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    der = other.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="P-256"):
        sendgrid_key(base64.b64encode(der).decode())
    pem = (
        SendGrid()
        .key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert sendgrid_key(pem.decode()).curve.name == "secp256r1"


def test_no_malformed_payload_gets_past_as_anything_but_a_refusal(
    sns: Sns, sendgrid: SendGrid
) -> None:
    """Each member of each relay's payload, at any depth, replaced by a value of another kind
    or removed, and the payload signed again: read, or refused as malformed, never a crash."""
    key = sendgrid_key(sendgrid.public)
    outcomes: list[str] = []

    def attempt(read: Any) -> None:
        try:
            events = read()
        except HookRefused as refused:
            outcomes.append(refused.refusal.value)
            return
        assert all(isinstance(e, ProviderEvent) and len(e.report.findings) == 1 for e in events)
        outcomes.append("read")

    for _, changed in hs.mutations(hs.ses_bounce(hs.ses_recipient("a@example.org"))):
        attempt(lambda c=changed: read_sns(sns.notification(c), sns))
    for _, changed in hs.mutations(hs.ses_complaint("a@example.org")):
        attempt(lambda c=changed: read_sns(sns.notification(c), sns))
    for _, changed in hs.mutations(hs.mailgun(hs.mailgun_failed())):
        attempt(lambda c=changed: mailgun_events(body(c), key=hs.MAILGUN_KEY, now=now()))
    for _, changed in hs.mutations(hs.postmark_bounce()):
        attempt(lambda c=changed: postmark_events(body(c)))
    for _, changed in hs.mutations(hs.sendgrid_batch()[2:6]):
        raw = body(changed)
        signed = sendgrid.headers(raw)
        attempt(
            lambda r=raw, s=signed: sendgrid_events(
                r, key=key, now=now(),
                signature=s["X-Twilio-Email-Event-Webhook-Signature"],
                timestamp=s["X-Twilio-Email-Event-Webhook-Timestamp"],
            )
        )  # fmt: skip
    for raw in (b"", b"{", b"\xff\xfe", b"[" * 100_000, b"1e999999", b"9" * 5000, b"null"):
        for read in (
            lambda r=raw: postmark_events(r),
            lambda r=raw: mailgun_events(r, key=hs.MAILGUN_KEY, now=now()),
            lambda r=raw: sns_envelope(r, topics=[TOPIC], now=now()),
        ):
            with pytest.raises(HookRefused) as refused:
                read()
            assert refused.value.refusal is Refusal.MALFORMED
    assert len(outcomes) > 500
    assert set(outcomes) == {"read", "malformed", "forbidden"}


# --- the route -------------------------------------------------------------------------------


class Accepted:
    """``accept`` as the route calls it: records each batch, or fails like storage down."""

    def __init__(self, *, fail: bool = False) -> None:
        self.batches: list[list[ProviderEvent]] = []
        self.fail = fail

    async def __call__(self, events: Sequence[ProviderEvent]) -> None:
        if self.fail:
            raise StorageUnavailable("the database is not answering")
        self.batches.append(list(events))

    @property
    def events(self) -> list[ProviderEvent]:
        return [event for batch in self.batches for event in batch]


class Hooks:
    """The hooks' app over httpx's ASGI transport."""

    def __init__(self, client: httpx.AsyncClient, accepted: Any) -> None:
        self.client = client
        self.accepted = accepted

    async def post(self, provider: str, payload: Any, **headers: str) -> httpx.Response:
        raw = payload if isinstance(payload, bytes) else body(payload)
        return await self.client.post(f"/hooks/bounces/{provider}", content=raw, headers=headers)


async def open_hooks(settings: HookSettings, accepted: Any, fetch: Any) -> AsyncIterator[Hooks]:
    app = Starlette(routes=hook_routes(settings, accepted, fetch))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hooks.test") as client:
        yield Hooks(client, accepted)


@pytest.fixture
async def hooks(sns: Sns, sendgrid: SendGrid) -> AsyncIterator[Hooks]:
    sns.fetched.clear()
    async for found in open_hooks(hs.hook_settings(sendgrid), Accepted(), sns.fetch):
        yield found


async def test_each_relay_is_accepted_with_the_events_it_reports(
    hooks: Hooks, sns: Sns, sendgrid: SendGrid
) -> None:
    answers = [
        await hooks.post("ses", ses_hard(sns)),
        await hooks.post("mailgun", hs.mailgun(hs.mailgun_failed())),
        await hooks.post("postmark", hs.postmark_bounce(), Authorization=hs.basic()),
    ]
    raw = body(hs.sendgrid_batch())
    answers.append(await hooks.post("sendgrid", raw, **sendgrid.headers(raw)))
    assert [(a.status_code, a.json()) for a in answers] == [
        (200, {"accepted": 1}), (200, {"accepted": 1}), (200, {"accepted": 1}),
        (200, {"accepted": 4}),
    ]  # fmt: skip
    assert [(e.provider, e.report.findings[0].recipient) for e in hooks.accepted.events] == [
        ("ses", "person0@example.org"),
        ("mailgun", "person0@example.org"),
        ("postmark", "person0@example.org"),
        *[("sendgrid", f"person{i}@example.org") for i in (1, 2, 3, 4)],
    ]
    assert hooks.accepted.events[0] == read_sns(ses_hard(sns), sns)[0]
    assert sns.fetched == [hs.CERT_URL]
    assert (await hooks.post("ses", ses_hard(sns, message_id="another"))).status_code == 200
    assert sns.fetched == [hs.CERT_URL]  # the certificate is kept


async def test_a_call_without_events_is_answered_without_accepting(hooks: Hooks) -> None:
    delivered = {"event": "delivered", "id": "d1", "recipient": "person0@example.org"}
    answer = await hooks.post("mailgun", hs.mailgun(delivered))
    assert (answer.status_code, answer.json()) == (200, {"accepted": 0})
    assert hooks.accepted.batches == []


async def test_an_sns_subscription_is_confirmed_by_getting_its_url(hooks: Hooks, sns: Sns) -> None:
    answer = await hooks.post("ses", sns.subscription())
    assert answer.status_code == 200
    assert sns.fetched == [hs.CERT_URL, hs.SUBSCRIBE_URL]
    bad = await hooks.post("ses", sns.subscription(url="https://evil.example/confirm"))
    assert bad.status_code == 403
    assert sns.fetched == [hs.CERT_URL, hs.SUBSCRIBE_URL]  # nothing fetched for it
    assert hooks.accepted.batches == []


async def test_every_wrong_call_is_refused_with_its_status_and_nothing_accepted(
    hooks: Hooks, sns: Sns, sendgrid: SendGrid, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "mailer.bounces")
    good = ses_hard(sns)
    raw = body(hs.sendgrid_batch())
    old = now() - timedelta(minutes=10)
    cases: list[tuple[str, Any, dict[str, str], int]] = [
        ("ses", dict(good, Message=good["Message"].replace("5.1.1", "5.1.2")), {}, 403),
        ("ses", dict(good, TopicArn="arn:aws:sns:eu-west-3:999999999999:x"), {}, 403),
        ("ses", dict(good, SigningCertURL="https://evil.example/SimpleNotif.pem"), {}, 403),
        ("ses", ses_hard(sns, at=now() - timedelta(hours=2)), {}, 403),
        ("ses", b"{not json", {}, 400),
        ("ses", {"Type": "Notification"}, {}, 400),
        ("mailgun", hs.mailgun(hs.mailgun_failed(), key="wrong"), {}, 403),
        ("mailgun", hs.mailgun(hs.mailgun_failed(), at=old), {}, 403),
        ("mailgun", b"signature=abc&token=def", {}, 400),
        ("postmark", hs.postmark_bounce(), {"Authorization": hs.basic(password="x")}, 401),
        ("postmark", hs.postmark_bounce(), {}, 401),
        ("postmark", b"[]", {"Authorization": hs.basic()}, 400),
        ("postmark", {**hs.postmark_bounce(), "Email": 42}, {"Authorization": hs.basic()}, 400),
        ("sendgrid", raw.replace(b"person1", b"victim1"), sendgrid.headers(raw), 403),
        ("sendgrid", raw, sendgrid.headers(raw, at=old), 403),
        ("sendgrid", raw, SendGrid().headers(raw), 403),
        ("sendgrid", raw, {}, 403),
        ("sendgrid", b"{}", sendgrid.headers(b"{}"), 400),
        ("unknown", hs.postmark_bounce(), {}, 404),
        ("SES", good, {}, 404),
    ]
    for provider, payload, headers, status in cases:
        answer = await hooks.post(provider, payload, **headers)
        assert answer.status_code == status, (provider, payload, answer.text)
        assert set(answer.json()) == {"error"}
        if status == 401:
            assert answer.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert hooks.accepted.batches == []
    assert sns.fetched == [hs.CERT_URL]  # for the tampered message only
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == len(cases) - 2  # one line per refusal; a 404 is not logged
    assert all("from 127.0.0.1" in line for line in refusals)
    logged = caplog.text
    for secret in (hs.MAILGUN_KEY, hs.POSTMARK_PASSWORD, "pm-pass"):
        assert secret not in logged


async def test_an_unconfigured_relay_is_not_found(sns: Sns) -> None:
    async for hooks in open_hooks(HookSettings(), Accepted(), sns.fetch):
        for provider in ("ses", "mailgun", "postmark", "sendgrid"):
            assert (await hooks.post(provider, b"{}")).status_code == 404
        assert (await hooks.client.get("/hooks/bounces/ses")).status_code == 405


async def test_a_body_over_one_megabyte_is_refused_without_reading_it_all(hooks: Hooks) -> None:
    big = b"[" + b" " * MAX_HOOK_BODY + b"]"
    assert (await hooks.post("mailgun", big)).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(40):
            yield b" " * 65536

    answer = await hooks.client.post("/hooks/bounces/mailgun", content=chunks())
    assert answer.status_code == 413
    assert hooks.accepted.batches == []


async def test_storage_failing_or_sns_unreachable_answers_503_so_the_relay_retries(
    sns: Sns, sendgrid: SendGrid
) -> None:
    settings = hs.hook_settings(sendgrid)
    async for hooks in open_hooks(settings, Accepted(fail=True), sns.fetch):
        answer = await hooks.post("mailgun", hs.mailgun(hs.mailgun_failed()))
        assert answer.status_code == 503
        assert "try again" in answer.json()["error"]

    async def unreachable(url: str) -> bytes:
        raise TimeoutError(url)

    async for hooks in open_hooks(settings, Accepted(), unreachable):
        assert (await hooks.post("ses", ses_hard(sns))).status_code == 503
        assert hooks.accepted.batches == []


def test_a_bad_sendgrid_key_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="MAILER_BOUNCES__WEBHOOKS__SENDGRID_PUBLIC_KEY"):
        hook_routes(HookSettings(sendgrid_public_key="c2VjcmV0"), Accepted())


async def test_the_default_fetch_refuses_anything_but_https() -> None:
    from mailer.web.bounce_hooks import FetchError

    for url in ("http://sns.eu-west-3.amazonaws.com/x.pem", "file:///etc/passwd"):
        with pytest.raises(FetchError, match="https"):
            await fetch_https(url)


async def test_sendgrid_through_a_real_uvicorn(sendgrid: SendGrid, tmp_path: Path) -> None:
    from mailer.web.server import WebServer
    from tests.conftest import make_settings

    accepted = Accepted()
    app = Starlette(routes=hook_routes(hs.hook_settings(sendgrid), accepted))
    server = WebServer(app, make_settings(tmp_path, web={"host": "127.0.0.1", "port": 0}))
    base = await server.start()
    try:
        raw = json.dumps(hs.sendgrid_batch(), indent=1).encode()
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            answer = await client.post(
                "/hooks/bounces/sendgrid", content=raw, headers=sendgrid.headers(raw)
            )
            assert (answer.status_code, answer.json()) == (200, {"accepted": 4})
            forged = await client.post(
                "/hooks/bounces/sendgrid", content=raw + b" ", headers=sendgrid.headers(raw)
            )
            assert forged.status_code == 403
    finally:
        await server.stop()
    assert [e.event_id for e in accepted.events] == ["b1", "b2", "x3", "s4"]


# --- into storage ----------------------------------------------------------------------------


async def test_an_ses_hard_bounce_through_intake_suppresses_once(
    store: Store, tmp_path: Path, database_url: str, sns: Sns
) -> None:
    from tests.test_bounce_intake import DOMAIN, SIGNER, Clock, sent, settings_for, suppressed

    intake = Intake(store, settings_for(tmp_path, database_url), clock=Clock(), signer=SIGNER)
    send_id, ids = await sent(store, tmp_path)
    mail = hs.ses_mail(source=return_path(SIGNER, ids[0], DOMAIN))
    envelope = sns.notification(hs.ses_bounce(hs.ses_recipient("person0@example.org"), mail=mail))

    async def accept(events: Sequence[ProviderEvent]) -> None:
        await intake.events(events)

    async for hooks in open_hooks(hs.hook_settings(), accept, sns.fetch):
        for _ in range(2):  # SNS delivers again when it did not hear 200 in time
            answer = await hooks.post("ses", envelope)
            assert answer.status_code == 200, answer.text
    assert await suppressed(store, "person0@example.org")
    assert await store.bounces.counts(send_id) == {"hard": 1}


async def test_the_default_fetch_reads_64_kb_at_most_and_follows_no_redirect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GET itself (its https check aside), against a real local server."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # straight to 127.0.0.1
    import asyncio
    import urllib.error

    from starlette.responses import RedirectResponse, Response
    from starlette.routing import Route

    from mailer.web.bounce_hooks import FETCH_LIMIT, FetchError, _get
    from mailer.web.server import WebServer
    from tests.conftest import make_settings

    async def small(_: Any) -> Response:
        return Response(b"-----BEGIN CERTIFICATE-----\n")

    async def big(_: Any) -> Response:
        return Response(b"x" * (FETCH_LIMIT + 1))

    async def moved(_: Any) -> Response:
        return RedirectResponse("/small", status_code=302)

    routes = [Route("/small", small), Route("/big", big), Route("/moved", moved)]
    server = WebServer(
        Starlette(routes=routes), make_settings(tmp_path, web={"host": "127.0.0.1", "port": 0})
    )
    base = await server.start()
    try:
        assert await asyncio.to_thread(_get, f"{base}/small") == b"-----BEGIN CERTIFICATE-----\n"
        with pytest.raises(FetchError, match="more than 65536 bytes"):
            await asyncio.to_thread(_get, f"{base}/big")
        with pytest.raises(urllib.error.HTTPError) as refused:
            await asyncio.to_thread(_get, f"{base}/moved")
        assert refused.value.code == 302
        refused.value.close()
    finally:
        await server.stop()
