"""Render worker processes: a runaway template is stopped there, never waited for forever."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.dispatch import render_pool
from mailer.dispatch.render_pool import Recipe, RenderPool, RenderPoolLost
from mailer.message import Built
from mailer.models import Content, ListInfo, Recipient, SendInfo
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LIST = ListInfo(id=1, slug="researchers", title="Chercheurs", default_locale="fr")
SLOW = (  # 9000**3 loop steps that output nothing: hours, unless stopped
    "{% set l = range(9000)|list %}"
    "{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}"
)

pytestmark = pytest.mark.timeout(60)


def recipe(tmp_path: Path, body: str, **extra: float) -> Recipe:
    settings = make_settings(tmp_path)
    send = SendInfo(
        content=Content(name="news", kind="announcement", subject="Nouvelles", body=body),
        list=LIST,
        sender_name="Réseau",
        sender_address="news@example.org",
        action="announcement",
        now=NOW,
        event=None,
    )
    return Recipe(
        settings=settings, templates_dir=ROOT / "templates", keys=("k" * 43,), sends=(send,),
        send_id=1, trace="t", eight_bit=False, parent=os.getpid(), **extra,
    )  # fmt: skip


def people(count: int) -> list[tuple[int, Recipient]]:
    return [(LIST.id, Recipient(id=i, email=f"r{i}@example.org")) for i in range(count)]


async def test_a_runaway_body_fails_its_recipient_with_the_reason(tmp_path: Path) -> None:
    """In the worker the sandbox's budget stops the body: the recipient comes back as the
    reason, the worker goes on with the next batch."""
    async with RenderPool(recipe(tmp_path, SLOW)) as pool:
        [made] = await pool.compose(people(1), date=NOW)
        assert isinstance(made, str)
        assert made.startswith("not built: ")
        assert "took more than 2 s for one recipient" in made


async def test_a_worker_stuck_past_its_hard_limit_is_stopped(tmp_path: Path) -> None:
    """What the sandbox cannot see (here: a hard limit below its budget) ends the worker
    process after the hard limit: the batch is lost, not waited for forever. (Lost, not the
    sandbox's "took more than 2 s" reason: the hard limit ended it first; no clock read, which
    a loaded machine would make flaky.)"""
    async with RenderPool(recipe(tmp_path, SLOW, hard_limit=0.5)) as pool:
        with pytest.raises(RenderPoolLost):
            await pool.compose(people(1), date=NOW)


async def test_the_hard_limit_is_per_recipient(tmp_path: Path) -> None:
    """A batch of many quick recipients is not cut short by the per-recipient limit."""
    async with RenderPool(
        recipe(tmp_path, "Bonjour {{ subscriber.email }}", hard_limit=0.5)
    ) as pool:
        made = await pool.compose(people(300), date=NOW)
    assert all(isinstance(m, Built) for m in made)
    assert render_pool.HARD_LIMIT >= 2 * 2
