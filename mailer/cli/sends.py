"""The ``mailer send`` commands: one mailing of a campaign (create, list, run, status,
retry-failed, pause, cancel, report).

``send run`` drives :class:`mailer.dispatch.Engine` in the foreground with a progress bar.
A send's moves (pause, cancel, resume) are named here and judged by
:mod:`mailer.lifecycle`: a refused move is its :class:`~mailer.errors.StateError`, one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mailer import app, lists
from mailer.cli.support import (
    EXIT_ERROR,
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
from mailer.errors import ConfigError, SendingLocked, StateError
from mailer.lifecycle import SendMove, check_send
from mailer.models import EVENT_ACTIONS, REPORT_COLUMNS, CampaignKind, SendStatus
from mailer.storage import Store, sending_lock
from mailer.workflow import spec_of
from mailer.workflow.scheduling import options_of

if TYPE_CHECKING:
    from mailer.dispatch import RunSummary  # imported where a send runs: it loads dispatch


@click.group("send")
def send_group() -> None:
    """One mailing of a campaign: create, run, watch, report."""


@send_group.command("create")
@click.argument("campaign_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--action",
    type=click.Choice(("announcement", "newsletter", *EVENT_ACTIONS)),
    help="Default: the campaign's kind (invitation for an event).",
)
@click.option("--key", help="Stable name of the send in its campaign; default: the action.")
@run_async
async def send_create(campaign_file: Path, action: str | None, key: str | None) -> None:
    """Store the campaign (or update it) and a send of it due now."""
    settings = current_settings()
    campaign = load_campaign(campaign_file)
    kind = campaign.data.kind
    action = action or ("invitation" if kind == CampaignKind.EVENT else kind.value)
    if (action in EVENT_ACTIONS) != (kind == CampaignKind.EVENT):
        raise ConfigError(f"--action {action} does not fit a campaign of kind {kind.value}")
    now = utc_now()
    async with open_store() as store:
        campaign_id = await store.campaigns.save(
            campaign.content,
            list_slugs=campaign.data.lists,
            sender_name=campaign.data.sender.name,
            sender_address=campaign.data.sender.address,
            event=campaign.event(domain=settings.sender.domain),
            now=now,
            options=options_of(campaign),
            spec=spec_of(campaign),
            approved_by=cli_actor(),
        )
        send_id, created = await store.sends.create(
            campaign_id, key=key or action, action=action, due_at=now, now=now
        )
    state = "created" if created else "already exists"
    out.print(visible(f"send {send_id} ({campaign.name}, {key or action}) {state}"), markup=False)


@send_group.command("list")
@run_async
async def send_list() -> None:
    """Every send, by due time."""
    async with open_store() as store:
        rows = await store.sends.overview()
    table = Table("send", "campaign", "key", "status", "due (UTC)", "reason")
    for r in rows:
        table.add_row(
            str(r.id), safe(r.campaign), safe(r.key), r.status, f"{r.due_at:%Y-%m-%d %H:%M}",
            safe(r.reason or ""),
        )  # fmt: skip
    out.print(table)


@send_group.command("run")
@click.argument("send_id", type=int)
@click.option("--wait", is_flag=True, help="Stay until deferred messages are retried too.")
@run_async
async def send_run(send_id: int, wait: bool) -> int:
    """Run a send in the foreground, with a progress bar (Ctrl-C stops cleanly).

    Exits 0 when nothing failed, 1 when some deliveries failed, 2 on an error (the send
    paused, cancelled or missed, or the command could not run)."""
    async with open_store() as store:
        summary = await _run_in_foreground(store, send_id, wait=wait)
    _print_summary(summary)
    return _exit_status(summary)


async def _run_in_foreground(store: Store, send_id: int, *, wait: bool) -> RunSummary:
    from mailer.dispatch import Engine
    from mailer.transport import open_transport

    """Run (or resume) a send in this process, with a progress bar on a terminal."""
    settings = current_settings()
    app.check_sending(settings)  # links that work, a DKIM key that loads: before any send
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        stack.enter_context(sending_lock(store.engine))  # one sender per SQLite file
        await store.sends.spec(send_id)  # an unknown send: said before the relay is opened
        await app.take_back_leases(store)
        transport = await stack.enter_async_context(open_transport(settings))
        spec = await store.sends.spec(send_id)
        if spec.status == SendStatus.PAUSED:
            await store.sends.move(send_id, SendMove.RESUME, now=utc_now())
        due = (await store.figures.counts(send_id)).pending or None
        engine = Engine(settings, store, transport, node=app.node_name())
        with Progress(
            TextColumn("send {task.fields[send]}"), BarColumn(), TextColumn("{task.completed}"),
            TextColumn("sent {task.fields[sent]} deferred {task.fields[deferred]} "
                       "failed {task.fields[failed]} skipped {task.fields[skipped]}"),
            TimeRemainingColumn(), console=err, disable=not err.is_terminal,
        ) as progress:  # fmt: skip
            task = progress.add_task(
                "send", total=due, send=send_id, sent=0, deferred=0, failed=0, skipped=0
            )

            def show(tally: dict[str, int]) -> None:
                fields: dict[str, Any] = dict(tally)
                progress.update(task, completed=sum(tally.values()), **fields)

            return await engine.run_send(
                send_id, stop=stop, wait_for_retries=wait, on_progress=show
            )


def _exit_status(summary: RunSummary) -> int:
    """0: every delivery attempted ended sent or skipped (or waits for its retry); 1: some
    failed; 2: the send did not go on (paused, cancelled, missed: the reason is printed)."""
    if summary.status in (SendStatus.PAUSED, SendStatus.CANCELLED, SendStatus.MISSED):
        return EXIT_ERROR
    return EXIT_REJECTED if summary.counts.get("failed", 0) else 0


def _print_summary(summary: RunSummary) -> None:
    c = summary.counts
    line = (
        f"send {summary.send_id}: {summary.status}; sent {c.get('sent', 0)}, "
        f"deferred {c.get('deferred', 0)}, failed {c.get('failed', 0)}, "
        f"skipped {c.get('skipped', 0)}, queued {c.get('queued', 0)}"
    )
    if c.get("bounced", 0):
        line += f", bounced {c.get('bounced', 0)}"
    if summary.next_retry:
        line += f"; next retry {summary.next_retry:%Y-%m-%d %H:%M:%S} UTC"
    if summary.reason:
        line += f"; {summary.reason}"
    if not summary.claimed:
        line += " (claimed by another run)"
    out.print(visible(line), markup=False)


@send_group.command("status")
@click.argument("send_id", type=int)
@run_async
async def send_status(send_id: int) -> None:
    """Where a send stands: its status and its deliveries by status."""
    async with open_store() as store:
        spec = await store.sends.spec(send_id)
        counts = await store.figures.counts(send_id)
        next_retry = await store.deliveries.next_retry(send_id)
        bounces = await store.bounces.counts(send_id)
    from mailer.dispatch import RunSummary

    _print_summary(RunSummary(send_id, spec.status, counts, spec.reason, next_retry))
    if bounces:
        out.print(bounce_line(bounces))


def bounce_line(bounces: dict[str, int]) -> str:
    """The bounces and complaints that came back for a send, by kind, in one line."""
    order = ("hard", "soft", "policy", "complaint", "unknown", "auto-reply")
    kinds = sorted(bounces, key=lambda k: order.index(k) if k in order else len(order))
    return "came back: " + ", ".join(f"{k} {bounces[k]}" for k in kinds)


@send_group.command("retry-failed")
@click.argument("send_id", type=int)
@click.option("--wait", is_flag=True, help="Stay until deferred messages are retried too.")
@run_async
async def send_retry_failed(send_id: int, wait: bool) -> int:
    """Queue the failed deliveries again, and those skipped for a suppression lifted since,
    then run the send (as `send run`; same exit status). Addresses still suppressed stay
    skipped. With a daemon sending from this SQLite file, it sends them."""
    app.check_sending(
        current_settings()
    )  # refused links or DKIM key: said before anything is queued
    async with open_store() as store:
        count = await store.sends.retry_failed(send_id, now=utc_now())
        out.print(f"send {send_id}: {count} deliveries queued again", markup=False)
        try:
            summary = await _run_in_foreground(store, send_id, wait=wait)
        except SendingLocked:
            out.print(f"send {send_id}: the daemon sending from this database sends them")
            return 0
    _print_summary(summary)
    return _exit_status(summary)


@send_group.command("pause")
@click.argument("send_id", type=int)
@run_async
async def send_pause(send_id: int) -> None:
    """Stop a send after the messages in flight; `send run` resumes it."""
    async with open_store() as store:
        await move_send(store, send_id, SendMove.PAUSE, reason="paused by staff")
    out.print(f"send {send_id} paused", markup=False)


@send_group.command("cancel")
@click.argument("send_id", type=int)
@run_async
async def send_cancel(send_id: int) -> None:
    """Cancel a send that has not finished; what was sent stays recorded."""
    async with open_store() as store:
        await move_send(store, send_id, SendMove.CANCEL, reason="cancelled by staff")
    out.print(f"send {send_id} cancelled", markup=False)


@send_group.command("report")
@click.argument("send_id", type=int)
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a table.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@run_async
async def send_report(send_id: int, as_csv: bool, output: Path | None) -> None:
    """Who got it, who did not, and why."""
    columns = list(REPORT_COLUMNS)
    async with open_store() as store:
        await store.sends.spec(send_id)
        rows = [r async for r in store.figures.report(send_id)]
        bounces = await store.bounces.counts(send_id)
    if as_csv or output:
        handle = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(
                [lists.neutralise("" if r.value(c) is None else str(r.value(c))) for c in columns]
            )
        if output:
            handle.close()
        return
    table = Table(*columns[:7])
    for r in rows:
        table.add_row(*("" if r.value(c) is None else safe(r.value(c)) for c in columns[:7]))
    out.print(table)
    if bounces:
        out.print(bounce_line(bounces))


async def move_send(store: Store, send_id: int, move: SendMove, *, reason: str) -> None:
    """Make ``move``, or raise the lifecycle's StateError: which send, the status it is in,
    what the move needs."""
    if await store.sends.move(send_id, move, now=utc_now(), reason=reason):
        return
    current = await store.sends.status(send_id)  # NotFoundError for an unknown send
    check_send(send_id, current, move)  # raises: the table refuses the move from here
    # The table allows it from `current`: the send was elsewhere when the move was tried.
    raise StateError(f"send {send_id} changed while it was being moved: try again")


__all__ = ["move_send", "send_group"]
