"""What becomes of a bounce once it is in: read (``mailer.bounces``), tied to the delivery it
is about, stored once, counted against the address with decay, and suppressions made; one
code path for the listener, IMAP, the relay webhooks and ``mailer bounces import``.

- ``reading``: a report as storage takes it (fingerprint, return path checked), pure;
- ``intake``: :class:`Intake`, the one way in, and the policy pause.
"""

from mailer.intake.intake import Intake, ProviderEvent, limits_of

__all__ = ["Intake", "ProviderEvent", "limits_of"]
