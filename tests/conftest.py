"""Shared fixtures: settings in a temporary folder, and a real database of each backend.

The PostgreSQL server is real: the session runs ``initdb`` and ``pg_ctl`` in a temporary
folder (as the unprivileged ``postgres``/``nobody`` user when the tests run as root, since
PostgreSQL refuses root) and gives each test its own database. Without PostgreSQL binaries
the PostgreSQL variants are skipped with the reason, except under CI, where that fails.

A test that asks for ``store`` gets its database already at the head revision, copied from a
template migrated once per session (``CREATE DATABASE ... TEMPLATE`` on PostgreSQL, a file
copy on SQLite): the migrations run once instead of once per test. A test that asks only for
``database_url`` (the migration tests, the commands that create their database) gets an empty
one.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, settings

from mailer.settings import Settings
from mailer.storage import Store

pytest_plugins = ["tests.smtpd"]

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _pg_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3])
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="mailer-pg-"))
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            user = "postgres"
            try:
                pwd.getpwnam(user)
            except KeyError:
                user = "nobody"
            shutil.chown(self.base, user=user)
            self.prefix = ["runuser", "-u", user, "--"]
        self._counter = itertools.count()
        self._template: str | None = None

    def _run(self, *args: str) -> None:
        subprocess.run([*self.prefix, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        data = self.base / "data"
        self._run(
            str(self.bindir / "initdb"), "-D", str(data), "-U", "mailer", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(data), "-o", options,
            "-l", str(self.base / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self) -> None:
        try:
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.base / "data"),
                "-m",
                "immediate",
                "stop",
            )
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    async def create_database(self, *, migrated: bool = False) -> str:
        """A new database: empty, or (``migrated``) a copy of the session's one at head."""
        template = await self._migrated() if migrated else None
        name = f"test_{os.getpid()}_{next(self._counter)}"
        conn = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="mailer", database="postgres"
        )
        try:
            copy = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
            await conn.execute(f'CREATE DATABASE "{name}"{copy}')
        finally:
            await conn.close()
        return f"postgresql+asyncpg://mailer@127.0.0.1:{self.port}/{name}"

    async def _migrated(self) -> str:
        """The session's database at the head revision (made once, then only copied)."""
        if self._template is None:
            url = await self.create_database()
            await _upgrade(url)
            self._template = url.rsplit("/", 1)[1]
        return self._template


async def _upgrade(url: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        async with Store.open(make_settings(Path(scratch), database={"url": url})) as store:
            await store.upgrade()


_SQLITE_TEMPLATE: list[Path] = []  # the session's SQLite file at head, made at first need


async def _sqlite_template() -> Path:
    if not _SQLITE_TEMPLATE:
        folder = Path(tempfile.mkdtemp(prefix="mailer-sqlite-template-"))
        path = folder / "template.sqlite3"
        await _upgrade(f"sqlite+aiosqlite:///{path}")  # closed: its WAL checkpointed, gone
        _SQLITE_TEMPLATE.append(path)
    return _SQLITE_TEMPLATE[0]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    bindir = _pg_bindir()
    if bindir is None:
        reason = "no PostgreSQL binaries (initdb) on this machine: apt-get install postgresql-15"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have them (.ci/run installs them)")
        pytest.skip(reason)
    server = PostgresServer(bindir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    """Settings rooted in ``tmp_path``; independent of the process environment."""
    values: dict[str, Any] = {
        "paths": {
            "data_dir": tmp_path / "data",
            "lists_dir": tmp_path / "lists",
            "templates_dir": tmp_path / "templates",
        },
    }
    for name, section in sections.items():
        values[name] = {**values.get(name, {}), **section} if isinstance(section, dict) else section
    return Settings.model_validate(values)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of this test's own database: already at head when the test uses ``store``."""
    migrated = "store" in request.fixturenames
    if backend == "sqlite":
        path = tmp_path / "data" / "mailer.sqlite3"
        if migrated:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(await _sqlite_template(), path)
        return f"sqlite+aiosqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return await server.create_database(migrated=migrated)


@pytest.fixture
def app_settings(tmp_path: Path, database_url: str) -> Settings:
    (tmp_path / "lists").mkdir(exist_ok=True)
    return make_settings(tmp_path, database={"url": database_url})


@pytest.fixture
async def store(app_settings: Settings) -> AsyncIterator[Store]:
    """A Store on an upgraded, empty database of the current backend."""
    async with Store.open(app_settings) as opened:
        await opened.upgrade()
        yield opened


@pytest.fixture
async def console(store: Store, tmp_path: Path, database_url: str) -> AsyncIterator[Any]:
    """The staff console on the current backend (``tests.console_support.Console``)."""
    from tests.console_support import open_console

    async for found in open_console(store, tmp_path, database_url):
        yield found
