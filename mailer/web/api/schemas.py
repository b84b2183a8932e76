"""The pydantic models of the REST API's people resources (lists, subscribers,
suppressions): what a request may carry and what an answer holds. The OpenAPI document is
made from these, and requests are validated by them with the CLI's own rules and words
(``mailer.addresses`` for addresses and names, the list file's rules for languages, time
zones and attribute sizes).

Subscribers are named by their ``public_id`` (``id`` here), never a row id. Times are aware
UTC datetimes, serialised in ISO 8601 with their offset.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from mailer.addresses import check_name, normalize
from mailer.errors import AddressError
from mailer.lists import LOCALE, MAX_ATTRIBUTE, SLUG
from mailer.models import SubscriptionStatus, SuppressionReason
from mailer.web.api.paging import PageQuery

MAX_ATTRIBUTES = 50
MAX_REASON = 500


def _address(value: str) -> str:
    try:
        return normalize(value).email
    except AddressError as exc:
        raise ValueError(f"{value!r}: {exc}") from None


def _name(value: str) -> str:
    value = value.strip()
    try:
        check_name(value)
    except AddressError as exc:
        raise ValueError(str(exc)) from None
    return value


def _locale(value: str) -> str:
    match = LOCALE.match(value)
    if match is None:
        raise ValueError(f"{value!r} is not a language code such as fr or en")
    language, region = match.groups()
    return f"{language.lower()}_{region.upper()}" if region else language.lower()


def _zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Paris") from None
    return value


def _slug(value: str) -> str:
    if not SLUG.match(value):
        raise ValueError(f"{value!r} is not a list name: use a-z, 0-9, - and _")
    return value


def _attributes(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes")
    for key, text in value.items():
        if not key or len(key) > 64 or "\x00" in key:
            raise ValueError(f"{key[:64]!r}: an attribute name is 1 to 64 characters")
        if "\x00" in text:
            raise ValueError(f"{key}: contains a NUL byte")
        if len(text) > MAX_ATTRIBUTE:
            raise ValueError(f"{key}: longer than {MAX_ATTRIBUTE} characters")
    return value


Email = Annotated[str, StringConstraints(max_length=320), AfterValidator(_address)]
Name = Annotated[str, StringConstraints(max_length=300), AfterValidator(_name)]
Locale = Annotated[str, StringConstraints(max_length=16), AfterValidator(_locale)]
Zone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_zone)]
Slug = Annotated[str, StringConstraints(max_length=64), AfterValidator(_slug)]
Attributes = Annotated[dict[str, str], AfterValidator(_attributes)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- lists -------------------------------------------------------------------------------------


class ListCounts(BaseModel):
    """A list's subscriptions by status."""

    subscribed: int
    pending: int
    unsubscribed: int


class MailingList(BaseModel):
    """A list, with its members counted by status."""

    slug: str
    title: str
    default_locale: str
    opt_in: Literal["single", "double"]
    counts: ListCounts
    suppressed: int = Field(description="Subscribed members whose address is suppressed.")


class MemberStatus(StrEnum):
    SUBSCRIBED = "subscribed"
    PENDING = "pending"
    UNSUBSCRIBED = "unsubscribed"
    SUPPRESSED = "suppressed"


class MembersQuery(PageQuery):
    """Which members of a list."""

    q: str | None = Field(
        default=None, max_length=200, description="Address or name beginning with this."
    )
    status: MemberStatus | None = Field(
        default=None,
        description="Subscription status, or `suppressed` (subscribed, address suppressed).",
    )


class Member(BaseModel):
    """A member of a list."""

    id: str = Field(description="The subscriber's public id.")
    email: str
    name: str
    status: SubscriptionStatus
    since: datetime = Field(description="When they consented (else subscribed).")
    suppressed: SuppressionReason | None = Field(description="Why their address is suppressed.")


# --- subscribers -------------------------------------------------------------------------------


class Subscription(BaseModel):
    """One of a subscriber's lists, with its consent record."""

    list: str
    status: SubscriptionStatus
    source: str
    consent_at: datetime | None
    confirmed_at: datetime | None
    unsubscribed_at: datetime | None
    unsubscribe_source: str | None


class SuppressionState(BaseModel):
    """Why the subscriber's address is never mailed."""

    reason: SuppressionReason
    detail: str
    since: datetime


class Subscriber(BaseModel):
    """A subscriber, their lists and whether their address is suppressed."""

    id: str = Field(description="The public id (links and the API name subscribers by it).")
    email: str
    name: str
    locale: str | None
    timezone: str | None
    attributes: dict[str, str]
    status: str = Field(description="active, bounced or complained.")
    created_at: datetime
    subscriptions: list[Subscription]
    suppression: SuppressionState | None


class SubscriberIn(_In):
    """A subscriber to add to a list. A double opt-in list gets a pending subscription and a
    confirmation mail; a single opt-in list subscribes them at once (the consent record
    says: source `api`)."""

    email: Email
    list: Slug
    name: Name | None = None
    locale: Locale | None = None
    timezone: Zone | None = None
    attributes: Attributes = Field(default_factory=dict)
    resubscribe: bool = Field(
        default=False,
        description="Re-subscribe someone who unsubscribed from this list (at their request).",
    )


class SubscriberPatch(_In):
    """The fields to change (absent: unchanged; null clears locale or time zone)."""

    name: Name | None = None
    locale: Locale | None = None
    timezone: Zone | None = None
    attributes: Attributes | None = Field(
        default=None, description="Replaces the attributes as a whole."
    )


class SearchQuery(MembersQuery):
    """Subscribers of a list, by the beginning of their address or name."""

    list: Slug = Field(description="The list whose members to search.")


class UnsubscribeIn(_In):
    """Unsubscribe from one list, or (no list) from every list."""

    list: Slug | None = None


class Unsubscribed(BaseModel):
    changed: int = Field(description="Subscriptions that became unsubscribed.")


# --- suppressions ------------------------------------------------------------------------------


class SuppressionQuery(PageQuery):
    q: str | None = Field(
        default=None, max_length=200, description="Addresses beginning with this."
    )


class Suppression(BaseModel):
    """An address never mailed again."""

    email_key: str = Field(description="The address as compared (lower case).")
    reason: SuppressionReason
    detail: str
    created_at: datetime
    subscriber: str | None = Field(description="The public id of the subscriber with it.")


class SuppressionIn(_In):
    """Suppress an address: it is never mailed again, whatever its lists say."""

    email: Email
    reason: SuppressionReason = SuppressionReason.MANUAL
    detail: Reason


class LiftIn(_In):
    """Lift a suppression: the address may be mailed again (its subscriptions decide)."""

    reason: Reason = Field(description="Why (kept in the suppression history).")


class Lifted(BaseModel):
    """A suppression lifted."""

    email_key: str
    was: str = Field(description="The reason it was suppressed for.")
