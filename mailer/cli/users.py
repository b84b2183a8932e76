"""The ``mailer users`` commands: the staff console's accounts (add, list, set-role, disable,
enable, reset-password, totp).

The password rule, the hashes and TOTP secrets are :mod:`mailer.accounts`'; the rows and the
ending of sessions are ``store.staff``'s. Each change is written to the audit log as
``cli:<unix user>``; no password, hash or TOTP secret ever goes there, nor into a message,
except the new TOTP secret, shown once to whoever sets it.
"""

from __future__ import annotations

import sys

import click
from rich.table import Table

from mailer.accounts import check_password, hash_password, new_totp_secret, totp_uri
from mailer.addresses import check_name, normalize
from mailer.cli.support import cli_actor, open_store, out, run_async, safe, visible
from mailer.clock import utc_now
from mailer.errors import AddressError, ConfigError, NotFoundError, StateError
from mailer.models import ROLES, Role, StaffUser
from mailer.storage import Store

ROLE_CHOICE = click.Choice([r.value for r in ROLES])
STDIN_HELP = "Read the password from the first line of standard input (scripts)."


@click.group("users")
def users_group() -> None:
    """Staff accounts of the web console (/admin/)."""


@users_group.command("add")
@click.argument("email")
@click.option("--role", type=ROLE_CHOICE, required=True, help="viewer < editor < sender < admin.")
@click.option("--name", default=None, help="The name the console shows.")
@click.option("--password-stdin", is_flag=True, help=STDIN_HELP)
@click.option(
    "--no-password",
    is_flag=True,
    help="No password: the account signs in only through MAILER_CONSOLE__TRUSTED_HEADER.",
)
@run_async
async def users_add(
    email: str, role: str, name: str | None, password_stdin: bool, no_password: bool
) -> None:
    """Add a staff account (asks for its password twice, unless --password-stdin)."""
    if password_stdin and no_password:
        raise ConfigError("--password-stdin and --no-password: choose one")
    address = _address(email)
    if name is not None:
        name = _name(name)
    async with open_store() as store:
        if (existing := await store.staff.get(address)) is not None:
            raise StateError(
                f"{existing.email} is already a staff user ({existing.role}); "
                "`mailer users set-role`, `reset-password`, `disable` or `enable` change it"
            )
        password_hash = None
        if not no_password:
            password = _new_password(password_stdin)
            check_password(password, email=address, name=name)
            password_hash = hash_password(password)
        user = await store.staff.add(
            address, name=name, role=Role(role), password_hash=password_hash, now=utc_now()
        )
        await _audit(store, "user.add", user, role=user.role.value, password=not no_password)
    how = "a password" if password_hash else "no password (trusted header only)"
    out.print(visible(f"{user.email}: staff user added, role {user.role}, {how}"), markup=False)


@users_group.command("list")
@run_async
async def users_list() -> None:
    """Every staff account: role, status, TOTP, when it was created (local time)."""
    async with open_store() as store:
        everyone = await store.staff.all()
    if not everyone:
        out.print("no staff users yet; add one with `mailer users add EMAIL --role admin`")
        return
    table = Table("email", "name", "role", "status", "TOTP", "password", "created", box=None)
    for user in everyone:
        table.add_row(
            safe(user.email), safe(user.name or ""), user.role.value,
            "disabled" if user.disabled else "active", "on" if user.totp_secret else "off",
            "set" if user.password_hash else "none",
            f"{user.created_at.astimezone():%Y-%m-%d %H:%M %Z}",
        )  # fmt: skip
    out.print(table)


@users_group.command("set-role")
@click.argument("email")
@click.argument("role", type=ROLE_CHOICE)
@run_async
async def users_set_role(email: str, role: str) -> None:
    """Change a staff user's role; their sessions end."""
    async with open_store() as store:
        before = await _user(store, email)
        if before.role == role:
            out.print(visible(f"{before.email}: already {role}; nothing changed"), markup=False)
            return
        user = await store.staff.set_role(before.email, Role(role), now=utc_now())
        await _audit(store, "user.role", user, was=before.role.value, role=user.role.value)
    out.print(
        visible(f"{user.email}: role {user.role} (was {before.role}); their sessions ended"),
        markup=False,
    )


@users_group.command("disable")
@click.argument("email")
@run_async
async def users_disable(email: str) -> None:
    """Refuse a staff user's sign-ins and end their sessions (`enable` lets them back)."""
    await _set_disabled(email, True)


@users_group.command("enable")
@click.argument("email")
@run_async
async def users_enable(email: str) -> None:
    """Let a disabled staff user sign in again."""
    await _set_disabled(email, False)


async def _set_disabled(email: str, disabled: bool) -> None:
    word = "disabled" if disabled else "enabled"
    async with open_store() as store:
        before = await _user(store, email)
        if before.disabled == disabled:
            out.print(visible(f"{before.email}: already {word}; nothing changed"), markup=False)
            return
        user = await store.staff.set_disabled(before.email, disabled, now=utc_now())
        await _audit(store, "user.disable" if disabled else "user.enable", user)
    ended = "; their sessions ended" if disabled else ""
    out.print(visible(f"{user.email}: {word}{ended}"), markup=False)


@users_group.command("reset-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help=STDIN_HELP)
@run_async
async def users_reset_password(email: str, password_stdin: bool) -> None:
    """Give a staff user a new password (asked twice); their sessions end."""
    async with open_store() as store:
        before = await _user(store, email)
        password = _new_password(password_stdin)
        check_password(password, email=before.email, name=before.name)
        user = await store.staff.set_password(before.email, hash_password(password), now=utc_now())
        await _audit(store, "user.password", user)
    out.print(visible(f"{user.email}: new password set; their sessions ended"), markup=False)


@users_group.command("totp")
@click.argument("email")
@click.option("--off", is_flag=True, help="Remove the TOTP secret: the password alone signs in.")
@run_async
async def users_totp(email: str, off: bool) -> None:
    """Give a staff user a new TOTP secret (printed once, for their authenticator app), or
    remove it with --off; their sessions end either way."""
    async with open_store() as store:
        before = await _user(store, email)
        if off and before.totp_secret is None:
            out.print(visible(f"{before.email}: had no TOTP; nothing changed"), markup=False)
            return
        secret = None if off else new_totp_secret()
        user = await store.staff.set_totp(before.email, secret, now=utc_now())
        await _audit(
            store, "user.totp", user, on=secret is not None, replaced=bool(before.totp_secret)
        )
    if secret is None:
        out.print(visible(f"{user.email}: TOTP removed; their sessions ended"), markup=False)
        return
    for line in (
        f"{user.email}: new TOTP secret (shown once; any earlier one no longer works, and "
        "their sessions ended)",
        f"secret: {secret}",
        f"URI:    {totp_uri(secret, email=user.email)}",
    ):
        out.print(visible(line), markup=False)


def _address(email: str) -> str:
    try:
        return normalize(email).email
    except AddressError as exc:
        raise AddressError(f"EMAIL {email}: {exc}") from None


def _name(name: str) -> str | None:
    try:
        return check_name(name.strip(), what="name").strip() or None
    except AddressError as exc:
        raise AddressError(f"--name: {exc}") from None


async def _user(store: Store, email: str) -> StaffUser:
    """The stored account of ``email``, or NotFoundError saying where to look."""
    try:
        key = normalize(email).email
    except AddressError:
        key = email
    user = await store.staff.get(key)
    if user is None:
        raise NotFoundError(f"no staff user {email.strip()} (see `mailer users list`)")
    return user


def _new_password(from_stdin: bool) -> str:
    """The new password: the first line of standard input, or typed twice, hidden."""
    if from_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise ConfigError("--password-stdin: standard input holds no password (one line)")
        return password
    password = str(click.prompt("Password", hide_input=True))
    again = str(click.prompt("Password again", hide_input=True))
    if again != password:
        raise ConfigError("the two passwords typed differ; nothing was changed")
    return password


async def _audit(store: Store, action: str, user: StaffUser, **details: str | bool) -> None:
    await store.audit.record(
        actor=cli_actor(), action=action, target=user.email, details=details, client=None,
        now=utc_now(),
    )  # fmt: skip


__all__ = ["users_group"]
