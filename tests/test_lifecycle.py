"""The lifecycle table: which campaign and send moves are allowed, and the refusal's words."""

from __future__ import annotations

import itertools

import pytest

from mailer.errors import StateError
from mailer.lifecycle import (
    CAMPAIGN_MOVES,
    ENDED,
    SEND_MOVES,
    SEND_TRANSITIONS,
    CampaignMove,
    SendMove,
    check_campaign,
    check_schedule,
    check_send,
    schedule_sources,
    send_sources,
)
from mailer.models import CampaignStatus, SendStatus

S = SendStatus

# Every (from, to) pair a send may take, written out by hand: the table must give exactly
# these, so a move made legal by mistake (a cancelled send running again, say) fails here.
EXPECTED_SEND_TRANSITIONS = {
    (S.SCHEDULED, S.RUNNING),
    (S.SCHEDULED, S.PAUSED),
    (S.SCHEDULED, S.CANCELLED),
    (S.SCHEDULED, S.MISSED),
    (S.RUNNING, S.PAUSED),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.MISSED),
    (S.RUNNING, S.DONE),
    (S.PAUSED, S.RUNNING),
    (S.PAUSED, S.SCHEDULED),
    (S.PAUSED, S.CANCELLED),
    (S.DONE, S.RUNNING),
}

# What each caller allowed before the table existed (its `only_from` list, or the WHERE of
# its statement): the table keeps every one of them.
CALLERS_BEFORE = {
    SendMove.CLAIM: {S.SCHEDULED},  # Sending.claim / start
    SendMove.PAUSE: {S.SCHEDULED, S.RUNNING},  # cli send pause, pause_campaign
    SendMove.CANCEL: {S.SCHEDULED, S.RUNNING, S.PAUSED},  # cli send cancel, cancel_sends
    SendMove.DROP: {S.SCHEDULED},  # cli_campaigns event update
    SendMove.EXPIRE: {S.SCHEDULED},  # scheduler: past the grace
    SendMove.TOO_LATE: {S.SCHEDULED, S.RUNNING},  # dispatch before the pass
    SendMove.OVERRUN: {S.RUNNING},  # dispatch: _Missed
    SendMove.HALT: {S.RUNNING},  # dispatch: _Paused
    SendMove.RESUME: {S.PAUSED},  # resume_campaign (started), cli send run of a paused send
    SendMove.RESUME_UNSTARTED: {S.PAUSED},  # resume_campaign (never started)
    SendMove.FINISH: {S.RUNNING},  # finish
    SendMove.RETRY: {S.DONE},  # retry_failed
}


def test_the_send_table_allows_exactly_the_expected_transitions() -> None:
    """No move is allowed that the hand-written list does not name, and none is missing."""
    assert set(SEND_TRANSITIONS) == EXPECTED_SEND_TRANSITIONS


def test_every_move_starts_where_its_caller_started_before() -> None:
    """Each named move's sources are what its caller's `only_from` list was."""
    assert {move: set(rule.sources) for move, rule in SEND_MOVES.items()} == CALLERS_BEFORE


@pytest.mark.parametrize("ended", sorted(ENDED - {S.DONE}))
def test_a_cancelled_or_missed_send_never_moves_again(ended: SendStatus) -> None:
    """Cancelled and missed are final: every move from them is refused."""
    for move in SendMove:
        with pytest.raises(StateError):
            check_send(7, ended, move)


@pytest.mark.parametrize(("current", "move"), list(itertools.product(SendStatus, SendMove)))
def test_check_send_agrees_with_the_table(current: SendStatus, move: SendMove) -> None:
    """check_send allows a move exactly when the current status is among its sources."""
    if current in send_sources(move):
        assert check_send(1, current, move) == SEND_MOVES[move].target
    else:
        with pytest.raises(StateError):
            check_send(1, current, move)


def test_a_refused_move_says_which_send_from_what_to_what_and_what_is_allowed() -> None:
    """The error names the send, its status, the move, its target and the statuses allowed."""
    with pytest.raises(StateError) as refused:
        check_send(42, S.DONE, SendMove.PAUSE)
    assert str(refused.value) == (
        "send 42 is done: it cannot pause (to paused); pause goes from running, scheduled only"
    )


C = CampaignStatus

# Every (from, to) pair a campaign may take, written out by hand (issue 15's approvals).
EXPECTED_CAMPAIGN_MOVES = {
    CampaignMove.SUBMIT: ({C.DRAFT}, C.SUBMITTED),
    CampaignMove.APPROVE: ({C.SUBMITTED}, C.APPROVED),
    CampaignMove.SCHEDULE: ({C.APPROVED}, C.SCHEDULED),
    CampaignMove.RETURN: ({C.SUBMITTED, C.APPROVED}, C.DRAFT),
    CampaignMove.EDIT: ({C.DRAFT, C.SUBMITTED, C.APPROVED, C.SCHEDULED}, C.DRAFT),
    # Pause and resume: as before approvals from every status but the three before sending.
    CampaignMove.PAUSE: ({C.SCHEDULED, C.PAUSED, C.DONE, C.CANCELLED}, C.PAUSED),
    CampaignMove.RESUME: ({C.SCHEDULED, C.PAUSED, C.DONE, C.CANCELLED}, C.SCHEDULED),
    CampaignMove.CANCEL: (set(CampaignStatus), C.CANCELLED),
}


def test_the_campaign_table_is_exactly_the_approval_workflow() -> None:
    """draft -> submitted -> approved -> scheduled, back to draft by an edit or a send-back;
    no move is allowed that the hand-written table does not name."""
    assert {
        move: (set(rule.sources), rule.target) for move, rule in CAMPAIGN_MOVES.items()
    } == EXPECTED_CAMPAIGN_MOVES


@pytest.mark.parametrize(("current", "move"), list(itertools.product(CampaignStatus, CampaignMove)))
def test_check_campaign_agrees_with_the_table(current: CampaignStatus, move: CampaignMove) -> None:
    """check_campaign allows a move exactly when the current status is among its sources."""
    sources, target = EXPECTED_CAMPAIGN_MOVES[move]
    if current in sources:
        assert check_campaign("c", current, move) == target
    else:
        with pytest.raises(StateError):
            check_campaign("c", current, move)


@pytest.mark.parametrize("unsent", [C.DRAFT, C.SUBMITTED, C.APPROVED])
def test_a_campaign_not_yet_scheduled_cannot_pause_or_resume(unsent: CampaignStatus) -> None:
    """Pausing a draft says what it is and where pause goes from."""
    with pytest.raises(StateError) as refused:
        check_campaign("news", unsent, CampaignMove.PAUSE)
    assert str(refused.value) == (
        f"campaign news is {unsent}: it cannot pause (to paused); pause goes from cancelled, "
        "done, paused, scheduled only"
    )
    with pytest.raises(StateError):
        check_campaign("news", unsent, CampaignMove.RESUME)


def test_scheduling_needs_an_approval_unless_it_records_its_own() -> None:
    """A draft is scheduled only by a schedule that approves it (a file's `campaign create`,
    or approval not required); a paused or cancelled campaign is not scheduled either way."""
    with pytest.raises(StateError) as refused:
        check_schedule("news", C.DRAFT, self_approved=False)
    assert str(refused.value) == (
        "campaign news is draft: it cannot schedule (to scheduled); schedule goes from "
        "approved only"
    )
    assert check_schedule("news", C.APPROVED, self_approved=False) == C.SCHEDULED
    for current in (C.DRAFT, C.SUBMITTED, C.APPROVED, C.SCHEDULED):
        assert check_schedule("news", current, self_approved=True) == C.SCHEDULED
    for ended in (C.PAUSED, C.CANCELLED, C.DONE):
        with pytest.raises(StateError):
            check_schedule("news", ended, self_approved=True)
    assert schedule_sources(self_approved=False) == [C.APPROVED]
