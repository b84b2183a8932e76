"""What storage takes and returns about a campaign's writing, approval and schedule (the
console's compose, approve and schedule pages, and ``mailer campaign create``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class CampaignRecord:
    """A stored campaign with its spec, version and approval, as the console shows it."""

    id: int
    name: str
    kind: str
    status: str  # a CampaignStatus
    spec: dict[str, Any] | None  # the CampaignFile as JSON, bodies inlined; None: stored before
    version: int  # grows by one at each save of the spec
    lists: tuple[str, ...]  # slugs, sorted
    template: str
    timezone: str
    created_at: datetime
    updated_at: datetime
    updated_by: str | None  # who saved it last (None: before approvals)
    submitted_by: str | None
    submitted_at: datetime | None
    approved_by: str | None  # "system", "cli:<user>", a staff address...
    approved_at: datetime | None  # None: not approved; its sends are held
    approval: dict[str, Any] | None  # the snapshot frozen at approval
    started: bool  # a send of it is running, paused or done, or has deliveries
    contributors: tuple[str, ...] = ()  # who saved a version since the last approval


@dataclass(frozen=True, slots=True)
class CampaignListing:
    """One line of the console's campaign list."""

    name: str
    kind: str
    status: str
    version: int
    updated_by: str | None
    updated_at: datetime
    next_due: datetime | None  # the earliest scheduled send
    sends: int


@dataclass(frozen=True, slots=True)
class ScheduleResult:
    """What a schedule did to the campaign's sends, by key."""

    created: list[str] = field(default_factory=list)  # new sends
    moved: list[str] = field(default_factory=list)  # scheduled sends now due at another time
    dropped: list[str] = field(default_factory=list)  # scheduled sends no longer planned


class PlannedSend(Protocol):
    """A send to plan (``schedule.Planned`` is one): its key, action and UTC due time."""

    @property
    def key(self) -> str: ...

    @property
    def action(self) -> str: ...

    @property
    def due(self) -> datetime: ...
