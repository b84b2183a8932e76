"""What every command module shares: consoles, the async wrapper, settings and the store."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click
from rich.console import Console

from mailer import app
from mailer.settings import Settings
from mailer.storage import Store

P = ParamSpec("P")
T = TypeVar("T")

# Rich falls back to 80 columns when stdout is a pipe; tables of addresses need more.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_REJECTED = 1  # the command ran but some input was refused
EXIT_ERROR = 2  # the command could not run (settings, storage, unreadable file)


def _now() -> datetime:
    return datetime.now(UTC)


def _async(func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    @wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return asyncio.run(func(*args, **kwargs))

    return wrapper


@asynccontextmanager
async def _store() -> AsyncIterator[Store]:
    """The store, with the data folder checked and the schema brought up to date."""
    settings = _settings()
    async with Store.open(settings) as store:
        await app.prepare(settings, store)
        yield store


def _settings() -> Settings:
    settings = click.get_current_context().find_object(Settings)
    assert settings is not None
    return settings
