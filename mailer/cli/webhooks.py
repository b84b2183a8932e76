"""``mailer webhooks``: the outgoing webhooks' endpoints (placeholder; issue 17 in progress)."""

from __future__ import annotations

import click


@click.group("webhooks")
def webhooks_group() -> None:
    """Endpoints that receive signed events (subscriptions, deliveries, bounces, sends)."""
