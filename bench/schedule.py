"""Scheduling accuracy: how late does a send's first message leave, and how late is the loop?

Two scenarios, each with the real daemon parts (SQLite, Scheduler, Engine) and the capture
transport (a Maildir: no network, so the figures are the scheduler's and not a relay's):

1. ``--sends`` small sends (3 recipients each) due within the same minute, spread evenly:
   the delay from each send's due time to its first message leaving, p50 / p99 / max.
2. The same while a large send (``--large`` recipients) runs at full speed: the delay of the
   small sends, and the event loop's lag (a task asking to sleep 10 ms measures how much
   longer it slept), p50 / p99.

Targets on the 2-core machine: p99 under 250 ms for the first message, and loop lag p99 under
50 ms during a full-speed send. Run: .venv/bin/python bench/schedule.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mailer.dispatch import Engine  # noqa: E402
from mailer.lists import import_file  # noqa: E402
from mailer.message import Built  # noqa: E402
from mailer.models import Content  # noqa: E402
from mailer.scheduler import Scheduler  # noqa: E402
from mailer.settings import Settings  # noqa: E402
from mailer.storage import Store  # noqa: E402
from mailer.transport import CaptureTransport, Result  # noqa: E402


class TimedCapture(CaptureTransport):
    """The capture transport, noting when each send's first message left."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.first: dict[int, float] = {}

    async def send(self, message: Built) -> Result:
        result = await super().send(message)
        send_id = int(message.message_id[1:].split(".", 1)[0])
        self.first.setdefault(send_id, time.time())
        return result


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def loop_lag(stop: asyncio.Event, lags: list[tuple[float, float]]) -> None:
    """(wall time, how much longer than asked a 10 ms sleep took)."""
    while not stop.is_set():
        asked = 0.010
        start = time.perf_counter()
        await asyncio.sleep(asked)
        lags.append((time.time(), time.perf_counter() - start - asked))


Window = tuple[float, float] | None


async def scenario(
    folder: Path, *, sends: int, large: int, concurrent: int = 4
) -> tuple[dict[int, float], dict[int, float], list[tuple[float, float]], Window]:
    settings = Settings.model_validate(
        {
            "paths": {"data_dir": folder / "data", "templates_dir": ROOT / "templates"},
            "scheduler": {"sync_interval": 5.0},
            "secret_keys": "bench-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE",
        }
    )
    now = datetime.now(UTC)
    async with Store.open(settings) as store:
        await store.upgrade()
        small = folder / "small.csv"
        small.write_text("email,name\n" + "".join(f"s{i}@example.org,S {i}\n" for i in range(3)))
        await import_file(store, small, now=now)
        big = folder / "big.csv"
        with big.open("w") as handle:
            handle.write("email,name\n")
            handle.writelines(f"b{i}@example.org,B {i}\n" for i in range(large))
        if large:
            await import_file(store, big, now=now)
        start = now + timedelta(seconds=15)
        due: dict[int, datetime] = {}
        for n in range(sends):
            content = Content(
                name=f"small-{n}", kind="announcement", subject="Petit", body="Court."
            )
            campaign = await store.campaigns.save(
                content, list_slugs=["small"], sender_name=None, sender_address=None,
                event=None, now=now,
            )  # fmt: skip
            when = start + timedelta(seconds=60 * n / sends)
            send_id, _ = await store.sends.create(
                campaign, key="announce", action="announcement", due_at=when, now=now
            )
            due[send_id] = when
        large_id = None
        if large:
            content = Content(name="large", kind="announcement", subject="Grand", body="Long.")
            campaign = await store.campaigns.save(
                content, list_slugs=["big"], sender_name=None, sender_address=None, event=None,
                now=now,
            )  # fmt: skip
            large_id, _ = await store.sends.create(
                campaign, key="announce", action="announcement",
                due_at=start - timedelta(seconds=5), now=now,
            )  # fmt: skip
        transport = TimedCapture(folder / "outbox")
        lags: list[tuple[float, float]] = []
        stop = asyncio.Event()
        async with transport:
            engine = Engine(settings, store, transport, node="bench")
            async with Scheduler(engine, sync_interval=5.0, grace=3600, concurrent=concurrent):
                lagger = asyncio.create_task(loop_lag(stop, lags))
                deadline = time.time() + 15 + 60 + 60
                while time.time() < deadline and not set(due) <= set(transport.first):  # noqa: ASYNC110 - polls a dict the transport fills
                    await asyncio.sleep(0.2)
                stop.set()
                await lagger
        window: Window = None
        if large_id is not None:
            rows = {r.id: r for r in await store.sends.of_campaign(campaign)}
            started, finished = rows[large_id].started_at, rows[large_id].finished_at
            if started and finished:
                window = (started.timestamp(), finished.timestamp())
        missing = set(due) - set(transport.first)
        if missing:
            print(f"  warning: {len(missing)} small sends had not gone when the run ended")
        delays = {i: transport.first[i] - due[i].timestamp() for i in due if i in transport.first}
        due_at = {i: due[i].timestamp() for i in due}
        return delays, due_at, lags, window


def report(
    name: str,
    found: tuple[dict[int, float], dict[int, float], list[tuple[float, float]], Window],
) -> None:
    by_send, due_at, samples, window = found
    print(name)
    if window is not None:
        low, high = window
        print(f"  the large send ran {high - low:.1f} s; figures below are for that window")
        by_send = {i: d for i, d in by_send.items() if low <= due_at[i] <= high}
        samples = [(t, lag) for t, lag in samples if low <= t <= high]
    delays = list(by_send.values())
    lags = [lag for _, lag in samples]
    if not delays or not lags:
        print("  no small send fell due in that window: raise --large")
        return
    print(
        f"  first message after its due time: p50 {statistics.median(delays) * 1000:.0f} ms, "
        f"p99 {percentile(delays, 99) * 1000:.0f} ms, max {max(delays) * 1000:.0f} ms "
        f"({len(delays)} sends; target p99 < 250 ms)"
    )
    print(
        f"  event loop lag: p50 {statistics.median(lags) * 1000:.1f} ms, "
        f"p99 {percentile(lags, 99) * 1000:.1f} ms (target p99 < 50 ms during a full-speed send)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--large", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="200 small sends, 5,000 large")
    parser.add_argument("--concurrent", type=int, default=12, help="sends run at once (default 12)")
    parser.add_argument("--only-large", action="store_true", help="skip the first scenario")
    args = parser.parse_args()
    if args.quick:
        args.sends, args.large = 200, 5000
    print(f"mailer scheduling accuracy: {args.sends} small sends due within one minute, "
          f"{args.concurrent} sends at once; Python {sys.version.split()[0]}")  # fmt: skip
    if not args.only_large:
        with tempfile.TemporaryDirectory() as folder:
            found = asyncio.run(
                scenario(Path(folder) / "a", sends=args.sends, large=0, concurrent=args.concurrent)
            )
            report("1. small sends alone", found)
    with tempfile.TemporaryDirectory() as folder:
        found = asyncio.run(
            scenario(
                Path(folder) / "b", sends=args.sends, large=args.large, concurrent=args.concurrent
            )
        )
        report(f"2. small sends while a {args.large:,}-recipient send runs", found)


if __name__ == "__main__":
    main()
