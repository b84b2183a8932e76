"""The ``api`` and ``webhooks`` sections of the settings (``MAILER_API__*``,
``MAILER_WEBHOOKS__*``): the REST API under ``/api/v1/`` and the outgoing webhooks."""

from __future__ import annotations

from pydantic import Field

from mailer.settings.section import Section


class ApiSettings(Section):
    """``MAILER_API__*``: the REST API (keys from ``mailer api-keys create``)."""

    enabled: bool = Field(
        default=True,
        description="Serve the REST API under /api/v1/ on the web port (keys: mailer api-keys).",
    )
    rate_per_minute: int = Field(
        default=600, ge=1, le=1_000_000,
        description="Requests a key may make per minute (then 429 with Retry-After).",
    )  # fmt: skip
    max_body: int = Field(
        default=1_048_576, ge=1024, le=64 * 1024 * 1024,
        description="Largest JSON body the API accepts, in bytes (then 413).",
    )  # fmt: skip


class WebhookSettings(Section):
    """``MAILER_WEBHOOKS__*``: how the daemon posts events to the webhook endpoints."""

    timeout: float = Field(
        default=10.0, gt=0, le=120,
        description="Seconds an endpoint has to answer a POST (then it is retried).",
    )  # fmt: skip
    max_age: float = Field(
        default=72.0, gt=0, le=24 * 30,
        description="Hours an event is retried (exponential backoff with jitter), then given up.",
    )  # fmt: skip
    disable_after: float = Field(
        default=24.0,
        gt=0,
        le=24 * 30,
        description=(
            "Hours of nothing but failures after which an endpoint is disabled (an error is "
            "logged; `mailer webhooks enable ID` resumes it with what it missed)."
        ),
    )
    concurrency: int = Field(
        default=8, ge=1, le=256, description="POSTs in flight at once, across endpoints."
    )
    keep_days: int = Field(
        default=30, ge=1, le=3650,
        description="Days delivered and given-up events are kept for `mailer webhooks deliveries`.",
    )  # fmt: skip
    allow_private: bool = Field(
        default=False,
        description=(
            "Allow endpoints on loopback, private and link-local addresses and plain http "
            "(off: https to public addresses only, so a key cannot aim the daemon inside)."
        ),
    )
