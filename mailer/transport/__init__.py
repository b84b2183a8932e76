"""Transport: hands built messages to the SMTP relay, or to a Maildir when no relay is set.

The package owns the only import of aiosmtplib. One noun per module:

- ``contract``: the :class:`Transport` protocol, :class:`Result`, :class:`Outcome`,
  :class:`TransportFatal` (the relay cannot be used at all: authentication, TLS,
  configuration);
- ``replies``: what an SMTP reply means, as one table (:func:`classify_reply`);
- ``limiter``: the one global rate limit with back-pressure (:class:`RateLimiter`);
- ``smtp``: the pool of SMTP connections (:class:`SmtpTransport`), with ``client`` (one
  connection's aiosmtplib client), ``failures`` (aiosmtplib's exceptions translated, the one
  boundary) and ``fast_data`` (the DATA fast path and PIPELINING, pinned to the aiosmtplib
  versions they were written for);
- ``capture``: the Maildir capture (:class:`CaptureTransport`);
- here: :func:`open_transport`, which chooses between the two.

Nothing above this package sees an aiosmtplib exception. It must not build or alter message
bytes (``message`` does), retry or record results (``dispatch`` does), log message bodies or
passwords, or log recipient addresses above DEBUG.
"""

from __future__ import annotations

from mailer.settings import Settings
from mailer.transport.capture import CaptureTransport
from mailer.transport.contract import Outcome, Result, Transport, TransportFatal
from mailer.transport.fast_data import FastData, wire_form
from mailer.transport.limiter import RateLimiter
from mailer.transport.replies import classify_reply
from mailer.transport.smtp import SmtpTransport


def open_transport(settings: Settings) -> Transport:
    """The SMTP transport, or a Maildir capture under the data folder when no host is set."""
    if settings.smtp.host is None:
        return CaptureTransport(settings.paths.data_dir / "outbox")
    return SmtpTransport(
        settings.smtp,
        rate_per_second=settings.delivery.rate_per_second,
        rate_per_hour=settings.delivery.rate_per_hour,
    )


__all__ = [
    "CaptureTransport",
    "FastData",
    "Outcome",
    "RateLimiter",
    "Result",
    "SmtpTransport",
    "Transport",
    "TransportFatal",
    "classify_reply",
    "open_transport",
    "wire_form",
]
