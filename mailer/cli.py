"""The ``mailer`` command line: the edge where settings are built and errors become messages.

A user mistake (a wrong setting, an unknown list, an unreadable file) prints one clear line
per problem on stderr and exits non-zero, without a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import getpass
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mailer import __version__, app, campaigns, lists
from mailer.addresses import address_key, normalize
from mailer.cli_campaigns import campaign_group, event_group, status_command
from mailer.cli_support import (
    EXIT_ERROR,
    EXIT_REJECTED,
    _async,
    _now,
    _settings,
    _store,
    err,
    out,
    safe,
    visible,
)
from mailer.compose import make_composer
from mailer.dispatch import Engine, RunSummary
from mailer.errors import ConfigError, MailerError, NotFoundError, SendingLocked, StateError
from mailer.lifecycle import SendMove
from mailer.logs import configure
from mailer.models import (
    EVENT_ACTIONS,
    REPORT_COLUMNS,
    CampaignKind,
    Recipient,
    SendInfo,
    SendStatus,
    SuppressionAction,
    SuppressionReason,
)
from mailer.render import Renderer
from mailer.settings import describe, example_env, load_settings
from mailer.storage import Store, head_revision, sending_lock
from mailer.tokens import load_signer
from mailer.transport import open_transport


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mailer")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".env"),
    show_default=True,
    help="File of MAILER_* settings read after the environment.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="Log lines as text or JSON (default: MAILER_LOG__JSON_LINES).",
)
@click.pass_context
def cli(ctx: click.Context, env_file: Path, log_format: str | None) -> None:
    """Newsletter and announcement mailer."""
    named = ctx.get_parameter_source("env_file") != click.core.ParameterSource.DEFAULT
    settings = load_settings(env_file=env_file, env_file_required=named)
    log = settings.log
    if log_format is not None:
        log = log.model_copy(update={"json_lines": log_format == "json"})
    configure(log)
    ctx.obj = settings


# --- config and db ------------------------------------------------------------------------


@cli.group()
def config() -> None:
    """Inspect the settings."""


@config.command("show")
def config_show() -> None:
    """Print the effective settings, secrets masked."""
    table = Table("variable", "value", box=None)
    for var, value in describe(_settings()):
        table.add_row(var, safe(value))
    out.print(table)


@config.command("example")
def config_example() -> None:
    """Print a commented .env.example with every variable and its default."""
    click.echo(example_env(), nl=False)


@config.command("new-key")
def config_new_key() -> None:
    """Print a new secret key (256 random bits) for MAILER_SECRET_KEYS.

    To rotate: put the new key first and keep the old one after it
    (MAILER_SECRET_KEYS=NEW,OLD); new links are signed with NEW and links already mailed
    still work. Drop OLD only when its links no longer matter."""
    from mailer.tokens import new_key

    click.echo(new_key())


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@_async
async def db_upgrade() -> None:
    """Apply pending migrations (safe to repeat)."""
    async with Store.open(_settings()) as store:
        before, after = await store.upgrade()
    if before == after:
        out.print(f"database already at {after}")
    else:
        out.print(f"database upgraded from {before or 'empty'} to {after}")


@db.command("status")
@_async
async def db_status() -> None:
    """Show the schema revision of the database and of this version."""
    async with Store.open(_settings()) as store:
        current = await store.revision()
    head = head_revision()
    state = "up to date" if current == head else "needs `mailer db upgrade`"
    out.print(f"database at {current or 'nothing'}, this version needs {head}: {state}")


@cli.command("init")
@_async
async def init() -> int:
    """Create the data folder and database, then import every list file."""
    settings = _settings()
    async with Store.open(settings) as store:
        revision = await app.prepare(settings, store)
        out.print(f"database ready at {revision}")
        return await _sync(store, settings.paths.lists_dir, prune=False)


@cli.command("run")
def run() -> None:
    """Run the daemon until SIGTERM or Ctrl-C."""
    asyncio.run(app.run(_settings()))


@cli.command("web")
def web() -> None:
    """Serve only the subscriber pages, /healthz and /metrics (`mailer run` serves them too)."""
    asyncio.run(app.serve_web(_settings()))


# --- lists --------------------------------------------------------------------------------


@cli.group("lists")
def lists_group() -> None:
    """Subscriber lists (CSV files under lists/)."""


@lists_group.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--list", "slug", help="List name; default: the file name without .csv.")
@click.option("--prune", is_flag=True, help="Remove imported members no longer in the file.")
@_async
async def lists_import(path: Path, slug: str | None, prune: bool) -> int:
    """Import one CSV file into a list (one transaction)."""
    async with _store() as store:
        report = await _import(store, path, slug=slug, prune=prune)
    return EXIT_REJECTED if not report.ok else 0


@lists_group.command("sync")
@click.option("--prune", is_flag=True, help="Remove imported members no longer in their file.")
@_async
async def lists_sync(prune: bool) -> int:
    """Import every CSV file under the lists folder, each in its own transaction."""
    settings = _settings()
    async with _store() as store:
        return await _sync(store, settings.paths.lists_dir, prune=prune)


@lists_group.command("show")
@click.argument("slug", required=False)
@_async
async def lists_show(slug: str | None) -> None:
    """Show the lists and their members by status."""
    async with _store() as store:
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
@_async
async def lists_export(slug: str, output: Path | None) -> None:
    """Export a list's subscribed members as CSV (formula cells neutralised)."""
    async with _store() as store:
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


async def _sync(store: Store, directory: Path, *, prune: bool) -> int:
    paths = lists.list_files(directory)
    if not paths:
        out.print(f"no *.csv file in {safe(directory)}")
        return 0
    status = 0
    for path in paths:
        try:
            report = await _import(store, path, slug=None, prune=prune)
        except MailerError as exc:
            err.print(f"[red]error[/]: {safe(exc)}")
            status = EXIT_ERROR
            continue
        if not report.ok:
            status = max(status, EXIT_REJECTED)
    return status


async def _import(store: Store, path: Path, *, slug: str | None, prune: bool) -> lists.ImportReport:
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
            now=_now(),
            slug=slug,
            prune=prune,
            progress=lambda done: progress.update(task, completed=done),
        )
    _print_report(report)
    return report


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _print_report(report: lists.ImportReport) -> None:
    t = report.tally
    where = str(report.path)
    for row in report.rejected:
        err.print(visible(f"{where}:{row.line}: {row.column}: {row.reason}"), markup=False)
    if report.rejected_count > len(report.rejected):
        err.print(f"{where}: ... and {report.rejected_count - len(report.rejected)} more rejected")
    for line, email, first in report.duplicates:
        err.print(f"{where}:{line}: duplicate of line {first} ({email}), merged", markup=False)
    for line, given, stored in t.merged:
        err.print(f"{where}:{line}: {given} is the stored {stored}, merged", markup=False)
    for line, email in t.kept_unsubscribed:
        err.print(f"{where}:{line}: {email} unsubscribed earlier; left unsubscribed", markup=False)
    for line, email in t.suppressed:
        err.print(f"{where}:{line}: {email} is suppressed; not subscribed", markup=False)
    if t.vanished:
        verb = (
            "removed from the list" if t.pruned else "no longer in the file (kept; --prune removes)"
        )
        err.print(
            f"{where}: {len(t.vanished)} member(s) {verb}: {', '.join(t.vanished[:10])}"
            + (" ..." if len(t.vanished) > 10 else ""),
            markup=False,
        )
    parts = [
        (t.added, "added"),
        (t.subscribed_existing, "existing subscribers added"),
        (t.updated, "updated"),
        (t.unchanged, "unchanged"),
        (report.duplicate_count, "duplicates merged"),
        (len(t.kept_unsubscribed), "kept unsubscribed"),
        (len(t.suppressed), "suppressed"),
        (report.rejected_count, "rejected"),
        (t.pruned, "pruned"),
    ]
    done = ", ".join(f"{n} {label}" for n, label in parts if n) or "nothing to do"
    out.print(visible(f"{report.slug}: {report.rows} rows read; {done}"), markup=False)


# --- preview ------------------------------------------------------------------------------


@cli.command("preview")
@click.argument("campaign_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--subscriber", "email", help="Render as this subscriber would get it.")
@click.option("--list", "slug", help="Which of the campaign's lists; default: the first.")
@click.option(
    "--action",
    type=click.Choice(EVENT_ACTIONS),
    default="invitation",
    show_default=True,
    help="For an event: which mail of the event.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the .eml and .html; default: MAILER_PATHS__DATA_DIR/preview.",
)
@click.option("--all", "check_all", is_flag=True, help="Run the pre-flight check on every member.")
@_async
async def preview(
    campaign_file: Path,
    email: str | None,
    slug: str | None,
    action: str,
    out_dir: Path | None,
    check_all: bool,
) -> int:
    """Write the .eml and .html one subscriber would get; --all checks every member."""
    settings = _settings()
    out_dir = out_dir or settings.paths.data_dir / "preview"
    campaign = campaigns.load(
        campaign_file,
        default_zone=settings.scheduler.timezone,
        templates_dir=settings.paths.templates_dir,
    )
    slug = slug or campaign.data.lists[0]
    now = _now()
    async with _store() as store:
        list_info = await store.lists.info(slug)
        key = address_key(email) if email else None
        chosen = [r async for r in store.lists.recipients(slug, email_key=key, limit=1)]
        if email and not chosen:
            raise NotFoundError(f"{email} is not a subscribed member of {slug!r}")
        recipient = chosen[0] if chosen else Recipient(id=0, email="preview@example.org")
        kind_action = (
            action if campaign.data.kind == CampaignKind.EVENT else campaign.data.kind.value
        )
        composer = make_composer(
            settings,
            renderer=Renderer(settings.paths.templates_dir),
            signer=load_signer(settings.secret_keys, settings.paths.data_dir),
            send=SendInfo(
                content=campaign.content,
                list=list_info,
                sender_name=campaign.data.sender.name or settings.sender.from_name,
                sender_address=campaign.data.sender.address or settings.sender.from_address,
                action=kind_action,
                now=now,
                event=campaign.event(domain=settings.sender.domain),
            ),
            send_id=0,
            trace=f"preview/{campaign.name}",
        )
        composed = composer.compose(recipient, date=now)
        failed = 0
        if check_all:
            members = [r async for r in store.lists.recipients(slug)]
            report = composer.check(members, date=now)
            for address, reason in report.reasons:
                err.print(visible(f"{address}: {reason}"), markup=False)
            out.print(f"pre-flight: {report.total} members of {slug}, {report.failed} failed")
            failed = report.failed
    stem = f"{campaign.name}-{kind_action}-{recipient.email}"
    eml, html = out_dir / f"{stem}.eml", out_dir / f"{stem}.html"
    _write(eml, composed.message.data)
    _write(html, composed.rendered.html.encode("utf-8"))
    out.print(visible(f"subject: {composed.rendered.subject}"), markup=False)
    out.print(f"wrote {eml} and {html}", markup=False)
    return EXIT_REJECTED if failed else 0


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# --- sends --------------------------------------------------------------------------------


@cli.group("send")
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
@_async
async def send_create(campaign_file: Path, action: str | None, key: str | None) -> None:
    """Store the campaign (or update it) and a send of it due now."""
    settings = _settings()
    campaign = campaigns.load(
        campaign_file,
        default_zone=settings.scheduler.timezone,
        templates_dir=settings.paths.templates_dir,
    )
    kind = campaign.data.kind
    action = action or ("invitation" if kind == CampaignKind.EVENT else kind.value)
    if (action in EVENT_ACTIONS) != (kind == CampaignKind.EVENT):
        raise ConfigError(f"--action {action} does not fit a campaign of kind {kind.value}")
    now = _now()
    async with _store() as store:
        campaign_id = await store.campaigns.save(
            campaign.content,
            list_slugs=campaign.data.lists,
            sender_name=campaign.data.sender.name,
            sender_address=campaign.data.sender.address,
            event=campaign.event(domain=settings.sender.domain),
            now=now,
        )
        send_id, created = await store.sends.create(
            campaign_id, key=key or action, action=action, due_at=now, now=now
        )
    state = "created" if created else "already exists"
    out.print(visible(f"send {send_id} ({campaign.name}, {key or action}) {state}"), markup=False)


@send_group.command("list")
@_async
async def send_list() -> None:
    """Every send, by due time."""
    async with _store() as store:
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
@_async
async def send_run(send_id: int, wait: bool) -> int:
    """Run a send in the foreground, with a progress bar (Ctrl-C stops cleanly).

    Exits 0 when nothing failed, 1 when some deliveries failed, 2 on an error (the send
    paused, cancelled or missed, or the command could not run)."""
    async with _store() as store:
        summary = await _run_in_foreground(store, send_id, wait=wait)
    _print_summary(summary)
    return _exit_status(summary)


async def _run_in_foreground(store: Store, send_id: int, *, wait: bool) -> RunSummary:
    """Run (or resume) a send in this process, with a progress bar on a terminal."""
    settings = _settings()
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
            await store.sends.move(send_id, SendMove.RESUME, now=_now())
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
    if summary.next_retry:
        line += f"; next retry {summary.next_retry:%Y-%m-%d %H:%M:%S} UTC"
    if summary.reason:
        line += f"; {summary.reason}"
    if not summary.claimed:
        line += " (claimed by another run)"
    out.print(visible(line), markup=False)


@send_group.command("status")
@click.argument("send_id", type=int)
@_async
async def send_status(send_id: int) -> None:
    """Where a send stands: its status and its deliveries by status."""
    async with _store() as store:
        spec = await store.sends.spec(send_id)
        counts = await store.figures.counts(send_id)
        next_retry = await store.deliveries.next_retry(send_id)
    _print_summary(RunSummary(send_id, spec.status, counts, spec.reason, next_retry))


@send_group.command("retry-failed")
@click.argument("send_id", type=int)
@click.option("--wait", is_flag=True, help="Stay until deferred messages are retried too.")
@_async
async def send_retry_failed(send_id: int, wait: bool) -> int:
    """Queue the failed deliveries again, and those skipped for a suppression lifted since,
    then run the send (as `send run`; same exit status). Addresses still suppressed stay
    skipped. With a daemon sending from this SQLite file, it sends them."""
    app.check_sending(_settings())  # refused links or DKIM key: said before anything is queued
    async with _store() as store:
        count = await store.sends.retry_failed(send_id, now=_now())
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
@_async
async def send_pause(send_id: int) -> None:
    """Stop a send after the messages in flight; `send run` resumes it."""
    async with _store() as store:
        done = await store.sends.move(send_id, SendMove.PAUSE, now=_now(), reason="paused by staff")
    if not done:
        raise StateError(f"send {send_id} is not scheduled or running")
    out.print(f"send {send_id} paused", markup=False)


@send_group.command("cancel")
@click.argument("send_id", type=int)
@_async
async def send_cancel(send_id: int) -> None:
    """Cancel a send that has not finished; what was sent stays recorded."""
    async with _store() as store:
        done = await store.sends.move(
            send_id, SendMove.CANCEL, now=_now(), reason="cancelled by staff"
        )
    if not done:
        raise StateError(f"send {send_id} has already ended")
    out.print(f"send {send_id} cancelled", markup=False)


@send_group.command("report")
@click.argument("send_id", type=int)
@click.option("--csv", "as_csv", is_flag=True, help="CSV instead of a table.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path))
@_async
async def send_report(send_id: int, as_csv: bool, output: Path | None) -> None:
    """Who got it, who did not, and why."""
    columns = list(REPORT_COLUMNS)
    async with _store() as store:
        await store.sends.spec(send_id)
        rows = [r async for r in store.figures.report(send_id)]
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


# --- subscribers --------------------------------------------------------------------------


@cli.group()
def subscribers() -> None:
    """One subscriber at a time."""


@subscribers.command("add")
@click.argument("email")
@click.option("--list", "slug", required=True, help="The list to subscribe to.")
@click.option("--name", default=None)
@click.option("--locale", default=None, help="fr, en...")
@click.option("--timezone", default=None, help="IANA zone, e.g. Europe/Paris.")
@click.option(
    "--force", is_flag=True, help="Re-subscribe someone who unsubscribed, at their request."
)
@_async
async def subscribers_add(
    email: str, slug: str, name: str | None, locale: str | None, timezone: str | None, force: bool
) -> int:
    """Subscribe an address to a list (the details of someone already stored stay as they are)."""
    header = ["email", "name", "locale", "timezone"]
    row = lists.parse_row(0, header, [email, name or "", locale or "", timezone or ""])
    if isinstance(row, lists.RowError):
        raise ConfigError(f"--{row.column}: {row.reason}")
    async with _store() as store:
        try:
            before = await store.subscribers.show(row.key)
        except NotFoundError:
            before = None
        message = await store.subscribers.add(row, slug=slug, source="cli", now=_now(), force=force)
    out.print(visible(message), markup=False)
    if before is None:
        return 0
    # The store keeps an existing subscriber's details (their own choice on the preferences
    # page, or their list file): say which options were not applied rather than drop them.
    ignored = [
        f"--{option} {given} not applied (stored: {stored or 'none'})"
        for option, given, stored in (
            ("name", row.name, before.name), ("locale", row.locale, before.locale),
            ("timezone", row.timezone, before.timezone),
        )
        if given is not None and given != (stored or None)
    ]  # fmt: skip
    for note in ignored:
        err.print(
            visible(f"{before.email} already existed: {note}; their list file or their "
                    "preferences page changes it"),
            markup=False,
        )  # fmt: skip
    return EXIT_REJECTED if ignored else 0


@subscribers.command("remove")
@click.argument("email")
@click.option("--list", "slug", help="Remove from this list only; without it, erase everywhere.")
@click.option("--yes", is_flag=True, help="Do not ask before erasing.")
@_async
async def subscribers_remove(email: str, slug: str | None, yes: bool) -> None:
    """Remove from a list, or erase the subscriber entirely (GDPR erasure)."""
    if slug is None and not yes:
        click.confirm(f"Erase {email} and all their history?", abort=True)
    async with _store() as store:
        message = await store.subscribers.remove(address_key(email), slug=slug)
    out.print(visible(f"{email}: {message}"), markup=False)


@subscribers.command("show")
@click.argument("email")
@_async
async def subscribers_show(email: str) -> None:
    """Show a subscriber, their lists and any suppression."""
    async with _store() as store:
        view = await store.subscribers.show(address_key(email))
    table = Table(box=None, show_header=False)
    for label, value in (
        ("email", view.email),
        ("name", view.name),
        ("locale", view.locale or ""),
        ("timezone", view.timezone or ""),
        ("status", view.status),
        ("suppressed", view.suppression or "no"),
        *(
            (
                "suppression history",
                f"{e.at:%Y-%m-%d %H:%M} UTC {e.action}"
                + (f" ({e.reason})" if e.action == SuppressionAction.SUPPRESS else "")
                + f" by {e.actor}"
                + (f": {e.detail}" if e.detail else ""),
            )
            for e in view.suppression_history
        ),
        ("since", view.created_at.isoformat()),
        *((f"attribute {k}", str(v)) for k, v in sorted(view.attributes.items())),
        *((f"list {slug}", f"{status} ({source})") for slug, status, source in view.subscriptions),
    ):
        table.add_row(safe(label), safe(value))
    out.print(table)


@subscribers.command("unsubscribe")
@click.argument("email")
@click.option("--list", "slug", help="Unsubscribe from this list only; default: every list.")
@_async
async def subscribers_unsubscribe(email: str, slug: str | None) -> None:
    """Record an unsubscribe (an import never re-subscribes them)."""
    async with _store() as store:
        changed = await store.subscribers.unsubscribe(
            address_key(email), slug=slug, source="cli", now=_now()
        )
    out.print(visible(f"{email}: unsubscribed from {changed} list(s)"), markup=False)


@subscribers.command("suppress")
@click.argument("email")
@click.option(
    "--reason",
    type=click.Choice([r.value for r in SuppressionReason]),
    default=SuppressionReason.MANUAL.value,
    show_default=True,
)
@click.option("--detail", default="", help="Why, for the record.")
@_async
async def subscribers_suppress(email: str, reason: str, detail: str) -> None:
    """Never mail this address again, whatever any list says (`unsuppress` lifts it)."""
    key = normalize(email).key
    async with _store() as store:
        added = await store.subscribers.suppress(
            key, reason=SuppressionReason(reason), detail=detail, now=_now(), actor=_actor()
        )
    out.print(f"{email}: " + ("suppressed" if added else "was already suppressed"), markup=False)


@subscribers.command("unsuppress")
@click.argument("email")
@click.option("--reason", "why", required=True, help="Why it is lifted, for the record.")
@_async
async def subscribers_unsuppress(email: str, why: str) -> None:
    """Lift a suppression: the address may be mailed again (its lists decide). The history
    keeps both, with who, when and why (`subscribers show`)."""
    if not why.strip():
        raise ConfigError("--reason: say why the suppression is lifted")
    key = normalize(email).key
    async with _store() as store:
        was = await store.subscribers.unsuppress(key, why=why.strip(), actor=_actor(), now=_now())
    out.print(
        visible(
            f"{email}: suppression ({was}) lifted; `mailer send retry-failed SEND` mails what "
            "it held back"
        ),
        markup=False,
    )


def _actor() -> str:
    """Who runs this command, for the suppression history: ``cli:<unix user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name, no passwd entry (a container)
        return f"cli:uid {os.getuid()}"


cli.add_command(campaign_group)
cli.add_command(event_group)
cli.add_command(status_command)


# --- entry point --------------------------------------------------------------------------


def run_cli(args: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status (used by ``main`` and the tests)."""
    try:
        result = cli.main(
            args=list(args) if args is not None else None, prog_name="mailer", standalone_mode=False
        )
    except click.exceptions.Abort:
        err.print("aborted")
        return EXIT_REJECTED
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except MailerError as exc:
        for line in str(exc).splitlines():
            err.print(f"[red]error[/]: {safe(line)}", highlight=False)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run_cli())


__all__ = ["cli", "main", "run_cli"]
