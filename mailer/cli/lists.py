"""The ``mailer lists`` commands: import, sync, show and export the subscriber lists.

Reading, checking and importing the CSV files, and the words of the import's report, are
:mod:`mailer.lists`'s (the console shows the same); this module shows the progress on a
terminal and prints the report, one line per row refused or merged (``--dry-run``: the same
report, then nothing stored).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mailer import lists
from mailer.cli.support import (
    EXIT_ERROR,
    EXIT_REJECTED,
    current_settings,
    err,
    open_store,
    out,
    run_async,
    safe,
    visible,
)
from mailer.clock import utc_now
from mailer.errors import ConfigError, MailerError
from mailer.storage import Store


@click.group("lists")
def lists_group() -> None:
    """Subscriber lists (CSV files under lists/)."""


@lists_group.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--list", "slug", help="List name; default: the file name without .csv.")
@click.option("--prune", is_flag=True, help="Remove imported members no longer in the file.")
@click.option("--dry-run", is_flag=True, help="Report what the import would do; store nothing.")
@run_async
async def lists_import(path: Path, slug: str | None, prune: bool, dry_run: bool) -> int:
    """Import one CSV file into a list (one transaction)."""
    async with open_store() as store:
        report = await _import(store, path, slug=slug, prune=prune, dry_run=dry_run)
    _dry_run_note(dry_run)
    return EXIT_REJECTED if not report.ok else 0


@lists_group.command("sync")
@click.option("--prune", is_flag=True, help="Remove imported members no longer in their file.")
@click.option("--dry-run", is_flag=True, help="Report what the imports would do; store nothing.")
@run_async
async def lists_sync(prune: bool, dry_run: bool) -> int:
    """Import every CSV file under the lists folder, each in its own transaction."""
    settings = current_settings()
    async with open_store() as store:
        status = await sync_folder(store, settings.paths.lists_dir, prune=prune, dry_run=dry_run)
    _dry_run_note(dry_run)
    return status


def _dry_run_note(dry_run: bool) -> None:
    if dry_run:
        err.print("dry run: nothing was stored", markup=False)


@lists_group.command("show")
@click.argument("slug", required=False)
@run_async
async def lists_show(slug: str | None) -> None:
    """Show the lists and their members by status."""
    async with open_store() as store:
        summaries = await store.lists.summaries(slug)
    if not summaries:
        out.print("no list yet: put CSV files under lists/ and run `mailer lists sync`")
        return
    table = Table(
        "list", "title", "locale", "opt-in", "subscribed", "pending", "unsubscribed", "suppressed"
    )
    for s in summaries:
        table.add_row(
            s.slug,
            safe(s.title),
            s.default_locale,
            s.opt_in,
            str(s.counts["subscribed"]),
            str(s.counts["pending"]),
            str(s.counts["unsubscribed"]),
            str(s.suppressed),
        )
    out.print(table)


@lists_group.command("export")
@click.argument("slug")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of standard output.",
)
@run_async
async def lists_export(slug: str, output: Path | None) -> None:
    """Export a list's subscribed members as CSV (formula cells neutralised)."""
    async with open_store() as store:
        if output is None:
            await lists.export_csv(store, slug, sys.stdout)
            return
        partial = output.with_name(output.name + ".part")
        try:
            handle = partial.open("w", encoding="utf-8", newline="")
        except OSError as exc:
            raise ConfigError(
                f"-o {output}: cannot be written ({exc.strerror}); does the folder "
                f"{output.parent} exist?"
            ) from None
        with handle:
            count = await lists.export_csv(store, slug, handle)
        partial.replace(output)
    err.print(f"{count} members of {slug} written to {output}", markup=False)


async def sync_folder(store: Store, directory: Path, *, prune: bool, dry_run: bool = False) -> int:
    """Import every list file of ``directory``; the worst exit status of them all."""
    paths = lists.list_files(directory)
    if not paths:
        out.print(f"no *.csv file in {safe(directory)}")
        return 0
    status = 0
    for path in paths:
        try:
            report = await _import(store, path, slug=None, prune=prune, dry_run=dry_run)
        except MailerError as exc:
            err.print(f"[red]error[/]: {safe(exc)}")
            status = EXIT_ERROR
            continue
        if not report.ok:
            status = max(status, EXIT_REJECTED)
    return status


async def _import(
    store: Store, path: Path, *, slug: str | None, prune: bool, dry_run: bool
) -> lists.ImportReport:
    size = _size(path)
    interactive = out.is_terminal and size > 1_000_000
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not interactive,
        transient=True,
    ) as progress:
        task = progress.add_task(f"importing {safe(path.name)}", total=size)
        report = await lists.import_file(
            store,
            path,
            now=utc_now(),
            slug=slug,
            prune=prune,
            progress=lambda done: progress.update(task, completed=done),
            dry_run=dry_run,
        )
    for line in lists.report_lines(report):
        err.print(visible(line.text), markup=False)
    out.print(visible(lists.report_summary(report)), markup=False)
    return report


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


__all__ = ["lists_group", "sync_folder"]
