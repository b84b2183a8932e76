"""The ``mailer event`` commands: move an event campaign's event, or cancel it.

Moving it reschedules the reminders still to come (dropping those whose time has passed)
and sends an update to those already invited; cancelling stops the pending sends and sends
a cancellation. What happens is planned and applied by :mod:`mailer.workflow.events`, the
console's code path too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from mailer.cli.campaigns import campaign_id_of
from mailer.cli.support import current_settings, load_campaign, open_store, out, run_async, visible
from mailer.clock import utc_now
from mailer.errors import ConfigError
from mailer.workflow import events


@click.group("event")
def event_group() -> None:
    """Change or cancel an event campaign's event."""


@event_group.command("update")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@run_async
async def event_update(name: str, path: Path) -> None:
    """New time or place: reminders move, SEQUENCE grows, those invited get the update."""
    settings = current_settings()
    campaign = load_campaign(path)
    if campaign.name != name:
        raise ConfigError(f"{path}: name is {campaign.name!r}, not {name!r}")
    now = utc_now()
    event = campaign.event(domain=settings.sender.domain)
    if event is None or campaign.data.event is None:
        raise ConfigError(f"{path}: not an event campaign")
    if event.start <= now:
        raise ConfigError(f"{path}: event.start: the new start has passed")
    async with open_store() as store:
        campaign_id = await campaign_id_of(store, name)
        stored = await store.campaigns.event(campaign_id)
        if stored is None:
            raise ConfigError(f"campaign {name} has no event")
        if "invite" not in campaign.data.event.model_fields_set:
            # the file does not say: the event keeps how it was sent (a published event
            # stored before invitations stays published)
            event = replace(event, invite=stored.invite)
        # planned before anything is written: a reminder that cannot be planned (a local
        # time that does not exist) leaves the event as it was
        change = await events.plan_update(
            store, campaign_id, event, campaign.data.event.reminders, campaign.zone, now
        )
        done = await events.apply_update(store, change, event, now)
    zone = campaign.zone
    start = event.start.astimezone(zone)
    out.print(visible(f"event {name} updated (sequence {done.sequence}): "
                      f"{start:%a %Y-%m-%d %H:%M %Z}"), markup=False)  # fmt: skip
    moved, cancelled = ", ".join(done.rescheduled), ", ".join(done.cancelled)
    out.print(visible(f"reminders rescheduled: {moved or 'none'}; "
                      f"cancelled: {cancelled or 'none'}"), markup=False)  # fmt: skip
    out.print(
        f"update to those invited: send {done.update_send}" if done.update_send else
        "nobody was invited yet: the invitation will carry the new details",
        markup=False,
    )  # fmt: skip


@event_group.command("cancel")
@click.argument("name")
@run_async
async def event_cancel(name: str) -> None:
    """Cancel the event: pending sends stop, those invited get a cancellation (METHOD:CANCEL)."""
    now = utc_now()
    async with open_store() as store:
        campaign_id = await campaign_id_of(store, name)
        plan = await events.plan_cancel(store, campaign_id, now, name=name)
        done = await events.apply_cancel(store, plan, now, name=name)
    notice = done.notice_send
    who = f"cancellation to those invited: send {notice}" if notice else "nobody was invited"
    out.print(visible(f"event {name} cancelled: {done.stopped} pending send(s) stopped; {who}"),
              markup=False)  # fmt: skip


__all__ = ["event_group"]
