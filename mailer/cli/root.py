"""The root of the ``mailer`` command line: the group that builds the settings, the
commands of the daemon and of the set-up (``init``, ``run``, ``web``, ``db``, ``config``),
and :func:`run_cli`, the edge where errors become messages.

A user mistake (a wrong setting, an unknown list, an unreadable file) prints one clear line
per problem on stderr and exits non-zero, without a traceback. Each other command group
lives in its own module beside this one; this module names them, and the root imports one
when it is run (or listed by ``--help``): ``mailer run`` carries none of them, nor rich.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

import click

from mailer import __version__, app
from mailer.cli.support import (
    EXIT_ERROR,
    EXIT_REJECTED,
    current_settings,
    err,
    out,
    run_async,
    safe,
)
from mailer.errors import MailerError
from mailer.logs import configure
from mailer.settings import describe, example_env, load_settings
from mailer.storage import Store, head_revision

# The command groups of the modules beside this one: name -> (module, attribute).
GROUPS = {
    "api-keys": ("api_keys", "api_keys_group"),
    "bounces": ("bounce_store", "bounces_group"),  # with import, list and show
    "campaign": ("campaigns", "campaign_group"),
    "event": ("events", "event_group"),
    "lists": ("lists", "lists_group"),
    "preview": ("preview", "preview"),
    "send": ("sends", "send_group"),
    "status": ("status", "status_command"),
    "subscribers": ("subscribers", "subscribers"),
    "users": ("users", "users_group"),
    "webhooks": ("webhooks", "webhooks_group"),
}


class _Root(click.Group):
    """The root group: the commands of this module, and those of :data:`GROUPS`, each
    imported when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *GROUPS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in GROUPS and cmd_name not in self.commands:
            module, attribute = GROUPS[cmd_name]
            command: click.Command = getattr(
                importlib.import_module(f"mailer.cli.{module}"), attribute
            )
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
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
    from rich.table import Table

    table = Table("variable", "value", box=None)
    for var, value in describe(current_settings()):
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
@run_async
async def db_upgrade() -> None:
    """Apply pending migrations (safe to repeat)."""
    async with Store.open(current_settings()) as store:
        before, after = await store.upgrade()
    if before == after:
        out.print(f"database already at {after}")
    else:
        out.print(f"database upgraded from {before or 'empty'} to {after}")


@db.command("status")
@run_async
async def db_status() -> None:
    """Show the schema revision of the database and of this version."""
    async with Store.open(current_settings()) as store:
        current = await store.revision()
    head = head_revision()
    state = "up to date" if current == head else "needs `mailer db upgrade`"
    out.print(f"database at {current or 'nothing'}, this version needs {head}: {state}")


@cli.command("init")
@run_async
async def init() -> int:
    """Create the data folder and database, then import every list file."""
    settings = current_settings()
    async with Store.open(settings) as store:
        revision = await app.prepare(settings, store)
        out.print(f"database ready at {revision}")
        from mailer.cli.lists import sync_folder

        return await sync_folder(store, settings.paths.lists_dir, prune=False)


@cli.command("run")
def run() -> None:
    """Run the daemon until SIGTERM or Ctrl-C."""
    app.cap_malloc_arenas()
    asyncio.run(app.run(current_settings()))


@cli.command("web")
def web() -> None:
    """Serve only the subscriber pages, /healthz and /metrics (`mailer run` serves them too)."""
    asyncio.run(app.serve_web(current_settings()))


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
