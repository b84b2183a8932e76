"""`mailer users` through the real command line (in-process, `run_cli` with click's runner
isolating the streams), on SQLite and PostgreSQL: accounts added with a password from stdin or
typed twice, the password rule's refusals, duplicates, role and status changes ending the
user's sessions, TOTP, and the audit log's lines (never a secret)."""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from click.testing import CliRunner

from mailer.accounts import needs_rehash, verify_password, verify_totp
from mailer.cli import run_cli
from mailer.models import AuditEntry, Role, StaffUser
from mailer.storage import Store

pytestmark = pytest.mark.timeout(60)

GOOD = "correct horse battery staple"
OTHER = "violet trombone in the attic"
IDLE, MAX = timedelta(hours=8), timedelta(days=7)


@dataclass
class Ran:
    code: int
    out: str
    err: str


Mailer = Callable[..., Awaitable[Ran]]


@pytest.fixture
def mailer(tmp_path: Path, database_url: str) -> Mailer:
    """Run `mailer ARGS...` in this process on the test's database; returns a coroutine
    function (the command runs in a thread: it has an event loop of its own)."""
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env: dict[str, str | None] = {
        "MAILER_DATABASE__URL": database_url,
        "MAILER_PATHS__DATA_DIR": str(tmp_path / "data"),
        "MAILER_LOG__LEVEL": "WARNING",
    }

    def run(args: tuple[str, ...], stdin: str | None) -> Ran:
        cleared = {k: None for k in os.environ if k.startswith("MAILER_") and k not in env}
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            with CliRunner().isolation(input=stdin, env={**cleared, **env}) as (out, err, _):
                code = run_cli(["--env-file", str(env_file), *args])
                return Ran(code, out.getvalue().decode(), err.getvalue().decode())
        finally:  # the CLI points the root logger at its (now closed) stderr
            root.handlers[:], root.level = handlers, level

    async def invoke(*args: str, stdin: str | None = None) -> Ran:
        return await asyncio.to_thread(run, args, stdin)

    return invoke


async def user(store: Store, email: str) -> StaffUser:
    found = await store.staff.get(email)
    assert found is not None
    return found


async def audit(store: Store) -> list[AuditEntry]:
    return list(reversed(await store.audit.page()))


async def open_session(store: Store, account: StaffUser, n: int = 1) -> str:
    id_hash = hashlib.sha256(f"cookie-{account.id}-{n}".encode()).hexdigest()
    await store.staff.open_session(
        account.id, id_hash=id_hash, csrf="c", client="::1", now=datetime.now(UTC)
    )
    return id_hash


async def live(store: Store, id_hash: str) -> bool:
    found = await store.staff.session(id_hash, now=datetime.now(UTC), idle=IDLE, absolute=MAX)
    return found is not None


def actor() -> str:
    return f"cli:{getpass.getuser()}"


async def test_add_with_password_stdin_stores_an_argon2id_hash(
    store: Store, mailer: Mailer
) -> None:
    """`users add --password-stdin` normalises the address, keeps the name and role, stores
    a verifiable argon2id hash, and writes user.add to the audit log without the password."""
    ran = await mailer(
        "users", "add", " Ada.Lovelace@EXAMPLE.org ", "--role", "admin", "--name", "Ada L.",
        "--password-stdin", stdin=GOOD + "\n",
    )  # fmt: skip
    assert ran.code == 0, ran.err
    assert "ada.lovelace@example.org: staff user added, role admin, a password" in ran.out
    account = await user(store, "ada.lovelace@example.org")
    assert (account.name, account.role, account.disabled) == ("Ada L.", Role.ADMIN, False)
    assert account.password_hash is not None
    assert account.password_hash.startswith("$argon2id$")
    assert verify_password(account.password_hash, GOOD)
    assert not needs_rehash(account.password_hash)
    [entry] = await audit(store)
    assert (entry.actor, entry.action, entry.target, entry.client) == (
        actor(), "user.add", "ada.lovelace@example.org", None,
    )  # fmt: skip
    assert entry.details == {"role": "admin", "password": True}
    assert GOOD not in ran.out + ran.err + repr(entry)


async def test_add_prompts_twice_and_refuses_a_mismatch(store: Store, mailer: Mailer) -> None:
    """Without --password-stdin the password is typed twice, hidden; two different ones
    change nothing."""
    ran = await mailer(
        "users", "add", "bo@example.org", "--role", "viewer", stdin=f"{GOOD}\n{GOOD}\n"
    )
    assert ran.code == 0, ran.err
    assert "Password: \nPassword again: \n" in ran.out  # hidden: nothing echoed
    assert GOOD not in ran.out
    account = await user(store, "bo@example.org")
    assert verify_password(account.password_hash, GOOD)

    ran = await mailer(
        "users", "add", "cy@example.org", "--role", "viewer", stdin=f"{GOOD}\n{OTHER}\n"
    )
    assert ran.code == 2
    assert "error: the two passwords typed differ; nothing was changed" in ran.err
    assert await store.staff.get("cy@example.org") is None
    assert GOOD not in ran.out + ran.err
    assert OTHER not in ran.out + ran.err


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("too short", "at least 12 characters (this one has 9)"),
        ("dora-the-explorer-77", "must not contain the address"),
        ("Marquez-Marquez!", "must not contain the name"),
        ("Password1234!", "one of those tried first"),
    ],
)
async def test_a_weak_password_is_refused_with_the_reason(
    store: Store, mailer: Mailer, password: str, says: str
) -> None:
    """The password rule's refusal is one line saying which rule; nothing is stored."""
    ran = await mailer(
        "users", "add", "dora@example.org", "--role", "editor", "--name", "Dora Márquez",
        "--password-stdin", stdin=password + "\n",
    )  # fmt: skip
    assert ran.code == 2
    assert says in ran.err
    assert ran.err.count("\n") == 1
    assert "Traceback" not in ran.err
    assert password not in ran.err
    assert await store.staff.all() == []
    assert await audit(store) == []


async def test_a_second_account_for_an_address_is_refused(store: Store, mailer: Mailer) -> None:
    """Adding an address that has an account (in any case) says so before asking for a
    password, and leaves the account as it was."""
    first = await mailer(
        "users", "add", "eve@example.org", "--role", "sender", "--password-stdin", stdin=GOOD
    )
    assert first.code == 0, first.err
    ran = await mailer("users", "add", "EVE@example.org", "--role", "admin", stdin="")
    assert ran.code == 2
    assert "error: eve@example.org is already a staff user (sender)" in ran.err
    assert "Password" not in ran.out
    assert (await user(store, "eve@example.org")).role == Role.SENDER
    assert [e.action for e in await audit(store)] == ["user.add"]


async def test_bad_options_are_one_line(store: Store, mailer: Mailer) -> None:
    """A bad address, a control character in the name, an unknown role, an empty stdin."""
    cases = [
        (("users", "add", "not-an-address", "--role", "admin"), "error: EMAIL not-an-address: "),
        (("users", "add", "f@example.org", "--role", "admin", "--name", "F\x1b[2J"), "--name: "),
        (("users", "add", "f@example.org", "--role", "boss"), "'boss' is not one of 'viewer'"),
        (("users", "add", "f@example.org", "--role", "admin", "--password-stdin"), "no password"),
    ]
    for args, says in cases:
        ran = await mailer(*args, stdin="")
        assert ran.code == 2, (args, ran.err)
        assert says in ran.err, ran.err
        assert "Traceback" not in ran.err
    assert await store.staff.all() == []


async def test_unknown_users_are_named_with_where_to_look(store: Store, mailer: Mailer) -> None:
    """Every command on an address without an account says so, exit status 2."""
    for args in (
        ("set-role", "ghost@example.org", "admin"),
        ("disable", "ghost@example.org"),
        ("enable", "ghost@example.org"),
        ("reset-password", "ghost@example.org", "--password-stdin"),
        ("totp", "ghost@example.org"),
    ):
        ran = await mailer("users", *args, stdin=GOOD)
        assert ran.code == 2
        assert ran.err == "error: no staff user ghost@example.org (see `mailer users list`)\n"
    assert await audit(store) == []


async def test_set_role_and_disable_end_the_users_sessions(store: Store, mailer: Mailer) -> None:
    """A role change and disabling each end the user's open sessions (and only theirs);
    enabling lets them sign in again; each change is audited; a no-op is not."""
    for email in ("gus@example.org", "hal@example.org"):
        ran = await mailer(
            "users", "add", email, "--role", "viewer", "--password-stdin", stdin=GOOD
        )
        assert ran.code == 0, ran.err
    gus, hal = await user(store, "gus@example.org"), await user(store, "hal@example.org")
    session, bystander = await open_session(store, gus), await open_session(store, hal)

    ran = await mailer("users", "set-role", "Gus@Example.org", "sender")
    assert ran.code == 0, ran.err
    assert "gus@example.org: role sender (was viewer); their sessions ended" in ran.out
    assert (await user(store, "gus@example.org")).role == Role.SENDER
    assert not await live(store, session)
    assert await live(store, bystander)

    ran = await mailer("users", "set-role", "gus@example.org", "sender")
    assert "already sender; nothing changed" in ran.out

    session = await open_session(store, gus, 2)
    ran = await mailer("users", "disable", "gus@example.org")
    assert ran.code == 0, ran.err
    assert "gus@example.org: disabled; their sessions ended" in ran.out
    assert (await user(store, "gus@example.org")).disabled
    assert not await live(store, session)
    assert "already disabled" in (await mailer("users", "disable", "gus@example.org")).out

    ran = await mailer("users", "enable", "gus@example.org")
    assert ran.code == 0, ran.err
    assert not (await user(store, "gus@example.org")).disabled
    assert await live(store, await open_session(store, gus, 3))

    entries = [(e.action, e.target, e.details) for e in await audit(store)]
    assert entries[2:] == [
        ("user.role", "gus@example.org", {"was": "viewer", "role": "sender"}),
        ("user.disable", "gus@example.org", {}),
        ("user.enable", "gus@example.org", {}),
    ]
    assert await live(store, bystander)


async def test_reset_password_replaces_the_hash_and_ends_sessions(
    store: Store, mailer: Mailer
) -> None:
    """reset-password checks the rule against the stored name and address, stores a new
    hash (the old password stops working) and ends the sessions; the audit line holds no
    password or hash."""
    ran = await mailer(
        "users", "add", "ida@example.org", "--role", "admin", "--name", "Ida Bauer",
        "--password-stdin", stdin=GOOD,
    )  # fmt: skip
    assert ran.code == 0, ran.err
    session = await open_session(store, await user(store, "ida@example.org"))
    refused = await mailer(
        "users", "reset-password", "ida@example.org", "--password-stdin", stdin="bauer-and-sons-1"
    )
    assert refused.code == 2
    assert "must not contain the name" in refused.err
    assert await live(store, session)

    ran = await mailer("users", "reset-password", "ida@example.org", stdin=f"{OTHER}\n{OTHER}\n")
    assert ran.code == 0, ran.err
    assert "ida@example.org: new password set; their sessions ended" in ran.out
    account = await user(store, "ida@example.org")
    assert verify_password(account.password_hash, OTHER)
    assert not verify_password(account.password_hash, GOOD)
    assert not await live(store, session)
    last = (await audit(store))[-1]
    assert (last.action, last.target, last.details) == ("user.password", "ida@example.org", {})


async def test_totp_prints_the_secret_once_and_off_removes_it(store: Store, mailer: Mailer) -> None:
    """`users totp` stores a new secret, prints it with its otpauth:// URI, ends sessions;
    `--off` removes it. The audit log says on or off, never the secret."""
    ran = await mailer(
        "users", "add", "jo@example.org", "--role", "editor", "--password-stdin", stdin=GOOD
    )
    assert ran.code == 0, ran.err
    session = await open_session(store, await user(store, "jo@example.org"))
    ran = await mailer("users", "totp", "jo@example.org")
    assert ran.code == 0, ran.err
    secret = re.search(r"^secret: ([A-Z2-7]{32})$", ran.out, re.MULTILINE)
    uri = re.search(r"^URI: +(otpauth://\S+)$", ran.out, re.MULTILINE)
    assert secret is not None, ran.out
    assert uri is not None, ran.out
    assert (await user(store, "jo@example.org")).totp_secret == secret[1]
    assert pyotp.parse_uri(uri[1]).secret == secret[1]
    now = datetime.now(UTC)
    assert verify_totp(secret[1], pyotp.TOTP(secret[1]).at(now), now=now)
    assert not await live(store, session)

    listed = await mailer("users", "list")
    assert re.search(r"jo@example\.org +editor +active +on +set", listed.out), listed.out
    assert secret[1] not in listed.out

    ran = await mailer("users", "totp", "jo@example.org", "--off")
    assert ran.code == 0, ran.err
    assert "jo@example.org: TOTP removed; their sessions ended" in ran.out
    assert (await user(store, "jo@example.org")).totp_secret is None
    assert (
        "had no TOTP; nothing changed"
        in (await mailer("users", "totp", "jo@example.org", "--off")).out
    )

    entries = [e for e in await audit(store) if e.action == "user.totp"]
    assert [e.details for e in entries] == [
        {"on": True, "replaced": False},
        {"on": False, "replaced": True},
    ]
    assert all(secret[1] not in repr(e) for e in await audit(store))


async def test_list_shows_every_account_in_local_time(store: Store, mailer: Mailer) -> None:
    """`users list`: one row per account in address order with role, status, TOTP, password
    and creation in the local zone, names shown as typed; an empty list says how to start."""
    empty = await mailer("users", "list")
    assert empty.code == 0
    assert "no staff users yet; add one with `mailer users add EMAIL --role admin`" in empty.out
    ran = await mailer("users", "add", "zed@example.org", "--role", "sender", "--no-password")
    assert ran.code == 0, ran.err
    assert "zed@example.org: staff user added, role sender, no password (trusted header" in ran.out
    assert (await user(store, "zed@example.org")).password_hash is None
    ran = await mailer(
        "users", "add", "amy@example.org", "--role", "viewer", "--name", "Ünïcode [b]name[/b]",
        "--password-stdin", stdin=GOOD,
    )  # fmt: skip
    assert ran.code == 0, ran.err
    listed = await mailer("users", "list")
    lines = [line.split() for line in listed.out.splitlines() if "@example.org" in line]
    assert [cells[0] for cells in lines] == ["amy@example.org", "zed@example.org"]
    assert lines[0][1:3] == ["Ünïcode", "[b]name[/b]"]
    assert lines[0][-7:-3] == ["viewer", "active", "off", "set"]
    assert lines[1][-7:-3] == ["sender", "active", "off", "none"]
    created = (await user(store, "amy@example.org")).created_at.astimezone()
    assert lines[0][-3:] == f"{created:%Y-%m-%d %H:%M %Z}".split()
