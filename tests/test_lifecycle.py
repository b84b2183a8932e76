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
    check_send,
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


def test_campaign_moves_keep_todays_unconditional_changes() -> None:
    """A campaign's own status follows what staff asked last, from any status (as before)."""
    for move in CampaignMove:
        assert CAMPAIGN_MOVES[move].sources == frozenset(CampaignStatus)
        for current in CampaignStatus:
            assert check_campaign("c", current, move) == CAMPAIGN_MOVES[move].target
