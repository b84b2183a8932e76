"""kill -9: a real `mailer send run` process is killed at seeded points mid-send and started
again. Nothing may be lost, and each kill may double at most pool size + record batch
messages (the documented window). MAILER_TEST_KILL_RECIPIENTS sets the list size (default
2,000: each kill lands hundreds of messages into its run, and the three killed runs compose
in the render worker, as a large send does)."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.lists import import_file
from mailer.models import Content
from mailer.storage import Store
from tests.conftest import make_settings
from tests.smtpd import SmtpServer

ROOT = Path(__file__).resolve().parent.parent
RECIPIENTS = int(os.environ.get("MAILER_TEST_KILL_RECIPIENTS", "2000"))
POOL, BATCH = 4, 50
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def _prepare(tmp_path: Path, count: int) -> int:
    settings = make_settings(tmp_path)
    path = tmp_path / "members.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name\n")
        handle.writelines(f"member{i}@example.org,Membre {i}\n" for i in range(count))
    async with Store.open(settings) as store:
        await store.upgrade()
        assert (await import_file(store, path, now=NOW)).ok
        content = Content(name="crash", kind="announcement", subject="Test", body="Bonjour.")
        campaign = await store.campaigns.save(
            content, list_slugs=["members"], sender_name=None, sender_address=None, event=None,
            now=NOW,
        )  # fmt: skip
        send_id, _ = await store.sends.create(
            campaign, key="announce", action="announcement", due_at=NOW, now=NOW
        )
    return send_id


def _env(tmp_path: Path, server: SmtpServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        MAILER_PATHS__DATA_DIR=str(tmp_path / "data"),
        MAILER_PATHS__TEMPLATES_DIR=str(ROOT / "templates"),
        MAILER_SMTP__HOST=server.host,
        MAILER_SMTP__PORT=str(server.port),
        MAILER_SMTP__SECURITY="none",
        MAILER_SMTP__POOL_SIZE=str(POOL),
        MAILER_DELIVERY__RECORD_BATCH=str(BATCH),
        MAILER_SECRET_KEYS="crash-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE",
        MAILER_LOG__LEVEL="WARNING",
        MAILER_WEB__ALLOW_INSECURE_LINKS="true",  # a loopback relay: links need not work
    )
    return env


@pytest.mark.timeout(600)
async def test_kill_9_at_seeded_points_loses_nothing(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    send_id = await _prepare(tmp_path, RECIPIENTS)
    env = _env(tmp_path, smtp_server)
    points = sorted(
        random.Random(20261125).sample(range(RECIPIENTS // 10, RECIPIENTS * 9 // 10), 3)
    )
    command = [sys.executable, "-m", "mailer", "send", "run", str(send_id)]
    report = []
    for point in points:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        while len(smtp_server.received) < point:
            assert process.returncode is None, "the sender ended before the kill point"
            await asyncio.sleep(0.005)
        before = Counter(smtp_server.recipients())
        process.kill()
        await process.wait()
        await asyncio.sleep(0.2)  # let the server finish what was on the wire
        report.append((point, len(smtp_server.received), before))
    final = await asyncio.create_subprocess_exec(
        *command, env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    while final.returncode is None:
        try:
            await asyncio.wait_for(final.wait(), timeout=0.05)
        except TimeoutError:
            continue
    out, err = await final.communicate()
    assert final.returncode == 0, err.decode()
    assert f"send {send_id}: done; sent {RECIPIENTS}," in out.decode()

    received = Counter(smtp_server.recipients())
    lost = [
        f"member{i}@example.org"
        for i in range(RECIPIENTS)
        if f"member{i}@example.org" not in received
    ]
    duplicates = sum(n - 1 for n in received.values())
    window = POOL + BATCH
    print(
        f"\nkill -9 at {[p for p, _, _ in report]} of {RECIPIENTS}: lost {len(lost)}, "
        f"duplicates {duplicates} (window {window} per kill), "
        f"max per recipient {max(received.values())}"
    )
    assert lost == []
    assert duplicates <= window * len(points)
    assert max(received.values()) <= 1 + len(points)
