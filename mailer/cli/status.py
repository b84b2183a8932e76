"""``mailer status``: the sends that have not ended, in their campaign's local time, with
the progress of the running and paused ones and which node holds which part of them.

It only reads; the figures are :mod:`mailer.storage`'s.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import click
from rich.table import Table

from mailer.cli.support import open_store, out, run_async, safe
from mailer.clock import utc_now
from mailer.models import SendStatus


@click.command("status")
@run_async
async def status_command() -> None:
    """Upcoming sends in local time, running ones with progress, paused and missed ones."""
    now = utc_now()
    async with open_store() as store:
        rows = await store.sends.overview()
        details = {}
        for r in rows:
            if r.status in (SendStatus.RUNNING, SendStatus.PAUSED):
                details[r.id] = (
                    await store.figures.counts(r.id),
                    await store.figures.rate(r.id, now=now),
                    await store.figures.holders(r.id, now=now),
                )
    table = Table("send", "campaign", "key", "status", "when", "progress", "daemons", "reason")
    for r in rows:
        zone = ZoneInfo(r.timezone)
        when = f"{r.due_at.astimezone(zone):%a %d %b %H:%M %Z}"
        progress = daemons = ""
        if r.id in details:
            c, rate, holders = details[r.id]
            done = c.total - c.pending
            progress = f"{done}/{c.total}, {rate:.1f}/s"
            # which node holds which part of the send, and at what rate
            daemons = "\n".join(
                f"{safe(node)}: {leased} leased, {per_second:.1f}/s"
                for node, leased, per_second in holders
                if leased or per_second
            )
        if r.status in (SendStatus.DONE, SendStatus.CANCELLED):
            continue
        table.add_row(
            str(r.id), safe(r.campaign), safe(r.key), safe(r.status), when, progress,
            daemons, safe(r.reason or ""),
        )  # fmt: skip
    out.print(table)


__all__ = ["status_command"]
