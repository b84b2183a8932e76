"""``mailer api-keys``: the REST API's keys (placeholder; issue 17 in progress)."""

from __future__ import annotations

import click


@click.group("api-keys")
def api_keys_group() -> None:
    """Keys of the REST API (/api/v1/)."""
