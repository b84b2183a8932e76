"""Reading bounces: delivery status notifications, complaints and auto-replies, from the bytes
of a message to one finding per recipient (:func:`parse`), and what each means for the address
(:func:`classify`).

- ``model``: the values (:class:`Report`, :class:`Finding`, :class:`BounceKind`);
- ``classify``: the kind of a failure from its enhanced code and words;
- ``mime``: walking and decoding a bounce safely;
- ``reports``: the standard reports (RFC 3464/6533 DSNs, RFC 5965 ARF);
- ``rules``: the other bounces, through flufl.bounce and our own rules;
- ``reader``: :func:`parse`, the order of the readers, and the correlation headers.

A stage: pure, no storage, no SQL, no SMTP, no clock. Whoever receives a bounce (the
command line today; later the listener, IMAP, ``bounces import``) reads it here and decides
what to record.
"""

from mailer.bounces.classify import DIAGNOSTIC_LIMIT, classify, clean_diagnostic
from mailer.bounces.model import SUPPRESSING, BounceKind, Finding, Report, ReportKind
from mailer.bounces.reader import PARSE_LIMIT, parse, split_messages

__all__ = [
    "DIAGNOSTIC_LIMIT",
    "PARSE_LIMIT",
    "SUPPRESSING",
    "BounceKind",
    "Finding",
    "Report",
    "ReportKind",
    "classify",
    "clean_diagnostic",
    "parse",
    "split_messages",
]
