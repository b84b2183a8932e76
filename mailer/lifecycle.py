"""The lifecycle of campaigns and sends: one table of the moves allowed, and the check.

A move is named for what it is (a staff pause, a pass that halts itself, a reminder the
event's move left behind), because two moves to one status may start from different ones:
staff may pause a scheduled send, a pass only halts the running send it works on. Storage
makes every move a conditional ``UPDATE ... WHERE status IN (<the move's sources>)``
(:func:`send_sources`), so a move that lost a race changes nothing; :func:`check_send` and
:func:`check_campaign` say, as a :class:`~mailer.errors.StateError`, why a move is refused.

Foundation layer: imports only ``models`` and ``errors``; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Generic, TypeVar

from mailer.errors import StateError
from mailer.models import CampaignStatus, SendStatus


class SendMove(StrEnum):
    """The moves of a send, each one row of :data:`SEND_MOVES`."""

    CLAIM = "claim"  # a node starts a send that fell due
    RESUME = "resume"  # staff go on with a paused send (`send run`, `campaign resume`)
    RESUME_UNSTARTED = "resume unstarted"  # `campaign resume` of a send paused before it ran
    RETRY = "retry"  # `send retry-failed` of a finished send: it runs again
    PAUSE = "pause"  # staff pause (`send pause`, `campaign pause`)
    HALT = "halt"  # the pass pauses the send it runs (relay refusing, failure streak)
    CANCEL = "cancel"  # staff cancel (`send cancel`, `campaign cancel`, `event cancel`)
    DROP = "drop"  # a scheduled reminder the event's move left behind
    EXPIRE = "expire"  # the scheduler: a scheduled send past its grace
    TOO_LATE = "too late"  # dispatch, before a pass: the event has started
    OVERRUN = "overrun"  # dispatch, during a pass: the event has started
    FINISH = "finish"  # nothing is left to attempt


class CampaignMove(StrEnum):
    """The moves of a campaign, each one row of :data:`CAMPAIGN_MOVES`."""

    SUBMIT = "submit"  # an editor asks for approval
    APPROVE = "approve"  # a sender approves: a snapshot of content and audience is frozen
    SCHEDULE = "schedule"  # its sends are planned (after approval)
    RETURN = "send back"  # a sender returns a submitted or approved campaign to its editor
    EDIT = "edit"  # a change of its content: back to draft, any approval gone
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"


S = TypeVar("S", SendStatus, CampaignStatus)


@dataclass(frozen=True, slots=True)
class Move(Generic[S]):
    """One row of a table: the statuses a move starts from, and where it leads."""

    sources: frozenset[S]
    target: S


def _move(target: S, *sources: S) -> Move[S]:
    return Move(frozenset(sources), target)


S_ = SendStatus
SEND_MOVES: Mapping[SendMove, Move[SendStatus]] = MappingProxyType(
    {
        SendMove.CLAIM: _move(S_.RUNNING, S_.SCHEDULED),
        SendMove.RESUME: _move(S_.RUNNING, S_.PAUSED),
        SendMove.RESUME_UNSTARTED: _move(S_.SCHEDULED, S_.PAUSED),
        SendMove.RETRY: _move(S_.RUNNING, S_.DONE),
        SendMove.PAUSE: _move(S_.PAUSED, S_.SCHEDULED, S_.RUNNING),
        SendMove.HALT: _move(S_.PAUSED, S_.RUNNING),
        SendMove.CANCEL: _move(S_.CANCELLED, S_.SCHEDULED, S_.RUNNING, S_.PAUSED),
        SendMove.DROP: _move(S_.CANCELLED, S_.SCHEDULED),
        SendMove.EXPIRE: _move(S_.MISSED, S_.SCHEDULED),
        SendMove.TOO_LATE: _move(S_.MISSED, S_.SCHEDULED, S_.RUNNING),
        SendMove.OVERRUN: _move(S_.MISSED, S_.RUNNING),
        SendMove.FINISH: _move(S_.DONE, S_.RUNNING),
    }
)

# A campaign is written (draft), submitted, approved, then scheduled; any edit takes it
# back to draft, and its approval with it (the workflow refuses an edit once a send of it
# started). Pause and resume are the sending's moves: never from a campaign not yet
# scheduled; from an ended one (done, cancelled) they stay unconditional, as they were
# before approvals (its sends carry their own conditions). Cancel goes from anywhere.
C_ = CampaignStatus
_UNSENT = (C_.DRAFT, C_.SUBMITTED, C_.APPROVED)
_SENDING = tuple(s for s in CampaignStatus if s not in _UNSENT)
# Where a campaign's sends may go (with its approval): a sender scheduled it. An approved
# campaign edited after its schedule keeps its old sends held until its new plan is made.
RELEASED: frozenset[CampaignStatus] = frozenset(_SENDING)
# Where a campaign's event may be moved (its reminders re-planned, an update mailed).
EVENT_MOVABLE: frozenset[CampaignStatus] = frozenset({C_.SCHEDULED, C_.PAUSED, C_.DONE})
CAMPAIGN_MOVES: Mapping[CampaignMove, Move[CampaignStatus]] = MappingProxyType(
    {
        CampaignMove.SUBMIT: _move(C_.SUBMITTED, C_.DRAFT),
        CampaignMove.APPROVE: _move(C_.APPROVED, C_.SUBMITTED),
        CampaignMove.SCHEDULE: _move(C_.SCHEDULED, C_.APPROVED),
        CampaignMove.RETURN: _move(C_.DRAFT, C_.SUBMITTED, C_.APPROVED),
        CampaignMove.EDIT: _move(C_.DRAFT, C_.DRAFT, C_.SUBMITTED, C_.APPROVED, C_.SCHEDULED),
        CampaignMove.PAUSE: _move(C_.PAUSED, *_SENDING),
        CampaignMove.RESUME: _move(C_.SCHEDULED, *_SENDING),
        CampaignMove.CANCEL: _move(C_.CANCELLED, *CampaignStatus),
    }
)

# Where a schedule that records its own approval may start (`campaign create` of a file, the
# operator's approval; or a console with MAILER_CONSOLE__REQUIRE_APPROVAL=false): before
# approval, or a campaign already scheduled whose file is created again.
SELF_APPROVED_SCHEDULE: frozenset[CampaignStatus] = frozenset(
    {C_.DRAFT, C_.SUBMITTED, C_.APPROVED, C_.SCHEDULED}
)

ENDED: frozenset[SendStatus] = frozenset({S_.DONE, S_.CANCELLED, S_.MISSED})

# Every (from, to) pair some move allows.
SEND_TRANSITIONS: frozenset[tuple[SendStatus, SendStatus]] = frozenset(
    (source, move.target) for move in SEND_MOVES.values() for source in move.sources
)


def send_target(move: SendMove) -> SendStatus:
    return SEND_MOVES[move].target


def send_sources(move: SendMove) -> list[SendStatus]:
    """The statuses a send may be in for ``move``, in a stable order (for SQL)."""
    return sorted(SEND_MOVES[move].sources)


def campaign_target(move: CampaignMove) -> CampaignStatus:
    return CAMPAIGN_MOVES[move].target


def campaign_sources(move: CampaignMove) -> list[CampaignStatus]:
    """The statuses a campaign may be in for ``move``, in a stable order (for SQL)."""
    return sorted(CAMPAIGN_MOVES[move].sources)


def schedule_sources(*, self_approved: bool) -> list[CampaignStatus]:
    """Where a schedule may start: approved, or (recording its own approval) also draft,
    submitted and scheduled (:data:`SELF_APPROVED_SCHEDULE`)."""
    if self_approved:
        return sorted(SELF_APPROVED_SCHEDULE)
    return campaign_sources(CampaignMove.SCHEDULE)


def check_send(send_id: int, current: str, move: SendMove) -> SendStatus:
    """The status ``move`` leads to from ``current``; StateError if the table refuses it."""
    return _check(f"send {send_id}", current, move, SEND_MOVES[move])


def check_campaign(name: str, current: str, move: CampaignMove) -> CampaignStatus:
    """The status ``move`` leads to from ``current``; StateError if the table refuses it."""
    return _check(f"campaign {name}", current, move, CAMPAIGN_MOVES[move])


def check_schedule(name: str, current: str, *, self_approved: bool) -> CampaignStatus:
    """Like :func:`check_campaign` for SCHEDULE, with the wider sources of a schedule that
    records its own approval."""
    rule = CAMPAIGN_MOVES[CampaignMove.SCHEDULE]
    if self_approved:
        rule = Move(SELF_APPROVED_SCHEDULE, rule.target)
    return _check(f"campaign {name}", current, CampaignMove.SCHEDULE, rule)


def _check(what: str, current: str, move: StrEnum, rule: Move[S]) -> S:
    if current in rule.sources:
        return rule.target
    allowed = ", ".join(sorted(rule.sources)) or "nowhere"
    raise StateError(
        f"{what} is {current}: it cannot {move.value} (to {rule.target}); "
        f"{move.value} goes from {allowed} only"
    )


__all__ = [
    "CAMPAIGN_MOVES",
    "ENDED",
    "SELF_APPROVED_SCHEDULE",
    "SEND_MOVES",
    "SEND_TRANSITIONS",
    "CampaignMove",
    "Move",
    "SendMove",
    "campaign_sources",
    "campaign_target",
    "check_campaign",
    "check_schedule",
    "check_send",
    "schedule_sources",
    "send_sources",
    "send_target",
]
