"""Reliability harness: real ``mailer run`` daemons, a real SMTP server with fault injection,
SQLite and PostgreSQL, and the faults of issue 7; it writes RELIABILITY.md.

```sh
.venv/bin/python bench/reliability.py                 # every scenario, full sizes (~20 min)
.venv/bin/python bench/reliability.py --quick         # small sizes, few kill points (~2 min)
.venv/bin/python bench/reliability.py --only kill9 --backend sqlite --keep
```

Each scenario prepares a send as ``tests/test_crash.py`` does (a CSV list imported, a
campaign, a send due now), starts daemons as separate processes (``python -m mailer run``,
web pages off, sync every 0.2 s, pool 4, record batch 50, first retry after 0.5 s) against
an aiosmtpd sink running in this process (``tests.smtpd.SmtpServer``, bodies not kept),
injects its fault, waits for the send to be ``done``, stops the daemons and then compares
what the sink received with what the database recorded. A row fails when a recipient is
lost, when a recipient recorded ``sent`` never reached the sink, when deliveries are left
unfinished, or when the duplicates pass the documented window. The exit status is 1 if any
row failed. It needs root for the disk-full scenario (``mount -t tmpfs``) and PostgreSQL 15's
server binaries for the PostgreSQL ones (started privately, as ``tests/conftest.py`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType

from reliability_support import (
    BATCH,
    CLOCK,
    POOL,
    ROOT,
    WINDOW,
    Daemon,
    Postgres,
    Row,
    ScenarioFailed,
    Tally,
    Throughput,
    claimed_by,
    daemon_env,
    machine,
    make_sink,
    prepare_send,
    render_report,
    settings_for,
    tally,
    utcnow,
    wait_done,
    wait_received,
)

from mailer.storage import Store

METHOD = f"""
- **Processes.** Every daemon is a real `python -m mailer run` process (web pages off,
  `MAILER_SCHEDULER__SYNC_INTERVAL=0.2`, pool size {POOL}, record batch {BATCH},
  `MAILER_DELIVERY__RETRY_BASE=0.5` so that deferred messages come back within seconds). The
  send is prepared as in `tests/test_crash.py` (a CSV list imported, a campaign, a send due
  now) before the daemons start. The SMTP server is `tests/smtpd.py` (aiosmtpd on
  127.0.0.1, in the harness's process) with its fault plan; it records each envelope, not
  the bodies. PostgreSQL 15 is a private server started with `initdb` as in
  `tests/conftest.py` (fsync off); a fresh database per scenario. SQLite is a file in the
  scenario's folder (WAL, the product's pragmas).
- **Columns.** *eligible*: deliveries of the send (its recipients). *accepted*: distinct
  eligible recipients the SMTP server stored. *failed*, *skipped*: from the database after
  the send is `done`. *lost* = eligible - accepted - failed - skipped, and the harness also
  checks it as a set (no recipient neither received nor recorded failed or skipped), that
  every recipient recorded `sent` was received, and that nothing is left queued or
  deferred. *duplicates*: extra copies received, with the most copies one recipient got,
  and the window the row is held to: {WINDOW} (pool size + record batch, the documented
  window) per crash or storage outage, none for SIGTERM, one per connection dropped after
  the message was stored. *time to recover*: from the fault's end (the restarted daemon,
  PostgreSQL up again, the lock released, the space back) to the send seen `done` by a
  0.2 s poll; for the kill points, also how long the restarted daemon took to send again
  (process start, schema check, pre-flight render of every queued recipient).
- **Kill points** are counts of messages received, drawn with a fixed seed between 10 % and
  90 % of the list; the daemon is killed with SIGKILL there and started again at once.
- **Disk full** mounts a tmpfs (`mount -t tmpfs -o size=64m`) on the data folder, which
  holds the SQLite file, then fills it with a file while the send runs, and deletes that
  file to give the space back. It needs root (CAP_SYS_ADMIN); otherwise its row says so.
  PostgreSQL on a full disk is not covered.
- **SQLite locked**: another process holds `BEGIN EXCLUSIVE` on the file (in WAL mode
  readers go on, writers wait `MAILER_DATABASE__BUSY_TIMEOUT_MS`, 5 s, then fail).
- **Several daemons** share a send on PostgreSQL: one claims it (scheduled -> running), and
  every daemon takes its deliveries in leased batches (`FOR UPDATE SKIP LOCKED`, lease
  `MAILER_DELIVERY__LEASE`, 30 s, renewed while it works; a restarted daemon takes back the
  leases of its dead predecessor on the same machine at once). On SQLite a second daemon is
  refused at start (a lock on `<database>.lock`); its row checks that.
- Daemon logs are kept with `--keep` (the folder is printed).
"""


# --- the stage of one scenario ----------------------------------------------------------------


@dataclass
class Context:
    quick: bool
    seed: int
    root: Path
    _postgres: Postgres | None = None
    _postgres_error: str | None = None
    throughput: list[Throughput] = field(default_factory=list)

    def size(self, full: int, quick: int) -> int:
        return quick if self.quick else full

    def postgres(self) -> Postgres:
        if self._postgres_error is not None:
            raise ScenarioFailed(f"not run: {self._postgres_error}")
        if self._postgres is None:
            try:
                self._postgres = Postgres()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                self._postgres_error = f"PostgreSQL could not start: {exc}"
                raise ScenarioFailed(f"not run: {self._postgres_error}") from None
        return self._postgres

    def close(self) -> None:
        if self._postgres is not None:
            self._postgres.close()


class Stage:
    """A folder, a database, a started sink, a store for the harness, and daemons; on exit
    the daemons are stopped (SIGTERM) and, if the scenario did not get there, the row gets
    what can be tallied."""

    def __init__(self, ctx: Context, row: Row, name: str) -> None:
        self.ctx = ctx
        self.row = row
        self.workdir = ctx.root / f"{name}-{row.backend}"
        self.daemons: list[Daemon] = []
        self.send_id: int | None = None

    async def __aenter__(self) -> Stage:
        (self.workdir / "data").mkdir(parents=True)
        (self.workdir / "lists").mkdir()
        if self.row.backend == "postgresql":
            self.url = await self.ctx.postgres().database()
        else:
            self.url = f"sqlite+aiosqlite:///{self.workdir / 'data' / 'mailer.sqlite3'}"
        self.sink, self.handler = make_sink()
        await self.sink.start()
        self.store = Store.open(settings_for(self.workdir, self.url))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop_daemons()
            if self.row.tally is None and self.send_id is not None:
                with contextlib.suppress(Exception):
                    self.row.tally = await tally(self.store, self.send_id, self.sink)
        finally:
            await self.sink.stop()
            await self.store.engine.dispose()

    async def prepare(self, count: int) -> int:
        self.say(f"importing {count:,} members and creating the send")
        self.send_id = await prepare_send(self.store, self.workdir, count, name=self.row.scenario)
        return self.send_id

    def daemon(self, name: str, **extra: str) -> Daemon:
        daemon = Daemon(
            name=name,
            env=daemon_env(self.workdir, self.url, self.sink, **extra),
            cwd=self.workdir,
            log=self.workdir / f"{name}.log",
        )
        self.daemons.append(daemon)
        return daemon

    async def stop_daemons(self) -> None:
        await asyncio.gather(*(d.terminate() for d in self.daemons))
        await asyncio.sleep(0.3)  # what was on the wire reaches the sink

    async def done(self, *, within: float) -> float:
        assert self.send_id is not None
        return await wait_done(
            self.store, self.send_id, within=within, daemons=self.daemons,
            tag=self.tag, sink=self.sink,
        )  # fmt: skip

    async def received(self, count: int, *, within: float = 300) -> None:
        await wait_received(self.sink, count, within=within, daemons=self.daemons)

    async def finish(self) -> Tally:
        """Stop the daemons, then tally the sink against the database."""
        assert self.send_id is not None
        await self.stop_daemons()
        self.row.tally = await tally(self.store, self.send_id, self.sink)
        return self.row.tally

    def ran_the_send(self) -> list[str]:
        """Daemons whose log has a summary line for this send (they ran some of it)."""
        return [d.name for d in self.daemons if d.log_lines(f"send {self.send_id} (")]

    @property
    def tag(self) -> str:
        return f"{self.row.scenario}/{self.row.backend}"

    def say(self, message: str) -> None:
        CLOCK.say(self.tag, message)


def judge(row: Row, *, max_duplicates: int, max_copies: int | None = None) -> None:
    t = row.tally
    assert t is not None
    problems = []
    if t.lost or t.lost_set:
        problems.append(f"lost {t.lost} (as a set: {t.lost_set})")
    if t.sent_not_received:
        problems.append(f"{t.sent_not_received} recorded sent but never received")
    if t.unfinished:
        problems.append(f"{t.unfinished} deliveries left queued or deferred")
    if t.status != "done":
        problems.append(f"send ended {t.status}")
    if t.duplicates > max_duplicates:
        problems.append(f"duplicates {t.duplicates:,} > {max_duplicates:,} allowed")
    if max_copies is not None and t.max_copies > max_copies:
        problems.append(f"a recipient got {t.max_copies} copies (> {max_copies})")
    row.verdict = "ok" if not problems else "FAIL: " + "; ".join(problems)


def limit(ctx: Context) -> float:
    return 180 if ctx.quick else 900


# --- scenarios --------------------------------------------------------------------------------


async def three_daemons(ctx: Context, row: Row) -> None:
    count = ctx.size(30_000, 3_000)
    row.injected = (
        f"3 daemons, {count:,} recipients; kill -9 of the daemon that claimed the send at 30 % "
        "(restarted at once), SIGTERM of another at 60 % (not restarted)"
    )
    async with Stage(ctx, row, "three-daemons") as st:
        send_id = await st.prepare(count)
        daemons = [st.daemon(f"d{i}") for i in (1, 2, 3)]
        for d in daemons:
            await d.start()
        await st.received(count * 3 // 10)
        owner = await claimed_by(st.store, send_id)
        victim = next((d for d in daemons if owner and owner.endswith(f":{d.pid}")), daemons[0])
        await victim.kill9()
        st.say(f"kill -9 {victim.name} (claimed_by {owner}) at {len(st.sink.received):,}")
        await asyncio.sleep(0.2)
        await victim.start()
        restarted = time.monotonic()
        await st.received(count * 6 // 10)
        other = next(d for d in daemons if d is not victim)
        asked = time.monotonic()
        status = await other.terminate()
        exited = time.monotonic()
        st.say(f"SIGTERM {other.name}: exit status {status} after {exited - asked:.1f} s")
        done = await st.done(within=limit(ctx))
        t = await st.finish()
        row.recover = (
            f"{done - restarted:.1f} s from the restart after kill -9 to done; the SIGTERMed "
            f"daemon exited {status} in {exited - asked:.1f} s"
        )
        row.window = f"{WINDOW} (one kill -9; none for SIGTERM)"
        ran = st.ran_the_send()
        row.notes.append(
            f"Messages received in all: {t.received:,} for {t.eligible:,} recipients. "
            f"Daemons that logged a run of the send: {', '.join(ran) or 'none'} "
            f"(the claim went to {owner})."
        )
        if status != 0:
            row.notes.append(f"The SIGTERMed daemon exited with status {status}, not 0.")
        judge(row, max_duplicates=WINDOW, max_copies=2)
        if status != 0 and not row.failed:
            row.verdict = f"FAIL: SIGTERM exit status {status}"


async def sqlite_second_daemon(ctx: Context, row: Row) -> None:
    count = ctx.size(30_000, 3_000)
    row.injected = (
        f"{count:,} recipients; a second and a third daemon started on the same SQLite file "
        "at 30 % of the send"
    )
    async with Stage(ctx, row, "three-daemons") as st:
        await st.prepare(count)
        first = st.daemon("d1")
        await first.start()
        await st.received(count * 3 // 10)
        refused = []
        for name in ("d2", "d3"):
            other = st.daemon(name)
            await other.start()
            assert other.process is not None
            status = await asyncio.wait_for(other.process.wait(), timeout=60)
            said = other.log_lines("another mailer process")
            refused.append(status != 0 and bool(said))
            st.say(f"{name}: exit status {status}; {said[0].strip() if said else 'no refusal'}")
        started = time.monotonic()
        done = await st.done(within=limit(ctx))
        await st.finish()
        row.recover = f"n/a (the first daemon went on; done {done - started:.1f} s later)"
        row.window = "0 (nothing crashed)"
        judge(row, max_duplicates=0, max_copies=1)
        if not all(refused) and not row.failed:
            row.verdict = "FAIL: a second daemon was not refused"


async def kill9_points(ctx: Context, row: Row) -> None:
    count = ctx.size(10_000, 1_000)
    kills = ctx.size(20, 3)
    points = sorted(random.Random(ctx.seed).sample(range(count // 10, count * 9 // 10), kills))
    row.injected = (
        f"kill -9 of the one daemon at {kills} seeded points of a {count:,}-recipient send "
        f"(seed {ctx.seed}), restarted at once"
    )
    async with Stage(ctx, row, "kill9") as st:
        await st.prepare(count)
        daemon = st.daemon("d1")
        await daemon.start()
        resumes: list[float] = []
        restarted = time.monotonic()
        for number, point in enumerate(points, 1):
            await st.received(point)
            await daemon.kill9()
            at = len(st.sink.received)
            await asyncio.sleep(0.2)
            await daemon.start()
            restarted = time.monotonic()
            await st.received(len(st.sink.received) + 1)
            resumes.append(time.monotonic() - restarted)
            st.say(
                f"kill {number}/{kills} at {at:,} received (point {point:,}); "
                f"sending again {resumes[-1]:.1f} s after the restart"
            )
        done = await st.done(within=limit(ctx))
        await st.finish()
        row.recover = (
            f"sending again {statistics.median(resumes):.1f} s (median; max {max(resumes):.1f}) "
            f"after each restart; last restart to done {done - restarted:.1f} s"
        )
        row.window = f"{kills} x {WINDOW} = {kills * WINDOW:,}"
        judge(row, max_duplicates=kills * WINDOW, max_copies=1 + kills)


async def pg_restart(ctx: Context, row: Row) -> None:
    count = ctx.size(10_000, 1_000)
    down = ctx.size(10, 3)
    row.injected = f"PostgreSQL stopped (pg_ctl -m fast) at 30 %, started again {down} s later"
    async with Stage(ctx, row, "pg-restart") as st:
        await st.prepare(count)
        daemon = st.daemon("d1")
        await daemon.start()
        await st.received(count * 3 // 10)
        pg = ctx.postgres()
        at = len(st.sink.received)
        await pg.stop_server()
        stopped = len(st.sink.received)
        st.say(f"PostgreSQL stopped at {at:,} received")
        await asyncio.sleep(down)
        during = len(st.sink.received) - at
        await pg.start_server()
        up = time.monotonic()
        st.say(f"PostgreSQL started again; {during} messages went out while it was down")
        done = await st.done(within=limit(ctx))
        await st.finish()
        row.recover = f"{done - up:.1f} s (down {down} s)"
        row.window = str(WINDOW)
        errors = len(daemon.log_lines("ERROR"))
        row.notes.append(
            f"{during} messages reached the sink while PostgreSQL was stopping or down "
            f"({stopped - at} during `pg_ctl stop`); the daemon logged {errors} error lines and "
            f"{'stayed up' if daemon.alive or daemon.started == 1 else 'was restarted'}."
        )
        judge(row, max_duplicates=WINDOW, max_copies=2)


LOCKER = """
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
connection.execute("ROLLBACK")
print("unlocked", flush=True)
"""


async def sqlite_locked(ctx: Context, row: Row) -> None:
    count = ctx.size(10_000, 1_000)
    hold = ctx.size(30, 8)
    row.injected = f"another process holds BEGIN EXCLUSIVE on the SQLite file for {hold} s, at 30 %"
    async with Stage(ctx, row, "sqlite-locked") as st:
        await st.prepare(count)
        daemon = st.daemon("d1")
        await daemon.start()
        await st.received(count * 3 // 10)
        locker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LOCKER, str(st.workdir / "data" / "mailer.sqlite3"), str(hold),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert locker.stdout is not None
        await locker.stdout.readline()
        at = len(st.sink.received)
        locked = time.monotonic()
        st.say(f"locked at {at:,} received")
        marks = []
        while locker.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(locker.wait(), 1.0)
            marks.append((time.monotonic() - locked, len(st.sink.received) - at))
        unlocked = time.monotonic()
        during = len(st.sink.received) - at
        st.say(f"unlocked after {unlocked - locked:.1f} s; {during} messages went out meanwhile")
        done = await st.done(within=limit(ctx))
        t = await st.finish()
        row.recover = f"{done - unlocked:.1f} s (locked {hold} s)"
        row.window = str(WINDOW)
        after_5s = next((n for s, n in marks if s >= 5.5), during)
        row.notes.append(
            f"{during:,} messages reached the sink while the file was locked "
            f"({after_5s:,} in the first 5.5 s, i.e. within the 5 s busy timeout); "
            f"the daemon logged {len(daemon.log_lines('ERROR'))} error lines; "
            f"messages received in all {t.received:,}."
        )
        judge(row, max_duplicates=WINDOW, max_copies=2)


def _fill(path: Path) -> int:
    """Write ``path`` until the filesystem is full; return the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as handle:
        for chunk in (1 << 20, 1 << 12, 1 << 9):
            block = b"\0" * chunk
            while True:
                try:
                    written += handle.write(block)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def _mount_tmpfs(folder: Path, size: str) -> str | None:
    """Mount a tmpfs on ``folder``; the reason on failure."""
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    if result.returncode != 0:
        return (result.stderr or result.stdout).strip() or f"exit status {result.returncode}"
    return None


def _umount(folder: Path) -> None:
    for args in (["umount", str(folder)], ["umount", "-l", str(folder)]):
        if subprocess.run(args, capture_output=True, check=False, timeout=30).returncode == 0:
            return


async def disk_full(ctx: Context, row: Row) -> None:
    count = ctx.size(10_000, 1_000)
    hold = ctx.size(15, 4)
    row.injected = (
        f"data folder (SQLite file) on a 64 MiB tmpfs, filled at 25 % of the send, "
        f"space given back {hold} s later"
    )
    data = ctx.root / f"disk-full-{row.backend}" / "data"
    mounted = False
    try:
        async with Stage(ctx, row, "disk-full") as st:
            reason = await asyncio.to_thread(_mount_tmpfs, data, "64m")
            if reason is not None:
                row.verdict = (
                    f"not run: `mount -t tmpfs` failed ({reason}); it needs root with "
                    "CAP_SYS_ADMIN (a loop device needs the same)"
                )
                return
            mounted = True
            await st.prepare(count)
            daemon = st.daemon("d1")
            await daemon.start()
            await st.received(count // 4)
            filler = data / "filler"
            size = await asyncio.to_thread(_fill, filler)
            full = time.monotonic()
            at = len(st.sink.received)
            st.say(f"disk full at {at:,} received ({size / 2**20:.1f} MiB filler)")
            marks = []
            while time.monotonic() - full < hold:
                await asyncio.sleep(0.5)
                marks.append((time.monotonic() - full, len(st.sink.received) - at))
            during = len(st.sink.received) - at
            full_errors = len(daemon.log_lines("full"))
            await asyncio.to_thread(filler.unlink)
            back = time.monotonic()
            st.say(f"space back; {during:,} messages went out while full")
            done = await st.done(within=limit(ctx))
            t = await st.finish()
            row.recover = f"{done - back:.1f} s (full {hold} s)"
            row.window = str(WINDOW)
            late = during - next((n for s, n in marks if s >= 2), during)
            row.notes.append(
                f"{during:,} messages reached the sink while the disk was full "
                f"({late:,} of them more than 2 s after it filled); the daemon logged "
                f"{full_errors} lines mentioning 'full'; messages received in all "
                f"{t.received:,}."
            )
            judge(row, max_duplicates=WINDOW, max_copies=2)
            # A full disk does not fail the very next write (SQLite writes into pages it
            # already has); what must not happen is sending on once writes fail. Messages
            # more than 2 s after the fill, beyond one window, would be that.
            if late > WINDOW and not row.failed:
                row.verdict = f"FAIL: {late} messages sent more than 2 s into the full disk"
    finally:
        if mounted:
            await asyncio.to_thread(_umount, data)


async def smtp_faults(ctx: Context, row: Row) -> None:
    count = ctx.size(10_000, 1_000)
    seed = ctx.seed
    row.injected = (
        "RCPT 550 5.1.1 for 2 % (permanent), RCPT 451 4.3.0 for 5 % (once), DATA 421 4.7.0 "
        "for 0.5 % (once, connection closed), DATA stored then connection dropped for 1 % (once)"
    )
    async with Stage(ctx, row, "smtp-faults") as st:
        plan = st.sink.plan
        gone = plan.reply("RCPT", "550 5.1.1 No such user", fraction=0.02, seed=seed + 1)
        busy = plan.reply(
            "RCPT", "451 4.3.0 Mailbox busy, try later", fraction=0.05, seed=seed + 2,
            times=count * 5 // 100,
        )  # fmt: skip
        throttle = plan.reply(
            "DATA", "421 4.7.0 Too many messages, slow down", fraction=0.005, seed=seed + 3,
            times=count * 5 // 1000,
        )  # fmt: skip
        drop = plan.drop("DATA", fraction=0.01, seed=seed + 4, times=count // 100)
        expected_failed = sum(gone.chooses(f"member{i}@example.org") for i in range(count))
        await st.prepare(count)
        daemon = st.daemon("d1")
        started = time.monotonic()
        await daemon.start()
        done = await st.done(within=limit(ctx))
        t = await st.finish()
        row.recover = f"n/a (faults throughout); send took {done - started:.1f} s"
        row.window = f"{drop.hits} (drops)"
        row.notes.append(
            f"Fault plan hits: 550 {gone.hits}, 451 {busy.hits}, 421 {throttle.hits}, "
            f"drop after DATA {drop.hits}; {expected_failed} addresses are in the 550 "
            f"fraction, {t.failed} recorded failed; messages received in all {t.received:,}."
        )
        # An address in the drop fraction is dropped at each attempt until the rule's count
        # (1 % of the list) is used up, so one recipient may get more than two copies; the
        # bound is on the total: one duplicate per message stored and then dropped.
        judge(row, max_duplicates=drop.hits)
        if t.failed != expected_failed and not row.failed:
            row.verdict = f"FAIL: failed {t.failed}, expected {expected_failed} (the 550s)"


async def throughput(ctx: Context, row: Row, daemons: int) -> None:
    count = ctx.size(10_000, 1_000)
    row.injected = f"nothing: {daemons} daemon(s) started together, {count:,} recipients"
    async with Stage(ctx, row, f"throughput-{daemons}") as st:
        await st.prepare(count)
        started = [st.daemon(f"d{i}") for i in range(1, daemons + 1)]
        for d in started:
            await d.start()
        await st.done(within=limit(ctx))
        cpu = sum(d.cpu_seconds() for d in started)
        t = await st.finish()
        times = st.handler.times
        seconds = (times[-1] - times[0]) if len(times) > 1 else 0.0
        rate = t.accepted / seconds if seconds else 0.0
        ctx.throughput.append(
            Throughput(
                daemons=daemons,
                recipients=count,
                seconds=seconds,
                distinct_rate=rate,
                message_rate=t.received / seconds if seconds else 0.0,
                duplicates=t.duplicates,
                cpu_seconds=cpu,
            )
        )
        row.recover = "n/a"
        row.window = "0"
        ran = st.ran_the_send()
        row.notes.append(
            f"{rate:.0f} distinct recipients/s over {seconds:.1f} s; daemons that logged a run "
            f"of the send: {', '.join(ran) or 'none'}."
        )
        judge(row, max_duplicates=0, max_copies=1)


async def throughput_sink(ctx: Context, row: Row, daemons: int) -> None:
    """The same, against Postfix's smtp-sink (aiosmtpd caps near 1,000 msg/s and would hide
    any difference). smtp-sink only counts messages, so the row is held to the database's
    record and that count: every recipient recorded, as many messages as recorded sent."""
    from send import Sink, ToolError, find_tools

    count = ctx.size(20_000, 2_000)
    row.injected = (
        f"nothing: {daemons} daemon(s) started together, {count:,} recipients, Postfix smtp-sink"
    )
    try:
        tools = await asyncio.to_thread(find_tools, None, lambda m: CLOCK.say("smtp-sink", m))
    except (ToolError, OSError) as exc:
        row.verdict = f"not run: no smtp-sink ({exc})"
        return
    async with Stage(ctx, row, f"sink-{daemons}") as st:
        send_id = await st.prepare(count)
        with Sink(tools, st.workdir) as sink:
            started = [
                st.daemon(f"d{i}", MAILER_SMTP__HOST="127.0.0.1", MAILER_SMTP__PORT=str(sink.port))
                for i in range(1, daemons + 1)
            ]
            for d in started:
                await d.start()
            await st.done(within=limit(ctx))
            cpu = sum(d.cpu_seconds() for d in started)
            await st.stop_daemons()
            received = await asyncio.to_thread(sink.messages, count)
        counts = await st.store.figures.counts(send_id)
        first, last = await sent_span(st.store, send_id)
        seconds = (last - first).total_seconds()
        row.tally = Tally(
            eligible=sum(counts.values()),
            accepted=counts["sent"],
            failed=counts["failed"],
            skipped=counts["skipped"],
            lost=sum(counts.values()) - counts["sent"] - counts["failed"] - counts["skipped"],
            duplicates=max(0, received - counts["sent"]),
            max_copies=1 if received <= counts["sent"] else 2,
            received=received,
            sent_not_received=max(0, counts["sent"] - received),
            unfinished=counts["queued"] + counts["deferred"],
            status=await st.store.sends.status(send_id),
        )
        rate = counts["sent"] / seconds if seconds else 0.0
        ctx.throughput.append(
            Throughput(
                daemons=daemons,
                recipients=count,
                seconds=seconds,
                distinct_rate=rate,
                message_rate=received / seconds if seconds else 0.0,
                duplicates=row.tally.duplicates,
                cpu_seconds=cpu,
                sink="Postfix smtp-sink",
            )
        )
        row.recover = "n/a"
        row.window = "0"
        row.notes.append(
            f"{rate:.0f} recipients/s between the first and the last recorded message "
            f"({seconds:.1f} s); smtp-sink counted {received:,} messages; accepted is the "
            "database's count of sent (smtp-sink keeps no addresses)."
        )
        judge(row, max_duplicates=0, max_copies=1)


async def sent_span(store: Store, send_id: int) -> tuple[datetime, datetime]:
    """When the first and the last message of a send were recorded sent."""
    from sqlalchemy import func, select

    from mailer.storage.tables import deliveries

    async with store.engine.connect() as conn:
        first, last = (
            await conn.execute(
                select(func.min(deliveries.c.sent_at), func.max(deliveries.c.sent_at)).where(
                    deliveries.c.send_id == send_id
                )
            )
        ).one()
    return first, last


# --- selection and the run --------------------------------------------------------------------

Scenario = Callable[[Context, Row], Awaitable[None]]


def _throughput(daemons: int, *, postfix: bool = False) -> Scenario:
    async def run(ctx: Context, row: Row) -> None:
        await (throughput_sink if postfix else throughput)(ctx, row, daemons)

    return run


# name -> [(backend, title, function, reason it cannot run on this backend or None)]
SCENARIOS: dict[str, list[tuple[str, str, Scenario | None, str | None]]] = {
    "three-daemons": [
        ("postgresql", "3 daemons: kill -9 and SIGTERM", three_daemons, None),
        ("sqlite", "3 daemons on one SQLite file: two refused", sqlite_second_daemon, None),
    ],
    "kill9": [
        ("sqlite", "kill -9 at seeded points", kill9_points, None),
        ("postgresql", "kill -9 at seeded points", kill9_points, None),
    ],
    "pg-restart": [("postgresql", "PostgreSQL restarted mid-send", pg_restart, None)],
    "sqlite-locked": [("sqlite", "SQLite locked by another process", sqlite_locked, None)],
    "disk-full": [("sqlite", "disk full while recording", disk_full, None)],
    "smtp-faults": [
        ("sqlite", "SMTP fault plan at scale", smtp_faults, None),
        ("postgresql", "SMTP fault plan at scale", smtp_faults, None),
    ],
    "throughput": [
        ("postgresql", f"throughput, {n} daemon{'s' if n > 1 else ''}", _throughput(n), None)
        for n in (1, 2, 3)
    ]
    + [
        (
            "postgresql",
            f"throughput to smtp-sink, {n} daemon{'s' if n > 1 else ''}",
            _throughput(n, postfix=True),
            None,
        )
        for n in (1, 2, 3)
    ],
}


async def run_all(args: argparse.Namespace, ctx: Context) -> list[Row]:
    rows: list[Row] = []
    for name in args.only or list(SCENARIOS):
        for backend, title, function, reason in SCENARIOS[name]:
            if args.backend and backend != args.backend:
                continue
            row = Row(scenario=title, backend=backend, injected="")
            rows.append(row)
            if function is None:
                row.verdict = f"not run: {reason}"
                CLOCK.say(f"{name}/{backend}", row.verdict)
                continue
            CLOCK.say(f"{name}/{backend}", f"start: {title}")
            begun = time.monotonic()
            try:
                await function(ctx, row)
            except ScenarioFailed as exc:
                text = str(exc)
                row.verdict = text if text.startswith("not run") else f"FAIL: {text}"
            except Exception as exc:
                row.verdict = f"FAIL: harness error {type(exc).__name__}: {exc}"
            row.seconds = time.monotonic() - begun
            if not row.injected:
                row.injected = title
            t = row.tally
            summary = (
                f"eligible {t.eligible:,}, accepted {t.accepted:,}, failed {t.failed:,}, "
                f"skipped {t.skipped:,}, lost {t.lost}, duplicates {t.duplicates:,} "
                f"(max {t.max_copies}); "
                if t
                else ""
            )
            CLOCK.say(f"{name}/{backend}", f"{summary}{row.verdict} ({row.seconds:.0f} s)")
    return rows


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", action="append", choices=list(SCENARIOS), help="run this scenario (repeatable)"
    )
    parser.add_argument("--backend", choices=["sqlite", "postgresql"])
    parser.add_argument("--quick", action="store_true", help="small sizes, few kill points")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument(
        "--output", type=Path, default=ROOT / "RELIABILITY.md", help="'-' to print only"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder and logs")
    return parser.parse_args(argv)


async def main(argv: list[str]) -> int:
    args = parse(argv)
    started = utcnow()
    info = machine()
    root = Path(tempfile.mkdtemp(prefix="mailer-reliability-"))
    ctx = Context(quick=args.quick, seed=args.seed, root=root)
    print(f"mailer reliability harness: work folder {root}", flush=True)
    print(f"machine: {info['nproc']} cores, {info['cpu']}, Python {info['python']}", flush=True)
    begun = time.monotonic()
    try:
        rows = await run_all(args, ctx)
    finally:
        ctx.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    command = "python bench/reliability.py " + shlex.join(argv) if argv else ""
    report = render_report(
        rows=rows,
        throughput=ctx.throughput,
        command=command.strip() or "python bench/reliability.py",
        mode="quick sizes" if args.quick else "full sizes",
        started=started,
        seconds=time.monotonic() - begun,
        info=info,
        method=METHOD,
    )
    print()
    print(report)
    if str(args.output) != "-":
        args.output.write_text(report, encoding="utf-8")
        print(f"\nwritten to {args.output}")
    if args.keep:
        print(f"work folder and daemon logs kept in {root}")
    return 1 if any(r.failed for r in rows) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
