"""What a bounce means for the address: :func:`classify` from the enhanced status code and the
server's words, and the helpers that find those codes in text and clean a diagnostic.

The rules, in order (the first that speaks decides):

1. any 5.7.x / 4.7.x code, or the words of a block, of reputation, DMARC/SPF/DKIM, a missing
   PTR, spam or policy: ``policy``. The sender's problem, never held against the address
   (Microsoft's 550 5.7.515 included), whatever else the reply says;
2. a 4.x.x status: ``soft`` (temporary by definition);
3. the words of a temporary state: mailbox full or over quota (5.2.2 too: a full mailbox
   empties), a suspended or disabled account (5.2.1; see below), too many connections,
   expired, a network or routing failure: ``soft``;
4. a 5.2.x code: ``soft``: the mailbox exists (full, disabled, too large), whatever words a
   server adds ("550 5.2.1 User Unknown");
5. the words of a dead address in a server's specific form (does not exist, not listed in
   the directory, host or domain unknown, moved): ``hard``; the generic words ("user
   unknown", "no such user") only beside a 5.1.x code or a rejection at RCPT TO, else
   ``unknown``: filtering gateways and carriers (docomo, au) answer so after DATA for mail
   they refuse by content, and one such bounce must not suppress an address for good;
6. the code alone: 5.1.0/5.1.1/5.1.2/5.1.3/5.1.6/5.1.10 (null MX), 5.4.4: ``hard``; other
   5.2.x, 5.3.x, 5.4.x: ``soft``;
7. anything else: ``unknown``, which never suppresses.

A suspended or disabled mailbox is ``soft``, as sisimai's ``suspend``: providers suspend for
unpaid bills, inactivity or an abuse review, and reopen; soft bounces on different days still
add up to a suppression, so a mailbox that stays closed ends suppressed anyway.

Pure: text in, values out.
"""

from __future__ import annotations

import re

from mailer.bounces.model import BounceKind

DIAGNOSTIC_LIMIT = 500


class Words:
    r"""A pattern of lower-case words matched whatever their case, searched faster.

    The regex engine skips ahead to where a match can start only when it knows the first
    characters of every alternative: not when case is ignored, nor when an alternative starts
    with ``\b``. An ASCII text is therefore searched lower-cased with a case-sensitive form of
    the pattern in which ``\bw`` is written ``w(?<!\w.)`` (the same condition, checked after
    the first character); any other text with the pattern itself, case ignored. A match's
    positions are the text's; for an ASCII text, its groups are lower-cased."""

    __slots__ = ("_ascii", "pattern")

    def __init__(self, pattern: str, flags: int = 0) -> None:
        plain = re.sub(r"\\.", "", pattern)
        if plain != plain.lower():  # the case-sensitive form would miss them
            raise ValueError(f"upper-case letters in {pattern!r}")
        self.pattern = re.compile(pattern, flags | re.IGNORECASE)
        ascii_form = _BOUNDARY_FIRST.sub(r"\1(?<!\\w.)", pattern)
        self._ascii = re.compile(ascii_form, flags & ~re.IGNORECASE)

    def search(self, text: str) -> re.Match[str] | None:
        """The first match in ``text``, case ignored."""
        if text.isascii():
            return self._ascii.search(text.lower())
        return self.pattern.search(text)


# in a pattern's text: a word boundary before one word character (or a class of them) that
# is not repeated or optional
_BOUNDARY_FIRST = re.compile(r"(?<!\\)\\b([a-z0-9_]|\[[a-z0-9_]+\])(?![?*+{])")

# An enhanced status code (RFC 3463): class 2/4/5, subject and detail up to three digits; not
# part of an IP address or a version number. The look-behind follows the class digit (it looks
# at the character before it) so that the search can skip ahead to a 2, 4 or 5.
_STATUS = re.compile(r"([245])(?<![\d.].)\.(\d{1,3})\.(\d{1,3})(?![\d]|\.\d)")
# An SMTP reply code where servers write it: at a line's start, after "said:" or "error", in
# brackets, before a space, a dash or an enhanced code (the look-behind placed as above).
_REPLY = re.compile(r"([245](?<![\w.#:/-].)[0-5]\d)(?=[ \-\])]|$)(?![ -]?\d{2,}:)", re.MULTILINE)

_POLICY = Words(
    r"block|blacklist|black list|denylist|spamhaus|\bspam|\brbl\b|dnsbl|reputation|"
    r"\bdmarc|\bspf\b|\bdkim|reverse dns|\bptr\b|rdns|not authori[sz]ed|unauthenticated|"
    r"authentication|\bpolicy|policies|prohibited|content rejected|sender rejected|"
    r"sender address rejected|banned|denied|security|virus|malware|junk|"
    r"\baup\b|aup#|message rejected due to|rejected for|not allowed|not permitted",
)
_SOFT = Words(
    r"mailbox (is )?full|mailbox.{0,30}(exceed|over)|over ?quota|quota|insufficient storage|"
    r"insufficient (disk|system) space|disk space|not enough (disk )?space|too large|"
    r"suspend|disabled|deactivated|inactive|locked|frozen|temporar|try again|"
    r"too many (connections|messages|recipients)|rate limit|throttl|"
    r"expired|timed? ?out|time-out|connection (refused|lost|reset)|network|routing loop|"
    r"loop detected|deferred|delayed",
)
# Words that say the address is dead whatever the code: specific forms of servers.
_HARD = Words(
    r"(address|mailbox|recipient|account|user)\w* (does not|doesn't|do not) exist|"
    r"does not exist|no such (mailbox|recipient|address|account|domain)|no mailbox|"
    r"invalid (recipient|address|mailbox)|unknown (mailbox|address|local.?part)|"
    r"recipient (address )?rejected|address rejected|mailbox not found|not listed in|"
    r"recipient name is not recognized|no valid recipients|not a valid (mailbox|recipient)|"
    r"unrouteable|host unknown|unknown host|host or domain name not found|domain (not found|"
    r"does not exist)|nxdomain|null mx|has moved|no longer (on|valid|available|with)|"
    r"account (has been )?(closed|removed|deleted)|recipnotfound|nosuchuser|dead address",
)
# Generic words ("user unknown", "no such user"): a filtering gateway or a carrier says them
# after DATA for mail it refuses by content, so they condemn the address only beside a 5.1.x
# code or a rejection stated to be at RCPT TO.
_WEAK_HARD = Words(
    r"user unknown|unknown user|no such user|user not found|unknown recipient|"
    r"recipient not found|invalid user",
)
# a rejection said to answer RCPT TO (not an envelope's "RCPT TO: a@b" quoted as a detail)
_AT_RCPT = Words(
    r"(after|in reply to|response to|answer to)( the)? rcpt|rcpt( to)? (response|command)|"
    r"\[rcpt_to\]|smtp:rcpt|>>> rcpt to",
)
_HARD_CODES = frozenset({"5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10", "5.4.4"})
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")


def statuses(text: str) -> list[str]:
    """The enhanced status codes in ``text``, in order."""
    return [".".join(m.groups()) for m in _STATUS.finditer(text)]


def find_status(text: str) -> str | None:
    """The most telling enhanced status code of ``text``: its first specific one (5.1.1),
    else its first (5.0.0)."""
    found = statuses(text)
    specific = [s for s in found if not s.endswith(".0.0")]
    return next(iter(specific or found), None)


def find_reply(text: str) -> str | None:
    """The first SMTP reply code of ``text`` ("550")."""
    match = _REPLY.search(text)
    return match.group(1) if match else None


def best_status(declared: str | None, diagnostic: str) -> str | None:
    """The declared status (a DSN's ``Status:``), or the diagnostic's own code when the
    declared one is generic (``5.0.0``) and the diagnostic says more in the same class."""
    said = find_status(diagnostic)
    if declared is None:
        return said
    if said and declared.endswith(".0.0") and said[0] == declared[0]:
        return said
    return declared


def clean_diagnostic(text: str) -> str:
    """``text`` on one line: control characters (CR, LF, ESC, bidi overrides) turned into
    spaces, runs of spaces into one, cut at :data:`DIAGNOSTIC_LIMIT` characters."""
    line = " ".join(_CONTROL.sub(" ", text).split())
    if len(line) > DIAGNOSTIC_LIMIT:
        line = line[: DIAGNOSTIC_LIMIT - 1] + "…"
    return line


def classify(status: str | None, diagnostic: str = "") -> BounceKind:
    """What a failure with this enhanced ``status`` and these words means for the address."""
    codes = [c for c in (status, *statuses(diagnostic)) if c]
    if any(c[2:4] == "7." for c in codes) or _POLICY.search(diagnostic):
        return BounceKind.POLICY
    if status is not None and status.startswith("4."):
        return BounceKind.SOFT
    if _SOFT.search(diagnostic):
        return BounceKind.SOFT
    code = status or (codes[0] if codes else None)
    if code is not None and code.startswith("5.2."):  # the mailbox exists: full, disabled
        return BounceKind.SOFT
    if _HARD.search(diagnostic):
        return BounceKind.HARD
    if _WEAK_HARD.search(diagnostic):
        if (code is not None and code.startswith("5.1.")) or _AT_RCPT.search(diagnostic):
            return BounceKind.HARD
        return BounceKind.UNKNOWN
    if code is None:
        return BounceKind.UNKNOWN
    if code.startswith("4."):
        return BounceKind.SOFT
    if code in _HARD_CODES:
        return BounceKind.HARD
    if code.startswith(("5.2.", "5.3.", "5.4.")):
        return BounceKind.SOFT
    return BounceKind.UNKNOWN


__all__ = [
    "DIAGNOSTIC_LIMIT",
    "Words",
    "best_status",
    "classify",
    "clean_diagnostic",
    "find_reply",
    "find_status",
    "statuses",
]
