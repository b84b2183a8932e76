"""What every command module shares: consoles, exit codes, the async wrapper, the settings
and the store, and :func:`safe`, through which every piece of data (subscriber, list,
campaign, relay reply) goes before rich prints it.

It holds no command and decides nothing: the command modules beside it do.
"""

from __future__ import annotations

import asyncio
import getpass
import os
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import click

from mailer import app, campaigns
from mailer.campaigns import Campaign
from mailer.settings import Settings
from mailer.storage import Store

if TYPE_CHECKING:
    from rich.console import Console

P = ParamSpec("P")
T = TypeVar("T")


class _Deferred:
    """A rich Console made when first used: ``mailer run`` prints nothing through rich
    unless it fails, and rich costs about 2 MiB of the daemon's memory."""

    __slots__ = ("_console", "_options")

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        console = self._console
        if console is None:
            from rich.console import Console

            console = self._console = Console(**self._options)
        return getattr(console, name)


# Rich falls back to 80 columns when stdout is a pipe; tables of addresses need more.
# No emoji codes: a name like ":warning:" is printed as typed.
out = cast(
    "Console",
    _Deferred(
        highlight=False, soft_wrap=True, emoji=False, width=None if sys.stdout.isatty() else 160
    ),
)
err = cast("Console", _Deferred(stderr=True, highlight=False, soft_wrap=True, emoji=False))

# C0 and C1 controls (ESC starts colours, screen clears and OSC-8 hyperlinks), DEL, the
# Unicode line and paragraph separators, and the bidirectional overrides and isolates that
# make a terminal show text in another order than it is.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def visible(text: object) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u2028``):
    for lines printed with ``markup=False``."""
    return _UNSAFE.sub(_escape_char, str(text))


def safe(text: object) -> str:
    """``text`` ready for rich markup and table cells: shown as typed, never run.

    Rich markup is escaped (``[/bold]`` prints as such instead of failing;
    ``[link=...]`` makes no hyperlink) and control characters are shown as escapes, so no
    escape sequence of the data reaches the terminal.
    """
    from rich.markup import escape

    return escape(visible(text))


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


EXIT_REJECTED = 1  # the command ran but some input was refused
EXIT_ERROR = 2  # the command could not run (settings, storage, unreadable file)


def run_async(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """A click command written as a coroutine, run in its own event loop."""

    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(func(*args, **kwargs))

    return wrapper


@asynccontextmanager
async def open_store() -> AsyncIterator[Store]:
    """The store, with the data folder checked and the schema brought up to date."""
    settings = current_settings()
    async with Store.open(settings) as store:
        await app.prepare(settings, store)
        yield store


def load_campaign(path: Path) -> Campaign:
    """The campaign file, checked against the configured time zone and templates folder."""
    settings = current_settings()
    return campaigns.load(
        path,
        default_zone=settings.scheduler.timezone,
        templates_dir=settings.paths.templates_dir,
    )


def cli_actor() -> str:
    """Who runs this command, for the audit log and the histories: ``cli:<unix user>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name, no passwd entry (a container)
        return f"cli:uid {os.getuid()}"


def current_settings() -> Settings:
    """The settings the root group built for this invocation."""
    settings = click.get_current_context().find_object(Settings)
    assert settings is not None
    return settings


__all__ = [
    "EXIT_ERROR",
    "EXIT_REJECTED",
    "cli_actor",
    "current_settings",
    "err",
    "load_campaign",
    "open_store",
    "out",
    "run_async",
    "safe",
    "visible",
]
