"""The ``mailer event`` commands: move an event campaign's event, or cancel it.

Moving it reschedules the reminders still to come (dropping those whose time has passed)
and sends an update to those already invited; cancelling stops the pending sends and sends
a cancellation. The times are planned by :mod:`mailer.schedule`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import click

from mailer.cli.campaigns import campaign_id_of
from mailer.cli.support import current_settings, load_campaign, open_store, out, run_async, visible
from mailer.clock import utc_now
from mailer.errors import ConfigError
from mailer.lifecycle import SendMove
from mailer.models import EventStatus, Send, SendAction, SendStatus
from mailer.schedule import Planned, reminders
from mailer.storage import Store


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
        planned, _ = reminders(
            event.start, campaign.data.event.reminders, now=now, zone=campaign.zone,
            scale=stored.day_seconds / 86400,
        )  # fmt: skip
        sequence = await store.campaigns.update_event(
            campaign_id, event, status=EventStatus.CONFIRMED, now=now
        )
        sends = await store.sends.of_campaign(campaign_id)
        moved, dropped = await _replan(store, campaign_id, sends, planned, sequence, now=now)
        invitation = next((s for s in sends if s.key == "invitation"), None)
        update_id = None
        if invitation is not None and (await store.figures.counts(invitation.id)).sent:
            update_id, _ = await store.sends.create(
                campaign_id, key=f"update:{sequence}", action=SendAction.UPDATE, due_at=now,
                now=now, audience_send_id=invitation.id,
            )  # fmt: skip
    zone = campaign.zone
    start = event.start.astimezone(zone)
    out.print(visible(f"event {name} updated (sequence {sequence}): {start:%a %Y-%m-%d %H:%M %Z}"),
              markup=False)  # fmt: skip
    out.print(visible(f"reminders rescheduled: {', '.join(moved) or 'none'}; "
                      f"cancelled: {', '.join(dropped) or 'none'}"), markup=False)  # fmt: skip
    out.print(
        f"update to those invited: send {update_id}" if update_id else
        "nobody was invited yet: the invitation will carry the new details",
        markup=False,
    )  # fmt: skip


MOVED = "the event moved"  # the reason of a reminder the event's move replaced


async def _replan(
    store: Store,
    campaign_id: int,
    sends: list[Send],
    planned: list[Planned],
    sequence: int,
    *,
    now: datetime,
) -> tuple[list[str], list[str]]:
    """The reminders for the new date.

    Per offset: a reminder still to go (scheduled) moves to its new time, or is dropped when
    that has passed or the offset is gone; one paused or running (for the old date) is
    cancelled. An offset still ahead whose reminder went out for the old date (done, missed,
    or replaced here) gets a new send keyed by the event's SEQUENCE ("reminder:P7D@2"), so
    it goes out again for the new date; one that staff cancelled stays cancelled."""
    wanted = {p.key: p.due for p in planned}
    by_offset: dict[str, list[Send]] = {}
    for s in sends:
        if s.action == SendAction.REMINDER:
            by_offset.setdefault(s.key.partition("@")[0], []).append(s)
    moved, dropped = [], []
    replaced: set[str] = set()
    for offset, group in by_offset.items():
        for s in group:
            if s.status in (SendStatus.PAUSED, SendStatus.RUNNING):
                await store.sends.move(s.id, SendMove.CANCEL, now=now, reason=MOVED)
                dropped.append(s.key)
                replaced.add(offset)
            elif s.status == SendStatus.SCHEDULED:
                due = wanted.pop(offset, None)
                if due is None:
                    await store.sends.move(s.id, SendMove.DROP, now=now, reason=MOVED)
                    dropped.append(s.key)
                else:
                    await store.sends.reschedule(s.id, due, now=now)
                    moved.append(s.key)
    for offset, due in wanted.items():
        group = by_offset.get(offset, [])
        went = offset in replaced or any(
            s.status in (SendStatus.DONE, SendStatus.MISSED)
            or (s.status == SendStatus.CANCELLED and s.reason == MOVED)
            for s in group
        )
        if group and not went:
            continue  # staff cancelled this reminder: the move does not bring it back
        key = f"{offset}@{sequence}" if group else offset
        _, new = await store.sends.create(
            campaign_id, key=key, action=SendAction.REMINDER, due_at=due, now=now
        )
        if new:
            moved.append(key)
    return moved, dropped


@event_group.command("cancel")
@click.argument("name")
@run_async
async def event_cancel(name: str) -> None:
    """Cancel the event: pending sends stop, those invited get a cancellation (METHOD:CANCEL)."""
    now = utc_now()
    async with open_store() as store:
        campaign_id = await campaign_id_of(store, name)
        sends = await store.sends.of_campaign(campaign_id)
        invitation = next((s for s in sends if s.key == "invitation"), None)
        if invitation is None:
            raise ConfigError(f"campaign {name} has no event invitation")
        spec = await store.sends.spec(invitation.id)
        if spec.event is None:
            raise ConfigError(f"campaign {name} has no event")
        cancelled = await store.campaigns.cancel_sends(
            campaign_id, now=now, reason="event cancelled"
        )
        sequence = await store.campaigns.update_event(
            campaign_id, spec.event, status=EventStatus.CANCELLED, now=now
        )
        notice = None
        if (await store.figures.counts(invitation.id)).sent:
            notice, _ = await store.sends.create(
                campaign_id, key=f"cancellation:{sequence}", action=SendAction.CANCELLATION,
                due_at=now, now=now, audience_send_id=invitation.id,
            )  # fmt: skip
    who = f"cancellation to those invited: send {notice}" if notice else "nobody was invited"
    out.print(visible(f"event {name} cancelled: {cancelled} pending send(s) stopped; {who}"),
              markup=False)  # fmt: skip


__all__ = ["event_group"]
