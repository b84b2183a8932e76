"""The IMAP reader as the daemon runs it (``mailer.app.run`` with
``MAILER_BOUNCES__IMAP__*``, in this loop) against a real Dovecot (tests/dovecot_support.py):
a DSN already in the mailbox when the daemon starts is stored, its delivery ``bounced``, the
address suppressed and the message moved to the done folder. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.app import run
from mailer.storage import Store
from mailer.tokens import Signer, return_path
from tests.conftest import make_settings
from tests.dovecot_support import PASSWORD, Dovecot, dovecot_server
from tests.test_bounce_intake import DOMAIN, delivery_lines, hard, sent, suppressed

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parent.parent
KEY = "645ec27f16fea08ca69af23fd02bffa143910dc6a9d9ed11eb78db6571f70253"  # the daemon signs with it
DEADLINE = 30.0  # seconds, however loaded the machine


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    with dovecot_server() as running:
        yield running


async def test_the_daemon_reads_the_mailbox_and_bounces_the_delivery(
    dovecot: Dovecot, store: Store, tmp_path: Path, database_url: str
) -> None:
    send_id, ids = await sent(store, tmp_path)
    user = dovecot.user()
    dsn = hard(return_path(Signer([KEY]), ids[2], DOMAIN), "person2@example.org")
    await asyncio.to_thread(dovecot.append, user, dsn)
    settings = make_settings(
        tmp_path,
        database={"url": database_url},
        paths={"templates_dir": ROOT / "templates"},
        secret_keys=KEY,
        web={"enabled": False},
        scheduler={"sync_interval": 0.5},
        bounces={
            "domain": DOMAIN,
            "imap": {
                "host": dovecot.host, "port": dovecot.port, "security": "none", "user": user,
                "password": PASSWORD, "poll": 0.5,
            },
        },
    )  # fmt: skip
    stop = asyncio.Event()
    daemon = asyncio.create_task(run(settings, stop=stop), name="daemon")
    try:
        async with asyncio.timeout(DEADLINE):
            while not await suppressed(store, "person2@example.org"):
                if daemon.done():
                    daemon.result()
                    raise AssertionError("the daemon stopped")
                await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 30)
    lines = await delivery_lines(store, send_id)
    assert [line.status for line in lines] == ["sent", "sent", "bounced"]
    (line,) = await store.bounces.lines(limit=5)
    assert (line.source, line.kind) == ("imap", "hard")
    assert await asyncio.to_thread(dovecot.messages, user, "INBOX") == []
    assert len(await asyncio.to_thread(dovecot.messages, user, "mailer-processed")) == 1
