"""Opening the database: engine, SQLite pragmas, reachability, data folder, migrations, and
what the database can do (:class:`Capabilities`).

The only module of mailer that names a dialect: everything else branches on a capability
(``db.capabilities.shares_leases``...), read once from the dialect by :func:`capabilities`,
or uses a condition each dialect writes its own way (:func:`starts_with`, a prefix an index
reads).
Nothing above ``storage`` sees a SQLAlchemy or driver exception: they become
:class:`~mailer.errors.StorageUnavailable` or :class:`~mailer.errors.StorageError` here
and in ``database``. Writes no table.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Dialect,
    Integer,
    Table,
    and_,
    event,
    func,
    inspect,
    literal,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import Grouping

from mailer.errors import ConfigError, SendingLocked, StorageUnavailable
from mailer.settings import Settings, mask_url

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# Row ids: BigInteger on PostgreSQL, INTEGER (the rowid alias) on SQLite.
ROW_ID = BigInteger().with_variant(Integer(), SQLITE)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the database can do, named once; storage branches on these, never on a name."""

    # Several daemons may send from this database at once, sharing a send's deliveries by
    # leases (PostgreSQL). Without: one sending process per database (``sending_lock``).
    shares_leases: bool
    # ``SELECT ... FOR UPDATE SKIP LOCKED``: take the rows no other transaction holds.
    skip_locked: bool
    # Session advisory locks: one daemon of a cluster does a periodic job.
    advisory_locks: bool
    # One writer at a time for the whole database (SQLite): this process queues its writers.
    one_writer: bool
    # The database is a file this process opens; a second sender must be refused.
    file_lock: bool
    # Times are stored as naive UTC text (SQLite has no time zones).
    naive_datetimes: bool
    # ``SET LOCAL plan_cache_mode``: prepared statements may be planned for their values.
    plan_cache_mode: bool
    # No ``ALTER COLUMN``/constraint changes in place: migrations rebuild tables in batches.
    alter_in_batches: bool
    # An INSERT that knows ``ON CONFLICT DO NOTHING`` (each dialect has its own).
    insert: Callable[[Table], Any]
    # ``COPY ... FROM STDIN``: many new rows in one stream (``storage.bulk``).
    copy: bool = False


def _postgresql_insert(table: Table) -> Any:
    """PostgreSQL's INSERT, its dialect imported on first use: a daemon on SQLite never
    loads it (about 2 MiB)."""
    from sqlalchemy.dialects import postgresql

    return postgresql.insert(table)


_SQLITE = Capabilities(
    shares_leases=False, skip_locked=False, advisory_locks=False, one_writer=True,
    file_lock=True, naive_datetimes=True, plan_cache_mode=False, alter_in_batches=True,
    insert=sqlite.insert,
)  # fmt: skip
_POSTGRESQL = Capabilities(
    shares_leases=True, skip_locked=True, advisory_locks=True, one_writer=False,
    file_lock=False, naive_datetimes=False, plan_cache_mode=True, alter_in_batches=False,
    insert=_postgresql_insert, copy=True,
)  # fmt: skip


def capabilities(dialect: Dialect) -> Capabilities:
    """The capabilities of a dialect (read once per dialect name, then remembered)."""
    return _capabilities_of(dialect.name)


# Another dialect (a statement compiled for display, say): none of the features.
_OTHER = Capabilities(
    shares_leases=False, skip_locked=False, advisory_locks=False, one_writer=False,
    file_lock=False, naive_datetimes=False, plan_cache_mode=False, alter_in_batches=False,
    insert=sqlite.insert,
)  # fmt: skip


@functools.cache
def _capabilities_of(name: str) -> Capabilities:
    return {SQLITE: _SQLITE, POSTGRESQL: _POSTGRESQL}.get(name, _OTHER)


def ensure_data_dir(path: Path) -> Path:
    """Create the data folder if needed and prove it is writable."""
    where = f"data folder {path} (MAILER_PATHS__DATA_DIR)"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StorageUnavailable(
            f"{where} is not writable ({exc.strerror or exc}); create it or choose another folder"
        ) from None
    return path


@contextlib.contextmanager
def sending_lock(engine: AsyncEngine) -> Iterator[None]:
    """On SQLite, one sending process per database file; a second one is refused.

    SQLite has no ``SKIP LOCKED``: two processes sending from one file would send the same
    deliveries. The lock is ``flock`` on ``<database>.lock`` (released by the kernel when the
    process dies, even by kill -9), holding the owner's pid for the message. PostgreSQL needs
    no lock: there, daemons share the work through leases.
    """
    database = engine.url.database
    if not capabilities(engine.dialect).file_lock or not database or database == ":memory:":
        yield
        return
    path = Path(f"{database}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise SendingLocked(
                f"another mailer process (pid {holder}) is sending from {database}; one "
                "SQLite database takes one daemon (or `mailer send run`) at a time: stop it "
                "first, or use PostgreSQL (MAILER_DATABASE__URL) to run several"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def create_engine(settings: Settings) -> AsyncEngine:
    """The async engine for the configured URL (SQLite under the data folder by default)."""
    url_text = settings.database_url
    try:
        url = make_url(url_text)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigError(
            f"MAILER_DATABASE__URL: expected an SQLAlchemy URL such as "
            f"postgresql+asyncpg://user:password@host/db, got {mask_url(url_text)!r}"
        ) from None
    backend = url.get_backend_name()
    if backend == SQLITE:
        if url.drivername != "sqlite+aiosqlite":
            url = url.set(drivername="sqlite+aiosqlite")
        if settings.database.url is None:
            ensure_data_dir(settings.paths.data_dir)  # named as the user configured it
        elif url.database and url.database != ":memory:":
            ensure_data_dir(Path(url.database).parent)
        # A connection per send running at once (and a few for the scheduler and the web),
        # so that none is closed and reopened (a thread and four pragmas) after each use.
        engine = create_async_engine(
            url,
            connect_args={"timeout": 30},
            pool_size=settings.scheduler.concurrent_sends + 4,
            max_overflow=10,
        )
        _sqlite_pragmas(engine, settings.database.busy_timeout_ms)
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            _watch_file(engine, Path(url.database))
        return engine
    if backend == POSTGRESQL:
        if url.drivername != "postgresql+asyncpg":
            url = url.set(drivername="postgresql+asyncpg")
        return create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    raise ConfigError(f"MAILER_DATABASE__URL: expected a sqlite or postgresql URL, got {backend!r}")


class DatabaseVanished(OSError):
    """The SQLite file this process opened is no longer the file at its path."""


def _watch_file(engine: AsyncEngine, path: Path) -> None:
    """Refuse every transaction once the SQLite file at ``path`` is deleted or replaced.

    An open connection keeps writing into a deleted (unlinked) file, so without this check a
    daemon whose database was removed or restored under it answered 200 to unsubscribes that
    never reached the disk. The identity (device, inode) is taken at the first connection
    and compared at every checkout: one ``stat``, a few microseconds.
    """
    seen: list[tuple[int, int]] = []

    def identity() -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check() -> None:
        now = identity()
        if not seen:
            if now is not None:
                seen.append(now)
            return
        if now != seen[0]:
            what = "deleted" if now is None else "replaced by another file"
            raise DatabaseVanished(
                f"the database file {path} was {what} while this process had it open; "
                "nothing more is written: restore it (or start from an empty one) and restart "
                "the daemon"
            )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(_dbapi_connection: Any, _record: Any) -> None:
        check()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(_dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        check()


def _sqlite_pragmas(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def describe_failure(engine: AsyncEngine, exc: BaseException) -> str:
    """One line saying which database failed and why, password masked."""
    url = mask_url(engine.url.render_as_string(hide_password=False))
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return f"cannot use the database {url}: {reason}; check MAILER_DATABASE__URL"


# Alembic (11 MiB) is imported where it is used, so that a process that only sends does
# not carry it.


def _alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    location = resources.files("mailer") / "migrations"
    config.set_main_option("script_location", str(location))
    return config


_REVISION = re.compile(r'^revision(?:: *str)? *= *"([^"]+)"', re.MULTILINE)
_DOWN = re.compile(r'^down_revision(?:: *[^=]+)? *= *"([^"]+)"', re.MULTILINE)


@functools.cache
def head_revision() -> str | None:
    """The newest migration's revision, read from ``mailer/migrations/versions``.

    Read from the files' ``revision`` and ``down_revision`` lines, not through alembic: a
    daemon whose schema is up to date never imports alembic (and mako and pygments with it,
    about 10 MiB). Anything but one head (a branch, a file it cannot read) is left to
    alembic's own reading.
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for entry in (resources.files("mailer") / "migrations" / "versions").iterdir():
        if not entry.name.endswith(".py") or entry.name.startswith("__"):
            continue
        source = entry.read_text(encoding="utf-8")
        found = _REVISION.search(source)
        if found is None:
            return _alembic_head()
        revisions.add(found.group(1))
        parents.update(m.group(1) for m in _DOWN.finditer(source))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else _alembic_head()


def _alembic_head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    """The database's revision (None: no schema), read from ``alembic_version`` directly; a
    table with several rows (branches) is left to alembic, which says what is wrong."""

    def _read(connection: Connection) -> str | None:
        if not inspect(connection).has_table("alembic_version"):
            return None
        rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        if len(rows) <= 1:
            return str(rows[0][0]) if rows else None
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(connection).get_current_revision()

    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_read)
    except (SQLAlchemyError, OSError) as exc:
        raise StorageUnavailable(describe_failure(engine, exc)) from None


async def upgrade(engine: AsyncEngine, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply pending migrations; return (revision before, revision after). Idempotent."""
    before = await current_revision(engine)
    if revision == "head" and before is not None and before == head_revision():
        return before, before  # up to date: alembic not even imported
    from alembic import command

    config = _alembic_config()

    def _run(connection: Connection) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    except (DBAPIError, OSError) as exc:
        raise StorageUnavailable(describe_failure(engine, exc)) from None
    return before, await current_revision(engine)


# --- prefixes: the one condition each dialect writes its own way -------------------------------


class _StartsWith(ColumnElement[bool]):
    type = Boolean()
    inherit_cache = False  # its SQL depends on the prefix itself (see the compilers below)

    def __init__(self, column: ColumnElement[Any], prefix: str, fold: bool) -> None:
        self.column = column
        self.prefix = prefix
        self.fold = fold

    def self_group(self, against: Any = None) -> ColumnElement[Any]:
        # A condition in parentheses, not a boolean value: without this, a database with no
        # boolean type gets ``(...) = 1``, whose range no index reads.
        return Grouping(self)


def starts_with(column: Any, prefix: str, *, fold: bool = False) -> ColumnElement[bool]:
    """``column`` begins with ``prefix`` (``fold``: ASCII letters case-insensitive), in the
    form each database reads from an index on ``column`` (or on ``lower(column)``).

    PostgreSQL: ``LIKE 'prefix%'``, which it turns into an index range itself where that is
    exact (a C-collated index, or one with ``text_pattern_ops``), and else filters. SQLite:
    the range itself (``>= prefix AND < prefix with its last character raised``), exact for
    its BINARY ordering; its own LIKE is case-blind and never reads an index on BINARY text.
    """
    return _StartsWith(column, prefix, fold)


@compiles(_StartsWith)
def _like(element: _StartsWith, compiler: SQLCompiler, **kw: Any) -> str:
    column = func.lower(element.column) if element.fold else element.column
    escaped = "".join("\\" + c if c in "\\%_" else c for c in element.prefix)
    pattern: ColumnElement[str] = literal(escaped + "%")
    if element.fold:
        pattern = func.lower(pattern)  # the database's own case folding, on both sides
    return compiler.process(column.like(pattern, escape="\\"), **kw)


@compiles(_StartsWith, "sqlite")
def _range(element: _StartsWith, compiler: SQLCompiler, **kw: Any) -> str:
    # NOCASE folds ASCII letters only, as SQLite's lower() does: fold the prefix the same
    # way; the column compared under NOCASE reads an index made with that collation (0006)
    prefix = _ascii_lower(element.prefix) if element.fold else element.prefix
    column = element.column.collate("NOCASE") if element.fold else element.column
    above = _raised(prefix)
    bounds = [column >= prefix] + ([] if above is None else [column < above])
    return compiler.process(and_(*bounds), **kw)


def _ascii_lower(text: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def _raised(prefix: str) -> str | None:
    """The first string after every string that begins with ``prefix``, in code point order
    (None: there is none, every string from ``prefix`` on begins with it)."""
    text = prefix
    while text:
        last = ord(text[-1]) + 1
        if last == 0xD800:
            last = 0xE000  # surrogates cannot be stored
        if last <= 0x10FFFF:
            return text[:-1] + chr(last)
        text = text[:-1]
    return None
