"""The render pool's size (MAILER_DELIVERY__RENDER_WORKERS, ``auto``: one per core but one)
and the pre-flight in its processes: the same findings as in the sending process, the
checks made by the workers, and no message on its way before the pre-flight has ended."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from mailer.dispatch import feed as feed_module
from mailer.dispatch import render_pool
from mailer.dispatch.feed import Feed
from mailer.dispatch.preflight import PREFLIGHT_BUILT, Checked, check_batch
from mailer.dispatch.render_pool import RenderPool, processes_for
from mailer.errors import ConfigError
from mailer.models import SendStatus
from mailer.settings import load_settings
from mailer.storage import Store
from tests.smtpd import SmtpServer
from tests.test_dispatch import check_invariants, prepare, run, settings_for
from tests.test_render_workers import LIST, NOW, recipe

pytestmark = pytest.mark.timeout(60)

VARIABLE = "MAILER_DELIVERY__RENDER_WORKERS"


# --- the size --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "cpus", "processes"),
    [("auto", 1, 1), ("auto", 2, 1), ("auto", 4, 3), ("auto", 64, 16), (0, 8, 0), (3, 1, 3)],
)
def test_auto_is_one_per_core_but_one_and_a_number_is_itself(
    setting: int | str, cpus: int, processes: int
) -> None:
    assert processes_for(setting, cpus) == processes


def test_auto_counts_the_cores_this_process_may_use() -> None:
    usable = len(os.sched_getaffinity(0))
    assert render_pool.usable_cpus() == usable
    assert processes_for("auto") == min(16, max(1, usable - 1))


@pytest.mark.parametrize(
    ("given", "read"), [("auto", "auto"), (" Auto ", "auto"), ("0", 0), ("2", 2), ("16", 16)]
)
def test_the_setting_reads_auto_or_a_number(given: str, read: int | str) -> None:
    settings = load_settings({VARIABLE: given}, env_file=None)
    assert settings.delivery.render_workers == read


def test_auto_is_the_default() -> None:
    assert load_settings({}, env_file=None).delivery.render_workers == "auto"


@pytest.mark.parametrize("given", ["many", "17", "-1", "1.5", "true"])
def test_a_wrong_value_is_one_line_naming_the_variable(given: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({VARIABLE: given}, env_file=None)
    message = str(caught.value)
    assert message.startswith(f"{VARIABLE} (in environment): must be auto ")
    assert "a whole number from 0 (render in the sending process) to 16" in message
    assert f"(got {given!r})" in message


# --- the feed's check, in the pool -----------------------------------------------------------


def composers_of(tmp_path: Path, body: str) -> dict[int, Any]:
    """The composers a pool process makes, made here from the same recipe."""
    from mailer.compose import make_composer
    from mailer.render import Renderer
    from mailer.tokens import Signer

    made = recipe(tmp_path, body)
    [send] = made.sends
    composer = make_composer(
        made.settings, renderer=Renderer(made.templates_dir), signer=Signer(made.keys),
        send=send, send_id=made.send_id, trace=made.trace, eight_bit=made.eight_bit,
    )  # fmt: skip
    return {LIST.id: composer}


def dues(count: int) -> list[Any]:
    """``count`` due deliveries; one in 7 has no organisation, which BODY needs."""
    from mailer.models import Due, Recipient

    return [
        Due(
            id=i + 1,
            attempts=0,
            list_id=LIST.id,
            created_at=NOW,
            skip_reason=None,
            recipient=Recipient(
                id=i, email=f"r{i}@example.org", attributes={} if i % 7 == 0 else {"org": "X"}
            ),
        )
        for i in range(count)
    ]


BODY = "Bonjour {{ subscriber.email }}, de {{ subscriber.attributes.org }}"


async def test_the_pool_checks_as_this_process_would(tmp_path: Path) -> None:
    """The same findings, in the same order, whether checked here or in the pool (the
    workers' processes compose the first ones whole and check the others, a thread here
    takes its turn at the checks)."""
    composers = composers_of(tmp_path, BODY)
    due = dues(300)
    here = check_batch(
        composers, [(d.list_id, d.recipient) for d in due], date=NOW, whole=PREFLIGHT_BUILT
    )
    async with RenderPool(recipe(tmp_path, BODY), processes=2) as pool:
        feed = Feed(composers, clock=lambda: NOW, send_id=1, pool=pool)
        checked = await feed.check(due, whole=PREFLIGHT_BUILT, date=NOW)
        workers = set(pool._executor._processes)  # type: ignore[union-attr]
    assert checked == here
    assert sum(c.whole for c in checked) == PREFLIGHT_BUILT
    assert [c.failure is not None for c in checked] == [d.recipient.id % 7 == 0 for d in due]
    assert "org" in (checked[0].failure or "")
    assert pool.checked_by
    assert pool.checked_by <= workers
    assert os.getpid() not in pool.checked_by
    assert feed.where == "2 render workers"


async def test_a_batch_with_no_one_to_check_asks_the_pool_nothing(tmp_path: Path) -> None:
    """Every recipient of a batch skipped: nothing to compose whole, nothing sent to the
    pool (whose processes may not even have started)."""
    async with RenderPool(recipe(tmp_path, BODY), processes=1) as pool:
        feed = Feed(composers_of(tmp_path, BODY), clock=lambda: NOW, send_id=1, pool=pool)
        assert await feed.check([], whole=PREFLIGHT_BUILT, date=NOW) == []
    assert pool.checked_by == set()


async def test_with_a_pool_the_first_ones_are_composed_whole_in_it(tmp_path: Path) -> None:
    """The recipients composed whole (links, MIME, signature) go to the pool too: the
    sending process then never needs the finishing's libraries (CSS inlining, text
    derivation: several MiB of its memory)."""
    composers = composers_of(tmp_path, BODY)
    due = dues(PREFLIGHT_BUILT + 5)
    expected = check_batch(
        composers, [(d.list_id, d.recipient) for d in due], date=NOW, whole=PREFLIGHT_BUILT
    )
    [composer] = composers.values()
    composed_here: list[object] = []

    def counted(recipient: Any, **kwargs: Any) -> Any:
        composed_here.append(recipient)
        raise AssertionError("composed in the sending process")

    composer.compose = counted
    async with RenderPool(recipe(tmp_path, BODY), processes=1) as pool:
        feed = Feed(composers, clock=lambda: NOW, send_id=1, pool=pool)
        checked = await feed.check(due, whole=PREFLIGHT_BUILT, date=NOW)
        workers = set(pool._executor._processes)  # type: ignore[union-attr]
    assert checked == expected
    assert [c.whole for c in checked] == [True] * PREFLIGHT_BUILT + [False] * 5
    assert composed_here == []
    assert pool.checked_by == workers


async def test_a_pool_that_dies_leaves_the_check_to_this_process(tmp_path: Path) -> None:
    """kill -9 of the workers: the chunks they held are checked here, nobody is missed."""
    composers = composers_of(tmp_path, BODY)
    due = dues(200)
    async with RenderPool(recipe(tmp_path, BODY), processes=1) as pool:
        feed = Feed(composers, clock=lambda: NOW, send_id=1, pool=pool)
        assert len(await feed.check(due[:40], whole=0, date=NOW)) == 40  # the worker is up
        for pid in list(pool._executor._processes):  # type: ignore[union-attr]
            os.kill(pid, signal.SIGKILL)
        checked = await feed.check(due, whole=0, date=NOW)
    assert feed.lost
    assert feed.where == "in this process"
    assert checked == check_batch(composers, [(d.list_id, d.recipient) for d in due], date=NOW)
    assert all(isinstance(c, Checked) for c in checked)


# --- the pre-flight of a send, in the pool ---------------------------------------------------


@pytest.fixture
def pools(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every send opens a render pool (no size threshold); the pools opened."""
    opened: list[Any] = []

    class Recorded(RenderPool):
        async def __aenter__(self) -> Any:
            opened.append(self)
            return await super().__aenter__()

    monkeypatch.setattr(feed_module, "RENDER_POOL_MIN", 0)
    monkeypatch.setattr(feed_module, "RenderPool", Recorded)
    return opened


class PreflightEnd(logging.Handler):
    """At the pre-flight's log line: the SMTP commands so far and the pool's processes."""

    def __init__(self, server: SmtpServer, pools: list[Any]) -> None:
        super().__init__()
        self.server, self.pools = server, pools
        self.commands: list[str] | None = None
        self.received = -1
        self.workers: set[int] = set()
        self.line = ""

    def emit(self, record: logging.LogRecord) -> None:
        if " pre-flight check of " in record.getMessage() and self.commands is None:
            self.line = record.getMessage()
            self.commands = list(self.server.commands)
            self.received = len(self.server.received)
            executor = self.pools[0]._executor if self.pools else None
            self.workers = set(executor._processes) if executor is not None else set()


async def test_the_preflight_runs_in_the_workers_and_nothing_leaves_before_it_ends(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer, pools: list[Any]
) -> None:
    """A send with a pool of 2: the pre-flight's checks come from the workers' processes
    (their pids), its line gives its cost per recipient and the workers, and the SMTP server
    had seen no MAIL when it was logged; then everyone gets the send, composed in the same
    pool."""
    settings = settings_for(tmp_path, database_url, smtp_server, render_workers=2)
    send_id = await prepare(store, tmp_path, 150)
    watcher = PreflightEnd(smtp_server, pools)
    dispatch_log = logging.getLogger("mailer.dispatch")
    dispatch_log.addHandler(watcher)
    level = dispatch_log.level
    dispatch_log.setLevel(logging.INFO)
    try:
        summary = await run(settings, store, send_id)
    finally:
        dispatch_log.removeHandler(watcher)
        dispatch_log.setLevel(level)
    assert summary.status == SendStatus.DONE, summary
    assert summary.counts["sent"] == 150
    assert len(pools) == 1  # one pool for the pre-flight and the pass
    assert watcher.commands is not None, "no pre-flight line"
    assert "MAIL" not in watcher.commands
    assert watcher.received == 0
    assert pools[0].checked_by
    assert pools[0].checked_by <= watcher.workers
    assert os.getpid() not in pools[0].checked_by
    assert f"send {send_id}: pre-flight check of 150 recipients in " in watcher.line
    assert " µs per recipient, 2 render workers; 20 composed whole); 0 cannot be sent" in (
        watcher.line
    )
    await check_invariants(store, send_id, smtp_server)


async def test_in_the_pool_a_few_failures_fail_their_recipients(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer, pools: list[Any]
) -> None:
    """5 of 30 the body cannot render, found by the workers: they fail with the reason, the
    25 others get the send (as in the sending process: tests/test_dispatch.py)."""
    settings = settings_for(tmp_path, database_url, smtp_server, render_workers=1)
    send_id = await prepare(
        store, tmp_path, 30, body="Organisation : {{ subscriber.attributes.organisation }}"
    )
    summary = await run(settings, store, send_id)
    assert summary.status == SendStatus.DONE, summary
    assert (summary.counts["sent"], summary.counts["failed"]) == (25, 5)
    reasons = {r.email: r.reason async for r in store.figures.report(send_id)}
    assert "organisation" in (reasons["person0@example.org"] or "")
    assert pools[0].checked_by
    await check_invariants(store, send_id, smtp_server)


async def test_in_the_pool_a_campaign_failing_for_everyone_pauses_untouched(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer, pools: list[Any]
) -> None:
    settings = settings_for(tmp_path, database_url, smtp_server, render_workers=1)
    send_id = await prepare(store, tmp_path, 60, body="{{ subscriber.attributes.missing }}")
    summary = await run(settings, store, send_id)
    assert summary.status == SendStatus.PAUSED
    assert (summary.reason or "").startswith("pre-flight check: 60 of 60 recipients cannot")
    assert summary.counts["failed"] == 0
    assert smtp_server.received == []
    assert pools[0].checked_by
