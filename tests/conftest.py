"""Shared fixtures: settings in a temporary folder, and a real database of each backend.

The PostgreSQL server is real: the session runs ``initdb`` and ``pg_ctl`` in a temporary
folder (as the unprivileged ``postgres``/``nobody`` user when the tests run as root, since
PostgreSQL refuses root) and gives each test its own database. Without PostgreSQL binaries
the PostgreSQL variants are skipped with the reason, except under CI, where that fails.
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

    async def create_database(self) -> str:
        name = f"test_{os.getpid()}_{next(self._counter)}"
        conn = await asyncpg.connect(
            host="127.0.0.1", port=self.port, user="mailer", database="postgres"
        )
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return f"postgresql+asyncpg://mailer@127.0.0.1:{self.port}/{name}"


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
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'mailer.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return await server.create_database()


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
