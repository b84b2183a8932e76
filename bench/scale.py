"""Benchmark of a million: import, materialise and send one campaign to 1,000,000 subscribers.

One pipeline, run twice on the same database backend with the same message: once with
``--subscribers`` (1,000,000) and once with ``--compare`` (20,000), the size ``send.py``
measures, so that the big send's rate can be held against the small one's. Each stage runs in
a child process of its own, so that its time, CPU and peak memory (``ru_maxrss``) are its own:

1. import: a generated CSV of fictional subscribers (``send.py``'s: about 60 % French, 30 %
   English, 10 % with no locale) through ``mailer.lists.import_file``, the import the CLI and
   the console run; rows/s and peak RSS;
2. materialise: the campaign saved (``send.py``'s ~18 KB French newsletter) and its send
   created due now, then ``store.sends.start``, the claim and the ``INSERT ... SELECT`` of
   one delivery per subscriber in one transaction, as the engine does when a send falls due;
   seconds;
3. send: ``Engine.run_send`` of that send (pre-flight, then the pass) through the SMTP pool
   into a fresh Postfix ``smtp-sink`` counting with ``-c``; msgs/s, the peak RSS of the
   sending process, and that of the render pool (its own processes) apart. Just before it,
   ``smtp-source`` sends 20,000 copies of the same message into its own fresh sink: the
   ceiling of that moment, so that a machine busier for one run than the other shows.

SQLite by default (a file in a temporary folder, the project's pragmas). With
``--database-url postgresql+asyncpg://user:password@host/db`` each pipeline runs in a scratch
database ``mailer_scale_<pid>_<n>`` created on that server (the user needs CREATEDB) and
dropped afterwards; the database named in the URL is only used to connect.

    .venv/bin/python bench/scale.py [--subscribers 1000000] [--compare 20000] [--quick]
                                    [--database-url URL] [--render-workers auto] [--seed 1]

``smtp-sink`` and ``smtp-source`` are found or fetched as ``bench/send.py`` does (Debian's
``postfix`` package, unpacked, never installed when that works). Figures are printed with the
targets of issue 18, never asserted; a failed check (a row not imported, a delivery not made,
a message not received) exits with status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from send import (
    BASE_URL,
    CAMPAIGN,
    DOMAIN,
    LIST_SLUG,
    LIST_TITLE,
    POOL,
    ROOT,
    SAMPLE_EVERY,
    SECRET,
    SENDER_ADDRESS,
    SENDER_NAME,
    SUBJECT,
    Sink,
    ToolError,
    Tools,
    Watch,
    _cpu_model,
    _maxrss_kib,
    _mib,
    _recipient_rows,
    _stop_forkserver,
    _time_phases,
    find_tools,
    run_ceiling,
)

URL_VARIABLE = "BENCH_SCALE_DATABASE_URL"  # parent to child: keeps passwords off argv
CHILD_TIMEOUT = 4 * 3600  # seconds: one send of a million on a slow machine
CEILING_MESSAGES = 20_000
TARGETS = {"import": 10_000.0, "materialise": 30.0, "rate": 0.9, "mib": 100.0, "growth": 0.2}
NODE = "bench-scale"

# --- the children: one stage each --------------------------------------------------------


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _settings(work: Path, url: str, port: int = 25, render_workers: int | str | None = None) -> Any:
    from mailer.settings import Settings

    values: dict[str, Any] = {
        "smtp": {
            "host": "127.0.0.1", "port": port, "security": "none", "pool_size": POOL,
            "local_hostname": "bench.example.org",
        },
        "sender": {"from_address": SENDER_ADDRESS, "from_name": SENDER_NAME, "domain": DOMAIN},
        "web": {"base_url": BASE_URL},
        "paths": {
            "data_dir": work / "data", "lists_dir": work / "lists",
            "templates_dir": ROOT / "templates",
        },
        "secret_keys": [SECRET],
        "database": {"url": url or f"sqlite+aiosqlite:///{work / 'mailer.sqlite3'}"},
    }  # fmt: skip
    if render_workers is not None:
        values["delivery"] = {"render_workers": render_workers}
    return Settings.model_validate(values)


async def _admin(url: str, statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def child_setup(work: Path, url: str, count: int, seed: int, name: str) -> dict[str, Any]:
    """The CSV and the list's file, the scratch database if asked, the schema."""
    import csv
    import sqlite3

    from sqlalchemy.engine import make_url

    from mailer.storage import Store

    lists = work / "lists"
    lists.mkdir(parents=True, exist_ok=True)
    csv_path = lists / f"{LIST_SLUG}.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(("email", "name", "locale"))
        writer.writerows(_recipient_rows(count, seed))
    (lists / f"{LIST_SLUG}.toml").write_text(
        f'title = "{LIST_TITLE}"\ndefault_locale = "fr"\n', encoding="utf-8"
    )
    backend = f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL"
    if url:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise SystemExit(f"--database-url: expected a postgresql+asyncpg:// URL, got {url!r}")
        admin = parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        try:
            await _admin(admin, f'CREATE DATABASE "{name}"')
        except Exception as exc:
            raise SystemExit(
                f"--database-url: cannot create the scratch database {name} ({exc}); the "
                "benchmark needs a reachable server and a user allowed to CREATE DATABASE"
            ) from None
        url = make_url(admin).set(database=name).render_as_string(hide_password=False)
    async with Store.open(_settings(work, url)) as store:
        await store.upgrade()
        if url:
            async with store.engine.connect() as conn:
                version = await conn.run_sync(lambda c: c.dialect.server_version_info)
            backend = f"PostgreSQL {'.'.join(map(str, version or ()))}, scratch database {name}"
    return {"url": url, "backend": backend, "csv_bytes": csv_path.stat().st_size}


async def child_drop(admin_url: str, scratch_url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    name = make_url(scratch_url).database
    admin = make_url(admin_url).set(drivername="postgresql+asyncpg")
    await _admin(admin.render_as_string(hide_password=False), f'DROP DATABASE IF EXISTS "{name}"')
    return {"dropped": name}


async def child_import(work: Path, url: str) -> dict[str, Any]:
    from mailer.lists import import_file
    from mailer.storage import Store

    async with Store.open(_settings(work, url)) as store:  # engine and driver loaded
        baseline = _maxrss_kib()
        cpu0, start = _cpu(), time.perf_counter()
        report = await import_file(store, work / "lists" / f"{LIST_SLUG}.csv", now=_now())
        seconds, cpu = time.perf_counter() - start, _cpu() - cpu0
    return {
        "rows": report.rows,
        "added": report.tally.added,
        "rejected": report.rejected_count,
        "seconds": seconds,
        "cpu": cpu,
        "baseline_kib": baseline,
        "peak_kib": _maxrss_kib(),
    }


def _now() -> datetime:
    return datetime.now(UTC)


async def child_materialise(work: Path, url: str, seed: int) -> dict[str, Any]:
    """Save the campaign, create its send due now, then time ``store.sends.start``; write
    the message as the send builds it (for the ceiling's smtp-source)."""
    from render_message import newsletter_body

    from mailer.models import Content
    from mailer.storage import Store

    body = newsletter_body(seed)
    settings = _settings(work, url)
    now = _now()
    async with Store.open(settings) as store:
        content = Content(name=CAMPAIGN, kind="newsletter", subject=SUBJECT, body=body)
        campaign = await store.campaigns.save(
            content, list_slugs=[LIST_SLUG], sender_name=SENDER_NAME,
            sender_address=SENDER_ADDRESS, event=None, now=now,
        )  # fmt: skip
        send_id, _ = await store.sends.create(
            campaign, key="bench", action="newsletter", due_at=now, now=now
        )
        spec = await store.sends.spec(send_id)
        baseline = _maxrss_kib()
        cpu0, start = _cpu(), time.perf_counter()
        started = await store.sends.start(spec, node=NODE, now=_now())
        seconds, cpu = time.perf_counter() - start, _cpu() - cpu0
        peak = _maxrss_kib()
        counts = await store.figures.counts(send_id)
        message = await _write_message(store, settings, spec, send_id, campaign, work)
        size = 0
        if url:  # PostgreSQL: the scratch database's size on disk
            from sqlalchemy import text

            async with store.engine.connect() as conn:
                query = text("SELECT pg_database_size(current_database())")
                size = int((await conn.execute(query)).scalar() or 0)
    return {
        "send_id": send_id,
        "started": started,
        "deliveries": counts.total,
        "queued": counts.queued,
        "seconds": seconds,
        "cpu": cpu,
        "baseline_kib": baseline,
        "peak_kib": peak,
        "message_bytes": message,
        "database_bytes": size,
    }


async def _write_message(
    store: Any, settings: Any, spec: Any, send_id: int, campaign: int, work: Path
) -> int:
    """The first recipient's message as the send builds it for smtp-sink (8BITMIME)."""
    from mailer.compose import make_composer
    from mailer.models import SendInfo
    from mailer.render import Renderer
    from mailer.tokens import Signer

    first = None
    async for recipient in store.lists.recipients(LIST_SLUG, limit=1):
        first = recipient
    if first is None:
        raise SystemExit("materialise: the list has no recipient")
    now = _now()
    composer = make_composer(
        settings,
        renderer=Renderer(settings.paths.templates_dir),
        signer=Signer([SECRET]),
        send=SendInfo(
            content=spec.content, list=spec.lists[0], sender_name=SENDER_NAME,
            sender_address=SENDER_ADDRESS, action=spec.action, now=now, event=None,
        ),
        send_id=send_id,
        trace=f"c{campaign}/bench",
        eight_bit=True,
    )  # fmt: skip
    data: bytes = composer.compose(first, date=now).message.data
    (work / "message-lf.eml").write_bytes(data.replace(b"\r\n", b"\n"))  # smtp-source -F
    return len(data)


class _Progress(logging.Handler):
    """The engine's progress lines (every ``progress_interval``) on stderr, indented."""

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(f"      {time.strftime('%H:%M:%S')} {record.getMessage()}\n")
        sys.stderr.flush()


async def child_send(
    work: Path, url: str, port: int, send_id: int, render_workers: int | str | None
) -> dict[str, Any]:
    """Engine.run_send of the materialised send; the render pool's CPU and peak RSS apart."""
    from mailer.app import cap_malloc_arenas
    from mailer.dispatch import Engine
    from mailer.storage import Store
    from mailer.transport import open_transport

    cap_malloc_arenas()  # as `mailer run` does, before this process's threads allocate

    dispatch = logging.getLogger("mailer.dispatch")
    dispatch.setLevel(logging.INFO)
    dispatch.addHandler(_Progress())
    settings = _settings(work, url, port, render_workers)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The render workers' peak RSS from /proc (VmHWM), as send.py reads it: RUSAGE_CHILDREN's
    # ru_maxrss would be this process's own at the fork server's fork, not theirs.
    watch, watching = Watch(os.getpid()), threading.Event()

    def look() -> None:
        while not watching.wait(SAMPLE_EVERY):
            watch.sample()

    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    try:
        async with Store.open(settings) as store, open_transport(settings) as transport:
            engine = Engine(settings, store, transport, node=NODE)
            phases = _time_phases(engine)
            await store.ping()
            baseline = _maxrss_kib()
            cpu0, start = _cpu(), time.perf_counter()
            summary = await engine.run_send(send_id)
            seconds, cpu = time.perf_counter() - start, _cpu() - cpu0
            peak = _maxrss_kib()
    finally:
        watching.set()
        looker.join()
    _stop_forkserver()  # the fork server and its render workers reaped: RUSAGE_CHILDREN
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = (children.ru_utime + children.ru_stime) - (
        children0.ru_utime + children0.ru_stime
    )
    renders = watch.of("render")
    return {
        "sent": summary.counts.get("sent", 0),
        "status": str(summary.status),
        "counts": dict(summary.counts),
        "reason": summary.reason,
        "seconds": seconds,
        "cpu": cpu,
        "phases": phases,
        "workers_cpu": workers_cpu,
        "workers_peak_kib": max((w.hwm_kib for w in renders), default=0),
        "render_processes": len(renders),
        "workers": str(settings.delivery.render_workers),
        "baseline_kib": baseline,
        "peak_kib": peak,
    }


def run_child(mode: str, options: dict[str, Any]) -> None:
    sys.path.insert(0, str(ROOT))  # the mailer package, when run from elsewhere
    url = os.environ.get(URL_VARIABLE, "")
    work = Path(options.get("work", "."))
    result: dict[str, Any]
    if mode == "setup":
        result = asyncio.run(
            child_setup(work, url, options["count"], options["seed"], options["name"])
        )
    elif mode == "import":
        result = asyncio.run(child_import(work, url))
    elif mode == "materialise":
        result = asyncio.run(child_materialise(work, url, options["seed"]))
    elif mode == "send":
        result = asyncio.run(
            child_send(
                work, url, options["port"], options["send_id"], options.get("render_workers")
            )
        )
    elif mode == "drop":
        result = asyncio.run(child_drop(url, os.environ[URL_VARIABLE + "_SCRATCH"]))
    else:
        raise SystemExit(f"unknown child mode {mode}")
    print(json.dumps(result, default=str))


# --- the parent: the pipelines, the report -----------------------------------------------


def child(mode: str, url: str, *, live: bool = False, **options: Any) -> dict[str, Any]:
    """Run this script in ``--child`` mode in a fresh interpreter; return its JSON.
    ``live``: the child's stderr (the engine's progress lines) goes straight to ours."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", mode,
        "--options", json.dumps(options, default=str),
    ]  # fmt: skip
    environ = {**os.environ, URL_VARIABLE: url}
    if "scratch" in options:
        environ[URL_VARIABLE + "_SCRATCH"] = options["scratch"]
    done = subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=None if live else subprocess.PIPE,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
        cwd=ROOT,
        env=environ,
    )
    if done.returncode != 0 or not done.stdout.strip():
        sys.stderr.write(done.stderr or "")
        raise SystemExit(f"the {mode} child failed (exit status {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["parent_kib"] = _maxrss_kib()  # what the child's ru_maxrss started from
    return result


def _size(work: Path) -> int:
    return sum(p.stat().st_size for p in work.glob("mailer.sqlite3*") if p.is_file())


def pipeline(
    count: int, work: Path, args: argparse.Namespace, tools: Tools, number: int
) -> dict[str, Any]:
    """Import, materialise and send ``count`` subscribers in a database of their own."""

    def say(text: str) -> None:
        print(text, flush=True)

    work.mkdir(parents=True)
    name = f"mailer_scale_{os.getpid()}_{number}"
    server = args.database_url
    start = time.perf_counter()
    setup = child("setup", server, work=work, count=count, seed=args.seed, name=name)
    setup_seconds = time.perf_counter() - start
    url = setup["url"]
    result: dict[str, Any] = {
        "count": count, "backend": setup["backend"], "setup_seconds": setup_seconds,
    }  # fmt: skip
    try:
        say(f"  {count:,} subscribers: importing the CSV ({setup['csv_bytes'] / 1e6:.1f} MB)")
        result["import"] = child("import", url, work=work)
        say(f"    {_rate(result['import'], 'rows')}")
        say("  materialising the send (store.sends.start: claim + INSERT ... SELECT)")
        result["materialise"] = child("materialise", url, work=work, seed=args.seed)
        say(f"    {result['materialise']['seconds']:.1f} s")
        result["db_bytes"] = _size(work) or result["materialise"]["database_bytes"]
        ceiling_count = min(CEILING_MESSAGES, count)
        with Sink(tools, work) as sink:
            ceiling = run_ceiling(tools, sink, work, ceiling_count)
            ceiling["received"] = sink.messages(ceiling_count)
        result["ceiling"] = ceiling
        say(
            f"  ceiling now: smtp-source {ceiling_count / ceiling['seconds']:,.0f} msgs/s; "
            f"sending {count:,} (Engine.run_send, pool {POOL})"
        )
        with Sink(tools, work) as sink:
            send = child(
                "send",
                url,
                live=True,
                work=work,
                port=sink.port,
                send_id=result["materialise"]["send_id"],
                render_workers=args.render_workers,
            )
            send["received"] = sink.messages(count, wait=30.0)
        result["send"] = send
        say(f"    {count / send['seconds']:,.0f} msgs/s")
        result["db_bytes"] = max(result["db_bytes"], _size(work))
    finally:
        if server:
            child("drop", server, scratch=url)
        shutil.rmtree(work, ignore_errors=True)
    return result


def estimate(small: dict[str, Any], wall: float, count: int) -> float:
    """Seconds the pipeline of ``count`` would take at the rates of ``small`` (which took
    ``wall``): its stages scaled, its fixed costs (interpreters, sinks, the ceiling) not."""
    stages = float(small["setup_seconds"]) + sum(
        float(small[stage]["seconds"]) for stage in ("import", "materialise", "send")
    )
    return stages * count / int(small["count"]) + (wall - stages)


def _rate(r: dict[str, Any], what: str) -> str:
    return f"{r['rows'] / r['seconds']:,.0f} {what}/s ({r['rows']:,} in {r['seconds']:.1f} s)"


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def checks(result: dict[str, Any]) -> list[str]:
    """What did not add up in one pipeline."""
    count, problems = result["count"], []
    imported, made, send = result["import"], result["materialise"], result["send"]
    if imported["added"] != count or imported["rejected"]:
        problems.append(
            f"{count:,}: import added {imported['added']:,} and rejected {imported['rejected']:,}"
        )
    if not made["started"] or made["queued"] != count:
        problems.append(
            f"{count:,}: materialise queued {made['queued']:,} deliveries (started: "
            f"{made['started']})"
        )
    if send["sent"] != count or send["received"] != count:
        problems.append(
            f"{count:,}: the engine recorded {send['sent']:,} sent ({send['counts']}, "
            f"{send['status']}, {send['reason'] or 'no reason'}); the sink counted "
            f"{send['received']:,}"
        )
    if result["ceiling"]["received"] != result["ceiling"]["messages"]:
        problems.append(f"{count:,}: the ceiling's sink counted {result['ceiling']['received']:,}")
    for stage in ("import", "materialise", "send"):
        r = result[stage]
        if r["parent_kib"] >= r["baseline_kib"]:
            problems.append(
                f"{count:,} {stage}: the parent's peak RSS ({_mib(r['parent_kib'])} MiB) "
                "reached the child's baseline: its ru_maxrss may be the parent's"
            )
    return problems


def stage_lines(result: dict[str, Any]) -> list[str]:
    """The figures of one pipeline, a line per stage."""
    count, imported, made, send = (
        result["count"], result["import"], result["materialise"], result["send"],
    )  # fmt: skip
    phases = send["phases"]
    pre = phases.get("preflight", [0.0, 0.0])[0]
    passed = phases.get("pass", [send["seconds"], 0.0])[0]
    ceiling = result["ceiling"]["messages"] / result["ceiling"]["seconds"]
    rate = count / send["seconds"]
    grown = imported["peak_kib"] - imported["baseline_kib"]
    return [
        f"  {count:,} subscribers (the database {result['db_bytes'] / 2**20:,.0f} MiB)",
        f"    import       {imported['rows'] / imported['seconds']:>9,.0f} rows/s  "
        f"{imported['seconds']:7.1f} s  CPU {imported['cpu']:6.1f} s  peak RSS "
        f"{_mib(imported['peak_kib'])} MiB (+{_mib(grown)} during the import, "
        f"{grown * 1024 / count:,.0f} bytes per row)",
        f"    materialise  {made['deliveries'] / made['seconds']:>9,.0f} rows/s  "
        f"{made['seconds']:7.1f} s  CPU {made['cpu']:6.1f} s  peak RSS "
        f"{_mib(made['peak_kib'])} MiB",
        f"    send         {rate:>9,.0f} msgs/s  {send['seconds']:7.1f} s  CPU {send['cpu']:6.1f} s"
        f" + render pool {send['workers_cpu']:.1f} s (render_workers {send['workers']})",
        f"                 pre-flight {pre:.1f} s, the pass {passed:.1f} s "
        f"({count / passed:,.0f} msgs/s); {(send['cpu'] + send['workers_cpu']) / count * 1e3:.2f}"
        f" ms CPU/msg",
        f"                 peak RSS: sending process {_mib(send['peak_kib'])} MiB (after "
        f"imports {_mib(send['baseline_kib'])}), render pool {_mib(send['workers_peak_kib'])} MiB",
        f"                 ceiling just before: {ceiling:,.0f} msgs/s; send ÷ ceiling "
        f"{rate / ceiling:.3f}",
    ]


def report(big: dict[str, Any], small: dict[str, Any] | None, began: float) -> list[str]:
    """The figures with the targets."""
    out = [
        "",
        f"mailer scale benchmark: {big['backend']}; loopback, Postfix smtp-sink (discards); "
        f"message {big['materialise']['message_bytes']:,} bytes, SMTP pool {POOL}",
        f"  Python {platform.python_version()} on {platform.machine()}, {_cpu_model()}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
    ]
    for result in (small, big):
        if result is not None:
            out += stage_lines(result)
    imported, made, send = big["import"], big["materialise"], big["send"]
    import_rate = imported["rows"] / imported["seconds"]
    out += [
        "",
        f"against the targets ({big['count']:,} subscribers)",
        f"  import       {import_rate:9,.0f} rows/s  target ≥ {TARGETS['import']:,.0f} "
        f"({_verdict(import_rate >= TARGETS['import'])})",
        f"  materialise  {made['seconds']:9.1f} s       target < {TARGETS['materialise']:.0f} s "
        f"({_verdict(made['seconds'] < TARGETS['materialise'])})",
    ]
    if small is not None:
        rate, rate20 = big["count"] / send["seconds"], small["count"] / small["send"]["seconds"]
        ceiling = big["ceiling"]["messages"] / big["ceiling"]["seconds"]
        ceiling20 = small["ceiling"]["messages"] / small["ceiling"]["seconds"]
        ratio = (rate / ceiling) / (rate20 / ceiling20)
        same = rate / rate20 >= TARGETS["rate"]
        out.append(
            f"  send rate    {rate:9,.0f} msgs/s against {rate20:,.0f} at {small['count']:,} "
            f"(x{rate / rate20:.2f}; x{ratio:.2f} each against the ceiling just before it)  "
            f"target the same rate, ≥ x{TARGETS['rate']} ({_verdict(same)})"
        )
        peak, peak20 = send["peak_kib"], small["send"]["peak_kib"]
        growth = (peak - peak20) / peak20
        workers = send["workers_peak_kib"]
        ok = max(peak, peak20) / 1024 < TARGETS["mib"] and growth <= TARGETS["growth"]
        out.append(
            f"  memory       sending process {_mib(peak)} MiB against {_mib(peak20)} MiB "
            f"({growth:+.0%})  target < {TARGETS['mib']:.0f} MiB, within "
            f"{TARGETS['growth']:.0%} ({_verdict(ok)}); render pool {_mib(workers)} / "
            f"{_mib(small['send']['workers_peak_kib'])} MiB (apart)"
        )
    out.append(f"total {time.perf_counter() - began:.0f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--subscribers", type=int, default=1_000_000, help="the big send (default 1000000)"
    )
    parser.add_argument(
        "--compare",
        type=int,
        default=20_000,
        help="the send to compare the rate with (default 20000; 0: none)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="20,000 against 2,000 subscribers: a smoke run"
    )
    parser.add_argument(
        "--database-url",
        default="",
        help="postgresql+asyncpg://user:password@host/db: run in scratch databases created on "
        "that server (and dropped); default: SQLite in the temporary folder",
    )
    parser.add_argument(
        "--render-workers",
        default=None,
        help="MAILER_DELIVERY__RENDER_WORKERS for the sends: auto or a number (default auto)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=0,
        help="minutes: when the comparison's rates say the big send would take longer, run "
        "--fallback subscribers instead and say so (default 0: no budget)",
    )
    parser.add_argument(
        "--fallback",
        type=int,
        default=200_000,
        help="subscribers of the big send when over --budget (default 200000)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the generators (default 1)")
    parser.add_argument(
        "--tools", help="folder holding smtp-sink and smtp-source (default: found or fetched)"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--options", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, json.loads(args.options))
        return
    if args.quick:
        args.subscribers, args.compare = 20_000, 2_000
    if args.subscribers < 1 or args.compare < 0 or args.fallback < 1 or args.budget < 0:
        parser.error(
            "--subscribers and --fallback must be at least 1, --compare and --budget at least 0"
        )
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error(
            f"--database-url: expected a postgresql+asyncpg://user:password@host/db URL, got "
            f"{args.database_url.split('://')[0]}://..."
        )

    def say(text: str) -> None:
        print(text, flush=True)

    began = time.perf_counter()
    try:
        tools = find_tools(args.tools, say)
    except ToolError as exc:
        raise SystemExit(f"cannot get smtp-sink and smtp-source: {exc}") from None
    say(f"smtp-sink and smtp-source: {tools.how}")
    work = Path(tempfile.mkdtemp(prefix="mailer-bench-scale-"))
    problems: list[str] = []
    small = None
    note = ""
    try:
        count = args.subscribers
        if args.compare:
            say(f"the comparison: {args.compare:,} subscribers (in {work})")
            start = time.perf_counter()
            small = pipeline(args.compare, work / "compare", args, tools, 1)
            problems += checks(small)
            minutes = estimate(small, time.perf_counter() - start, count) / 60
            say(f"at the comparison's rates, {count:,} would take about {minutes:.0f} min")
            if args.budget and minutes > args.budget and args.fallback < count:
                note = (
                    f"{args.fallback:,} subscribers instead of {count:,}: at the comparison's "
                    f"rates, {count:,} would have taken about {minutes:.0f} min, over the "
                    f"--budget of {args.budget:g} min"
                )
                say(f"  so {note}")
                count = args.fallback
        say(f"the big one: {count:,} subscribers")
        big = pipeline(count, work / "big", args, tools, 2)
        problems += checks(big)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for line in report(big, small, began):
        say(line)
    if note:
        say(f"note: {note}")
    for problem in problems:
        say(f"CHECK FAILED: {problem}")
    if not problems:
        say(
            "checks: every row imported, every delivery materialised, every message sent and "
            f"counted by the sink; the parent stayed at {_mib(_maxrss_kib())} MiB"
        )
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
