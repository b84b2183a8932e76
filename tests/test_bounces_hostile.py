"""A bounce crafted to make flufl.bounce's patterns crawl (they take the square of a line's
length: a 0.4 MB message of one long line took 26 s of a worker thread before): lines over
``rules.LONG_LINE`` characters are not given to flufl, so such a message is read at once and
finds nobody, while the same words on ordinary lines are still read."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from mailer.bounces import parse, rules

pytestmark = pytest.mark.timeout(30)  # a hang guard, not a timing: the old code took 26 s
HEAD = "From: MAILER-DAEMON@x.example\nSubject: Undelivered Mail\n\n"


def test_a_line_too_long_for_flufl_is_not_given_to_it() -> None:
    raw = (HEAD + ",a@" + "b@" * 50000 + "\n" + "y@y@y@y@y@y@y\n" * 20000).encode()
    assert parse(raw).findings == ()
    msg = message_from_bytes(raw, policy=policy.compat32)
    assert rules.flufl_recipients(msg) == ([], set())


def test_ordinary_lines_are_still_read_by_flufl() -> None:
    """The same guard lets a real non-standard bounce through (lines well under the limit)."""
    body = (
        "Here is your list of failed recipients:\n\n<gone@example.org>\n\n"
        "Here is your returned mail:\n\nHello.\n"
    )
    msg = message_from_bytes((HEAD + body).encode(), policy=policy.compat32)
    found, _ = rules.flufl_recipients(msg)
    assert found == ["gone@example.org"]
