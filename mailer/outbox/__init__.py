"""The outbox's poster: the daemon delivers the webhook events storage wrote.

Orchestration (no SQL, no SMTP; the web app never imports it): :mod:`.signing` (Standard
Webhooks signatures) and :mod:`.policy` (retries, what an answer means) are pure;
:mod:`.targets` says where a webhook may go; :mod:`.client` posts one event;
:mod:`.poster` is the daemon's loop.
"""

from mailer.outbox.poster import Poster
from mailer.outbox.targets import Target, TargetError, check_url, system_resolve

__all__ = ["Poster", "Target", "TargetError", "check_url", "system_resolve"]
