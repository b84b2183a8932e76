"""Benchmark of the staff console on a large database: every page, p50/p95/max, per backend.

Builds 1,000,000 subscribers and 5,000,000 deliveries (``--quick``: 100,000 and 500,000),
then times every console page as a signed-in admin through the real ASGI app
(``mailer.web.create_app`` behind ``httpx.ASGITransport``), and the storage reads behind them
alone, against the targets of issue 14: p95 under 300 ms for a page, under 50 ms for a send's
live progress.

The data goes in through the real paths where they matter and in bulk where they would only
cost time:

- subscribers: ``mailer.lists.import_file`` of a generated CSV into the list ``members``
  (the import staff run: subscribers, subscriptions, one consent event each);
- the lists ``news`` (half of them) and ``events`` (a fifth), and the statuses of the
  subscriptions (mostly subscribed, some unsubscribed, some pending): bulk SQL here
  (SQLAlchemy Core against ``mailer.storage.tables``; bench code, not the package);
- suppressions (3,000; 300 in ``--quick``): ``store.subscribers.suppress``, one each;
- five campaigns with one send each, claimed (``store.sends.claim``); their deliveries, one
  per subscriber, with mixed statuses (sent, failed, skipped, deferred, queued), in bulk SQL;
  four finished by ``store.sends.finish`` (done, with their counters), one left running with
  60 % done, and two sends scheduled for next week (the dashboard's "coming up");
- the audit log: 10,000 entries in bulk SQL (``store.audit.record`` one at a time costs a
  second per thousand on SQLite);
- on PostgreSQL a ``VACUUM ANALYZE`` at the end (what autovacuum does after such a load).

PostgreSQL is a private server started as the test suite starts it
(``tests.conftest.PostgresServer``: initdb, C locale, fsync off); SQLite a file in a
temporary folder with the product's pragmas and no ``ANALYZE`` (the product runs none).

    .venv/bin/python bench/console.py --quick             # both backends, about 5 min
    .venv/bin/python bench/console.py                     # 1,000,000 / 5,000,000: 40 min
    .venv/bin/python bench/console.py --backend sqlite --explain
    .venv/bin/python bench/console.py --backend sqlite --keep      # then --reuse DIR

``--explain`` prints, for each storage read, its statements with their own time and the
database's plan (``EXPLAIN QUERY PLAN``; ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL).
``--keep`` keeps the data (and the PostgreSQL server, whose URL it prints); ``--reuse DIR``
(SQLite) or ``--database-url URL`` (PostgreSQL) time a kept database again without building,
after upgrading it (a new migration's indexes then count). Timings are printed, never
asserted; a page that is not there (404) or fails says so on its line and the run goes on.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import case, event, insert, literal, select, text, update  # noqa: E402

from mailer.lists import import_file  # noqa: E402
from mailer.models import Content, ListMeta, SuppressionReason  # noqa: E402
from mailer.storage import Store  # noqa: E402
from mailer.storage.tables import (  # noqa: E402
    UTCDateTime,
    audit_log,
    deliveries,
    subscribers,
    subscriptions,
)
from mailer.tokens import Signer  # noqa: E402
from mailer.web import create_app  # noqa: E402
from tests.conftest import PostgresServer, _pg_bindir  # noqa: E402
from tests.console_support import KEY, Console, console_settings  # noqa: E402

PAGE_TARGET = 0.300  # seconds, p95 of every page
PROGRESS_TARGET = 0.050  # seconds, p95 of the live progress
NOW = datetime.now(UTC).replace(microsecond=0)
FIRST = ("camille", "jean", "marie", "hugo", "louise", "theo", "manon", "paul", "emma", "ines",
         "lucas", "chloe", "loic", "agnes", "cedric", "helene", "yannick", "gaelle", "noel",
         "oceane")  # fmt: skip
LAST = ("dupont", "martin", "bernard", "caron", "gauthier", "faure", "girard", "moreau",
        "petit", "durand", "leroy", "rousseau", "fontaine", "mercier", "dubois", "lambert",
        "bonnet", "lefevre", "muller", "cote")  # fmt: skip
ACCENTED = {"chloe": "Chloé", "loic": "Loïc", "agnes": "Agnès", "cedric": "Cédric",
            "helene": "Hélène", "gaelle": "Gaëlle", "noel": "Noël", "oceane": "Océane",
            "ines": "Inès", "theo": "Théo", "lefevre": "Lefèvre", "muller": "Müller",
            "cote": "Côté"}  # fmt: skip
LOCALES = ("fr", "fr", "fr", "en", "")


@dataclass(frozen=True)
class Sizes:
    subscribers: int
    suppressions: int
    audit: int = 10_000
    sends: int = 5  # each with one delivery per subscriber


@dataclass
class Built:
    """What the pages are asked about, and how long building took."""

    running: int = 0  # the running send
    done: int = 0  # a finished one
    public_id: str = ""  # a subscriber in three lists, suppressed, with five deliveries
    steps: list[tuple[str, float]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s for _, s in self.steps)


# --- data -------------------------------------------------------------------------------------


def _person(number: int) -> tuple[str, str]:
    first, last = FIRST[number % len(FIRST)], LAST[(number // len(FIRST)) % len(LAST)]
    name = f"{ACCENTED.get(first, first.capitalize())} {ACCENTED.get(last, last.capitalize())}"
    return f"{first}.{last}{number}@example.org", name


def write_csv(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("email", "name", "locale"))
        for number in range(1, count + 1):
            email, name = _person(number)
            writer.writerow((email, name, LOCALES[number % len(LOCALES)]))


class Steps:
    def __init__(self, built: Built) -> None:
        self.built = built

    async def run(self, name: str, work: Awaitable[Any]) -> Any:
        start = time.perf_counter()
        result = await work
        seconds = time.perf_counter() - start
        self.built.steps.append((name, seconds))
        print(f"  build: {name:<44} {seconds:8.1f} s", flush=True)
        return result


def _at(moment: datetime) -> Any:
    return literal(moment, UTCDateTime())


async def _import(store: Store, workdir: Path, count: int) -> None:
    path = workdir / "members.csv"
    await asyncio.to_thread(write_csv, path, count)
    report = await import_file(store, path, now=NOW - timedelta(days=60), slug="members")
    if not report.ok:
        raise RuntimeError(f"the import of {count} subscribers failed: {report}")


async def _lists(store: Store) -> None:
    """``news`` (every second subscriber) and ``events`` (every fifth), and mixed statuses:
    of each list, 7 % unsubscribed and 3 % pending."""
    for slug, step in (("news", 2), ("events", 5)):
        list_id = await store.lists.upsert(ListMeta(slug, slug.capitalize()), now=NOW)
        async with store.db.begin(write=True) as conn:
            await conn.execute(
                insert(subscriptions).from_select(
                    ["subscriber_id", "list_id", "status", "source", "consent_at",
                     "created_at", "updated_at"],
                    select(
                        subscribers.c.id, literal(list_id), literal("subscribed"),
                        literal("bench"), _at(NOW - timedelta(days=30)),
                        _at(NOW - timedelta(days=30)), _at(NOW - timedelta(days=30)),
                    ).where(subscribers.c.id % step == 0),
                )
            )  # fmt: skip
    async with store.db.begin(write=True) as conn:
        await conn.execute(
            update(subscriptions)
            .where(subscriptions.c.id % 100 < 7)
            .values(status="unsubscribed", unsubscribed_at=_at(NOW - timedelta(days=3)),
                    unsubscribe_source="bench")
        )  # fmt: skip
        await conn.execute(
            update(subscriptions)
            .where(subscriptions.c.id % 100 >= 7, subscriptions.c.id % 100 < 10)
            .values(status="pending", requested_at=_at(NOW - timedelta(days=1)))
        )


async def _suppressions(store: Store, sizes: Sizes) -> None:
    step = max(1, sizes.subscribers // sizes.suppressions)
    async with store.db.begin() as conn:
        found = (
            await conn.execute(
                select(subscribers.c.email_key)
                .where(subscribers.c.id % step == 1)
                .order_by(subscribers.c.id)
                .limit(sizes.suppressions)
            )
        ).scalars()
        keys = [str(k) for k in found]
    reasons = list(SuppressionReason)
    for number, key in enumerate(keys):
        await store.subscribers.suppress(
            key, reason=reasons[number % len(reasons)], detail="bench", now=NOW, actor="bench"
        )


def _statuses(running: bool, count: int) -> Any:
    """The status of the delivery of subscriber ``id``: done sends 2 % failed, 1 % skipped;
    the running one the same over its first 60 %, 1 % deferred, and the rest queued."""
    rest = subscribers.c.id % 100
    if not running:
        return case((rest < 2, "failed"), (rest == 2, "skipped"), else_="sent")
    return case(
        (subscribers.c.id > int(count * 0.6), "queued"),
        (rest < 2, "failed"),
        (rest == 2, "skipped"),
        (rest == 3, "deferred"),
        else_="sent",
    )


async def _deliveries(store: Store, send_id: int, list_id: int, count: int, running: bool) -> None:
    status = _statuses(running, count)
    attempted = case((status.in_(["queued", "skipped"]), 0), else_=1)
    code = case((status == "sent", 250), (status == "failed", 550), (status == "deferred", 451))
    reply = case(
        (status == "sent", "250 2.0.0 Ok: queued"),
        (status == "failed", "550 5.1.1 <x>: Recipient address rejected: User unknown"),
        (status == "deferred", "451 4.7.1 Greylisted, try again later"),
    )
    sent_at = case((status == "sent", _at(NOW - timedelta(seconds=20 if running else 86400))))
    retry = case((status == "deferred", _at(NOW + timedelta(minutes=5))))
    columns = ["send_id", "subscriber_id", "list_id", "status", "attempts", "smtp_code",
               "smtp_reply", "reason", "sent_at", "next_attempt_at", "created_at",
               "updated_at"]  # fmt: skip
    reason = case((status == "skipped", "suppressed"))
    async with store.db.begin(write=True) as conn:
        await conn.execute(
            insert(deliveries).from_select(
                columns,
                select(
                    literal(send_id), subscribers.c.id, literal(list_id), status, attempted,
                    code, reply, reason, sent_at, retry, _at(NOW - timedelta(days=1)),
                    _at(NOW - timedelta(minutes=1)),
                ),
            )
        )  # fmt: skip


async def _sends(store: Store, sizes: Sizes, built: Built, steps: Steps) -> None:
    list_id = await store.lists.id_of("members")
    for number in range(1, sizes.sends + 1):
        content = Content(name=f"lettre-{number:02d}", kind="announcement",
                          subject=f"Lettre n° {number}", body="Bonjour.")  # fmt: skip
        campaign = await store.campaigns.save(
            content, list_slugs=["members"], sender_name=None, sender_address=None,
            event=None, now=NOW,
        )  # fmt: skip
        due = NOW - timedelta(days=sizes.sends - number, hours=1)
        send_id, _ = await store.sends.create(
            campaign, key="announce", action="announcement", due_at=due, now=due
        )
        await store.sends.claim(send_id, node="bench:1", now=due)
        running = number == sizes.sends
        await steps.run(
            f"deliveries of send {send_id} ({'running' if running else 'done'})",
            _deliveries(store, send_id, list_id, sizes.subscribers, running),
        )
        if running:
            built.running = send_id
        else:
            await store.sends.finish(send_id, now=due + timedelta(hours=2))
            built.done = send_id
    for number, slugs in ((1, ["members"]), (2, ["members", "news"])):
        content = Content(name=f"prochaine-{number}", kind="announcement",
                          subject="À venir", body="Bonjour.")  # fmt: skip
        campaign = await store.campaigns.save(
            content, list_slugs=slugs, sender_name=None, sender_address=None, event=None,
            now=NOW,
        )  # fmt: skip
        await store.sends.create(campaign, key="announce", action="announcement",
                                 due_at=NOW + timedelta(days=7, hours=number), now=NOW)  # fmt: skip


async def _audit(store: Store, count: int) -> None:
    """``count`` entries as ``mailer.storage.audit.record`` writes them, in one executemany."""
    actions = ("subscriber.suppress", "subscriber.unsubscribe", "send.pause", "send.resume",
               "list.import", "user.add", "suppression.lift")  # fmt: skip
    rows = [
        {"at": NOW - timedelta(seconds=count - number),
         "actor": f"staff{number % 7}@staff.example.org",
         "action": actions[number % len(actions)], "target": _person(number + 1)[0],
         "details": {"reason": "bench", "n": number}, "client": "192.0.2.10"}
        for number in range(count)
    ]  # fmt: skip
    async with store.db.begin(write=True) as conn:
        await conn.execute(insert(audit_log), rows)


async def _pick(store: Store, step: int) -> str:
    """A subscriber in the three lists (id divisible by 10), suppressed (id % step == 1)."""
    async with store.db.begin() as conn:
        found = (
            await conn.execute(
                select(subscribers.c.public_id)
                .where(subscribers.c.id % 10 == 0, subscribers.c.id % step == 1)
                .limit(1)
            )
        ).scalar()
        if found is None:  # no such id at this size: any subscriber of the three lists
            found = (
                await conn.execute(select(subscribers.c.public_id).where(subscribers.c.id == 10))
            ).scalar()
    return str(found)


async def build(store: Store, workdir: Path, sizes: Sizes) -> Built:
    built = Built()
    steps = Steps(built)
    await steps.run("migrate", store.upgrade())
    await steps.run(f"import {sizes.subscribers:,} subscribers (import_file)",
                    _import(store, workdir, sizes.subscribers))  # fmt: skip
    await steps.run("lists news, events; statuses (bulk SQL)", _lists(store))
    await steps.run(f"{sizes.suppressions:,} suppressions (store.subscribers)",
                    _suppressions(store, sizes))  # fmt: skip
    await _sends(store, sizes, built, steps)
    await steps.run(f"{sizes.audit:,} audit entries", _audit(store, sizes.audit))
    if store.engine.dialect.name == "postgresql":
        async with store.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await steps.run("VACUUM ANALYZE", conn.execute(text("VACUUM ANALYZE")))
    step = max(1, sizes.subscribers // sizes.suppressions)
    built.public_id = await _pick(store, step)
    return built


async def recover(store: Store, sizes: Sizes) -> Built:
    """What :func:`build` returned, read back from a database it built (``--reuse``)."""
    built = Built()
    async with store.db.begin() as conn:
        rows = (await conn.execute(text("SELECT id, status FROM sends ORDER BY id"))).all()
    built.running = max(int(i) for i, s in rows if s == "running")
    built.done = max(int(i) for i, s in rows if s == "done")
    built.public_id = await _pick(store, max(1, sizes.subscribers // sizes.suppressions))
    return built


# --- timing -----------------------------------------------------------------------------------


@dataclass
class Timing:
    backend: str
    name: str
    target: float
    samples: list[float] = field(default_factory=list)
    first: float = 0.0  # the first, cold request (a reading made, nothing cached yet)
    note: str = ""

    def _ms(self, q: float) -> float:
        ordered = sorted(self.samples)
        return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    def line(self) -> str:
        if not self.samples:
            return f"{self.backend:<10} {self.name:<46} {'':>8} {'':>8} {'':>8}  {self.note}"
        p50, p95 = 1000 * statistics.median(self.samples), self._ms(0.95)
        verdict = "ok" if p95 <= 1000 * self.target else "SLOW"
        return (
            f"{self.backend:<10} {self.name:<46} {p50:8.1f} {p95:8.1f} "
            f"{1000 * max(self.samples):8.1f}  < {1000 * self.target:.0f} {verdict} "
            f"(first {1000 * self.first:.0f}) {self.note}"
        )


class Recorder:
    """The statements a read runs, with their own time (``--explain``)."""

    def __init__(self, store: Store) -> None:
        self.on = False
        self.found: list[tuple[str, Any, float]] = []
        engine = store.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if self.on:
            self.found.append((statement, params, time.perf_counter() - conn.info["bench_t0"]))


async def explain(store: Store, recorder: Recorder, work: Callable[[], Awaitable[Any]]) -> None:
    recorder.found, recorder.on = [], True
    try:
        await work()
    finally:
        recorder.on = False
    postgres = store.engine.dialect.name == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
    for statement, params, seconds in list(recorder.found):
        if not statement.lstrip().upper().startswith("SELECT"):
            continue
        print(f"    {1000 * seconds:7.1f} ms  {' '.join(statement.split())[:300]}")
        async with store.engine.connect() as conn:
            rows = (await conn.exec_driver_sql(prefix + statement, tuple(params or ()))).all()
        for row in rows:
            cells: list[Any] = list(row)
            print("               " + (str(cells[0]) if postgres else f"{cells[1]:>3} {cells[3]}"))


async def timed(
    name: str, backend: str, work: Callable[[], Awaitable[Any]], repeat: int, target: float
) -> Timing:
    timing = Timing(backend, name, target)
    try:
        start = time.perf_counter()
        await work()  # warm-up: caches, prepared statements, the console's readings
        timing.first = time.perf_counter() - start
        for _ in range(repeat):
            start = time.perf_counter()
            await work()
            timing.samples.append(time.perf_counter() - start)
    except Exception as exc:  # a page being written: say so and go on
        timing.samples, timing.note = [], f"{type(exc).__name__}: {str(exc)[:80]}"
    print(timing.line(), flush=True)
    return timing


def storage_reads(store: Store, built: Built) -> dict[str, Callable[[], Awaitable[Any]]]:
    from mailer.models import DeliveryStatus

    overview, browse = store.overview, store.browse
    week = timedelta(days=7)
    cursors: dict[str, Any] = {}

    async def report_next() -> Any:
        if "report" not in cursors:
            cursors["report"] = (await overview.report(built.done)).next
        return await overview.report(built.done, after=cursors["report"])

    async def members_next() -> Any:
        if "members" not in cursors:
            cursors["members"] = (await browse.members("members")).next
        return await browse.members("members", before=cursors["members"])

    async def person() -> Any:
        found = await browse.person(built.public_id)
        return await browse.deliveries(found.id)

    return {
        "overview.dashboard": lambda: overview.dashboard(now=NOW, within=week),
        "overview.send": lambda: overview.send(built.running),
        "overview.progress (running send)": lambda: overview.progress(built.running, now=NOW),
        "overview.report first page": lambda: overview.report(built.done),
        "overview.report next page": report_next,
        "overview.report status=failed": lambda: overview.report(
            built.done, status=DeliveryStatus.FAILED
        ),
        "overview.report q=camille.dupont1": lambda: overview.report(
            built.done, search="camille.dupont1"
        ),
        "lists.summaries (the import page's list)": store.lists.summaries,
        "browse.lists": browse.lists,
        "browse.members first page": lambda: browse.members("members"),
        "browse.members next page": members_next,
        "browse.members q=hugo.martin": lambda: browse.members("members", search="hugo.martin"),
        "browse.members q=Gaëlle (name)": lambda: browse.members("members", search="Gaëlle"),
        "browse.members q=zz (none)": lambda: browse.members("members", search="zz"),
        "browse.members status=unsubscribed": lambda: browse.members(
            "members", status="unsubscribed"
        ),
        "browse.members status=suppressed": lambda: browse.members("members", status="suppressed"),
        "browse.person + deliveries": person,
        "browse.suppressions": browse.suppressions,
        "browse.suppressions q=jean": lambda: browse.suppressions(search="jean"),
        "audit.page": lambda: store.audit.page(limit=51),
    }


def _link(html: str, pattern: str) -> str | None:
    found = re.search(r'href="([^"]*' + pattern + r'[^"]*)"', html)
    return None if found is None else found.group(1).replace("&amp;", "&").split("#")[0]


async def page_list(client: httpx.AsyncClient, built: Built) -> list[tuple[str, str, float]]:
    """(name, URL, target) of every page; later pages through the link the first one gives."""
    send, done = f"/admin/sends/{built.running}", f"/admin/sends/{built.done}"
    found: list[tuple[str, str, float]] = [
        ("/admin/", "/admin/", PAGE_TARGET),
        ("/admin/sends/{running}", send, PAGE_TARGET),
        ("/admin/sends/{running}/progress", send + "/progress", PROGRESS_TARGET),
        ("/admin/sends/{done}", done, PAGE_TARGET),
        ("/admin/sends/{done}?status=failed", done + "?status=failed", PAGE_TARGET),
        ("/admin/sends/{done}?q=camille.dupont1", done + "?q=camille.dupont1", PAGE_TARGET),
    ]
    later = _link((await client.get(done)).text, "after=")
    if later:
        found.append(("/admin/sends/{done}?after= (next page)", later, PAGE_TARGET))
    found += [
        ("/admin/lists", "/admin/lists", PAGE_TARGET),
        ("/admin/lists/members", "/admin/lists/members", PAGE_TARGET),
        ("/admin/lists/members?q=hugo.martin", "/admin/lists/members?q=hugo.martin", PAGE_TARGET),
        ("/admin/lists/members?q=Gaëlle", "/admin/lists/members?q=Ga%C3%ABlle", PAGE_TARGET),
        ("/admin/lists/members?q=zz (no match)", "/admin/lists/members?q=zz", PAGE_TARGET),
        ("/admin/lists/members?status=unsubscribed", "/admin/lists/members?status=unsubscribed",
         PAGE_TARGET),
        ("/admin/lists/members?status=suppressed", "/admin/lists/members?status=suppressed",
         PAGE_TARGET),
    ]  # fmt: skip
    later = _link((await client.get("/admin/lists/members")).text, "before=")
    if later:
        found.append(("/admin/lists/members?before= (next page)", later, PAGE_TARGET))
    found += [
        ("/admin/subscribers/{public_id}", f"/admin/subscribers/{built.public_id}", PAGE_TARGET),
        ("/admin/suppressions", "/admin/suppressions", PAGE_TARGET),
        ("/admin/suppressions?q=jean", "/admin/suppressions?q=jean", PAGE_TARGET),
        ("/admin/audit", "/admin/audit", PAGE_TARGET),
        ("/admin/import", "/admin/import", PAGE_TARGET),
        ("/admin/users", "/admin/users", PAGE_TARGET),
        ("/admin/me", "/admin/me", PAGE_TARGET),
    ]
    return found


async def time_pages(store: Store, settings: Any, built: Built, backend: str,
                     repeat: int) -> list[Timing]:  # fmt: skip
    app = create_app(settings, store, signer=Signer([KEY]))
    console = Console(store, settings, app)
    client = await console.client("admin")
    timings = []
    try:
        for name, url, target in await page_list(client, built):

            async def get(url: str = url) -> None:
                answer = await client.get(url)
                if answer.status_code != 200:
                    raise RuntimeError(f"HTTP {answer.status_code} for {url}")

            timings.append(await timed(name, backend, get, repeat, target))
    finally:
        await client.aclose()
    return timings


# --- the run ----------------------------------------------------------------------------------


async def run_backend(backend: str, args: argparse.Namespace, sizes: Sizes,
                      server: PostgresServer | None) -> list[Timing]:  # fmt: skip
    workdir = Path(args.reuse) if args.reuse else Path(tempfile.mkdtemp(prefix="bench-console-"))
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'data' / 'mailer.sqlite3'}"
    elif args.database_url:
        url = args.database_url
    else:
        assert server is not None
        url = await server.create_database()
    # the product's default: costly counts read once for everyone (the tests count at every look)
    settings = console_settings(workdir, url, cache_counts=True)
    print(f"\n== {backend}: {sizes.subscribers:,} subscribers, "
          f"{sizes.subscribers * sizes.sends:,} deliveries ({workdir})", flush=True)  # fmt: skip
    timings: list[Timing] = []
    try:
        async with Store.open(settings) as store:
            reuse = bool(args.reuse if backend == "sqlite" else args.database_url)
            if reuse:
                await store.upgrade()
                built = await recover(store, sizes)
            else:
                built = await build(store, workdir, sizes)
                print(f"  build: total {built.seconds:.1f} s", flush=True)
            recorder = Recorder(store)
            reads = storage_reads(store, built)
            print(f"\n{'backend':<10} {'storage read':<46} {'p50 ms':>8} {'p95 ms':>8} "
                  f"{'max ms':>8}  target", flush=True)  # fmt: skip
            for name, work in reads.items():
                target = PROGRESS_TARGET if "progress" in name else PAGE_TARGET
                timings.append(await timed(name, backend, work, args.repeat, target))
                if args.explain:
                    await explain(store, recorder, work)
            print(f"\n{'backend':<10} {'page (GET, signed-in admin)':<46} {'p50 ms':>8} "
                  f"{'p95 ms':>8} {'max ms':>8}  target", flush=True)  # fmt: skip
            timings += await time_pages(store, settings, built, backend, args.repeat)
    finally:
        if args.keep or args.reuse:
            print(f"  kept: {workdir}" + ("" if backend == "sqlite" else f" and {url}"))
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return timings


def _machine() -> str:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.node()}: {os.cpu_count()} cores (shared with other work: load {load}), "
        f"Python {platform.python_version()}, SQLite {__import__('sqlite3').sqlite_version}"
    )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 subscribers")
    parser.add_argument("--subscribers", type=int, help="instead of 1,000,000 (or 100,000)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per page")
    parser.add_argument("--explain", action="store_true", help="each read's statements and plans")
    parser.add_argument("--keep", action="store_true", help="keep the data (and the server)")
    parser.add_argument("--reuse", help="SQLite: the folder --keep kept (no build)")
    parser.add_argument("--database-url", help="PostgreSQL: a database --keep kept (no build)")
    args = parser.parse_args()
    count = args.subscribers or (100_000 if args.quick else 1_000_000)
    sizes = Sizes(subscribers=count, suppressions=300 if count < 500_000 else 3000)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    print(_machine(), flush=True)
    server = None
    timings: list[Timing] = []
    try:
        if "postgresql" in backends and not args.database_url:
            bindir = _pg_bindir()
            if bindir is None:
                raise SystemExit("no PostgreSQL binaries (initdb): apt-get install postgresql-15")
            server = PostgresServer(bindir)
            server.start()
            print(f"PostgreSQL {bindir.parent.name} on port {server.port} ({server.base})")
        elif "postgresql" in backends:
            server = None
        for backend in backends:
            timings += await run_backend(backend, args, sizes, server)
    finally:
        if server is not None and not args.keep:
            server.stop()
    slow = [t for t in timings if t.samples and t.line().find("SLOW") >= 0]
    print(f"\n{len(timings)} timings, {len(slow)} over target; {_machine()}")
    for t in slow:
        print("  SLOW " + t.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
