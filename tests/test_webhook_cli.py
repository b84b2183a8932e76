"""`mailer webhooks add|list|test|deliveries|enable|disable|remove` through the real command
line (in this process, on the test's database) against a real receiver: the secret printed
once and never again, the test event signed and its answer shown, what was tried listed with
local times, the audit log naming `cli:<user>`; bad events, URLs and ids refused in one line."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.models import DEFAULT_EVENTS, EventType
from mailer.outbox import Poster
from mailer.settings.api import WebhookSettings
from mailer.storage import Store, outbox
from tests import cli_support
from tests.webhook_support import Receiver, receiving

pytestmark = pytest.mark.timeout(60)


def env_for(tmp_path: Path, database_url: str, *, allow_private: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        COLUMNS="250",
        MAILER_DATABASE__URL=database_url,
        MAILER_PATHS__DATA_DIR=str(tmp_path / "data"),
        MAILER_LOG__LEVEL="WARNING",
        MAILER_SCHEDULER__TIMEZONE="Europe/Paris",
        MAILER_WEBHOOKS__ALLOW_PRIVATE=str(allow_private).lower(),
        MAILER_WEBHOOKS__TIMEOUT="5",
    )
    return env


async def test_add_list_test_deliveries_enable_disable_remove(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    env = env_for(tmp_path, database_url)
    async with receiving() as receiver:
        added = await cli_support.amailer(
            tmp_path, "webhooks", "add", receiver.url + "/crm", "--events",
            "subscriber.confirmed,subscriber.unsubscribed", "--event", "send.finished",
            "--description", "the CRM", env=env,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        secret = re.search(r"secret: (whsec_\S+)", added.stdout)
        assert secret, added.stdout
        assert "will not be shown again" in added.stdout
        (endpoint,) = await store.webhooks.all()
        assert endpoint.secret == secret.group(1)
        assert endpoint.events == {
            EventType.CONFIRMED, EventType.UNSUBSCRIBED, EventType.SEND_FINISHED
        }  # fmt: skip
        receiver.secrets["/crm"] = endpoint.secret

        listed = await cli_support.amailer(tmp_path, "webhooks", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        assert f"{endpoint.id} " in listed.stdout
        assert "/crm" in listed.stdout
        assert "active" in listed.stdout
        assert "the CRM" in listed.stdout
        assert endpoint.secret not in listed.stdout

        tested = await cli_support.amailer(tmp_path, "webhooks", "test", str(endpoint.id), env=env)
        assert tested.returncode == 0, tested.stderr
        assert re.search(r": 200 in \d+ ms", tested.stdout), tested.stdout
        (request,) = receiver.requests
        assert request.verified
        assert b'"type":"webhook.test"' in request.body
        assert await store.webhooks.pending() == 0  # not through the outbox

        receiver.answer("/crm", 503, retry_after="120")
        failed = await cli_support.amailer(tmp_path, "webhooks", "test", str(endpoint.id), env=env)
        assert failed.returncode == 1
        assert "503" in failed.stdout
        assert "not delivered" in failed.stdout

        await _deliver_one(store, receiver)
        shown = await cli_support.amailer(tmp_path, "webhooks", "deliveries", env=env)
        assert shown.returncode == 0, shown.stderr
        assert "subscriber.confirmed" in shown.stdout
        assert "pending" in shown.stdout
        assert "answered 503 Service" in shown.stdout
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d\+0[12]:00", shown.stdout), shown.stdout
        none = await cli_support.amailer(
            tmp_path, "webhooks", "deliveries", "--status", "delivered", env=env
        )
        assert "no webhook delivery matches" in none.stdout

        disabled = await cli_support.amailer(
            tmp_path, "webhooks", "disable", str(endpoint.id), "--reason", "maintenance", env=env
        )
        assert disabled.returncode == 0, disabled.stderr
        listed = await cli_support.amailer(tmp_path, "webhooks", "list", env=env)
        assert "disabled: maintenance" in listed.stdout
        receiver.answer("/crm", 200)
        enabled = await cli_support.amailer(
            tmp_path, "webhooks", "enable", str(endpoint.id), env=env
        )
        assert "1 event(s) to post to it" in enabled.stdout
        poster = Poster(store, WebhookSettings(allow_private=True), node="t:1")
        assert await poster.round() == 1
        assert await store.webhooks.pending() == 0

        removed = await cli_support.amailer(
            tmp_path, "webhooks", "remove", str(endpoint.id), env=env
        )
        assert removed.returncode == 0, removed.stderr
        assert await store.webhooks.all() == []
    entries = [e for e in await store.audit.page(limit=50) if e.action.startswith("webhook.")]
    assert [e.action for e in entries] == [
        "webhook.remove", "webhook.enable", "webhook.disable", "webhook.add",
    ]  # fmt: skip
    assert all(e.actor.startswith("cli:") for e in entries)
    assert not [e for e in entries if endpoint.secret in str(e)]


async def _deliver_one(store: Store, receiver: Receiver) -> None:
    """One event through the outbox and one (failed) attempt of the poster."""
    async with store.db.begin(write=True) as conn:
        await outbox.emit(
            conn, [(EventType.CONFIRMED, {"email": "a@example.org"})], now=datetime.now(UTC)
        )
    assert await Poster(store, WebhookSettings(allow_private=True), node="t:1").round() == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "https://hooks.example.org/x", "--events", "subscriber.confirmed,nope"),
         "unknown event 'nope'; valid: subscriber.subscribed, subscriber.confirmed"),
        (("add", "http://hooks.example.org/x"), "must use https://"),
        (("add", "https://127.0.0.1/x"), "loopback"),
        (("add", "https://u:p@hooks.example.org/x"), "no user or password"),
        (("test", "99"), "no webhook endpoint 99"),
        (("enable", "99"), "no webhook endpoint 99"),
        (("remove", "99"), "no webhook endpoint 99"),
    ],
)  # fmt: skip
async def test_mistakes_are_one_clear_line(
    store: Store, tmp_path: Path, database_url: str, args: tuple[str, ...], message: str
) -> None:
    env = env_for(tmp_path, database_url, allow_private=False)
    ran = await cli_support.amailer(tmp_path, "webhooks", *args, env=env)
    assert ran.returncode != 0
    assert message in " ".join(ran.stderr.split()), ran.stderr
    assert "Traceback" not in ran.stderr
    assert await store.webhooks.all() == []


async def test_the_default_events_are_all_but_delivery_sent(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    env = env_for(tmp_path, database_url)
    added = await cli_support.amailer(tmp_path, "webhooks", "add", "http://127.0.0.1:9/x", env=env)
    assert added.returncode == 0, added.stderr
    (endpoint,) = await store.webhooks.all()
    assert endpoint.events == set(DEFAULT_EVENTS)
    everything = await cli_support.amailer(
        tmp_path, "webhooks", "add", "http://127.0.0.1:9/y", "--events", "all", env=env
    )
    assert everything.returncode == 0, everything.stderr
    assert EventType.DELIVERY_SENT in (await store.webhooks.all())[1].events
