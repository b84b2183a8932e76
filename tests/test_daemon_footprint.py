"""What a daemon carries: a real `mailer run` on an up-to-date database, with no webhook, no
bounce listener, no IMAP mailbox and no relay webhook, imports none of the libraries only
those need (alembic, httpx, aiosmtpd, aioimaplib, cryptography, icalendar, wsproto): about
30 MiB of its resident memory. Nor, until it composes a message itself, the finishing's
(lxml, inscriptis, css_inline: a render process does that), nor the PostgreSQL dialect on
SQLite, nor the other commands of the command line and rich, which prints their output:
about 13 MiB more. And the schema's revisions, read without alembic, are
alembic's own."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from mailer.storage import Store
from mailer.storage.engine import _alembic_config, current_revision, head_revision
from tests.conftest import make_settings
from tests.test_migration_0007 import _downgrade

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent
NOT_CARRIED = {
    "alembic", "mako", "pygments", "httpx", "httpcore", "aiosmtpd", "aioimaplib", "cryptography",
    "icalendar", "wsproto", "lxml", "inscriptis", "css_inline", "rich",
}  # fmt: skip
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| *([\w.]+)$", re.MULTILINE)


async def test_an_idle_daemon_imports_only_what_it_uses(tmp_path: Path) -> None:
    """`mailer run` with `-X importtime` until it says it started, then SIGTERM: the modules
    it imported, read from its standard error, hold none of NOT_CARRIED."""
    async with Store.open(make_settings(tmp_path)) as store:
        await store.upgrade()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_PATHS__DATA_DIR=str(tmp_path / "data"),
        MAILER_PATHS__TEMPLATES_DIR=str(ROOT / "templates"),
        MAILER_SECRET_KEYS="daemon-key-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU",
        MAILER_WEB__ALLOW_INSECURE_LINKS="true", MAILER_WEB__PORT="0",
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-X", "importtime", "-m", "mailer", "run",
        env=env, cwd=tmp_path, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    said = b""
    async with asyncio.timeout(40):
        while b"mailer started" not in said:
            line = await process.stderr.readline()
            assert line, said.decode(errors="replace")[-3000:]
            said += line
    process.send_signal(signal.SIGTERM)
    _, rest = await process.communicate()
    logs = (said + (rest or b"")).decode(errors="replace")
    assert process.returncode == 0, logs[-3000:]
    assert "mailer stopped cleanly" in logs
    modules = set(IMPORTED.findall(logs))
    imported = {name.split(".")[0] for name in modules}
    assert {"mailer", "sqlalchemy", "uvicorn", "starlette", "aiosmtplib"} <= imported
    assert not NOT_CARRIED & imported
    assert "sqlalchemy.dialects.sqlite" in modules
    assert "sqlalchemy.dialects.postgresql" not in modules
    commands = {m for m in modules if m.startswith("mailer.cli.")}
    assert commands == {"mailer.cli.root", "mailer.cli.support"}


def test_the_head_read_from_the_files_is_alembics() -> None:
    assert head_revision() == ScriptDirectory.from_config(_alembic_config()).get_current_head()


async def test_the_revision_read_from_the_table_is_alembics(store: Store) -> None:
    """At head, after a downgrade, and with no schema at all: the same as MigrationContext."""

    def _alembic(connection: Connection) -> str | None:
        return MigrationContext.configure(connection).get_current_revision()

    async def both() -> tuple[str | None, str | None]:
        async with store.engine.connect() as conn:
            return await current_revision(store.engine), await conn.run_sync(_alembic)

    assert await both() == (head_revision(), head_revision())
    await _downgrade(store, "0005")
    assert await both() == ("0005", "0005")
    await _downgrade(store, "base")
    assert await both() == (None, None)
    assert await store.upgrade() == (None, head_revision())
    assert await store.upgrade() == (head_revision(), head_revision())


def test_a_render_process_of_the_mailer_script_imports_no_command() -> None:
    """A render pool process of a daemon started as `mailer run` runs the `mailer` script
    again as its main module (multiprocessing does so for a script): that costs the import
    of `mailer.cli` and must not bring in the commands (about a second and several MiB for
    each process before its first recipient)."""
    script = (
        "import runpy, sys\n"
        f"runpy.run_path({str(Path(sys.executable).parent / 'mailer')!r}, "
        "run_name='__mp_main__')\n"
        "print(sorted(m for m in sys.modules if m.startswith('mailer')))\n"
    )
    ran = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=30
    )
    assert "'mailer.cli'" in ran.stdout
    assert "mailer.cli.root" not in ran.stdout
    assert "mailer.storage" not in ran.stdout


def test_each_lazy_command_group_is_the_one_its_name_says() -> None:
    """The root imports a command group when it is asked for: each name of GROUPS is its
    command's own, and --help lists them all."""
    import importlib

    from click.testing import CliRunner

    from mailer.cli.root import GROUPS, cli

    for name, (module, attribute) in GROUPS.items():
        command = getattr(importlib.import_module(f"mailer.cli.{module}"), attribute)
        assert command.name == name
    listed = CliRunner().invoke(cli, ["--help"]).output
    assert all(f"  {name} " in listed for name in GROUPS)


ARENAS = """
import ctypes, os, sys, threading
libc = ctypes.CDLL(None)
if sys.argv[1] == "capped":
    from mailer.app import cap_malloc_arenas
    print("capped", cap_malloc_arenas())
kept = []
def work():
    kept.append([bytes(4000 + i) for i in range(200)])  # malloc'd by each thread
threads = [threading.Thread(target=work) for _ in range(6)]
for t in threads: t.start()
for t in threads: t.join()
libc.fopen.restype = ctypes.c_void_p
out = libc.fopen(sys.argv[2].encode(), b"w")
libc.malloc_info(0, ctypes.c_void_p(out))
libc.fclose(ctypes.c_void_p(out))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")
@pytest.mark.parametrize("how", ["default", "capped"])
def test_the_daemon_keeps_one_malloc_arena(tmp_path: Path, how: str) -> None:
    """glibc gives each thread that allocates its own arena (the database's threads, the
    pre-flight's, the render pool's): each keeps what it freed, several MiB of the daemon's
    peak. `mailer run` caps them at one; malloc_info lists the arenas (its <heap>s)."""
    info = tmp_path / "info.xml"
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    ran = subprocess.run(
        [sys.executable, "-c", ARENAS, how, str(info)],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    heaps = len(re.findall(r"<heap nr=", info.read_text()))
    if how == "capped":
        assert "capped True" in ran.stdout
        assert heaps == 1
    else:
        assert heaps > 1  # what the cap is for: without it, the threads have their own
