"""A campaign as data and back: :func:`spec_of` is what is stored (``campaigns.spec``) and
downloaded, :func:`campaign_of` validates a stored or posted spec with the one model
(:class:`~mailer.campaigns.CampaignFile`), with the same errors as a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mailer import campaigns


def spec_of(campaign: campaigns.Campaign) -> dict[str, Any]:
    """The campaign as JSON types, every body inlined (``body_file`` replaced by its text)."""
    return campaign.spec()


def campaign_of(
    spec: dict[str, Any], *, name_hint: str, zone: str, templates_dir: Path | None
) -> campaigns.Campaign:
    """``spec`` validated into a campaign; CampaignFileError whose lines read
    ``<name_hint>: field: message``, as a file's do. A spec carries its bodies: a
    ``body_file`` in it is refused. ``zone`` is the default time zone
    (MAILER_SCHEDULER__TIMEZONE); with ``templates_dir`` its template must exist there in
    each of its languages."""
    return campaigns.from_data(
        spec, source=Path(name_hint), default_zone=zone, templates_dir=templates_dir
    )
