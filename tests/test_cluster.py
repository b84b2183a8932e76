"""Several `mailer run` daemons on one PostgreSQL share a send through leased batches.

Real processes, a real PostgreSQL server and a real SMTP server: three daemons work on one
send, one is killed with kill -9 and another gets SIGTERM mid-send; the third finishes it.
Nothing may be lost, and duplicates stay within the window of the daemon that died (its
pool plus its recording batch). The long version, with figures, is bench/reliability.py.

The faults land on daemons that are sending: the send is created once every daemon waits for
work, and a daemon is killed, stopped or frozen only once deliveries it sent are recorded
(not merely once the server has received a share of the send, which a daemon still in its
pre-flight may have had no part in). MAILER_TEST_CLUSTER_RECIPIENTS sets the list size.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from mailer.lists import import_file
from mailer.models import Content
from mailer.storage import Store
from mailer.storage.tables import deliveries
from tests.conftest import make_settings
from tests.smtpd import SmtpServer

ROOT = Path(__file__).resolve().parent.parent
Process = asyncio.subprocess.Process
RECIPIENTS = int(os.environ.get("MAILER_TEST_CLUSTER_RECIPIENTS", "1000"))
POOL, BATCH, LEASE = 3, 25, 2
KEY = "cluster-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"  # 256 bits, as required

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.timeout(300),
    pytest.mark.parametrize("backend", ["postgresql"], indirect=True),
]


def now() -> datetime:
    return datetime.now(UTC)


async def _prepare(store: Store, tmp_path: Path) -> int:
    """The list and a campaign to it: the campaign's id (its send is created later)."""
    path = tmp_path / "members.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name\n")
        handle.writelines(f"member{i}@example.org,Membre {i}\n" for i in range(RECIPIENTS))
    await store.upgrade()
    assert (await import_file(store, path, now=now())).ok
    content = Content(name="cluster", kind="announcement", subject="Test", body="Bonjour.")
    return await store.campaigns.save(
        content, list_slugs=["members"], sender_name=None, sender_address=None, event=None,
        now=now(),
    )  # fmt: skip


async def _start_send(store: Store, campaign: int, daemons: list[Process]) -> int:
    """Once every daemon waits for work, a send due now: they all start on it together."""
    for daemon in daemons:
        assert daemon.stderr is not None
        async with asyncio.timeout(60):
            while b"waiting for work" not in (line := await daemon.stderr.readline()):
                assert line, f"a daemon ended before it started (exit {await daemon.wait()})"
    send_id, _ = await store.sends.create(
        campaign, key="announce", action="announcement", due_at=now(), now=now()
    )
    return send_id


async def _has_sent(store: Store, send_id: int, daemon: Process) -> bool:
    """Whether deliveries ``daemon`` sent are recorded (its node is host:pid)."""
    async with store.engine.connect() as conn:
        nodes = (
            await conn.execute(
                select(deliveries.c.leased_by)
                .where(deliveries.c.send_id == send_id, deliveries.c.status == "sent")
                .distinct()
            )
        ).scalars()
        return any(node.rsplit(":", 1)[-1] == str(daemon.pid) for node in nodes if node)


async def _sending(
    store: Store, send_id: int, server: SmtpServer, alive: list[Process], received: int
) -> None:
    """Wait until the server has ``received`` messages and ``alive[0]`` is among the
    senders; every daemon of ``alive`` must still run meanwhile."""
    while len(server.received) < received or not await _has_sent(store, send_id, alive[0]):
        assert all(d.returncode is None for d in alive), "a daemon ended early"
        await asyncio.sleep(0.02)


async def _daemon(tmp_path: Path, n: int, database_url: str, server: SmtpServer) -> Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_DATABASE__URL=database_url,
        MAILER_PATHS__DATA_DIR=str(tmp_path / f"data{n}"),
        MAILER_PATHS__TEMPLATES_DIR=str(ROOT / "templates"),
        MAILER_SMTP__HOST=server.host, MAILER_SMTP__PORT=str(server.port),
        MAILER_SMTP__SECURITY="none", MAILER_SMTP__POOL_SIZE=str(POOL),
        MAILER_DELIVERY__RECORD_BATCH=str(BATCH), MAILER_DELIVERY__BATCH_SIZE="100",
        MAILER_DELIVERY__LEASE=str(LEASE), MAILER_SCHEDULER__SYNC_INTERVAL="0.2",
        MAILER_WEB__ENABLED="false", MAILER_SECRET_KEYS=KEY,
        MAILER_WEB__ALLOW_INSECURE_LINKS="true",
    )  # fmt: skip
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailer", "--log-format", "text", "run",
        env=env, cwd=tmp_path, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def test_three_daemons_share_a_send_one_killed_one_stopped(
    tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    smtp_server.plan.delay("DATA", 0.002)  # a send of a few seconds, so the faults land mid-send
    settings = make_settings(tmp_path, database={"url": database_url})
    async with Store.open(settings) as store:
        campaign = await _prepare(store, tmp_path)
        daemons = [await _daemon(tmp_path, n, database_url, smtp_server) for n in range(3)]
        try:
            async with asyncio.timeout(120):
                send_id = await _start_send(store, campaign, daemons)
                await _sending(store, send_id, smtp_server, daemons, RECIPIENTS // 4)
                killed_at = len(smtp_server.received)
                daemons[0].kill()  # kill -9: its leases expire and the others take its rows
                await daemons[0].wait()
                await _sending(store, send_id, smtp_server, daemons[1:], RECIPIENTS // 2)
                stopped_at = len(smtp_server.received)
                daemons[1].send_signal(signal.SIGTERM)
                assert await daemons[1].wait() == 0
                assert daemons[1].stderr is not None
                stopped_log = (await daemons[1].stderr.read()).decode()
                assert "mailer stopped cleanly" in stopped_log
                while await store.sends.status(send_id) != "done":  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                counts = await store.figures.counts(send_id)
                recorded_sent = {
                    r.email async for r in store.figures.report(send_id) if r.status == "sent"
                }
                workers = {
                    w
                    for w, _, _ in await store.figures.holders(
                        send_id, now=datetime(2000, 1, 1, tzinfo=UTC)
                    )
                }
        finally:
            for daemon in daemons:
                if daemon.returncode is None:
                    daemon.send_signal(signal.SIGTERM)
                    await daemon.wait()

    received = Counter(smtp_server.recipients())
    eligible = {f"member{i}@example.org" for i in range(RECIPIENTS)}
    lost = eligible - set(received)
    duplicates = sum(n - 1 for n in received.values())
    print(
        f"\n3 daemons, {RECIPIENTS} recipients, kill -9 at {killed_at}, SIGTERM at {stopped_at}: "
        f"lost {len(lost)}, duplicates {duplicates} (window {POOL + BATCH}), "
        f"max per recipient {max(received.values())}, daemons that sent: {len(workers)}"
    )
    assert counts["sent"] == RECIPIENTS
    assert lost == set()
    assert recorded_sent == eligible  # the database agrees with what the server received
    assert duplicates <= POOL + BATCH  # only the killed daemon's unrecorded messages
    assert max(received.values()) <= 2
    # the send was shared: every daemon's pid appears among those that attempted deliveries
    assert len({re.sub(r".*:", "", w) for w in workers}) == 3, workers


async def test_a_daemon_frozen_past_its_lease_sends_nothing_it_held(
    tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    """Two daemons share a send; one is frozen (SIGSTOP) for longer than its lease, the
    other takes its expired deliveries, then the frozen one is woken (SIGCONT). Fencing: it
    sends nothing more of what it held, so duplicates stay within its pool plus its
    recording batch, and nothing is lost."""
    smtp_server.plan.delay("DATA", 0.002)
    settings = make_settings(tmp_path, database={"url": database_url})
    async with Store.open(settings) as store:
        campaign = await _prepare(store, tmp_path)
        daemons = [await _daemon(tmp_path, n, database_url, smtp_server) for n in range(2)]
        try:
            async with asyncio.timeout(120):
                send_id = await _start_send(store, campaign, daemons)
                await _sending(store, send_id, smtp_server, daemons, RECIPIENTS // 4)
                frozen_at = len(smtp_server.received)
                daemons[0].send_signal(signal.SIGSTOP)
                await asyncio.sleep(LEASE * 2 + 1)  # its leases run out; the other takes them
                daemons[0].send_signal(signal.SIGCONT)
                while await store.sends.status(send_id) != "done":  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
                counts = await store.figures.counts(send_id)
        finally:
            for daemon in daemons:
                if daemon.returncode is None:
                    daemon.send_signal(signal.SIGCONT)
                    daemon.send_signal(signal.SIGTERM)
                    await daemon.wait()
    received = Counter(smtp_server.recipients())
    duplicates = sum(n - 1 for n in received.values())
    print(
        f"\nfrozen {LEASE * 2 + 1} s at {frozen_at} of {RECIPIENTS}: "
        f"duplicates {duplicates} (window {POOL + BATCH})"
    )
    assert counts["sent"] == RECIPIENTS
    assert set(received) == {f"member{i}@example.org" for i in range(RECIPIENTS)}
    assert duplicates <= POOL + BATCH
