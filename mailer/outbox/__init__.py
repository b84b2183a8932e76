"""The outbox's poster: the daemon delivers the webhook events storage wrote.

Orchestration (no SQL, no SMTP; the web app never imports it): :mod:`.signing` (Standard
Webhooks signatures) and :mod:`.policy` (retries, what an answer means) are pure;
:mod:`.client` posts one event; :mod:`.poster` is the daemon's loop. Where a webhook may go
is the stage :mod:`mailer.webhook_urls`, shared with the CLI and the API.
"""

from mailer.outbox.poster import Poster

__all__ = ["Poster"]
