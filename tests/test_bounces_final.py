"""A DSN's ``Action:`` decides whether a finding is final: ``delayed`` is not (the server still
tries, the message may yet arrive, so storage does not count it), ``failed`` is; ``delivered``,
``relayed`` and ``expanded`` are no bounce at all and give no finding. The DSNs are written
by hand, in the form relays send them (RFC 3464), and in their pasted form (fields in a text
part, as Amazon WorkMail writes them)."""

from __future__ import annotations

import pytest

from mailer.bounces import BounceKind, Finding, ReportKind, parse


def dsn(*blocks: str) -> bytes:
    """A multipart/report DSN from a relay with the given per-recipient blocks."""
    body = "\n\n".join(["Reporting-MTA: dns; mx.example.net", *blocks])
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\n"
        "To: b+d42.sig@bounces.example.org\n"
        "Subject: Delivery Status Notification\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\n\n'
        "--B\nContent-Type: text/plain; charset=utf-8\n\nA report on your message.\n\n"
        f"--B\nContent-Type: message/delivery-status\n\n{body}\n\n"
        "--B\nContent-Type: text/rfc822-headers\n\n"
        "From: News <news@example.org>\nTo: ann@example.com\n"
        "Message-ID: <c12.s3.d42@mailer.example.org>\n\n"
        "--B--\n"
    ).encode()


def block(recipient: str, action: str, status: str, diagnostic: str) -> str:
    return (
        f"Final-Recipient: rfc822; {recipient}\nAction: {action}\nStatus: {status}\n"
        f"Diagnostic-Code: smtp; {diagnostic}"
    )


def only(raw: bytes) -> Finding:
    report = parse(raw)
    assert report.kind == ReportKind.DSN
    [finding] = report.findings
    return finding


def test_a_delayed_recipient_is_not_final() -> None:
    """Action: delayed: a soft finding that is not final, whatever its code says."""
    finding = only(dsn(block("slow@example.com", "delayed", "4.4.7", "421 4.4.7 try later")))
    assert (finding.recipient, finding.kind, finding.final) == (
        "slow@example.com", BounceKind.SOFT, False,
    )  # fmt: skip


def test_a_failed_recipient_is_final() -> None:
    """Action: failed: final, hard or soft alike."""
    hard = only(dsn(block("gone@example.com", "failed", "5.1.1", "550 5.1.1 user unknown")))
    full = only(dsn(block("full@example.com", "failed", "5.2.2", "552 5.2.2 mailbox full")))
    assert [(f.kind, f.final) for f in (hard, full)] == [
        (BounceKind.HARD, True),
        (BounceKind.SOFT, True),
    ]


def test_delayed_and_failed_in_one_dsn_are_told_apart() -> None:
    """One DSN about two recipients: each block decides for its own."""
    report = parse(
        dsn(
            block("slow@example.com", "delayed", "4.2.2", "452 4.2.2 mailbox full, will retry"),
            block("gone@example.com", "failed", "5.1.1", "550 5.1.1 no such user"),
        )
    )
    assert [(f.recipient, f.final) for f in report.findings] == [
        ("slow@example.com", False),
        ("gone@example.com", True),
    ]


def test_an_action_written_in_capitals_counts_the_same() -> None:
    """Action values are case-insensitive (RFC 3464's action-value is an atom)."""
    assert not only(dsn(block("slow@example.com", "Delayed", "4.4.1", "no answer"))).final


def test_a_pasted_delayed_dsn_is_not_final() -> None:
    """DSN fields pasted into a plain text bounce: the same rule."""
    raw = (
        b"From: MAILER-DAEMON@workmail.example.net\nTo: b+d42.sig@bounces.example.org\n"
        b"Subject: Delivery delayed\n\n"
        b"Delivery to the following recipient has been delayed.\n\n"
        b"Final-Recipient: rfc822; slow@example.com\nAction: delayed\nStatus: 4.4.7\n"
        b"Diagnostic-Code: smtp; 421 4.4.7 try later\n"
    )
    report = parse(raw)
    assert report.reader == "text"
    [finding] = report.findings
    assert (finding.recipient, finding.final) == ("slow@example.com", False)


@pytest.mark.parametrize("action", ["delivered", "relayed", "expanded"])
def test_a_success_action_is_no_finding(action: str) -> None:
    """delivered, relayed, expanded: the DSN is read (a DSN report) but holds no finding,
    final or not, and no fallback rule invents one from its words."""
    report = parse(dsn(block("ok@example.com", action, "2.0.0", "250 2.0.0 OK")))
    assert (report.kind, report.reader, report.findings) == (ReportKind.DSN, "rfc3464", ())
