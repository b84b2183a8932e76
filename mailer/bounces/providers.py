"""Relay bounce webhooks, verified and read: Amazon SES through SNS, Mailgun, Postmark and
SendGrid, each to the same :class:`ProviderEvent` (the provider, its id for the event, a
:class:`Report` with exactly one :class:`Finding`).

What each relay proves, and how it is checked here:

- SES/SNS: the envelope's ``TopicArn`` is one of ours, its ``SigningCertURL`` is an https
  ``.pem`` on ``sns.<region>.amazonaws.com`` (checked before anything is fetched), its RSA
  signature (SignatureVersion 1: SHA-1, 2: SHA-256) is right over AWS's canonical string with
  the certificate the caller fetched, its ``Timestamp`` is under an hour old;
- Mailgun: HMAC-SHA256 of timestamp + token under the signing key, timestamp within 5 min;
- Postmark: basic auth (:func:`check_basic_auth`, both halves compared in constant time);
- SendGrid: ECDSA P-256 / SHA-256 over timestamp + raw body, timestamp within 5 min.

What an event means for the address: the relay's own bounce type gives a hint and our
:func:`classify` reads the code and words. A policy refusal stays ``policy`` whatever the
relay says; a temporary one is ``soft``; a permanent one is what ``classify`` says, and
``hard`` when the words say nothing we know (the relay itself stops mailing such an address).
Deliveries, opens, clicks, deferrals and unsubscribes are no event.

A stage: no I/O, no clock (``now`` is passed in). Every refusal is :class:`HookRefused`, whose
message says what was wrong and never repeats a secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mailer.bounces.classify import clean_diagnostic
from mailer.bounces.hook_events import (
    Hint,
    HookRefused,
    ProviderEvent,
    Refusal,
    Ties,
    as_array,
    as_object,
    event_of,
    field,
    headers_of,
    kind_of,
    malformed,
    member,
    message_id_of,
    optional,
    read_json,
    recipient_of,
    trace_of,
)

if TYPE_CHECKING:  # cryptography (~8 MiB) is imported where a signature is verified
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

PROVIDERS = ("ses", "mailgun", "postmark", "sendgrid")
SNS_MAX_AGE = timedelta(hours=1)  # an older SNS message is a replay
SIGNED_WINDOW = timedelta(minutes=5)  # Mailgun's and SendGrid's timestamps, either way
_SKEW = timedelta(minutes=5)  # an SNS Timestamp this far ahead of our clock is still fine


@dataclass(frozen=True, slots=True)
class Subscription:
    """An SNS SubscriptionConfirmation, verified: GET ``url`` to confirm it."""

    topic_arn: str
    url: str


@dataclass(frozen=True, slots=True)
class SnsEnvelope:
    """An SNS message whose topic, certificate URL and age are checked, its signature not yet
    (:func:`sns_verify` with the certificate at ``cert_url``)."""

    type: str  # Notification, SubscriptionConfirmation, UnsubscribeConfirmation
    message_id: str
    topic_arn: str
    message: str
    cert_url: str
    signature_version: str
    signature: bytes
    signed: bytes  # the canonical string AWS signs
    subscribe_url: str | None


# --- Amazon SES through SNS ------------------------------------------------------------------

_SNS_HOST = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
    ),
}  # fmt: skip
_SNS_VERSIONS = ("1", "2")  # SignatureVersion: SHA1, SHA256


def sns_url_ok(url: str, *, pem: bool) -> bool:
    """Whether ``url`` is Amazon SNS's own: https, host ``sns.<region>.amazonaws.com`` (or
    ``.com.cn``), no port or user; a certificate's path ends ``.pem`` (and has no query)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    host = parts.hostname or ""
    return (
        parts.scheme == "https" and port is None and parts.username is None
        and parts.netloc.lower() == host and bool(_SNS_HOST.fullmatch(host))
        and (not pem or (parts.path.endswith(".pem") and not parts.query and not parts.fragment))
    )  # fmt: skip


def sns_envelope(body: bytes, *, topics: Collection[str], now: datetime) -> SnsEnvelope:
    """An SNS message read, its topic, certificate URL and age checked: what to fetch
    (``cert_url``) before :func:`sns_verify`."""
    data = as_object(read_json(body), "the SNS message")
    kind = field(data, "Type", "message")
    fields = _SIGNED_FIELDS.get(kind)
    if fields is None:
        raise malformed("the SNS message's Type is not one we know")
    topic = field(data, "TopicArn", "message")
    if topic not in topics:
        shown = clean_diagnostic(topic)[:200]
        raise HookRefused(f"topic {shown!r} is not in MAILER_BOUNCES__WEBHOOKS__SES_TOPICS")
    cert_url = field(data, "SigningCertURL", "message")
    if not sns_url_ok(cert_url, pem=True):
        raise HookRefused("the signing certificate URL is not Amazon SNS's")
    version = field(data, "SignatureVersion", "message")
    if version not in _SNS_VERSIONS:
        raise HookRefused("unknown SNS SignatureVersion")
    try:
        signature = base64.b64decode(field(data, "Signature", "message"), validate=True)
    except ValueError:
        raise HookRefused("the SNS signature is not base64") from None
    _fresh(_when(field(data, "Timestamp", "message")), now)
    signed = []
    for key in fields:
        if key == "Subject" and data.get(key) is None:
            continue  # signed only when present
        signed.append(f"{key}\n{field(data, key, 'message')}\n")
    subscribe = data.get("SubscribeURL") if kind != "Notification" else None
    return SnsEnvelope(
        type=kind, message_id=field(data, "MessageId", "message"), topic_arn=topic,
        message=field(data, "Message", "message"), cert_url=cert_url,
        signature_version=version, signature=signature, signed="".join(signed).encode(),
        subscribe_url=subscribe if isinstance(subscribe, str) else None,
    )  # fmt: skip


def _when(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise malformed("the SNS Timestamp is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise malformed("the SNS Timestamp has no time zone")
    return when


def _fresh(when: datetime, now: datetime) -> None:
    if now - when > SNS_MAX_AGE:
        raise HookRefused("the SNS message is more than an hour old (a replay?)")
    if when - now > _SKEW:
        raise HookRefused("the SNS message is dated in the future")


def sns_verify(envelope: SnsEnvelope, pem: bytes, *, now: datetime) -> None:
    """Check ``envelope``'s signature with the certificate fetched from its ``cert_url``."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    try:
        cert = x509.load_pem_x509_certificate(pem)
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        raise HookRefused("the SNS signing certificate could not be read") from None
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise HookRefused("the SNS signing certificate is not valid now")
    if not isinstance(key, rsa.RSAPublicKey):
        raise HookRefused("the SNS signing certificate's key is not RSA")
    version_1 = envelope.signature_version == "1"
    algorithm = hashes.SHA1() if version_1 else hashes.SHA256()  # noqa: S303 - SNS's version 1
    try:
        key.verify(envelope.signature, envelope.signed, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise HookRefused("the SNS signature does not match") from None


def sns_read(envelope: SnsEnvelope) -> list[ProviderEvent] | Subscription:
    """A verified SNS message: SES's bounces and complaints (one event per recipient), or
    the subscription to confirm; an unsubscription or anything else is no event."""
    if envelope.type == "SubscriptionConfirmation":
        url = envelope.subscribe_url or ""
        if not sns_url_ok(url, pem=False):
            raise HookRefused("the SubscribeURL is not Amazon SNS's")
        return Subscription(topic_arn=envelope.topic_arn, url=url)
    if envelope.type != "Notification":
        return []
    try:
        data = json.loads(envelope.message)
    except (ValueError, RecursionError):
        return []  # a signed message of our topic that is not SES's (a test): nothing to read
    if not isinstance(data, dict):
        return []
    what = data.get("notificationType") or data.get("eventType")
    if what == "Bounce":
        return _ses_bounces(envelope.message_id, data)
    if what == "Complaint":
        return _ses_complaints(envelope.message_id, data)
    return []


def _ses_mail(data: dict[str, Any]) -> Ties:
    mail = as_object(data.get("mail"), "mail")
    headers = headers_of(mail.get("headers"))
    common_id = member(mail, "commonHeaders").get("messageId")
    return Ties(
        message_id=message_id_of(headers.get("message-id")) or message_id_of(common_id),
        mailer_send=trace_of(headers),
        bounce_to=optional(mail, "source") or optional(headers, "return-path"),
    )


_SES_HINTS = {"Permanent": Hint.PERMANENT, "Transient": Hint.TEMPORARY}
_SES_SUBTYPES = {"ContentRejected": Hint.POLICY, "AttachmentRejected": Hint.POLICY}


def _ses_bounces(message_id: str, data: dict[str, Any]) -> list[ProviderEvent]:
    bounce = as_object(data.get("bounce"), "bounce")
    kind, sub = optional(bounce, "bounceType") or "", optional(bounce, "bounceSubType") or ""
    hint = _SES_SUBTYPES.get(sub) or _SES_HINTS.get(kind, Hint.UNDETERMINED)
    mail = _ses_mail(data)
    events = []
    for item in as_array(bounce.get("bouncedRecipients"), "bounce.bouncedRecipients"):
        item = as_object(item, "a bounced recipient")
        address = recipient_of(item.get("emailAddress"), "a bounced recipient's emailAddress")
        words = optional(item, "diagnosticCode") or ""
        events.append(
            event_of(
                "ses", f"{message_id}:{address}", address, hint, status=optional(item, "status"),
                words=words or f"SES {kind or 'bounce'} {sub}".strip(), ties=mail,
            )
        )  # fmt: skip
    return events


def _ses_complaints(message_id: str, data: dict[str, Any]) -> list[ProviderEvent]:
    complaint = as_object(data.get("complaint"), "complaint")
    feedback = optional(complaint, "complaintFeedbackType") or "abuse"
    if feedback == "not-spam":
        return []  # the recipient says it is not spam: no complaint
    mail = _ses_mail(data)
    events = []
    for item in as_array(complaint.get("complainedRecipients"), "complaint.complainedRecipients"):
        address = recipient_of(
            as_object(item, "a complained recipient").get("emailAddress"), "emailAddress"
        )
        events.append(
            event_of(
                "ses", f"{message_id}:{address}", address, Hint.COMPLAINT,
                words=f"complaint ({feedback})", ties=mail,
            )
        )  # fmt: skip
    return events


# --- Mailgun ---------------------------------------------------------------------------------


def mailgun_events(body: bytes, *, key: str, now: datetime) -> list[ProviderEvent]:
    """A Mailgun webhook call, its signature and timestamp checked: ``failed`` (permanent or
    temporary) and ``complained`` are events."""
    data = as_object(read_json(body), "the body")
    signature = as_object(data.get("signature"), "signature")
    timestamp = field(signature, "timestamp", "signature")
    token = field(signature, "token", "signature")
    given = field(signature, "signature", "signature")
    _window(timestamp, now, "Mailgun")
    expected = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        raise HookRefused("the Mailgun signature does not match")
    event = as_object(data.get("event-data"), "event-data")
    what = event.get("event")
    if what not in ("failed", "complained"):
        return []
    headers = member(member(event, "message"), "headers")
    ties = Ties(
        message_id=message_id_of(headers.get("message-id")),
        mailer_send=trace_of(headers) or trace_of(member(event, "user-variables")),
        bounce_to=optional(member(event, "envelope"), "sender"),
    )
    event_id = field(event, "id", "event-data")
    address = recipient_of(event.get("recipient"), "event-data.recipient")
    reason = optional(event, "reason") or ""
    if what == "complained" or reason == "suppress-complaint":
        return [
            event_of("mailgun", event_id, address, Hint.COMPLAINT, words="complaint", ties=ties)
        ]
    if reason == "suppress-unsubscribe":
        return []  # unsubscribed at Mailgun: no bounce
    status = member(event, "delivery-status")
    code = status.get("code")
    words = optional(status, "message") or optional(status, "description") or reason
    if isinstance(code, int) and 200 <= code < 600 and not words.startswith(str(code)):
        words = f"{code} {words}"
    temporary = event.get("severity") == "temporary"
    hint = Hint.TEMPORARY if temporary else Hint.PERMANENT
    return [
        event_of(
            "mailgun", event_id, address, hint, status=optional(status, "enhanced-code"),
            words=words, final=not temporary, ties=ties,
        )
    ]  # fmt: skip


def _window(timestamp: str, now: datetime, who: str) -> None:
    if not re.fullmatch(r"[0-9]{1,12}", timestamp):
        raise HookRefused(f"the {who} timestamp is not a number of seconds")
    if abs(now.timestamp() - int(timestamp)) > SIGNED_WINDOW.total_seconds():
        raise HookRefused(f"the {who} timestamp is more than 5 minutes away (a replay?)")


# --- Postmark --------------------------------------------------------------------------------


def check_basic_auth(header: str | None, user: str, password: str) -> None:
    """Refuse (UNAUTHENTICATED) unless ``header`` is Basic auth with this user and password;
    both compared in constant time, whichever is wrong."""
    scheme, _, value = (header or "").partition(" ")
    try:
        given = base64.b64decode(value.strip(), validate=True)
    except ValueError:  # binascii.Error, or a header that is not ASCII
        given = b""
    name, colon, secret = given.partition(b":")
    ok = hmac.compare_digest(name, user.encode()) & hmac.compare_digest(secret, password.encode())
    if scheme.lower() != "basic" or not colon or not ok:
        raise HookRefused("wrong or missing basic auth credentials", Refusal.UNAUTHENTICATED)


_POSTMARK = {
    "HardBounce": Hint.PERMANENT, "BadEmailAddress": Hint.PERMANENT,
    "SoftBounce": Hint.TEMPORARY, "Transient": Hint.TEMPORARY, "DnsError": Hint.TEMPORARY,
    "SpamNotification": Hint.POLICY, "VirusNotification": Hint.POLICY,
    "Blocked": Hint.POLICY, "DMARCPolicy": Hint.POLICY, "SpamComplaint": Hint.COMPLAINT,
}  # fmt: skip
_POSTMARK_IGNORED = frozenset({
    "AutoResponder", "AddressChange", "Subscribe", "Unsubscribe", "OpenRelayTest",
    "ChallengeVerification", "ManuallyDeactivated", "Unconfirmed", "SMTPApiError",
    "InboundError", "TemplateRenderingFailed",
})  # fmt: skip


def postmark_events(body: bytes) -> list[ProviderEvent]:
    """A Postmark bounce or spam complaint webhook call (its basic auth checked by the
    route); any other record type is no event."""
    data = as_object(read_json(body), "the body")
    record = data.get("RecordType")
    if record not in ("Bounce", "SpamComplaint"):
        return []
    kind = field(data, "Type", "the record")
    if kind in _POSTMARK_IGNORED:
        return []
    hint = Hint.COMPLAINT if record == "SpamComplaint" else _POSTMARK.get(kind, Hint.UNDETERMINED)
    headers = headers_of(data.get("Headers"), "Name", "Value")
    ties = Ties(
        message_id=message_id_of(headers.get("message-id")),
        mailer_send=trace_of(headers) or trace_of(member(data, "Metadata")),
        bounce_to=optional(headers, "return-path"),
    )
    words = optional(data, "Details") or optional(data, "Description") or kind
    return [
        event_of(
            "postmark", field(data, "ID", "the record"), recipient_of(data.get("Email"), "Email"),
            hint, words=words if hint != Hint.COMPLAINT else f"complaint ({kind})",
            final=kind != "Transient", ties=ties,
        )
    ]  # fmt: skip


# --- SendGrid --------------------------------------------------------------------------------


def sendgrid_key(text: str) -> EllipticCurvePublicKey:
    """SendGrid's verification key (base64 DER, as SendGrid shows it, or PEM); ValueError
    if it is not an ECDSA P-256 public key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        if "BEGIN" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode("".join(text.split())))
    except (ValueError, UnsupportedAlgorithm):  # binascii.Error is a ValueError
        raise ValueError("not a base64 public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ValueError("not an ECDSA P-256 public key")
    return key


_SENDGRID_DROPPED = {
    "Bounced Address": Hint.PERMANENT, "Invalid": Hint.PERMANENT,
    "Spam Reporting Address": Hint.COMPLAINT,
}  # fmt: skip


def sendgrid_events(
    body: bytes,
    *,
    signature: str | None,
    timestamp: str | None,
    key: EllipticCurvePublicKey,
    now: datetime,
) -> list[ProviderEvent]:
    """A SendGrid signed event webhook call (the two ``X-Twilio-Email-Event-Webhook-*``
    headers): ``bounce`` (bounce or blocked), ``dropped`` for a bounced, invalid or
    complaining address, and ``spamreport`` are events."""
    if not signature or not timestamp:
        raise HookRefused("the SendGrid signature headers are missing")
    _window(timestamp, now, "SendGrid")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key.verify(
            base64.b64decode(signature.strip(), validate=True),
            timestamp.encode() + body,
            ec.ECDSA(hashes.SHA256()),
        )
    except (ValueError, InvalidSignature):  # not base64 (or not ASCII), or not the signature
        raise HookRefused("the SendGrid signature does not match") from None
    events = []
    for item in as_array(read_json(body), "the body"):
        found = _sendgrid(as_object(item, "an event"))
        if found is not None:
            events.append(found)
    return events


def _sendgrid(event: dict[str, Any]) -> ProviderEvent | None:
    what = event.get("event")
    reason = optional(event, "reason") or ""
    if what == "bounce":
        blocked = event.get("type") == "blocked"
        hint, words = (Hint.TEMPORARY if blocked else Hint.PERMANENT), reason or "bounce"
    elif what == "dropped" and reason in _SENDGRID_DROPPED:
        hint, words = _SENDGRID_DROPPED[reason], f"dropped: {reason}"
    elif what == "spamreport":
        hint, words = Hint.COMPLAINT, "complaint (spamreport)"
    else:
        return None
    event_id = optional(event, "sg_event_id") or _digest(event)
    return event_of(
        "sendgrid", event_id, recipient_of(event.get("email"), "an event's email"), hint,
        status=optional(event, "status"), words=words,
        ties=Ties(message_id=message_id_of(event.get("smtp-id")), mailer_send=trace_of(event)),
    )  # fmt: skip


def _digest(event: Mapping[str, Any]) -> str:
    """An id for an event without ``sg_event_id`` (older webhooks' ``dropped``): its JSON."""
    canonical = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


__all__ = [
    "PROVIDERS",
    "SIGNED_WINDOW",
    "SNS_MAX_AGE",
    "HookRefused",
    "ProviderEvent",
    "Refusal",
    "SnsEnvelope",
    "Subscription",
    "check_basic_auth",
    "kind_of",
    "mailgun_events",
    "postmark_events",
    "sendgrid_events",
    "sendgrid_key",
    "sns_envelope",
    "sns_read",
    "sns_url_ok",
    "sns_verify",
]
