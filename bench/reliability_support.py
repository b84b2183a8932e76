"""Pieces of ``bench/reliability.py``: the SMTP sink, PostgreSQL, daemon processes, the
preparation of a send, the tally of what happened and the report.

It reuses the test suite's collaborators by import (the repository root is put on
``sys.path``): ``tests.smtpd.SmtpServer`` (aiosmtpd with a fault plan) as the sink and
``tests.conftest.PostgresServer`` (a private PostgreSQL started with initdb, as an
unprivileged user when run as root). It never changes the product; it only drives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from mailer.errors import MailerError  # noqa: E402
from mailer.lists import import_file  # noqa: E402
from mailer.models import Content  # noqa: E402
from mailer.settings import Settings  # noqa: E402
from mailer.storage import Store  # noqa: E402
from tests.conftest import PostgresServer, _pg_bindir, make_settings  # noqa: E402
from tests.smtpd import Received, SmtpServer, _Handler  # noqa: E402

POOL, BATCH = 4, 50  # MAILER_SMTP__POOL_SIZE and MAILER_DELIVERY__RECORD_BATCH of every daemon
WINDOW = POOL + BATCH  # the documented duplicate window of one crash
LINK_KEY = secrets.token_hex(32)  # signs the unsubscribe links (256 bits, as required), one per run
# The options tests/conftest.py PostgresServer.start() gives pg_ctl; a restart needs them again.
PG_OPTIONS = (
    "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
    "-c full_page_writes=off -c max_connections=200"
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Clock:
    """Seconds since the harness started, for progress lines."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, tag: str, message: str) -> None:
        print(f"[{time.monotonic() - self.start:7.1f}s] {tag}: {message}", flush=True)


CLOCK = Clock()


# --- the SMTP sink ----------------------------------------------------------------------------


class _CountingHandler(_Handler):
    """tests.smtpd's handler, keeping envelopes and arrival times but not message bodies:
    30,000 bodies (x3 when daemons double) would cost hundreds of MiB in the harness."""

    def __init__(self, owner: SmtpServer) -> None:
        super().__init__(owner)
        self.times: list[float] = []

    def _record(self, server: Any, session: Any, envelope: Any) -> Received:  # type: ignore[override]
        self.times.append(time.monotonic())
        return Received(
            mail_from=envelope.mail_from or "",
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=b"",
            smtp_utf8=envelope.smtp_utf8,
            mail_options=(),
            connection=server.number,
            login=None,
            tls=False,
        )


def make_sink() -> tuple[SmtpServer, _CountingHandler]:
    sink = SmtpServer()
    handler = _CountingHandler(sink)
    sink.handler = handler
    return sink, handler


# --- PostgreSQL -------------------------------------------------------------------------------


class Postgres:
    """One private PostgreSQL server for the whole run, a fresh database per scenario."""

    def __init__(self) -> None:
        bindir = _pg_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL binaries (initdb): apt-get install postgresql-15")
        self.server = PostgresServer(bindir)
        self.server.start()

    @property
    def data(self) -> Path:
        return self.server.base / "data"

    async def database(self) -> str:
        return await self.server.create_database()

    def _pg_ctl(self, *args: str) -> None:
        self.server._run(str(self.server.bindir / "pg_ctl"), "-D", str(self.data), *args)

    async def stop_server(self) -> None:
        """``pg_ctl stop -m fast``: what a restart by the administrator does to clients."""
        await asyncio.to_thread(self._pg_ctl, "-m", "fast", "-w", "stop")

    async def start_server(self) -> None:
        options = f"-p {self.server.port} -k {self.server.base} {PG_OPTIONS}"
        await asyncio.to_thread(
            self._pg_ctl, "-o", options, "-l", str(self.server.base / "server.log"),
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def close(self) -> None:
        self.server.stop()


# --- the send ---------------------------------------------------------------------------------


def settings_for(workdir: Path, database_url: str) -> Settings:
    return make_settings(
        workdir, database={"url": database_url}, paths={"templates_dir": ROOT / "templates"}
    )


def _write_members(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name\n")
        handle.writelines(f"member{i}@example.org,Membre {i}\n" for i in range(count))


async def prepare_send(store: Store, workdir: Path, count: int, *, name: str) -> int:
    """As tests/test_crash.py ``_prepare``: a list of ``count`` members, a campaign, and a
    send due now (the daemons use the real clock)."""
    await store.upgrade()
    path = workdir / "members.csv"
    await asyncio.to_thread(_write_members, path, count)
    report = await import_file(store, path, now=utcnow())
    if not report.ok:
        raise RuntimeError(f"the import of {count} members failed: {report}")
    content = Content(name=name, kind="announcement", subject="Fiabilité", body="Bonjour.")
    campaign = await store.campaigns.save(
        content, list_slugs=["members"], sender_name=None, sender_address=None, event=None,
        now=utcnow(),
    )  # fmt: skip
    send_id, _ = await store.sends.create(
        campaign, key="announce", action="announcement", due_at=utcnow(), now=utcnow()
    )
    return send_id


async def claimed_by(store: Store, send_id: int) -> str | None:
    async with store.engine.connect() as conn:
        value = (
            await conn.execute(text("SELECT claimed_by FROM sends WHERE id = :i"), {"i": send_id})
        ).scalar()
    return None if value is None else str(value)


# --- daemons ----------------------------------------------------------------------------------


def daemon_env(workdir: Path, database_url: str, sink: SmtpServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE__URL=database_url,
        MAILER_PATHS__DATA_DIR=str(workdir / "data"),
        MAILER_PATHS__TEMPLATES_DIR=str(ROOT / "templates"),
        MAILER_PATHS__LISTS_DIR=str(workdir / "lists"),
        MAILER_SMTP__HOST=sink.host,
        MAILER_SMTP__PORT=str(sink.port),
        MAILER_SMTP__SECURITY="none",
        MAILER_SMTP__POOL_SIZE=str(POOL),
        MAILER_SMTP__TIMEOUT="30",
        MAILER_DELIVERY__RECORD_BATCH=str(BATCH),
        MAILER_DELIVERY__RETRY_BASE="0.5",
        MAILER_SCHEDULER__SYNC_INTERVAL="0.2",
        MAILER_WEB__ENABLED="false",
        MAILER_WEB__ALLOW_INSECURE_LINKS="true",  # a sink on loopback, fictional recipients
        MAILER_SECRET_KEYS=LINK_KEY,
        MAILER_LOG__LEVEL="INFO",
    )
    env.update(extra)
    return env


def _open_log(path: Path) -> IO[bytes]:
    return path.open("ab")


@dataclass(eq=False)
class Daemon:
    """One ``mailer run`` process; its log (stdout and stderr) goes to ``log``."""

    name: str
    env: dict[str, str]
    cwd: Path
    log: Path
    process: asyncio.subprocess.Process | None = None
    started: int = 0

    async def start(self) -> None:
        handle = await asyncio.to_thread(_open_log, self.log)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mailer", "run", env=self.env, cwd=self.cwd,
                stdin=asyncio.subprocess.DEVNULL, stdout=handle, stderr=handle,
            )  # fmt: skip
        finally:
            handle.close()
        self.started += 1

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def kill9(self) -> None:
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def terminate(self, grace: float = 60) -> int | None:
        """SIGTERM and wait; SIGKILL after ``grace`` seconds. Returns the exit status."""
        if self.process is None:
            return None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        return self.process.returncode

    def cpu_seconds(self) -> float:
        """User + system CPU of the live process so far (0 once it has exited)."""
        if not self.alive or self.pid is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_lines(self, needle: str) -> list[str]:
        try:
            lines = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines if needle in line]


# --- what happened ----------------------------------------------------------------------------


@dataclass
class Tally:
    """The figures of one row, from the sink and the database."""

    eligible: int = 0
    accepted: int = 0
    failed: int = 0
    skipped: int = 0
    lost: int = 0  # eligible - accepted - failed - skipped
    lost_set: int = 0  # recipients neither received nor recorded failed/skipped
    duplicates: int = 0  # extra copies received
    max_copies: int = 0
    received: int = 0  # messages received in all
    sent_not_received: int = 0  # recorded sent, never reached the sink: a record that lies
    unfinished: int = 0  # deliveries still queued or deferred
    status: str = ""


async def tally(store: Store, send_id: int, sink: SmtpServer) -> Tally:
    copies = Counter(sink.recipients())
    by_status: dict[str, set[str]] = {}
    async for row in store.figures.report(send_id):
        by_status.setdefault(str(row.status), set()).add(str(row.email).lower())
    received = {address.lower() for address in copies}
    eligible = set().union(*by_status.values()) if by_status else set()
    failed = by_status.get("failed", set())
    skipped = by_status.get("skipped", set())
    accepted = received & eligible
    return Tally(
        eligible=len(eligible),
        accepted=len(accepted),
        failed=len(failed),
        skipped=len(skipped),
        lost=len(eligible) - len(accepted) - len(failed) - len(skipped),
        lost_set=len(eligible - received - failed - skipped),
        duplicates=sum(n - 1 for n in copies.values()),
        max_copies=max(copies.values(), default=0),
        received=sum(copies.values()),
        sent_not_received=len(by_status.get("sent", set()) - received),
        unfinished=len(by_status.get("queued", set()) | by_status.get("deferred", set())),
        status=(await store.sends.spec(send_id)).status,
    )


async def wait_done(
    store: Store,
    send_id: int,
    *,
    within: float,
    daemons: list[Daemon],
    tag: str,
    sink: SmtpServer | None = None,
) -> float:
    """Wait for the send to be ``done``; return the monotonic time it was seen done."""
    deadline = time.monotonic() + within
    last_report = time.monotonic()
    while True:
        try:
            status = await store.sends.status(send_id)
        except MailerError:
            status = "unreachable"
        if status == "done":
            return time.monotonic()
        if status in ("paused", "cancelled", "missed"):
            spec = await store.sends.spec(send_id)
            raise ScenarioFailed(f"the send ended {status}: {spec.reason}")
        if daemons and not any(d.alive for d in daemons):
            raise ScenarioFailed("every daemon exited before the send was done")
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"not done after {within:.0f} s (status {status})")
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            got = f", {len(sink.received)} messages received" if sink is not None else ""
            CLOCK.say(tag, f"waiting for the send to finish (status {status}{got})")
        await asyncio.sleep(0.2)


async def wait_received(
    sink: SmtpServer, count: int, *, within: float, daemons: list[Daemon]
) -> None:
    deadline = time.monotonic() + within
    while len(sink.received) < count:
        if daemons and not any(d.alive for d in daemons):
            raise ScenarioFailed(f"every daemon exited before {count} messages were received")
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"fewer than {count} messages after {within:.0f} s")
        await asyncio.sleep(0.005)


class ScenarioFailed(Exception):
    """The scenario could not complete; the row says why."""


# --- rows and the report ----------------------------------------------------------------------


@dataclass
class Row:
    scenario: str
    backend: str
    injected: str
    tally: Tally | None = None
    recover: str = ""
    window: str = ""  # the documented limit on duplicates for this row
    verdict: str = ""  # "ok", "FAIL: ...", or "not run: ..."
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.verdict.startswith("FAIL")


@dataclass
class Throughput:
    daemons: int
    recipients: int
    seconds: float  # first to last message received
    distinct_rate: float
    message_rate: float
    duplicates: int
    cpu_seconds: float  # all daemons' user+system CPU
    sink: str = "aiosmtpd"


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        memory = f"{int(first.split()[1]) / 1024 / 1024:.1f} GiB"
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    postgres = ""
    bindir = _pg_bindir()
    if bindir is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            postgres = subprocess.run(
                [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
    import sqlite3

    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory": memory,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "load": load,
        "postgres": postgres,
        "sqlite": sqlite3.sqlite_version,
    }


def _cell(row: Row) -> list[str]:
    t = row.tally
    name = f"{row.scenario} ({row.backend})"
    if t is None:
        return [name, row.injected, "", "", "", "", "", "", row.recover, row.verdict]
    dup = f"{t.duplicates:,} (max {t.max_copies})"
    if row.window:
        dup += f"; window {row.window}"
    return [
        name,
        row.injected,
        f"{t.eligible:,}",
        f"{t.accepted:,}",
        f"{t.failed:,}",
        f"{t.skipped:,}",
        f"{t.lost:,}",
        dup,
        row.recover,
        row.verdict,
    ]


def render_report(
    *,
    rows: list[Row],
    throughput: list[Throughput],
    command: str,
    mode: str,
    started: datetime,
    seconds: float,
    info: dict[str, str],
    method: str,
) -> str:
    head = [
        "scenario",
        "what was injected",
        "eligible",
        "accepted",
        "failed",
        "skipped",
        "lost",
        "duplicates (max per recipient)",
        "time to recover",
        "result",
    ]
    out = [
        "# Reliability",
        "",
        f"Latest run: {started:%Y-%m-%d %H:%M} UTC, `{command}` ({mode}), {seconds / 60:.1f} min.",
        "",
        f"Machine: {info['nproc']} cores ({info['cpu']}), {info['memory']}, {info['system']}, "
        f"Python {info['python']}, SQLite {info['sqlite']}, {info['postgres'] or 'no PostgreSQL'}; "
        f"load average at start {info['load']}. Shared machine: times move with its load.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
    ]
    out += ["| " + " | ".join(c.replace("|", "/") for c in _cell(r)) + " |" for r in rows]
    if throughput:
        out += [
            "",
            "## Throughput: 1, 2 and 3 daemons, one PostgreSQL, one sink",
            "",
            "| sink | daemons | recipients | first to last message | recipients/s | "
            "messages/s (with duplicates) | duplicates | daemons' CPU |",
            "|---|---|---|---|---|---|---|---|",
        ]
        out += [
            f"| {t.sink} | {t.daemons} | {t.recipients:,} | {t.seconds:.1f} s | "
            f"{t.distinct_rate:.0f} | {t.message_rate:.0f} | {t.duplicates:,} | "
            f"{t.cpu_seconds:.1f} s |"
            for t in throughput
        ]
        out += [
            "",
            "The daemons, the PostgreSQL server and the sink share the machine's 2 cores: "
            "this shows the overhead and the correctness of more daemons, not a linear "
            "speed-up. The aiosmtpd sink runs in the harness process (about 1 ms of CPU per "
            "message, so it caps near 1,000 msg/s); Postfix's smtp-sink (from Debian's "
            "`postfix` package, fetched by `bench/send.py` if missing) does not, and its rows "
            "time the first to the last message recorded sent.",
        ]
    notes = [r for r in rows if r.notes]
    if notes:
        out += ["", "## Observations", ""]
        for r in notes:
            out.append(f"- **{r.scenario} ({r.backend})**: " + " ".join(r.notes))
    out += ["", "## Method", "", method.strip(), ""]
    return "\n".join(out)
