"""A send whose body runs away (loops for hours, recursion without end) pauses with the
reason, quickly, instead of hanging the daemon or staying `running` forever. Real SQLite
(and PostgreSQL where available), a real SMTP server on loopback, the shipped templates."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.dispatch import Engine
from mailer.lists import import_file
from mailer.models import Content, SendStatus
from mailer.settings import Settings
from mailer.storage import Store
from mailer.transport import SmtpTransport
from tests.conftest import make_settings
from tests.smtpd import SmtpServer

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
KEY = "runaway-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"

BODIES = {
    "recursion": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "calls itself too deeply"),
    "loops": (
        "{% set l = range(9000)|list %}"
        "{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}",
        "took more than 2 s",
    ),
}


async def _send(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer, members: int,
    body: str,
) -> tuple[int, Settings]:  # fmt: skip
    """A list of ``members``, an announcement with ``body`` due now: its send and settings."""
    people = tmp_path / "researchers.csv"
    people.write_text(
        "email,name\n" + "".join(f"p{i}@example.org,P {i}\n" for i in range(members)),
        encoding="utf-8",
    )
    assert (await import_file(store, people, now=NOW)).ok
    content = Content(name="news", kind="announcement", subject="Nouvelles", body=body)
    campaign = await store.campaigns.save(
        content, list_slugs=["researchers"], sender_name=None, sender_address=None, event=None,
        now=NOW,
    )  # fmt: skip
    send_id, _ = await store.sends.create(
        campaign, key="announce", action="announcement", due_at=NOW, now=NOW
    )
    settings = make_settings(
        tmp_path, database={"url": database_url}, smtp=smtp_server.settings().model_dump(),
        paths={"templates_dir": ROOT / "templates"}, secret_keys=KEY,
    )  # fmt: skip
    return send_id, settings


# A runaway body is stopped while it renders, which does not touch the database: the pause
# and its reason recorded on PostgreSQL are proven with the quick body (recursion); the slow
# one (6 s, the render budget run out three times) runs once, on SQLite.
RUNAWAYS = [
    pytest.param("sqlite", *BODIES["recursion"], id="sqlite-recursion"),
    pytest.param(
        "postgresql", *BODIES["recursion"], id="postgresql-recursion", marks=pytest.mark.postgres
    ),
    pytest.param("sqlite", *BODIES["loops"], id="sqlite-loops"),
]


@pytest.mark.parametrize(("backend", "body", "reason"), RUNAWAYS, indirect=["backend"])
async def test_a_runaway_body_pauses_the_send_with_the_reason(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer, body: str,
    reason: str,
) -> None:  # fmt: skip
    """Twenty members, a body that never ends: the send pauses within seconds, sends
    nothing, and its reason names the cause."""
    send_id, settings = await _send(store, tmp_path, database_url, smtp_server, 20, body)
    started = time.monotonic()
    async with SmtpTransport(settings.smtp, reconnect_delay=0.05) as transport:
        engine = Engine(settings, store, transport, node="test", clock=lambda: datetime.now(UTC))
        summary = await engine.run_send(send_id)
    assert time.monotonic() - started < 3 * 2 + 5
    assert summary.status == SendStatus.PAUSED
    assert reason in (summary.reason or "")
    assert smtp_server.recipients() == []
    assert await store.sends.status(send_id) == SendStatus.PAUSED


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the render, not the database
async def test_a_runaway_body_never_holds_the_event_loop(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    """While the pre-flight renders a body that runs for its whole budget (2 s a recipient),
    the daemon's loop keeps turning: the pages and /healthz answer meanwhile."""
    import asyncio

    send_id, settings = await _send(
        store, tmp_path, database_url, smtp_server, 5, BODIES["loops"][0]
    )
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    started = time.monotonic()
    try:
        async with SmtpTransport(settings.smtp, reconnect_delay=0.05) as transport:
            engine = Engine(settings, store, transport, node="t", clock=lambda: datetime.now(UTC))
            summary = await engine.run_send(send_id)
    finally:
        ticker.cancel()
    assert summary.status == SendStatus.PAUSED
    assert time.monotonic() - started > 2  # the body did run for its budget
    assert max(gaps) < 1.0, f"the loop was held {max(gaps):.2f} s"
