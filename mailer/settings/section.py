"""The base of every settings section (``MAILER_<SECTION>__<KEY>``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A section of the settings (``MAILER_<SECTION>__<KEY>``): frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)
