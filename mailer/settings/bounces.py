"""The ``bounces`` section of the settings (``MAILER_BOUNCES__*``): where bounces come back."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from mailer.settings.section import Section


class BounceSettings(Section):
    domain: str | None = Field(
        default=None,
        description=(
            "Domain of the bounce return paths: each message's envelope sender is "
            "b+<signed delivery token>@DOMAIN (VERP), whose mail your MTA routes back to the "
            "mailer. Empty: the From address is the envelope sender."
        ),
    )

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip().rstrip(".").lower()
        labels = name.split(".")
        if (
            len(name) > 253 or len(labels) < 2
            or not all(_LABEL.fullmatch(label) for label in labels)
        ):  # fmt: skip
            raise ValueError(f"expected a domain name like bounces.example.org, got {value!r}")
        return name


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
