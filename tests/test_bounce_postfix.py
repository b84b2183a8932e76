"""Issue 16 end to end through a real Postfix (tests/postfix_support.py): the daemon
(``mailer.app.run``, in this loop) sends an announcement through Postfix with a signed return
path per delivery; Postfix accepts every message, and when the next hop refuses an address
(550 5.1.1) it writes a real DSN to that return path and relays it, by ``transport_maps``, to
the daemon's own bounce listener; the address ends suppressed and its delivery ``bounced``,
while the other recipient's delivery stays ``sent``. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.app import run
from mailer.storage import Store
from tests.conftest import make_settings
from tests.postfix_support import BOUNCE_DOMAIN, HOST, PostfixRelay, free_port, postfix_relay
from tests.smtpd import SmtpServer
from tests.test_bounce_intake import suppressed
from tests.test_console_sends import a_list, a_send

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parent.parent
KEY = "postfix-bounce-key-Rk2wQ9vM4nX7cB1zL5tH8sJ3dF6gP0aY-Ue"
DEAD = "person0@example.org"
DEADLINE = 60.0  # seconds for the DSN to come back, however loaded the machine


@pytest.fixture(scope="module")
def relay() -> Iterator[PostfixRelay]:
    with postfix_relay(next_hop=(HOST, free_port()), bounce_hop=(HOST, free_port())) as running:
        yield running


async def test_a_late_dsn_through_postfix_suppresses_the_address_and_bounces_its_delivery(
    relay: PostfixRelay, store: Store, tmp_path: Path, database_url: str
) -> None:
    hop = SmtpServer(port=relay.next_hop[1])
    hop.plan.reply("RCPT", f"550 5.1.1 <{DEAD}>: Recipient address rejected", recipient=DEAD)
    await hop.start()
    settings = make_settings(
        tmp_path,
        database={"url": database_url},
        smtp=relay.settings().model_dump(),
        paths={"templates_dir": ROOT / "templates"},
        secret_keys=KEY,
        web={"enabled": False, "allow_insecure_links": True},
        scheduler={"sync_interval": 0.2},
        bounces={"domain": BOUNCE_DOMAIN, "listen": f"{HOST}:{relay.bounce_hop[1]}"},
    )
    await a_list(store, tmp_path, 2)
    send_id = await a_send(store, "annonce")
    stop = asyncio.Event()
    daemon = asyncio.create_task(run(settings, stop=stop), name="daemon")
    try:
        async with asyncio.timeout(DEADLINE):
            while not await suppressed(store, DEAD):
                if daemon.done():
                    daemon.result()
                    raise AssertionError("the daemon stopped")
                await asyncio.sleep(0.1)
    except TimeoutError:
        report = await asyncio.to_thread(relay.report)
        pytest.fail(f"no bounce stored in {DEADLINE:.0f} s\n{report}")
    finally:
        stop.set()
        await asyncio.wait_for(daemon, 30)
        await hop.stop()
        await asyncio.to_thread(relay.clear)
    assert hop.recipients() == ["person1@example.org"]
    (mail,) = hop.received
    assert mail.mail_from.startswith("b+")
    assert mail.mail_from.endswith(f"@{BOUNCE_DOMAIN}")
    lines = sorted([row async for row in store.figures.report(send_id)], key=lambda r: r.email)
    assert [(line.email, line.status) for line in lines] == [
        (DEAD, "bounced"), ("person1@example.org", "sent"),
    ]  # fmt: skip
    assert "5.1.1" in (lines[0].reason or "")
    (bounce,) = await store.bounces.lines(limit=5)
    assert (bounce.source, bounce.kind, bounce.status, bounce.action) == (
        "smtp", "hard", "5.1.1", "suppressed",
    )  # fmt: skip
    assert not await suppressed(store, "person1@example.org")
