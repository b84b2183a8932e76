"""Benchmark of the REST API: subscribers created per second through ``POST /api/v1/subscribers``.

Sets up a fresh data folder with two lists (``single``: single opt-in; ``double``: double
opt-in, where each creation also stores the confirmation send), a key made with ``mailer
api-keys create``, and serves them with ``mailer web`` in its own process (the API is on the
web port), on a SQLite file in a temporary folder or on the empty database of
``--database-url`` (e.g. ``postgresql+asyncpg://user@host/empty_db``). This process then
posts ``--count`` subscribers per list, ``--concurrency`` requests in flight, each with its own
``Idempotency-Key``, and prints creations per second for each list with the consent records
and confirmation sends counted in the database afterwards (they must match). The events
delivered per second to a webhook receiver are ``bench/webhooks.py``'s figure, run after it
unless ``--no-webhooks``. Figures are printed, never asserted.

    .venv/bin/python bench/api.py [--count 2000] [--concurrency 16]
        [--database-url postgresql+asyncpg://user@host/empty_db] [--no-webhooks]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
MAILER = [sys.executable, "-m", "mailer"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare(folder: Path, url: str, port: int) -> tuple[dict[str, str], str]:
    """The environment of the mailer commands, with two lists imported and a key made."""
    lists = folder / "lists"
    lists.mkdir()
    for slug, opt_in in (("single", "single"), ("double", "double")):
        (lists / f"{slug}.csv").write_text("email,name\n", encoding="utf-8")
        (lists / f"{slug}.toml").write_text(
            f'title = "{slug}"\nopt_in = "{opt_in}"\npublic = true\n', encoding="utf-8"
        )
    env = os.environ | {
        "MAILER_DATABASE__URL": url,
        "MAILER_PATHS__DATA_DIR": str(folder / "data"),
        "MAILER_PATHS__LISTS_DIR": str(lists),
        "MAILER_PATHS__TEMPLATES_DIR": str(ROOT / "templates"),
        "MAILER_WEB__PORT": str(port),
        "MAILER_WEB__BASE_URL": f"http://127.0.0.1:{port}",
        "MAILER_API__RATE_PER_MINUTE": "1000000",
        "MAILER_LOG__LEVEL": "WARNING",
    }
    subprocess.run([*MAILER, "init"], env=env, cwd=folder, check=True, capture_output=True)
    made = subprocess.run(
        [*MAILER, "api-keys", "create", "--name", "bench", "--scopes", "subscribers:write"],
        env=env, cwd=folder, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return env, made.stdout.strip()


async def post_all(base: str, key: str, slug: str, count: int, concurrency: int) -> float:
    """Post ``count`` subscribers to ``slug``; the seconds it took (every answer a 201)."""
    queue = iter(range(count))
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits) as client:

        async def worker() -> None:
            for i in queue:
                answer = await client.post(
                    "/api/v1/subscribers",
                    json={"email": f"p{i}.{slug}@example.org", "list": slug, "name": f"P {i}"},
                    headers={"Idempotency-Key": uuid.uuid4().hex},
                )
                if answer.status_code != 201:
                    raise SystemExit(f"{slug} #{i}: {answer.status_code} {answer.text[:300]}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def counted(url: str) -> tuple[int, int]:
    """Consent records and confirmation sends stored."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            consent = (await conn.execute(text("SELECT count(*) FROM consent_events"))).scalar()
            confirm = (
                await conn.execute(text("SELECT count(*) FROM sends WHERE action = 'confirm'"))
            ).scalar()
    finally:
        await engine.dispose()
    return int(consent or 0), int(confirm or 0)


async def wait_up(base: str, server: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(300):
            if server.poll() is not None:
                raise SystemExit("mailer web stopped before it answered")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("mailer web did not answer /healthz within 30 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--no-webhooks", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        url = args.database_url or f"sqlite+aiosqlite:///{folder / 'bench.sqlite3'}"
        port = free_port()
        env, key = prepare(folder, url, port)
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([*MAILER, "web"], env=env, cwd=folder)
        try:
            asyncio.run(wait_up(base, server))
            took = {
                slug: asyncio.run(post_all(base, key, slug, args.count, args.concurrency))
                for slug in ("single", "double")
            }
        finally:
            server.terminate()
            server.wait(timeout=30)
        consent, confirm = asyncio.run(counted(url))
    backend = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"REST API on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {backend}; mailer web in its own process, "
          f"{args.concurrency} requests in flight")  # fmt: skip
    for slug, seconds in took.items():
        print(f"  {slug} opt-in: {args.count} subscribers in {seconds:.2f} s, "
              f"{args.count / seconds:,.0f} creations/s")  # fmt: skip
    print(f"  stored: {consent} consent records (expected {args.count * 2}: a subscription on "
          f"single, a request on double), {confirm} confirmation sends "
          f"(expected {args.count})")  # fmt: skip
    if not args.no_webhooks:
        print("webhooks (bench/webhooks.py):", flush=True)
        subprocess.run([sys.executable, str(ROOT / "bench" / "webhooks.py")], check=True)


if __name__ == "__main__":
    main()
