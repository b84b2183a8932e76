"""What storage takes and returns about lists, subscribers, consent and suppressions."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailer.models.vocabulary import OptInMode


@dataclass(frozen=True, slots=True)
class ListMeta:
    """A list as its file or the configuration declares it (what an upsert writes)."""

    slug: str
    title: str
    default_locale: str = "fr"
    opt_in: OptInMode = OptInMode.SINGLE
    public: bool = False


@dataclass(frozen=True, slots=True)
class ListSummary:
    slug: str
    title: str
    default_locale: str
    opt_in: str
    counts: dict[str, int]  # subscription status -> subscriptions
    suppressed: int


@dataclass(frozen=True, slots=True)
class PublicList:
    """A list the sign-up form offers."""

    id: int
    slug: str
    title: str
    default_locale: str


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    """A validated row to import: ``email`` normalised, ``key`` its comparison key."""

    line: int
    email: str
    key: str
    smtputf8: bool
    name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExportRow:
    email: str
    name: str
    locale: str | None
    timezone: str | None
    attributes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SuppressionEvent:
    """One entry of an address's suppression history (append-only)."""

    at: datetime
    action: str  # a SuppressionAction: suppress, unsuppress
    reason: str
    detail: str
    actor: str  # who: "cli:<unix user>", "send <id>", "web"...


@dataclass(frozen=True, slots=True)
class SubscriberView:
    id: int
    email: str
    name: str
    locale: str | None
    timezone: str | None
    attributes: dict[str, Any]
    status: str
    created_at: datetime
    subscriptions: list[tuple[str, str, str]]  # (list slug, status, source)
    suppression: str | None
    suppression_history: list[SuppressionEvent] = field(default_factory=list)


@dataclass(slots=True)
class ImportTally:
    """What one import did to the database (filled in as the import goes, hence not frozen)."""

    added: int = 0
    subscribed_existing: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_unsubscribed: list[tuple[int, str]] = field(default_factory=list)
    suppressed: list[tuple[int, str]] = field(default_factory=list)
    merged: list[tuple[int, str, str]] = field(default_factory=list)  # line, file, stored
    vanished: list[str] = field(default_factory=list)
    pruned: int = 0


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """The subscriber and list a signed link points at, as they are now."""

    subscriber_id: int
    public_id: str
    email: str
    name: str
    locale: str | None
    list_id: int
    list_slug: str
    list_title: str
    list_locale: str
    status: str | None  # the subscription's status; None: not (or no longer) on the list
    suppressed: bool
    confirm_nonce: str | None = None  # the pending sign-up request's, if any


@dataclass(frozen=True, slots=True)
class ListChoice:
    id: int
    slug: str
    title: str
    subscribed: bool


@dataclass(frozen=True, slots=True)
class Preferences:
    email: str
    locale: str | None
    lists: list[ListChoice]
    timezone: str | None = None  # the reader's zone: event times are shown in it too
