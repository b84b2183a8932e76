"""The ``mailer campaign`` commands: campaigns from files (check, create, list, show, test,
pause, resume, cancel).

Campaign files are validated and planned by :mod:`mailer.campaigns`; what is stored here is
picked up by a running daemon at its next sync, without a restart. A campaign's moves are
named here and judged by :mod:`mailer.lifecycle`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import click
from rich.table import Table

from mailer import app, campaigns
from mailer.addresses import address_key, normalize
from mailer.cli.support import (
    EXIT_REJECTED,
    cli_actor,
    current_settings,
    err,
    load_campaign,
    open_store,
    out,
    run_async,
    safe,
    visible,
)
from mailer.clock import utc_now
from mailer.errors import ConfigError, NotFoundError
from mailer.lifecycle import CampaignMove, check_campaign
from mailer.models import CampaignRecord, Recipient, SendInfo
from mailer.schedule import Planned
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import load_signer
from mailer.workflow import scheduling

if TYPE_CHECKING:  # rendering and the transport load where a command needs them
    from mailer.render import LanguageTally


def _print_plan(planned: list[Planned], zone: ZoneInfo, notes: list[str]) -> None:
    table = Table("send", "what", f"local time ({zone.key})", "UTC")
    for p in planned:
        local = p.due.astimezone(zone)
        table.add_row(
            safe(p.key), safe(p.action), f"{local:%a %Y-%m-%d %H:%M %Z}", f"{p.due:%Y-%m-%d %H:%M}"
        )
    out.print(table)
    for note in notes:
        out.print(visible(f"note: {note}"), markup=False)


@click.group("campaign")
def campaign_group() -> None:
    """Campaigns from files: check, create, list, show, test, pause, resume, cancel."""


async def _check_lists(store: Store, campaign: campaigns.Campaign) -> None:
    """Every list the campaign names exists in the database."""
    for slug in campaign.data.lists:
        try:
            await store.lists.info(slug)
        except NotFoundError as exc:
            raise campaigns.CampaignFileError(f"{campaign.path}: lists: {exc}") from None


@campaign_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--demo", is_flag=True, help="Plan as `create --demo` would.")
@run_async
async def campaign_check(path: Path, demo: bool) -> None:
    """Validate a campaign file, its lists and its schedule; store nothing."""
    settings = current_settings()
    campaign = load_campaign(path)
    planned, notes = campaigns.plan(
        campaign, now=utc_now(), domain=settings.sender.domain, demo=demo
    )
    async with open_store() as store:
        await _check_lists(store, campaign)
        tallies = await _languages(store, campaign, settings)
    out.print(
        visible(
            f"{path}: valid ({campaign.data.kind.value}, lists {', '.join(campaign.data.lists)})"
        ),
        markup=False,
    )
    _print_plan(planned, campaign.zone, notes)
    written = ", ".join(campaign.languages) or "no words of its own: each template's language"
    out.print(visible(f"written in: {written}"), markup=False)
    for slug, tally in tallies.items():
        out.print(visible(f"languages of {slug}: {tally.summary()}"), markup=False)


async def _languages(
    store: Store, campaign: campaigns.Campaign, settings: Settings
) -> dict[str, LanguageTally]:
    """Per list, how many members get each of the campaign's languages, and who falls back
    (the templates compiled as a send would: a missing one is named here)."""
    from mailer.render import LanguageTally, Renderer

    renderer = Renderer(settings.paths.templates_dir)
    tallies: dict[str, LanguageTally] = {}
    for slug in campaign.data.lists:
        info = await store.lists.info(slug)
        compiled = renderer.compile(
            SendInfo(
                content=campaign.content, list=info, sender_name="", sender_address="",
                action=campaign.data.kind.value, now=utc_now(),
                event=campaign.event(domain=settings.sender.domain),
            )
        )  # fmt: skip
        tally = tallies[slug] = LanguageTally()
        async for recipient in store.lists.recipients(slug):
            tally.add(recipient, compiled.choice(recipient))
    return tallies


@campaign_group.command("create")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--demo", is_flag=True,
    help="Rehearse an event: it starts in 3-4 minutes; a day of reminder offset lasts 20 s.",
)  # fmt: skip
@run_async
async def campaign_create(path: Path, demo: bool) -> None:
    """Validate, store, compute the sends, and print the schedule (local time and UTC).

    Creating a campaign from a file counts as the operator's approval (cli:<unix user>)."""
    settings = current_settings()
    campaign = load_campaign(path)
    actor = cli_actor()
    async with open_store() as store:
        await _check_lists(store, campaign)
        done = await scheduling.create_from_file(
            store, settings, campaign, now=utc_now(), actor=actor, demo=demo
        )
    created = set(done.result.created)
    if done.unchanged and not created:
        # Stored before as it is: the times are those stored then, so printing the times
        # planned now would show times that will never be used.
        out.print(
            visible(
                f"campaign {campaign.name} stored; nothing new to schedule: its "
                f"{len(done.planned)} send(s) were stored before (see `mailer campaign show "
                f"{campaign.name}`)"
            ),
            markup=False,
        )
        return
    changed = [p for p in done.planned if p.key in created or p.key in done.result.moved]
    out.print(
        visible(f"campaign {campaign.name} stored; {len(created)} new send(s):"), markup=False
    )
    _print_plan(changed, campaign.zone, done.notes)
    if done.result.moved:
        out.print(visible(f"moved: {', '.join(done.result.moved)}"), markup=False)
    if done.result.dropped:
        out.print(visible(f"no longer planned, cancelled: {', '.join(done.result.dropped)}"),
                  markup=False)  # fmt: skip
    if not done.unchanged:
        out.print(visible(f"approved by {actor}: campaign create of a file counts as the "
                          "operator's approval"), markup=False)  # fmt: skip


@campaign_group.command("list")
@run_async
async def campaign_list() -> None:
    """Stored campaigns, their status and next send."""
    async with open_store() as store:
        rows = await store.campaigns.summaries()
        records = {r.name: await store.campaigns.record(r.name) for r in rows}
    table = Table("campaign", "kind", "status", "approved by", "next send (UTC)")
    for r in rows:
        next_due = f"{r.next_due:%Y-%m-%d %H:%M}" if r.next_due else ""
        table.add_row(
            safe(r.name), safe(r.kind), safe(r.status), safe(_approval(records[r.name])), next_due
        )
    out.print(table)


def _approval(record: CampaignRecord) -> str:
    """Who approved the campaign, or where it stands on the way: "submitted by X"..."""
    if record.approved_by is not None:
        return record.approved_by
    if record.submitted_by is not None:
        return f"(submitted by {record.submitted_by})"
    return "(not approved)"


@campaign_group.command("show")
@click.argument("name")
@run_async
async def campaign_show(name: str) -> None:
    """A campaign and each of its sends."""
    async with open_store() as store:
        row = await store.campaigns.get(name)
        record = await store.campaigns.record(name)
        sends = await store.sends.of_campaign(row.id)
        counts = {s.id: await store.figures.counts(s.id) for s in sends}
    zone = ZoneInfo(row.timezone)
    languages = ", ".join(t.locale for t in row.texts) or "every template's (one text for all)"
    out.print(visible(f"{row.name}: {row.kind}, {row.status}, template {row.template}, "
                      f"time zone {zone.key}, written in {languages}"), markup=False)  # fmt: skip
    out.print(visible(_standing(record)), markup=False)
    table = Table("send", "key", "status", "due (local)", "sent", "failed", "skipped", "reason")
    for s in sends:
        c = counts[s.id]
        table.add_row(
            str(s.id), safe(s.key), safe(s.status),
            f"{s.due_at.astimezone(zone):%Y-%m-%d %H:%M %Z}",
            str(c.sent), str(c.failed), str(c.skipped), safe(s.reason or ""),
        )  # fmt: skip
    out.print(table)


def _standing(record: CampaignRecord) -> str:
    """Version, who saved it, and its submission and approval, in one line."""
    said = f"version {record.version}"
    if record.updated_by:
        said += f", saved by {record.updated_by} at {record.updated_at:%Y-%m-%d %H:%M} UTC"
    if record.submitted_by and record.submitted_at:
        said += f"; submitted by {record.submitted_by} at {record.submitted_at:%Y-%m-%d %H:%M} UTC"
    if record.approved_by and record.approved_at:
        said += f"; approved by {record.approved_by} at {record.approved_at:%Y-%m-%d %H:%M} UTC"
    else:
        said += "; not approved: its sends wait for an approval"
    return said


async def campaign_id_of(store: Store, name: str) -> int:
    """The id of the campaign called ``name``; NotFoundError naming those that exist."""
    return (await store.campaigns.get(name)).id


async def _movable(store: Store, name: str, move: CampaignMove) -> int:
    """The campaign's id, once :mod:`mailer.lifecycle` allows ``move`` from its status."""
    row = await store.campaigns.get(name)
    check_campaign(name, row.status, move)
    return row.id


@campaign_group.command("pause")
@click.argument("name")
@run_async
async def campaign_pause(name: str) -> None:
    """Pause every send of a campaign that has not ended (after the messages in flight)."""
    async with open_store() as store:
        campaign_id = await _movable(store, name, CampaignMove.PAUSE)
        count = await store.campaigns.pause(campaign_id, now=utc_now())
    out.print(visible(f"campaign {name} paused ({count} send(s))"), markup=False)


@campaign_group.command("resume")
@click.argument("name")
@run_async
async def campaign_resume(name: str) -> None:
    """Resume a paused campaign: its sends go on where they stopped."""
    async with open_store() as store:
        campaign_id = await _movable(store, name, CampaignMove.RESUME)
        count = await store.campaigns.resume(campaign_id, now=utc_now())
    out.print(visible(f"campaign {name} resumed ({count} send(s))"), markup=False)


@campaign_group.command("cancel")
@click.argument("name")
@run_async
async def campaign_cancel(name: str) -> None:
    """Cancel every send of a campaign that has not ended; what was sent stays recorded."""
    async with open_store() as store:
        campaign_id = await _movable(store, name, CampaignMove.CANCEL)
        count = await store.campaigns.cancel_sends(
            campaign_id, now=utc_now(), reason="campaign cancelled"
        )
    out.print(visible(f"campaign {name} cancelled ({count} send(s))"), markup=False)


@campaign_group.command("test")
@click.argument("name")
@click.option("--to", "to", required=True, help="The staff address that gets the test.")
@click.option("--as", "as_email", help="Render as this subscriber; default: the first member.")
@click.option("--action", help="For an event: invitation, reminder, update or cancellation.")
@run_async
async def campaign_test(name: str, to: str, as_email: str | None, action: str | None) -> int:
    """Send one real message, marked [TEST], through the configured transport."""
    from mailer.compose import make_composer
    from mailer.render import Renderer
    from mailer.transport import Outcome, open_transport

    settings = current_settings()
    target = normalize(to).email
    now = utc_now()
    async with open_store() as store:
        row = await store.campaigns.get(name)
        sends = await store.sends.of_campaign(row.id)
        if not sends:
            raise NotFoundError(f"campaign {name} has no send")
        send = next((s for s in sends if action in (None, s.action)), None)
        if send is None:
            raise ConfigError(f"--action {action}: campaign {name} has no such send")
        spec = await store.sends.spec(send.id)
        list_info, subscriber = spec.lists[0], Recipient(id=0, email="preview@example.org")
        key = address_key(as_email) if as_email else None
        for candidate in spec.lists:  # --as: the first list of the campaign that has them
            found = [
                r async for r in store.lists.recipients(candidate.slug, email_key=key, limit=1)
            ]
            if found:
                list_info, subscriber = candidate, found[0]
                break
        else:
            if as_email:
                raise NotFoundError(
                    f"{as_email} is not a subscribed member of any list of campaign {name} "
                    f"({', '.join(info.slug for info in spec.lists)})"
                )
    composer = make_composer(
        settings,
        renderer=Renderer(settings.paths.templates_dir),
        signer=load_signer(settings.secret_keys, settings.paths.data_dir),
        send=SendInfo(
            content=spec.content, list=list_info,
            sender_name=spec.sender_name or settings.sender.from_name,
            sender_address=spec.sender_address or settings.sender.from_address,
            action=spec.action, now=now, event=spec.event, key=spec.key,
        ),
        send_id=spec.id, trace=f"c{spec.campaign_id}/{spec.key}/test",
    )  # fmt: skip
    composed = composer.compose_test(subscriber, to=target, date=now)
    app.check_sending(settings)  # a test goes through the real relay: the same checks as a send
    async with open_transport(settings) as transport:
        result = await transport.send(composed.message)
    if result.outcome != Outcome.SENT:
        err.print(visible(f"test not delivered: {result.code or ''} {result.reply}"), markup=False)
        return EXIT_REJECTED
    out.print(visible(f"sent {composed.rendered.subject!r} to {target}, "
                      f"as {subscriber.email} would get it"), markup=False)  # fmt: skip
    return 0


__all__ = ["campaign_group", "campaign_id_of"]
