"""``mailer bounces import|list|show``: bounces stored. ``import PATH...`` takes in a backlog
(a Maildir, a folder of messages, an mbox file or single messages) the way the listener
takes a bounce in (``mailer.intake``), 500 messages to a transaction; ``list`` shows what
came back, newest first; ``show ID`` one bounce message with its recipients (``--raw``: the
message itself, while it is kept)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.table import Table

from mailer.bounces import split_messages
from mailer.cli.bounces import MAX_FILE_BYTES, bounces_group
from mailer.cli.support import EXIT_ERROR, current_settings, err, open_store, out, run_async, safe
from mailer.intake import Intake
from mailer.models import BounceKind, BounceLine, BounceOutcome

BATCH = 500  # messages stored in one transaction (Intake.messages)
BATCH_BYTES = 16 * 2**20  # and at most about this many bytes of them


@bounces_group.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@run_async
async def bounces_import(paths: tuple[Path, ...]) -> int:
    """Store bounce messages from a Maildir, a folder, an mbox file or message files.

    Each is read, tied to its delivery and counted as if the listener had received it; a
    message stored before (by any way in) counts once. Stored 500 at a time."""
    files = list(_files(paths))
    settings = current_settings()
    tally: Counter[str] = Counter()
    async with open_store() as store:
        intake = Intake(store, settings)
        batch: list[bytes] = []
        size = 0
        for path in files:
            try:
                raw = path.read_bytes() if path.stat().st_size <= MAX_FILE_BYTES else None
            except OSError as exc:
                err.print(f"[yellow]skipped[/]: {safe(f'{path}: {exc.strerror}')}")
                tally["unreadable"] += 1
                continue
            if raw is None:
                err.print(f"[yellow]skipped[/]: {safe(f'{path}: over 10 MiB, not a bounce')}")
                tally["too large"] += 1
                continue
            for message in split_messages(raw):
                batch.append(message)
                size += len(message)
                if len(batch) >= BATCH or size >= BATCH_BYTES:
                    _count(tally, await intake.messages(batch, source="import"))
                    batch, size = [], 0
        _count(tally, await intake.messages(batch, source="import"))
    order = (
        "messages", "new", "duplicates", "suppressed", "unsubscribed", "counted",
        "already suppressed", "policy", "ignored", "unmatched", "unreadable", "too large",
    )  # fmt: skip
    out.print(
        f"{len(files)} file(s): " + ", ".join(f"{k} {tally[k]}" for k in order if tally[k])
        if tally else f"{len(files)} file(s): no message"
    )  # fmt: skip
    return 0


def _count(tally: Counter[str], outcomes: list[BounceOutcome]) -> None:
    for outcome in outcomes:
        tally["messages"] += 1
        tally["duplicates" if outcome.duplicate else "new"] += 1
        tally.update(n.action.value for n in outcome.notes)


def _files(paths: tuple[Path, ...]) -> Iterator[Path]:
    """The files to read: a Maildir's cur/ and new/, a folder's files, or the files named."""
    for path in paths:
        if path.is_dir():
            folders = [path / "cur", path / "new"] if (path / "cur").is_dir() else [path]
            for folder in folders:
                yield from sorted(p for p in folder.iterdir() if p.is_file())
        elif path.is_file():
            yield path
        else:
            raise click.UsageError(
                f"{path}: no such file or folder (a Maildir, an mbox or messages)"
            )


@bounces_group.command("list")
@click.option(
    "--kind", type=click.Choice([k.value for k in BounceKind]), help="Only bounces of this kind."
)
@click.option("--email", help="Only this address's bounces.")
@click.option("--send", "send_id", type=int, help="Only the bounces of this send.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@run_async
async def bounces_list(
    kind: str | None, email: str | None, send_id: int | None, limit: int
) -> None:
    """What came back, newest first: one line per recipient of a bounce."""
    async with open_store() as store:
        lines = await store.bounces.lines(
            kind=kind, email_key=email.strip().lower() if email else None, send_id=send_id,
            limit=limit,
        )  # fmt: skip
    _table(lines)


@bounces_group.command("show")
@click.argument("bounce_id", type=int)
@click.option("--raw", is_flag=True, help="Print the message as received (while it is kept).")
@run_async
async def bounces_show(bounce_id: int, raw: bool) -> int:
    """One bounce message: its recipients, what each did, and the message itself."""
    async with open_store() as store:
        found = await store.bounces.message(bounce_id)
    if found is None:
        err.print(f"[red]error[/]: no bounce {bounce_id} (see mailer bounces list)")
        return EXIT_ERROR
    lines, message = found
    if raw:
        if message is None:
            err.print(f"[red]error[/]: bounce {bounce_id}'s message is no longer kept")
            return EXIT_ERROR
        sys.stdout.buffer.write(message)
        return 0
    _table(lines)
    if message is None:
        out.print("message: no longer kept (MAILER_BOUNCES__KEEP_DAYS)")
    return 0


def _table(lines: list[BounceLine]) -> None:
    zone = ZoneInfo(current_settings().scheduler.timezone)
    table = Table(
        "id", "bounce", "received", "source", "recipient", "kind", "status", "did", "send",
        "diagnostic", box=None,
    )  # fmt: skip
    for b in lines:
        send = f"{b.send_id} {b.campaign}/{b.send_key}" if b.send_id else "-"
        table.add_row(
            str(b.id), str(b.bounce_id), f"{b.received_at.astimezone(zone):%Y-%m-%d %H:%M %Z}",
            safe(b.source), safe(b.recipient), b.kind, b.status or "-", b.action, safe(send),
            safe(b.diagnostic[:120]),
        )  # fmt: skip
    out.print(table)


__all__ = ["bounces_group", "bounces_import", "bounces_list", "bounces_show"]
