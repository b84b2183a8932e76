"""Benchmark of the subscriber-list CSV import (``mailer.lists.import_file``).

Generates a deterministic CSV of fictional subscribers (example.org / example.net), then
runs each measurement in its own child process, so that the peak memory
(``ru_maxrss``) belongs to that measurement alone:

1. parse + validate only: iterate ``ListFile`` without a database (the ceiling);
2. first import into an empty database (every row is new);
3. re-import of the same file (every row is unchanged: the no-op path).

SQLite by default (a file in a temporary folder). With ``--database-url
postgresql+asyncpg://user:password@host/db`` the benchmark creates a scratch database
``mailer_bench_<pid>`` on that server (the user needs CREATEDB), and drops it afterwards.

    .venv/bin/python bench/list_import.py [--rows 100000] [--seed 1] [--database-url URL]

On Linux a child's ``ru_maxrss`` starts at its parent's high-water mark (it survives fork
and exec), so this parent stays small: standard library only, a generator whose memory
does not grow with the file, and every database or ``mailer`` call made in a child.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIST_SLUG = "bench"
URL_VARIABLE = "BENCH_LIST_IMPORT_DATABASE_URL"  # parent to child: keeps passwords off argv
CHILD_TIMEOUT = 3600  # seconds; one measurement of a huge file on a slow server

# --- the CSV (parent) --------------------------------------------------------------------

FIRST_NAMES = (
    "Élodie", "François", "Zoë", "Anaïs", "Jérôme", "Hélène", "Loïc", "Noël", "Agnès",
    "Cédric", "Chloé", "Inès", "Léa", "Mathéo", "Søren", "Björn", "José", "Ana", "Marie",
    "Paul", "Lucas", "Emma", "Hugo", "Camille", "Jean", "Louise", "Théo", "Manon", "Yannick",
    "Gaëlle", "Bénédicte", "Ångström", "Renée", "Océane", "Maël",
)  # fmt: skip
LAST_NAMES = (
    "Lefèvre", "Müller", "Dupont", "Martin", "Bernard", "Caron", "Gauthier", "Faure",
    "Núñez", "Ødegaard", "Le Goff", "Béranger", "Côté", "Girard", "Moreau", "Petit",
    "Durand", "Leroy", "Rousseau", "Fontaine", "Chevalier", "Mercier", "Dubois", "Lambert",
    "Bonnet", "François", "Garçon", "Brontë", "Šimek", "Ç'Aubert",
)  # fmt: skip
ORGANISATIONS = (
    "", "", "", "Association des Amis du Vélo", "Société Générale de Test",
    "Atelier Dupont, Fils & Cie", "Mairie de Saint-Étienne", "Lycée Jean-Jaurès",
    'Café "Le Zinc"', "Example Org", "Université de Test", "Coopérative Œnologique",
)  # fmt: skip
LOCALES = ("", "", "fr", "fr", "fr", "en", "fr-CA", "de", "en_GB", "es")
TIMEZONES = ("", "", "Europe/Paris", "Europe/Paris", "America/Montreal", "Europe/Brussels")
DOMAINS = ("example.org", "example.net")
TAGS = ("news", "events", "billing", "bench")
INVALID_EMAILS = (
    "{local}.{domain}",  # no @
    "{local}@@{domain}",  # two @
    "{local}@example",  # domain without a dot
    "{local}.@{domain}",  # dot before the @
    "{local} x@{domain}",  # a space
    "@{domain}",  # no local part
    "",  # empty
)
INVALID_FRACTION = 0.03  # of the rows: rejected
DUPLICATE_FRACTION = 0.02  # of the rows: an earlier address again, in another case
TAG_FRACTION = 0.05  # of the rows: a +tag variant of an earlier address (a new subscriber)
RECENT = 4096  # earlier addresses kept to draw duplicates and +tags from (bounded memory)
HEADER = ("email", "name", "locale", "organisation", "timezone")
ASCII = str.maketrans({"ø": "o", "Ø": "O", "ß": "ss", "æ": "ae", "œ": "oe", "Œ": "OE"})


@dataclass
class Generated:
    rows: int
    valid: int  # distinct valid addresses: what the first import adds
    invalid: int  # rejected rows
    duplicates: int  # rows whose address appeared earlier in another case
    tagged: int
    size: int  # bytes


def _ascii(word: str) -> str:
    plain = unicodedata.normalize("NFKD", word.translate(ASCII))
    return "".join(c for c in plain.encode("ascii", "ignore").decode().lower() if c.isalnum())


def generate(path: Path, rows: int, seed: int) -> Generated:
    """Write ``rows`` data rows (plus a header) to ``path``; deterministic for ``seed``.

    Every new address holds its row number (``first.last<n>``, ``flast.<n>``,
    ``...+tag<n>``), so addresses are distinct by construction; the benchmark checks the
    import's counts against these.
    """
    rng = random.Random(seed)
    recent: list[str] = []
    valid = invalid = duplicates = tagged = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(HEADER)
        for number in range(rows):
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            name = unicodedata.normalize("NFC", f"{first} {last}")
            domain = rng.choice(DOMAINS)
            locale, zone = rng.choice(LOCALES), rng.choice(TIMEZONES)
            organisation = rng.choice(ORGANISATIONS)
            f, la = _ascii(first), _ascii(last)
            draw = rng.random()
            if draw < INVALID_FRACTION:
                email = rng.choice(INVALID_EMAILS).format(local=f"{f}.{la}{number}", domain=domain)
                invalid += 1
            elif draw < INVALID_FRACTION + DUPLICATE_FRACTION and recent:
                local, _, dom = rng.choice(recent).rpartition("@")
                email = rng.choice((f"{local.swapcase()}@{dom}", f"{local.upper()}@{dom.upper()}"))
                duplicates += 1
            else:
                if draw > 1 - TAG_FRACTION and recent:
                    local, _, dom = rng.choice(recent).rpartition("@")
                    email = f"{local.split('+')[0]}+{rng.choice(TAGS)}{number}@{dom}"
                    tagged += 1
                else:
                    local = rng.choice((f"{f}.{la}{number}", f"{f[:1]}{la}.{number}"))
                    if rng.random() < 0.1:  # some people type their address capitalised
                        local = local.title()
                    email = f"{local}@{domain}"
                valid += 1
                if len(recent) < RECENT:
                    recent.append(email)
                else:
                    recent[rng.randrange(RECENT)] = email
            writer.writerow((email, name, locale, organisation, zone))
    return Generated(rows, valid, invalid, duplicates, tagged, path.stat().st_size)


# --- the children: one job each ----------------------------------------------------------


def _maxrss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _settings(data_dir: Path, lists_dir: Path, url: str) -> Any:
    from mailer.settings import DatabaseSettings, PathSettings, Settings

    return Settings(
        paths=PathSettings(data_dir=data_dir, lists_dir=lists_dir),
        database=DatabaseSettings(url=url or None),
    )


def child_parse(path: Path) -> dict[str, Any]:
    from mailer.lists import ListFile, RowError

    baseline = _maxrss_kib()
    cpu0, start = _cpu(), time.perf_counter()
    rows = rejected = 0
    with ListFile(path) as items:
        for item in items:
            rows += 1
            if isinstance(item, RowError):
                rejected += 1
    seconds = time.perf_counter() - start
    return {
        "rows": rows,
        "rejected": rejected,
        "seconds": seconds,
        "cpu": _cpu() - cpu0,
        "baseline_kib": baseline,
        "peak_kib": _maxrss_kib(),
    }


async def child_import(path: Path, data_dir: Path, url: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    from mailer.lists import import_file
    from mailer.storage import Store

    settings = _settings(data_dir, path.parent, url)
    async with Store.open(settings) as store:  # the engine and its driver are loaded: baseline
        baseline = _maxrss_kib()
        cpu0, start = _cpu(), time.perf_counter()
        report = await import_file(store, path, now=datetime.now(UTC))
        seconds = time.perf_counter() - start
        cpu = _cpu() - cpu0
    return {
        "rows": report.rows,
        "rejected": report.rejected_count,
        "duplicates": report.duplicate_count,
        "added": report.tally.added,
        "unchanged": report.tally.unchanged,
        "updated": report.tally.updated,
        "seconds": seconds,
        "cpu": cpu,
        "baseline_kib": baseline,
        "peak_kib": _maxrss_kib(),
    }


async def _admin(url: str, statement: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def child_setup(data_dir: Path, lists_dir: Path, url: str) -> dict[str, Any]:
    """Create the scratch PostgreSQL database if asked, then the schema."""
    import sqlite3

    from sqlalchemy.engine import make_url

    from mailer.storage import Store

    backend = f"SQLite {sqlite3.sqlite_version}, WAL, synchronous=NORMAL"
    if url:
        parsed = make_url(url)
        if parsed.get_backend_name() != "postgresql":
            raise SystemExit(f"--database-url: expected a postgresql+asyncpg:// URL, got {url!r}")
        parsed = parsed.set(drivername="postgresql+asyncpg")
        name = f"mailer_bench_{os.getppid()}"
        try:
            await _admin(parsed.render_as_string(hide_password=False), f'CREATE DATABASE "{name}"')
        except Exception as exc:
            raise SystemExit(
                f"cannot create the scratch database {name} ({exc}); "
                "the benchmark needs a reachable server and a user allowed to CREATE DATABASE"
            ) from None
        url = parsed.set(database=name).render_as_string(hide_password=False)
        try:
            async with Store.open(_settings(data_dir, lists_dir, url)) as store:
                await store.upgrade()
                async with store.engine.connect() as conn:
                    version = await conn.run_sync(lambda c: c.dialect.server_version_info)
        except BaseException:
            await child_drop(parsed.render_as_string(hide_password=False), url)
            raise
        backend = f"PostgreSQL {'.'.join(map(str, version))}, scratch database {name}"
    else:
        async with Store.open(_settings(data_dir, lists_dir, url)) as store:
            await store.upgrade()
    return {"url": url, "backend": backend}


async def child_drop(admin_url: str, scratch_url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    name = make_url(scratch_url).database
    admin = make_url(admin_url).set(drivername="postgresql+asyncpg")
    await _admin(admin.render_as_string(hide_password=False), f'DROP DATABASE IF EXISTS "{name}"')
    return {"dropped": name}


def run_child(args: argparse.Namespace) -> None:
    url = os.environ.get(URL_VARIABLE, "")
    data_dir, csv_path = Path(args.data_dir), Path(args.csv)
    if args.child == "parse":
        result = child_parse(csv_path)
    elif args.child == "import":
        result = asyncio.run(child_import(csv_path, data_dir, url))
    elif args.child == "setup":
        result = asyncio.run(child_setup(data_dir, csv_path.parent, url))
    else:
        result = asyncio.run(child_drop(url, os.environ[URL_VARIABLE + "_SCRATCH"]))
    print(json.dumps(result))


# --- the parent: children, table, checks -------------------------------------------------


def child(mode: str, csv_path: Path, data_dir: Path, url: str, **env: str) -> dict[str, Any]:
    """Run this script in ``--child`` mode in a fresh interpreter; return its JSON."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", mode,
        "--csv", str(csv_path), "--data-dir", str(data_dir),
    ]  # fmt: skip
    environ = {**os.environ, URL_VARIABLE: url, **env}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False, env=environ
    )
    if done.returncode != 0 or not done.stdout.strip():
        sys.stderr.write(done.stderr)
        raise SystemExit(f"the {mode} child failed (exit status {done.returncode})")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["parent_kib"] = _maxrss_kib()  # what the child's ru_maxrss started from
    return result


def _mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def table(results: list[tuple[str, dict[str, Any]]]) -> list[str]:
    head = ("measurement", "rows", "seconds", "rows/s", "cpu s", "peak MiB", "base MiB", "+MiB")
    lines = [head]
    for label, r in results:
        lines.append(
            (
                label,
                f"{r['rows']:,}",
                f"{r['seconds']:.2f}",
                f"{r['rows'] / r['seconds']:,.0f}",
                f"{r['cpu']:.2f}",
                _mib(r["peak_kib"]),
                _mib(r["baseline_kib"]),
                _mib(r["peak_kib"] - r["baseline_kib"]),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for line in lines:
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        out.append("  ".join(cells))
    out.insert(1, "-" * len(out[0]))
    return out


def checks(
    made: Generated, parse: dict[str, Any], first: dict[str, Any], again: dict[str, Any]
) -> list[str]:
    """Differences between what the generator wrote and what the children reported."""
    expected = {
        ("parse-only", "rows"): (parse["rows"], made.rows),
        ("parse-only", "rejected"): (parse["rejected"], made.invalid),
        ("first import", "rows"): (first["rows"], made.rows),
        ("first import", "rejected"): (first["rejected"], made.invalid),
        ("first import", "duplicates"): (first["duplicates"], made.duplicates),
        ("first import", "added"): (first["added"], made.valid),
        ("re-import", "added"): (again["added"], 0),
        ("re-import", "updated"): (again["updated"], 0),
        ("re-import", "unchanged"): (again["unchanged"], made.valid),
    }
    problems = [
        f"{run} {what}: got {got:,}, expected {want:,}"
        for (run, what), (got, want) in expected.items()
        if got != want
    ]
    for label, r in (("parse-only", parse), ("first import", first), ("re-import", again)):
        if r["parent_kib"] >= r["baseline_kib"]:
            problems.append(
                f"{label}: the parent's peak RSS ({_mib(r['parent_kib'])} MiB) reached the "
                "child's baseline, so the child's ru_maxrss may be the parent's"
            )
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="data rows (default 100000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generator (default 1)")
    parser.add_argument(
        "--database-url",
        default="",
        help="postgresql+asyncpg://user:password@host/db: run on a scratch database created "
        "on that server (and dropped); default: SQLite in the temporary folder",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--child", choices=("setup", "parse", "import", "drop"), help=argparse.SUPPRESS
    )
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return
    if args.rows < 1:
        parser.error("--rows must be at least 1")

    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="mailer-bench-"))
    lists_dir, data_dir = work / "lists", work / "data"
    lists_dir.mkdir()
    csv_path = lists_dir / f"{LIST_SLUG}.csv"
    try:
        made = generate(csv_path, args.rows, args.seed)
        generated = time.perf_counter() - began
        setup = child("setup", csv_path, data_dir, args.database_url)
        url = setup["url"]
        try:
            parse = child("parse", csv_path, data_dir, url)
            first = child("import", csv_path, data_dir, url)
            again = child("import", csv_path, data_dir, url)
        finally:
            if url:
                child(
                    "drop",
                    csv_path,
                    data_dir,
                    args.database_url,
                    **{URL_VARIABLE + "_SCRATCH": url},
                )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"mailer list import: {made.rows:,} rows, seed {args.seed}, "
        f"{made.size / 2**20:.1f} MiB CSV written in {generated:.1f} s"
    )
    print(
        f"  {made.valid:,} distinct valid addresses ({made.tagged:,} +tag), "
        f"{made.invalid:,} invalid, {made.duplicates:,} duplicates in another case"
    )
    print(f"  {setup['backend']}; Python {platform.python_version()} on {platform.machine()}")
    print()
    results = [
        ("parse+validate only", parse),
        ("first import (empty DB)", first),
        ("re-import (no-op)", again),
    ]
    print("\n".join(table(results)))
    print()
    ceiling = parse["rows"] / parse["seconds"]
    print(
        f"ceiling (parse+validate, no DB): {ceiling:,.0f} rows/s; import / parse-only: "
        f"first {first['rows'] / first['seconds'] / ceiling:.2f}, "
        f"re-import {again['rows'] / again['seconds'] / ceiling:.2f}"
    )
    problems = checks(made, parse, first, again)
    for problem in problems:
        print(f"CHECK FAILED: {problem}")
    if not problems:
        print(
            "checks: the counts match the generated file; the parent stayed under each "
            f"child's baseline ({_mib(_maxrss_kib())} MiB)"
        )
    if args.keep:
        print(f"kept: {work}")
    print(f"total {time.perf_counter() - began:.1f} s")
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
