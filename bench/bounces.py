"""Benchmark of bounces: messages parsed, and parsed and recorded, per second on one core.

Two measurements, both by default (``--only corpus`` or ``--only record`` for one):

1. corpus (parsing only): every bounce of ``tests/fixtures/bounces/`` (66 real bounces from
   as many mail servers, sisimai's set-of-emails) read into memory, then
   :func:`mailer.bounces.parse` over them round after round for ``--seconds`` (default 5):
   messages per second over the whole mix and per reader (standard DSN/ARF parts, or the
   fallback rules for servers' own formats).
2. record (parsed and recorded): a fresh database (a SQLite file in a temporary folder, or
   a scratch database on the PostgreSQL server of ``--database-url``, created and dropped)
   with a send of ``--bounces`` deliveries (default 20,000) marked sent with their
   Message-IDs, as dispatch records them; then as many distinct DSNs, one per delivery (about
   65 % hard, 35 % soft, in the words of a few common servers, each returning the headers of
   the message it is about), fed to the real intake: one after another to
   ``mailer.intake.Intake.message(raw, source="import")`` (the listener's way: parsing in a
   worker thread, the return path checked, one transaction that ties the delivery, marks it
   bounced, scores the address and suppresses it), and, on a second fresh database with the
   same DSNs, ``--batch`` at a time (default 500) to ``Intake.messages(raws,
   source="import")`` (the way of an IMAP fetch and ``mailer bounces import``: one
   transaction of a few multi-row statements per batch). ``--only-batch`` or
   ``--only-single`` measures one of the two. The DSNs are tied by their VERP return path
   (the bounce domain is configured, ``--tie verp``, the default) or, with ``--tie
   message-id``, by the Message-ID they echo (no bounce domain). Printed for each: parsed and
   recorded per second, parsing alone over the same messages (the difference is the
   recording), CPU per message (all threads: aiosqlite's and the parsing worker's too; and
   the event loop's thread's own), the rate by fifth of the run (does it slow down as the
   tables grow?) and the ratio to the target; ``--profile`` adds cProfile's top functions of
   the event loop's thread. The outcome of every bounce is checked (tied to its own
   delivery, hard ones suppressing, soft ones counted, the stored bounces by kind); a
   mismatch exits with status 1.

Issue 16's target is 1,000 messages/s on one core. Figures are printed, never asserted.

    .venv/bin/python bench/bounces.py [--only corpus|record] [--seconds 5] [--bounces 20000]
        [--database-url postgresql+asyncpg://user:password@host/postgres]
        [--tie verp|message-id] [--batch 500] [--only-single|--only-batch] [--profile]
        [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import platform
import pstats
import random
import sqlite3
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailer.bounces import parse

CORPUS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "bounces"
TARGET = 1_000.0  # messages per second on one core (issue 16)
DOMAIN = "bounces.lists.example.org"  # the bounce domain of the return paths
SENDER = "news@lists.example.org"
SECRET = "bench-bounces-7fK2pQ9xL4mV1sT8wR3yN6bH0cJ5dG"  # noqa: S105 - signs fictional paths
LIST_SLUG = "bench-members"
CAMPAIGN = "lettre-mars-2024"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    return (
        f"{_cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, one process"
    )


# --- 1. corpus: parsing only ----------------------------------------------------------------


def corpus(seconds: float) -> None:
    messages = [(p.name, p.read_bytes()) for p in sorted(CORPUS.glob("*.eml"))]
    if not messages:
        raise SystemExit(f"no .eml file in {CORPUS}")
    for _, raw in messages:  # warm up: imports, regex compilation
        parse(raw)
    spent: dict[str, float] = defaultdict(float)
    counted: dict[str, int] = defaultdict(int)
    total, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _, raw in messages:
            t0 = time.perf_counter()
            report = parse(raw)
            how = report.reader
            spent[how] += time.perf_counter() - t0
            counted[how] += 1
            total += 1
    elapsed = time.perf_counter() - started
    rate = total / elapsed
    print("corpus: parsing only")
    print(f"  {len(messages)} corpus messages, {total} parsed in {elapsed:.1f} s")
    print(f"  all: {rate:,.0f} messages/s (target {TARGET:,.0f}/s: {rate / TARGET:.2f} of it)")
    for how in sorted(counted):
        per = counted[how] / spent[how] if spent[how] else float("inf")
        print(f"    {how}: {counted[how] // max(total // len(messages), 1)} of the corpus, "
              f"{per:,.0f} messages/s")  # fmt: skip


# --- 2. record: parsed and recorded ---------------------------------------------------------

# (kind, Action, Status, Remote-MTA, Diagnostic-Code): what a few common servers say.
FORMS = [
    ("hard", "failed", "5.1.1", "mx.example.net",
     "smtp; 550 5.1.1 <{to}>: Recipient address rejected: User unknown in virtual mailbox "
     "table"),
    ("hard", "failed", "5.1.1", "gmail-smtp-in.l.google.com",
     "smtp; 550-5.1.1 The email account that you tried to reach does not exist. Please try "
     "double-checking the recipient's email address for typos or unnecessary spaces. For "
     "more information, go to https://support.google.com/mail/?p=NoSuchUser"),
    ("hard", "failed", "5.1.10", "example-org.mail.protection.outlook.com",
     "smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient {to} not found by SMTP "
     "address lookup"),
    ("hard", "failed", "5.1.2", "mx.example.net",
     "smtp; 550 5.1.2 Host or domain name not found. Name service error for name=nowhere"),
    ("soft", "failed", "5.2.2", "mx.example.net",
     "smtp; 552 5.2.2 <{to}>: Mailbox full: quota exceeded"),
    ("soft", "failed", "4.2.2", "mta7.am0.yahoodns.net",
     "smtp; 452 4.2.2 The email account that you tried to reach is over quota"),
    ("soft", "failed", "4.4.7", "mx.example.net",
     "X-Postfix; delivery temporarily suspended: connect to mx.example.net[192.0.2.7]:25: "
     "Connection timed out"),
]  # fmt: skip
HARD_SHARE = 0.65


@dataclass(frozen=True, slots=True)
class Made:
    """One delivery marked sent, and the DSN built for it."""

    delivery_id: int
    email: str
    kind: str
    raw: bytes


def dsn(
    i: int, made_to: str, email: str, message_id: str, trace: str, form: tuple[str, ...]
) -> bytes:
    """A Postfix-style RFC 3464 DSN about one message (as tests/test_bounce_intake.py builds
    them, with the returned message's headers)."""
    _, action, status, remote, diagnostic = form
    queue = f"{i:010X}"
    blocks = (
        f"Reporting-MTA: dns; relay{i % 7}.isp.example\nX-Postfix-Queue-ID: {queue}\n"
        f"X-Postfix-Sender: rfc822; {made_to}\nArrival-Date: Tue, 12 Mar 2024 09:14:07 +0100\n\n"
        f"Final-Recipient: rfc822; {email}\nOriginal-Recipient: rfc822;{email}\n"
        f"Action: {action}\nStatus: {status}\nRemote-MTA: dns; {remote}\n"
        f"Diagnostic-Code: {diagnostic.format(to=email)}\n"
    )
    returned = (
        f"Return-Path: <{made_to}>\nFrom: =?utf-8?q?R=C3=A9seau_CRI?= <{SENDER}>\n"
        f"To: {email}\nSubject: =?utf-8?q?La_lettre_du_r=C3=A9seau_=E2=80=94_mars?=\n"
        f"Date: Tue, 12 Mar 2024 09:14:02 +0100\nMessage-ID: {message_id}\n"
        f"X-Mailer-Send: {trace}\nList-Id: <{LIST_SLUG}.lists.example.org>\n"
        f"List-Unsubscribe: <https://lists.example.org/u/{i:x}>\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\nMIME-Version: 1.0\n"
        'Content-Type: multipart/alternative; boundary="=_alt"\n'
    )
    text = (
        "This is the mail system at host relay.isp.example.\n\nI'm sorry to have to inform "
        "you that your message could not\nbe delivered to one or more recipients. It's "
        "attached below.\n\n                   The mail system\n\n"
        f"<{email}>: host {remote} said: {diagnostic.format(to=email)[6:]}\n"
    )
    return (
        f"Return-Path: <>\nDelivered-To: {made_to}\n"
        f"Received: from relay{i % 7}.isp.example (relay{i % 7}.isp.example [198.51.100.{i % 250}])"
        f"\n\tby mx.lists.example.org (Postfix) with ESMTPS id {queue}\n\tfor <{made_to}>; "
        "Tue, 12 Mar 2024 09:14:07 +0100 (CET)\n"
        "From: MAILER-DAEMON@relay.isp.example (Mail Delivery System)\n"
        f"To: {made_to}\nSubject: Undelivered Mail Returned to Sender\n"
        f"Date: Tue, 12 Mar 2024 09:14:07 +0100 (CET)\n"
        f"Message-ID: <20240312081407.{queue}@relay{i % 7}.isp.example>\n"
        "Auto-Submitted: auto-replied\nMIME-Version: 1.0\n"
        "Content-Type: multipart/report; report-type=delivery-status;\n"
        f'\tboundary="{queue}.1710231247/relay.isp.example"\n\n'
        f"--{queue}.1710231247/relay.isp.example\nContent-Description: Notification\n"
        f"Content-Type: text/plain; charset=us-ascii\n\n{text}\n"
        f"--{queue}.1710231247/relay.isp.example\nContent-Description: Delivery report\n"
        f"Content-Type: message/delivery-status\n\n{blocks}\n"
        f"--{queue}.1710231247/relay.isp.example\nContent-Description: Undelivered Message "
        f"Headers\nContent-Type: text/rfc822-headers\n\n{returned}\n"
        f"--{queue}.1710231247/relay.isp.example--\n"
    ).encode()


def settings_for(work: Path, url: str, tie: str) -> Any:
    from mailer.settings import Settings

    return Settings.model_validate(
        {
            "paths": {"data_dir": work / "data", "lists_dir": work / "lists"},
            "database": {"url": url or None},
            "secret_keys": [SECRET],
            "bounces": {"domain": DOMAIN if tie == "verp" else None},
        }
    )


async def _admin(url: str, statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@asynccontextmanager
async def database(url: str) -> AsyncIterator[tuple[str, str]]:
    """The URL to run on and its description: SQLite (``url`` empty: the data folder's
    file), or a scratch database created on ``url``'s server and dropped afterwards."""
    if not url:
        yield "", f"SQLite {sqlite3.sqlite_version} file, WAL, synchronous=NORMAL"
        return
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise SystemExit(f"--database-url: expected a postgresql+asyncpg:// URL, got {url!r}")
    admin = parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
    name = f"mailer_bench_bounces_{os.getpid()}"
    try:
        await _admin(admin, f'CREATE DATABASE "{name}"')
    except Exception as exc:
        raise SystemExit(
            f"cannot create the scratch database {name} ({exc}); the benchmark needs a "
            "reachable server and a user allowed to CREATE DATABASE"
        ) from None
    try:
        scratch = make_url(admin).set(database=name).render_as_string(hide_password=False)
        yield scratch, f"on {parsed.host}:{parsed.port}, scratch database {name}"
    finally:
        await _admin(admin, f'DROP DATABASE IF EXISTS "{name}"')


async def prepare(store: Any, work: Path, count: int, tie: str, seed: int) -> list[Made]:
    """A list of ``count`` people, a send to it claimed and every delivery marked sent with
    its Message-ID (in dispatch's group commits), and one DSN per delivery."""
    from mailer.lists import import_file
    from mailer.message import make_message_id
    from mailer.models import Content, DeliveryResult, DeliveryStatus
    from mailer.tokens import Signer, return_path

    now = datetime.now(UTC)
    lists = work / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    path = lists / f"{LIST_SLUG}.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name\n")
        for i in range(count):
            handle.write(f"membre.{i}@univ-{i % 97}.example.fr,Membre {i}\n")
    assert (await import_file(store, path, now=now)).ok
    content = Content(name=CAMPAIGN, kind="announcement", subject="La lettre", body="Bonjour.")
    campaign = await store.campaigns.save(
        content, list_slugs=[LIST_SLUG], sender_name=None, sender_address=None, event=None,
        now=now,
    )  # fmt: skip
    send_id, _ = await store.sends.create(
        campaign, key="announce", action="announcement", due_at=now, now=now
    )
    assert await store.sends.start(await store.sends.spec(send_id), node="bench", now=now)
    signer, rng, after = Signer([SECRET]), random.Random(seed), 0
    made: list[Made] = []
    hard = [f for f in FORMS if f[0] == "hard"]
    soft = [f for f in FORMS if f[0] == "soft"]
    while len(made) < count:
        due = await store.deliveries.due(send_id, after=after, limit=1000, now=now)
        if not due:
            break
        results = []
        for d in due:
            message_id = make_message_id(
                send_id=send_id, subscriber_id=d.recipient.id, domain="lists.example.org"
            )
            results.append(
                DeliveryResult(
                    d.id, DeliveryStatus.SENT, code=250, reply="250 2.0.0 Ok: queued",
                    message_id=message_id,
                )
            )  # fmt: skip
            form = rng.choice(hard if rng.random() < HARD_SHARE else soft)
            to = return_path(signer, d.id, DOMAIN) if tie == "verp" else SENDER
            raw = dsn(len(made), to, d.recipient.email, message_id, f"c{campaign}/announce", form)
            made.append(Made(d.id, d.recipient.email, form[0], raw))
        await store.deliveries.record(results, now=now)
        after = due[-1].id
    if len(made) != count:
        raise SystemExit(f"CHECK FAILED: {len(made)} deliveries materialised, not {count}")
    return made


def check(made: list[Made], outcomes: list[Any], counts: dict[str, int]) -> list[str]:
    """What went wrong: each bounce tied to its own delivery and doing what its kind does."""
    from mailer.models import BounceAction

    expected = {"hard": BounceAction.SUPPRESSED, "soft": BounceAction.COUNTED}
    wrong = []
    for m, outcome in zip(made, outcomes, strict=True):
        got = [(n.delivery_id, n.kind.value, n.action) for n in outcome.notes]
        if outcome.duplicate or got != [(m.delivery_id, m.kind, expected[m.kind])]:
            wrong.append(f"delivery {m.delivery_id} ({m.kind}): {got} {outcome.duplicate=}")
    kinds = Counter(m.kind for m in made)
    if counts != dict(kinds):
        wrong.append(f"stored bounces by kind {counts}, expected {dict(kinds)}")
    return wrong


def rate_line(what: str, n: int, seconds: float, cpu: float, main: float | None = None) -> str:
    rate = n / seconds
    line = f"  {what}: {rate:,.0f} messages/s ({n} in {seconds:.1f} s, CPU {1000 * cpu / n:.2f}"
    if main is not None:
        line += f" ms per message, {1000 * main / n:.2f} of it in the event loop's thread"
    else:
        line += " ms per message"
    return line + f"; target {TARGET:,.0f}/s: {rate / TARGET:.2f} of it)"


async def record(args: argparse.Namespace) -> int:
    """One at a time and in batches, each on a fresh database; the worst status."""
    sizes = [] if args.only_batch else [0]
    sizes += [] if args.only_single else [args.batch]
    status = 0
    for batch in sizes:
        status = max(status, await record_once(args, batch))
    return status


async def record_once(args: argparse.Namespace, batch: int) -> int:
    from mailer.intake import Intake
    from mailer.storage import Store

    with tempfile.TemporaryDirectory(prefix="mailer-bench-bounces-") as tmp:
        work = Path(tmp)
        async with database(args.database_url) as (url, described):
            settings = settings_for(work, url, args.tie)
            async with Store.open(settings) as store:
                await store.upgrade()
                if url:
                    async with store.engine.connect() as conn:
                        version = await conn.run_sync(lambda c: c.dialect.server_version_info)
                    described = f"PostgreSQL {'.'.join(map(str, version or ()))} {described}"
                t0 = time.perf_counter()
                made = await prepare(store, work, args.bounces, args.tie, args.seed)
                set_up = time.perf_counter() - t0
                intake = Intake(store, settings)
                return await measure(store, intake, made, args, (described, set_up, batch))


async def feed(
    intake: Any, raws: list[bytes], batch: int, step: int
) -> tuple[list[Any], list[float]]:
    """Every DSN to the intake, one at a time (``batch`` 0) or ``batch`` at a time; the
    outcomes, and the times at which each fifth was done."""
    outcomes: list[Any] = []
    marks: list[float] = []
    if not batch:
        for i, raw in enumerate(raws):
            outcomes.append(await intake.message(raw, source="import"))
            if (i + 1) % step == 0 and len(marks) < 5:
                marks.append(time.perf_counter())
        return outcomes, marks
    for start in range(0, len(raws), batch):
        outcomes += await intake.messages(raws[start : start + batch], source="import")
        while len(marks) < 5 and len(outcomes) >= step * (len(marks) + 1):
            marks.append(time.perf_counter())
    return outcomes, marks


async def measure(
    store: Any, intake: Any, made: list[Made], args: argparse.Namespace,
    run: tuple[str, float, int],
) -> int:  # fmt: skip
    described, set_up, batch = run
    raws = [m.raw for m in made]
    for raw in raws[:200]:  # warm up the parser (the database is warmed by the first records)
        parse(raw)
    t0, c0 = time.perf_counter(), time.process_time()
    for raw in raws:
        parse(raw)
    parse_s, parse_cpu = time.perf_counter() - t0, time.process_time() - c0
    profile = cProfile.Profile() if args.profile else None
    step = len(raws) // 5
    t0, c0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
    if profile:
        profile.enable()
    outcomes, marks = await feed(intake, raws, batch, step)
    if profile:
        profile.disable()
    record_s, record_cpu = time.perf_counter() - t0, time.process_time() - c0
    record_main = time.thread_time() - m0
    wrong = check(made, outcomes, await store.bounces.counts())
    n, kinds = len(raws), Counter(m.kind for m in made)
    size = sum(map(len, raws)) / n
    tie = "VERP return path" if args.tie == "verp" else "Message-ID echoed"
    how = f"Intake.messages, {batch} at a time" if batch else "Intake.message, one at a time"
    print(f"record: parsed and recorded through {how}, on {described}")
    print(f"  a send of {n:,} deliveries marked sent (set up in {set_up:.1f} s); {n:,} DSNs, "
          f"one per delivery ({kinds['hard']} hard, {kinds['soft']} soft; {size:,.0f} bytes "
          f"on average), tied by the {tie}")  # fmt: skip
    print(rate_line("parsed and recorded", n, record_s, record_cpu, record_main))
    print(rate_line("parsing only, same messages", n, parse_s, parse_cpu))
    per_record = 1000 * (record_s - parse_s) / n
    print(f"  recording's share: {per_record:.2f} ms per message of {1000 * record_s / n:.2f} "
          f"({(record_s - parse_s) / record_s:.0%})")  # fmt: skip
    if step >= batch:  # a fifth is a batch at least
        starts = [t0, *marks[:-1]]
        fifths = [step / (b - a) for a, b in zip(starts, marks, strict=True)]
        print("  parsed and recorded by fifth of the run: "
              + ", ".join(f"{r:,.0f}" for r in fifths) + " messages/s")  # fmt: skip
    if profile:
        print("\n  cProfile of the recording loop (main thread; the parse runs in a worker "
              "thread, SQLite in aiosqlite's):")  # fmt: skip
        for order in ("tottime", "cumulative"):
            pstats.Stats(profile).strip_dirs().sort_stats(order).print_stats(25)
    for line in wrong[:10]:
        print(f"  CHECK FAILED: {line}")
    if wrong:
        print(f"  CHECK FAILED: {len(wrong)} problem(s)")
    return 1 if wrong else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", choices=("corpus", "record"), help="one measurement only")
    parser.add_argument("--seconds", type=float, default=5.0, help="corpus: seconds (5)")
    parser.add_argument("--bounces", type=int, default=20_000, help="record: DSNs (20000)")
    parser.add_argument(
        "--database-url", default="",
        help="record: postgresql+asyncpg://user:password@host/db: on a scratch database "
        "created on that server (and dropped); default: a SQLite file in a temporary folder",
    )  # fmt: skip
    parser.add_argument("--tie", choices=("verp", "message-id"), default="verp")
    parser.add_argument(
        "--batch", type=int, default=500, help="record: messages per Intake.messages (500)"
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--only-single", action="store_true", help="record: one at a time only")
    only.add_argument("--only-batch", action="store_true", help="record: in batches only")
    parser.add_argument("--profile", action="store_true", help="record: cProfile the loop")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.bounces < 10:
        parser.error("--bounces must be at least 10")
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    print(f"bounces on {machine()}")
    status = 0
    if args.only in (None, "corpus"):
        corpus(args.seconds)
    if args.only in (None, "record"):
        status = asyncio.run(record(args))
    raise SystemExit(status)


if __name__ == "__main__":
    main()
