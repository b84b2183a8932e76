"""The schema (SQLAlchemy Core). Migrations under ``mailer/migrations`` must produce exactly this.

Times are ``UTCDateTime``: aware UTC datetimes in Python, ``timestamptz`` where the database
keeps time zones and naive UTC text where it does not (``Capabilities.naive_datetimes``).
Statuses are text holding the ``StrEnum`` values of ``models``. Writes no row: each table is
written by one module of ``storage`` (its docstring names it).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.types import TypeDecorator

from mailer.storage.engine import ROW_ID, capabilities

Id = ROW_ID


_NONE = object()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: store aware UTC datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if capabilities(dialect).naive_datetimes else value

    def bind_processor(self, dialect: Dialect) -> Any:
        """The processing of :meth:`process_bind_param` and the dialect's own, remembering
        the last datetime processed: a batch binds the same ``now`` on every row (an import's
        four times per subscriber, a ledger batch's), and it was 17 % of an import's CPU."""
        process = super().bind_processor(dialect)
        assert process is not None
        last: list[tuple[Any, Any]] = [(_NONE, None)]  # one (value, processed) pair

        def remembered(value: Any) -> Any:
            seen, processed = last[0]
            if value is seen:  # the same (immutable) object: the same answer
                return processed
            processed = process(value)
            last[0] = (value, processed)
            return processed

        return remembered

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def new_public_id() -> str:
    """A random id for the links of a subscriber: 128 bits, never reused (a row id is)."""
    return secrets.token_urlsafe(16)


def new_nonce() -> str:
    """A random value bound to one pending sign-up: its confirmation link carries it."""
    return secrets.token_urlsafe(12)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


def _created() -> Column[datetime]:
    return Column("created_at", UTCDateTime(), nullable=False)


def _updated() -> Column[datetime]:
    return Column("updated_at", UTCDateTime(), nullable=False)


lists = Table(
    "lists",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("slug", String(64), nullable=False, unique=True),
    Column("title", String(200), nullable=False),
    Column("default_locale", String(16), nullable=False),
    Column("opt_in", String(16), nullable=False),
    Column("public", Boolean, nullable=False, default=False),
    _created(),
    _updated(),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False),
    # What links name (unsubscribe, preferences, confirm): random, so a token never points
    # at the next person who gets an erased subscriber's row id. Always set (the default);
    # nullable in the schema only because SQLite cannot add a NOT NULL column without
    # rebuilding the table, which would cascade-delete its subscriptions.
    Column("public_id", String(32), nullable=True, default=new_public_id),
    # True for the subscribers that existed before links named public ids (migration 0003):
    # the unsubscribe and preference links mailed to them named the row id, and must keep
    # working (RFC 8058). A row made since, which may have reused an erased row's id, is
    # never reached by such a link.
    Column("legacy_links", Boolean, nullable=True),
    # The comparison key: the normalised address case-folded; unique.
    Column("email_key", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False, default=""),
    Column("locale", String(16), nullable=True),
    Column("timezone", String(64), nullable=True),
    Column("attributes", JSON, nullable=False, default=dict),
    Column("status", String(16), nullable=False),
    Column("smtputf8", Boolean, nullable=False, default=False),
    _created(),
    _updated(),
    Index(None, "public_id", unique=True),
)
# A name prefix with ASCII letters folded (the console's member search; migration 0006):
# ``lower(name) text_pattern_ops`` on PostgreSQL (LIKE 'x%' reads it under any collation).
# SQLite builds it as ``name COLLATE NOCASE``, the same order (NOCASE folds ASCII letters, as
# SQLite's lower() does), which SQLAlchemy reflects where it skips an expression index; a
# query reads it with ``name COLLATE NOCASE >= ...``, not with ``lower(name)``.
Index("ix_subscribers_name_folded", func.lower(subscribers.c.name))

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),
    # Consent record: how, when and from where the subscriber joined.
    Column("source", String(200), nullable=False),
    Column("consent_at", UTCDateTime(), nullable=True),
    Column("consent_ip", String(64), nullable=True),
    Column("confirmed_at", UTCDateTime(), nullable=True),
    # Where the double opt-in confirmation came from (consent_ip is where the request did).
    Column("confirmed_ip", String(64), nullable=True),
    Column("unsubscribed_at", UTCDateTime(), nullable=True),
    Column("unsubscribe_source", String(200), nullable=True),
    # The pending sign-up request, if any: its confirmation link carries this nonce, so an
    # older link never confirms a newer request. Cleared when confirmed.
    Column("confirm_nonce", String(32), nullable=True),
    Column("requested_at", UTCDateTime(), nullable=True),
    _created(),
    _updated(),
    UniqueConstraint("subscriber_id", "list_id"),
    Index(None, "list_id", "status"),
    # A list's members newest first, a page at a time (migration 0006).
    Index(None, "list_id", "id"),
)

# Append-only history of consent: every request, confirmation, subscription and unsubscribe,
# with when, how and from where. The subscriptions row holds the current state.
consent_events = Table(
    "consent_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE"), nullable=True),
    # requested, confirmed, subscribed, unsubscribed
    Column("event", String(32), nullable=False),
    Column("source", String(200), nullable=False),
    Column("ip", String(64), nullable=True),
    Column("at", UTCDateTime(), nullable=False),
    Index(None, "subscriber_id", "at"),
)

suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email_key", String(320), nullable=False, unique=True),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    _created(),
)

# Append-only history of suppressions: each suppress and lift, who did it, when and why.
# ``suppressions`` holds the addresses suppressed now.
suppression_events = Table(
    "suppression_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email_key", String(320), nullable=False),
    Column("action", String(16), nullable=False),  # suppress, unsuppress
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Column("actor", String(200), nullable=False, default=""),
    Column("at", UTCDateTime(), nullable=False),
    Index(None, "email_key", "at"),
)

campaigns = Table(
    "campaigns",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("template", String(200), nullable=False),
    Column("subject", Text, nullable=False, default=""),
    Column("body", Text, nullable=False, default=""),
    Column("body_format", String(16), nullable=False, default="markdown"),
    Column("sender_name", String(200), nullable=True),
    Column("sender_address", String(320), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("options", JSON, nullable=False, default=dict),
    # The words per language: [{"locale", "subject", "body", "preheader"}...], the fallback
    # first (migration 0004); NULL for a campaign stored before, whose subject and body go to
    # every language.
    Column("texts", JSON(none_as_null=True), nullable=True),
    # Approvals (migration 0007). The campaign as a CampaignFile in JSON, its bodies inlined
    # (NULL: stored before); its version, one more at each save (a save that expected
    # another version is refused: two staff editing one draft); who saved, submitted and
    # approved it, when; the snapshot approval froze (content and templates by hash, lists
    # and audience); who saved a version since the last approval (a JSON list: none of them
    # approves it unless self-approval is allowed). The daemon sends nothing of a campaign
    # whose approved_at is NULL.
    Column("spec", JSON(none_as_null=True), nullable=True),
    Column("version", Integer, nullable=False, default=1, server_default="1"),
    Column("updated_by", String(320), nullable=True),
    Column("submitted_by", String(320), nullable=True),
    Column("submitted_at", UTCDateTime(), nullable=True),
    Column("approved_by", String(320), nullable=True),
    Column("approved_at", UTCDateTime(), nullable=True),
    Column("approval", JSON(none_as_null=True), nullable=True),
    Column("contributors", JSON(none_as_null=True), nullable=True),
    _created(),
    _updated(),
)

campaign_lists = Table(
    "campaign_lists",
    metadata,
    Column(
        "campaign_id",
        Id,
        ForeignKey("campaigns.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("list_id", Id, ForeignKey("lists.id", ondelete="RESTRICT"), primary_key=True),
)

events = Table(
    "events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "campaign_id",
        Id,
        ForeignKey("campaigns.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("uid", String(255), nullable=False, unique=True),
    Column("title", String(300), nullable=False),
    Column("starts_at", UTCDateTime(), nullable=False),
    Column("ends_at", UTCDateTime(), nullable=True),
    Column("timezone", String(64), nullable=False),
    Column("place", Text, nullable=False, default=""),
    Column("link", Text, nullable=True),
    Column("description", Text, nullable=False, default=""),
    Column("sequence", Integer, nullable=False, default=0),
    Column("status", String(16), nullable=False),
    # {"texts": [...], "invite": "request", "rsvp": false, "day_seconds": 86400,
    #  "previous": {...}} (migration 0004); NULL for an event stored before: sent as then.
    Column("details", JSON(none_as_null=True), nullable=True),
    _created(),
    _updated(),
)

sends = Table(
    "sends",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("campaign_id", Id, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    # Stable key within the campaign: "announce", "reminder:P7D", "issue:2026-12-01"...
    Column("key", String(100), nullable=False),
    # What the mail is: announcement, newsletter, invitation, reminder, update, cancellation.
    Column("action", String(32), nullable=False),
    # Who gets it: the campaign's lists, or (set for an event's update or cancellation, naming
    # its invitation) everyone the event's mails reached: invitation, reminders, updates.
    Column("audience_send_id", Id, ForeignKey("sends.id", ondelete="SET NULL"), nullable=True),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("claimed_by", String(200), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("started_at", UTCDateTime(), nullable=True),
    Column("finished_at", UTCDateTime(), nullable=True),
    Column("reason", Text, nullable=True),
    Column("total", Integer, nullable=False, default=0),
    Column("sent", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("skipped", Integer, nullable=False, default=0),
    Column("deferred", Integer, nullable=False, default=0),
    _created(),
    _updated(),
    UniqueConstraint("campaign_id", "key"),
    Index(None, "status", "due_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("send_id", Id, ForeignKey("sends.id", ondelete="CASCADE"), nullable=False),
    Column("subscriber_id", Id, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    # The list the subscriber gets this send through (its List-Id and unsubscribe link).
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    Column("leased_by", String(200), nullable=True),
    Column("lease_until", UTCDateTime(), nullable=True),
    Column("smtp_code", Integer, nullable=True),
    Column("smtp_reply", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("message_id", String(255), nullable=True),
    Column("sent_at", UTCDateTime(), nullable=True),
    _created(),
    _updated(),
    UniqueConstraint("send_id", "subscriber_id"),
    Index(None, "send_id", "status", "id"),
    # One subscriber's deliveries newest first, and the cascade of an erasure (migration 0006).
    Index(None, "subscriber_id", "id"),
    # A bounce tied to its delivery by the Message-ID echoed back (migration 0008).
    Index(None, "message_id"),
)

# Bounce messages (and relay webhook events) received, once each by their fingerprint
# (migration 0008): what they were, how they came, what tied them to a delivery; ``raw`` is
# emptied after MAILER_BOUNCES__KEEP_DAYS.
bounce_messages = Table(
    "bounce_messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("fingerprint", String(64), nullable=False, unique=True),
    Column("source", String(32), nullable=False),
    Column("report", String(16), nullable=False),
    Column("reader", String(32), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("raw", LargeBinary, nullable=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="SET NULL"), nullable=True),
    Column("message_id", String(255), nullable=True),
    Column("mailer_send", String(200), nullable=True),
    Column("forged", Boolean, nullable=False, default=False),
    Index(None, "received_at"),
)

# One recipient of a bounce message and what it did (suppressed, counted, policy...); an
# address's score is read from its rows of the last MAILER_BOUNCES__STALE_DAYS.
bounce_events = Table(
    "bounce_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bounce_id", Id, ForeignKey("bounce_messages.id", ondelete="CASCADE"), nullable=False),
    Column("email_key", String(320), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("status", String(16), nullable=True),
    Column("diagnostic", Text, nullable=False, default=""),
    Column("final", Boolean, nullable=False, default=True),
    Column("action", String(32), nullable=False),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="SET NULL"), nullable=True),
    Column("send_id", Id, ForeignKey("sends.id", ondelete="SET NULL"), nullable=True),
    Column("day", String(10), nullable=False),  # the UTC date, for soft bounces by day
    Column("at", UTCDateTime(), nullable=False),
    UniqueConstraint("bounce_id", "email_key"),
    Index(None, "email_key", "at"),
    Index(None, "send_id", "kind"),
    Index(None, "at"),
)

# Console accounts (migration 0005). ``email`` is stored lower-cased: the comparison key.
staff_users = Table(
    "staff_users",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=True),
    Column("role", String(16), nullable=False),  # models.Role
    Column("locale", String(16), nullable=True),
    Column("password_hash", String(255), nullable=True),  # argon2id PHC string
    Column("totp_secret", String(64), nullable=True),  # base32
    Column("totp_step", Integer, nullable=True),  # the last TOTP step used: no code twice
    Column("disabled", Boolean, nullable=False, default=False),
    _created(),
    _updated(),
)

# Signed-in sessions, found by the sha256 hex of the cookie value (the raw id is never stored).
staff_sessions = Table(
    "staff_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", Id, ForeignKey("staff_users.id", ondelete="CASCADE"), nullable=False),
    Column("csrf", String(64), nullable=False),
    _created(),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("client", String(64), nullable=True),
    Index(None, "user_id"),
)

# Append-only: every change staff make, who (a staff email, or "cli:<os user>"), what
# ("user.add", "subscriber.suppress"...), to what, when and from where.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", String(320), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(500), nullable=False),
    Column("details", JSON, nullable=False, default=dict),
    Column("client", String(64), nullable=True),
    Index(None, "at"),
    Index(None, "actor", "id"),
)
