"""Relays' webhook calls for the tests, signed as each relay signs them, with keys made here:
an RSA key and a self-signed certificate standing for Amazon SNS's (served by an injected
``fetch``), Mailgun's HMAC key, Postmark's basic auth, an ECDSA P-256 key for SendGrid.

The payloads copy the shapes the relays document (SES bounce and complaint notifications in
an SNS envelope, Mailgun's ``event-data``, Postmark's bounce webhook, SendGrid's event array).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from mailer.settings.bounces import HookSettings

TOPIC = "arn:aws:sns:eu-west-3:123456789012:mailer-bounces"
CERT_URL = (
    "https://sns.eu-west-3.amazonaws.com/"
    "SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
)
SUBSCRIBE_URL = (
    "https://sns.eu-west-3.amazonaws.com/?Action=ConfirmSubscription"
    f"&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e2425c464de12884c0"
)
MAILGUN_KEY = "mg-signing-key-0f1e2d3c4b5a"
POSTMARK_USER = "postmark"
POSTMARK_PASSWORD = "pm-pass: w0rd"


def utc(now: datetime | None = None) -> datetime:
    return now or datetime.now(UTC)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


# --- Amazon SNS / SES --------------------------------------------------------------------------


def _certificate(key: rsa.RSAPrivateKey, *, days: int = 30) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    start = datetime.now(UTC) - timedelta(days=1)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Sns:
    """Amazon SNS as the tests have it: signs envelopes with its key; ``fetch`` serves its
    certificate at :data:`CERT_URL` and records every URL asked for."""

    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    fetched: list[str] = field(default_factory=list)
    pem: bytes = b""

    def __post_init__(self) -> None:
        self.pem = _certificate(self.key)

    async def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if url == CERT_URL:
            return self.pem
        if url.startswith("https://sns.eu-west-3.amazonaws.com/?Action=ConfirmSubscription"):
            return b"<ConfirmSubscriptionResponse/>"
        raise OSError(f"nothing at {url}")

    def sign(self, envelope: dict[str, Any], *, version: str = "1") -> dict[str, Any]:
        signed = {"SignatureVersion": version, "SigningCertURL": CERT_URL, **envelope}
        keys = (
            ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
            if signed["Type"] == "Notification"
            else ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
        )
        text = "".join(f"{k}\n{signed[k]}\n" for k in keys if k in signed)
        # SNS's SignatureVersion 1 is SHA1withRSA: what the tests must sign as
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), digest)
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed

    def notification(
        self,
        message: dict[str, Any] | str,
        *,
        message_id: str = "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        topic: str = TOPIC,
        at: datetime | None = None,
        version: str = "1",
        **extra: Any,
    ) -> dict[str, Any]:
        envelope = {
            "Type": "Notification",
            "MessageId": message_id,
            "TopicArn": topic,
            "Message": message if isinstance(message, str) else json.dumps(message),
            "Timestamp": _iso(utc(at)),
            "UnsubscribeURL": "https://sns.eu-west-3.amazonaws.com/?Action=Unsubscribe",
            **extra,
        }
        return self.sign(envelope, version=version)

    def subscription(
        self, *, url: str = SUBSCRIBE_URL, kind: str = "SubscriptionConfirmation"
    ) -> dict[str, Any]:
        envelope = {
            "Type": kind,
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37fb687f5d51e6e2425c464de12884c0",
            "TopicArn": TOPIC,
            "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
            "SubscribeURL": url,
            "Timestamp": _iso(utc()),
        }
        return self.sign(envelope)


def ses_mail(*, source: str = "b+d1.sig@bounces.example.org", **headers: str) -> dict[str, Any]:
    """SES's ``mail`` object, with headers (``Message_ID="<...>"`` becomes Message-ID)."""
    listed = [{"name": k.replace("_", "-"), "value": v} for k, v in headers.items()]
    return {
        "timestamp": "2026-12-02T10:00:00.000Z",
        "source": source,
        "sourceArn": "arn:aws:ses:eu-west-3:123456789012:identity/example.org",
        "sourceIp": "192.0.2.1",
        "sendingAccountId": "123456789012",
        "messageId": "0102018c5a1b2c3d-11111111-2222-3333-4444-555555555555-000000",
        "destination": ["person0@example.org"],
        "headersTruncated": False,
        "headers": [{"name": "From", "value": "News <news@example.org>"}, *listed],
        "commonHeaders": {"from": ["News <news@example.org>"], "subject": "Nouvelles"},
    }


def ses_bounce(
    *recipients: dict[str, Any],
    bounce_type: str = "Permanent",
    sub_type: str = "General",
    mail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": sub_type,
            "bouncedRecipients": list(recipients),
            "timestamp": "2026-12-02T10:00:05.000Z",
            "feedbackId": "0102018c5a1b2c3d-aaaa-bbbb-cccc-dddddddddddd-000000",
            "remoteMtaIp": "198.51.100.7",
            "reportingMTA": "dsn; e226-12.smtp-out.eu-west-3.amazonses.com",
        },
        "mail": mail or ses_mail(),
    }


def ses_recipient(address: str, status: str = "5.1.1", diagnostic: str = "") -> dict[str, Any]:
    return {
        "emailAddress": address,
        "action": "failed",
        "status": status,
        "diagnosticCode": diagnostic or f"smtp; 550 {status} <{address}>: user unknown",
    }


def ses_complaint(*addresses: str, feedback: str = "abuse") -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "Yahoo!-Mail-Feedback/2.0",
            "complainedRecipients": [{"emailAddress": a} for a in addresses],
            "complaintFeedbackType": feedback,
            "arrivalDate": "2026-12-02T10:00:00.000Z",
            "timestamp": "2026-12-02T10:00:01.000Z",
            "feedbackId": "0102018c5a1b2c3d-eeee-ffff-0000-111111111111-000000",
        },
        "mail": ses_mail(),
    }


# --- Mailgun -----------------------------------------------------------------------------------


def mailgun(
    event: dict[str, Any], *, at: datetime | None = None, key: str = MAILGUN_KEY
) -> dict[str, Any]:
    timestamp = str(int(utc(at).timestamp()))
    token = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": event,
    }


def mailgun_failed(
    recipient: str = "person0@example.org",
    *,
    severity: str = "permanent",
    code: int = 550,
    enhanced: str = "5.1.1",
    message: str = "5.1.1 The email account that you tried to reach does not exist.",
    event_id: str = "G9Bn5sl1TC6nu79C8C0bwg",
    reason: str = "bounce",
) -> dict[str, Any]:
    return {
        "event": "failed",
        "id": event_id,
        "timestamp": 1764669600.375624,
        "log-level": "error",
        "severity": severity,
        "reason": reason,
        "envelope": {
            "sender": "b+d1.sig@bounces.example.org",
            "transport": "smtp",
            "targets": recipient,
        },
        "flags": {"is-routed": False, "is-authenticated": True, "is-test-mode": False},
        "recipient": recipient,
        "recipient-domain": recipient.partition("@")[2],
        "message": {
            "headers": {
                "to": recipient,
                "message-id": "20261202100000.1.abcdef@example.org",
                "from": "News <news@example.org>",
                "subject": "Nouvelles",
            },
            "attachments": [],
            "size": 4120,
        },
        "delivery-status": {
            "attempt-no": 1,
            "code": code,
            "enhanced-code": enhanced,
            "message": message,
            "description": "",
            "session-seconds": 0.4,
            "mx-host": "mx.example.net",
        },
        "user-variables": {"mailer_send": "c12/announce"},
    }


# --- Postmark ----------------------------------------------------------------------------------


def postmark_bounce(kind: str = "HardBounce", **extra: Any) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": 4323372036854775807,
        "Type": kind,
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "newsletter",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {"X-Mailer-Send": "c12/announce"},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "Person0@Example.org",
        "From": "news@example.org",
        "BouncedAt": "2026-12-02T10:00:05.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Nouvelles",
        "Content": "<full dump of the bounce>",
        **extra,
    }


def basic(user: str = POSTMARK_USER, password: str = POSTMARK_PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --- SendGrid ----------------------------------------------------------------------------------


@dataclass
class SendGrid:
    """SendGrid's signed event webhook: its key pair, the public half as SendGrid shows it."""

    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def public(self) -> str:
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def headers(self, body: bytes, *, at: datetime | None = None) -> dict[str, str]:
        timestamp = str(int(utc(at).timestamp()))
        signature = self.key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "Content-Type": "application/json",
        }


def sendgrid_batch() -> list[dict[str, Any]]:
    common = {
        "timestamp": 1764669600,
        "smtp-id": "<14c5d75ce93.dfd.64b469@example.org>",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "category": "newsletter",
        "mailer_send": "c12/announce",
    }
    return [
        {**common, "email": "person0@example.org", "event": "processed", "sg_event_id": "p0"},
        {**common, "email": "person0@example.org", "event": "delivered", "sg_event_id": "d0",
         "response": "250 OK"},
        {**common, "email": "person1@example.org", "event": "bounce", "sg_event_id": "b1",
         "type": "bounce", "status": "5.1.1",
         "reason": "550 5.1.1 The email account that you tried to reach does not exist"},
        {**common, "email": "person2@example.org", "event": "bounce", "sg_event_id": "b2",
         "type": "blocked", "status": "4.0.0", "reason": "421 try again later"},
        {**common, "email": "person3@example.org", "event": "dropped", "sg_event_id": "x3",
         "reason": "Bounced Address", "status": "5.0.0"},
        {**common, "email": "person4@example.org", "event": "spamreport", "sg_event_id": "s4"},
        {**common, "email": "person5@example.org", "event": "open", "sg_event_id": "o5",
         "useragent": "Mozilla/5.0", "ip": "203.0.113.9"},
        {**common, "email": "person6@example.org", "event": "dropped", "sg_event_id": "x6",
         "reason": "Unsubscribed Address", "status": "5.0.0"},
    ]  # fmt: skip


# --- all of them -------------------------------------------------------------------------------


def hook_settings(sendgrid: SendGrid | None = None, **changes: Any) -> HookSettings:
    values: dict[str, Any] = {
        "ses_topics": [TOPIC],
        "mailgun_signing_key": MAILGUN_KEY,
        "postmark_user": POSTMARK_USER,
        "postmark_password": POSTMARK_PASSWORD,
        "sendgrid_public_key": sendgrid.public if sendgrid else None,
    }
    return HookSettings.model_validate({**values, **changes})


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def mutations(value: Any) -> Iterator[tuple[list[Any], Any]]:
    """Copies of ``value`` with one member (at any depth) replaced by a value of another
    kind or removed (with the path of what changed): what a broken relay or an attacker
    may send."""
    yield from _mutations(value, [])


_ODD: tuple[Any, ...] = (None, 7, "x", "", [], {}, True, 1e308, [{"a": 1}])


def _mutations(value: Any, path: list[Any]) -> Iterator[tuple[list[Any], Any]]:
    if isinstance(value, dict):
        members: list[Any] = list(value)
    elif isinstance(value, list):
        members = list(range(len(value)))
    else:
        return
    for key in members:
        for odd in (*_ODD, "<delete>"):
            changed = copy.deepcopy(value)
            if odd == "<delete>":
                del changed[key]
            else:
                changed[key] = odd
            yield path, changed
        for inner_path, inner in _mutations(value[key], [*path, key]):
            changed = copy.deepcopy(value)
            changed[key] = inner
            yield inner_path, changed
