"""``mailer api-keys``: the REST API's keys (create, list, revoke).

A key is ``mlr_`` and 256 random bits, printed once by ``create`` and never again: only its
SHA-256 is stored (``store.api_keys``), with its first 12 characters to tell keys apart in
``list``. Creation and revocation are in the audit log as ``cli:<unix user>``, never the key.
"""

from __future__ import annotations

import re
from datetime import datetime

import click
from rich.table import Table

from mailer.cli.support import cli_actor, err, open_store, out, run_async, safe, visible
from mailer.clock import utc_now
from mailer.errors import ConfigError
from mailer.models import Scope

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ALL = "all"
VALID = ", ".join(s.value for s in Scope)


@click.group("api-keys")
def api_keys_group() -> None:
    """Keys of the REST API (/api/v1/), sent as `Authorization: Bearer mlr_...`."""


def scopes_of(given: tuple[str, ...]) -> list[Scope]:
    """The scopes named by ``--scopes a,b`` and ``--scope a`` (``all``: every scope)."""
    names = [part.strip() for value in given for part in value.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"--scopes: name at least one scope ({VALID}, or {ALL})")
    found: list[Scope] = []
    for name in names:
        if name == ALL:
            found += list(Scope)
            continue
        try:
            found.append(Scope(name))
        except ValueError:
            raise ConfigError(
                f"--scopes: {visible(name)[:64]!r} is not a scope; valid scopes: {VALID} (or {ALL})"
            ) from None
    return sorted(set(found), key=list(Scope).index)


@api_keys_group.command("create")
@click.option("--name", required=True, help="What the key is for (unique): crm, website...")
@click.option(
    "--scopes",
    "--scope",
    "scopes",
    multiple=True,
    help=f"Comma-separated, or repeated: {VALID}; or {ALL}.",
)
@run_async
async def api_keys_create(name: str, scopes: tuple[str, ...]) -> None:
    """Create a key and print it once (it is not stored and cannot be shown again)."""
    if not NAME.match(name):
        raise ConfigError(
            "--name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    wanted = scopes_of(scopes)
    async with open_store() as store:
        key, raw = await store.api_keys.create(
            name=name, scopes=wanted, actor=cli_actor(), now=utc_now()
        )
    out.print(raw, markup=False, highlight=False)
    err.print(
        visible(
            f"API key {key.name!r} created with {', '.join(s.value for s in wanted)}. "
            "Copy it now: it is not stored and will not be shown again."
        ),
        markup=False,
    )


@api_keys_group.command("list")
@run_async
async def api_keys_list() -> None:
    """Every key: name, prefix, scopes, created, last used, revoked (local times); never
    the key itself."""
    async with open_store() as store:
        keys = await store.api_keys.all()
    if not keys:
        out.print(
            "no API keys yet; create one with `mailer api-keys create --name NAME --scopes ...`"
        )
        return
    table = Table("name", "prefix", "scopes", "created", "by", "last used", "revoked", box=None)
    for key in keys:
        table.add_row(
            safe(key.name), safe(key.prefix + "..."),
            safe(" ".join(sorted(s.value for s in key.scopes))),
            _local(key.created_at), safe(key.created_by), _local(key.last_used_at),
            _local(key.revoked_at),
        )  # fmt: skip
    out.print(table)


def _local(at: datetime | None) -> str:
    return "-" if at is None else f"{at.astimezone():%Y-%m-%d %H:%M %Z}"


@api_keys_group.command("revoke")
@click.argument("name")
@run_async
async def api_keys_revoke(name: str) -> None:
    """Revoke a key: its next request gets a 401."""
    async with open_store() as store:
        key = await store.api_keys.revoke(name, actor=cli_actor(), now=utc_now())
    out.print(visible(f"API key {key.name!r} revoked"), markup=False)
