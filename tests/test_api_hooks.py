"""The REST API's webhook endpoints through httpx against the real app, on SQLite and
PostgreSQL: an endpoint added with its secret in that answer only (never in a read, a list,
an update or the audit log; a retry with the same Idempotency-Key gets the same answer), the
URL refused naming ``url`` unless it is https to a public address (loopback, private,
link-local, mapped IPv6, a name resolving to loopback, plain http, a password in the URL),
private targets allowed by the setting, events, description and enabled changed with
If-Match, removal, and the deliveries an event made; and :func:`check_url` as a value with a
resolver of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import text

from mailer.models import DEFAULT_EVENTS, EventType, Scope
from mailer.storage import Store
from mailer.web.api.hooks import check_url
from tests.api_support import Api, api_fixture  # noqa: F401
from tests.test_api_campaigns import open_with

pytestmark = pytest.mark.timeout(60)
HOOKS = "/api/v1/webhooks"
PUBLIC = "https://93.184.215.14/hooks/mailer"  # a public address: nothing is posted here


def resolver(*addresses: str) -> Callable[[str], Awaitable[Sequence[str]]]:
    async def resolve(host: str) -> Sequence[str]:
        if not addresses:
            raise OSError(-2, "Name or service not known")
        return list(addresses)

    return resolve


@pytest.mark.parametrize(
    ("url", "addresses", "said"),
    [
        ("https://hooks.example.org/x", ("93.184.215.14",), None),
        ("https://hooks.example.org/x", ("93.184.215.14", "10.0.0.7"), "private"),
        ("https://hooks.example.org/x", ("127.0.0.1",), "loopback"),
        ("https://hooks.example.org/x", ("::ffff:192.168.1.2",), "private"),
        ("https://hooks.example.org/x", (), "cannot be resolved"),
        ("https://169.254.169.254/latest", (), "link-local"),
        ("https://[::1]:8443/x", (), "loopback"),
        ("https://100.64.0.1/x", (), "private or reserved"),
        ("http://93.184.215.14/x", (), "must use https://"),
        ("https://user:pw@93.184.215.14/x", (), "user or password"),
        ("https://93.184.215.14/x#frag", (), "fragment"),
        ("https:///x", (), "no host"),
        ("https://93.184.215.14:99999/x", (), "not a URL"),
        ("https://a b/x", (), "spaces"),
    ],
)
async def test_check_url(url: str, addresses: tuple[str, ...], said: str | None) -> None:
    found = await check_url(url, allow_private=False, resolve=resolver(*addresses))
    if said is None:
        assert found is None
    else:
        assert found is not None
        assert said in found


async def test_private_targets_only_with_the_setting() -> None:
    local = "http://127.0.0.1:8080/hook"
    assert await check_url(local, allow_private=True, resolve=resolver()) is None
    assert await check_url(local, allow_private=False, resolve=resolver()) is not None


async def test_an_endpoint_is_added_with_its_secret_shown_once(api: Api) -> None:
    client = api.client_for(await api.key(Scope.WEBHOOKS_MANAGE, name="crm"))
    once = {"Idempotency-Key": "hook-1"}
    body = {"url": PUBLIC, "description": "The CRM"}
    made = await client.post(HOOKS, json=body, headers=once)
    assert made.status_code == 201, made.text
    found = made.json()
    secret = found["secret"]
    assert secret.startswith("whsec_")
    assert found["events"] == sorted(e.value for e in DEFAULT_EVENTS)
    assert (found["enabled"], found["created_by"]) == (True, "api:crm")
    path = made.headers["location"]
    assert path == f"{HOOKS}/{found['id']}"
    assert "x-mailer-secret-answer" not in made.headers
    # A retry of a lost answer: nothing added twice, and the secret is not shown again (its
    # answer was kept without its body: it would have kept the secret for a day).
    replay = await client.post(HOOKS, json=body, headers=once)
    assert replay.status_code == 409, replay.text
    assert secret not in replay.text
    assert "shown" in replay.json()["detail"]
    assert path in replay.json()["detail"]
    assert len(await api.store.webhooks.all()) == 1
    async with api.store.db.begin() as conn:
        kept = (await conn.execute(text("SELECT body FROM api_idempotency"))).scalars().all()
    assert all("whsec_" not in b for b in kept)
    for answer in (await client.get(path), await client.get(HOOKS),
                   await client.patch(path, json={"description": "CRM"}),
                   await client.get(f"{path}/deliveries")):  # fmt: skip
        assert answer.status_code == 200, answer.text
        assert "secret" not in answer.text
        assert secret not in answer.text
    for entry in await api.store.audit.page():
        assert secret not in str(entry.details)
    other = await api.client(Scope.SUBSCRIBERS_WRITE)
    refused = await other.get(HOOKS)
    assert (refused.status_code, refused.json()["scope"]) == (403, "webhooks:manage")


@pytest.mark.parametrize(
    ("url", "said"),
    [("https://127.0.0.1/x", "loopback"), ("https://localhost/x", "loopback"),
     ("https://[::ffff:10.0.0.1]/x", "private"), ("http://93.184.215.14/x", "https://"),
     ("https://u:p@93.184.215.14/x", "password"), ("ftp://93.184.215.14/", "https://")],
)  # fmt: skip
async def test_an_inside_or_odd_url_is_refused_naming_the_field(
    api: Api, url: str, said: str
) -> None:
    client = await api.client(Scope.WEBHOOKS_MANAGE)
    answer = await client.post(HOOKS, json={"url": url})
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["field"] == "url"
    assert said in error["message"]
    assert await api.store.webhooks.all() == []


async def test_bad_events_and_descriptions_are_refused(api: Api) -> None:
    client = await api.client(Scope.WEBHOOKS_MANAGE)
    for body, field in (({"url": PUBLIC, "events": []}, "events"),
                        ({"url": PUBLIC, "events": ["send.exploded"]}, "events.0"),
                        ({"url": PUBLIC, "description": "two\nlines"}, "description"),
                        ({"url": PUBLIC, "secret": "mine"}, "secret")):  # fmt: skip
        answer = await client.post(HOOKS, json=body)
        assert answer.status_code == 422, body
        assert answer.json()["errors"][0]["field"] == field


@pytest.fixture
async def open_hooks(store: Store, tmp_path: Path, database_url: str) -> AsyncIterator[Api]:
    """Webhooks allowed to private targets (MAILER_WEBHOOKS__ALLOW_PRIVATE=true)."""
    async for found in open_with(store, tmp_path, database_url, webhooks={"allow_private": True}):
        yield found


async def test_the_setting_allows_a_receiver_inside(open_hooks: Api) -> None:
    client = await open_hooks.client(Scope.WEBHOOKS_MANAGE)
    made = await client.post(HOOKS, json={"url": "http://127.0.0.1:9/hook"})
    assert made.status_code == 201, made.text


async def test_an_endpoint_is_changed_with_if_match_and_removed(api: Api) -> None:
    client = await api.client(Scope.WEBHOOKS_MANAGE)
    path = (await client.post(HOOKS, json={"url": PUBLIC})).headers["location"]
    tag = (await client.get(path)).headers["etag"]
    changed = await client.patch(
        path, json={"events": ["send.finished", "send.started", "send.finished"],
                    "enabled": False}, headers={"If-Match": tag},
    )  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert changed.json()["events"] == ["send.finished", "send.started"]
    assert (changed.json()["enabled"], changed.json()["disabled_reason"]) == (
        False, "disabled by api:" + (await api.store.api_keys.all())[0].name
    )  # fmt: skip
    lost = await client.patch(path, json={"description": "late"}, headers={"If-Match": tag})
    assert lost.status_code == 412
    again = await client.patch(path, json={"enabled": True})
    assert again.json()["enabled"] is True
    actions = [e.action for e in await api.store.audit.page()]
    assert {"webhook.add", "webhook.update", "webhook.disable", "webhook.enable"} <= set(actions)
    assert (await client.delete(path, headers={"If-Match": '"old"'})).status_code == 412
    assert (await client.delete(path)).status_code == 204
    assert (await client.get(path)).status_code == 404
    assert (await client.get(f"{HOOKS}/99999999999999999999999")).status_code == 404


async def test_the_deliveries_an_event_made_are_listed(api: Api) -> None:
    await api.make_list("news")
    client = await api.client(Scope.WEBHOOKS_MANAGE, Scope.SUBSCRIBERS_WRITE)
    made = await client.post(HOOKS, json={"url": PUBLIC, "events": ["subscriber.subscribed"]})
    path = made.headers["location"]
    for who in ("ann", "bob", "cy"):
        added = await client.post(
            "/api/v1/subscribers", json={"email": f"{who}@example.org", "list": "news"}
        )
        assert added.status_code == 201, added.text
    first = await client.get(f"{path}/deliveries", params={"limit": 2})
    assert first.status_code == 200, first.text
    lines = first.json()["data"]
    assert [x["type"] for x in lines] == [EventType.SUBSCRIBED.value] * 2
    assert {x["status"] for x in lines} == {"pending"}
    rest = await client.get(
        f"{path}/deliveries", params={"limit": 2, "cursor": first.json()["next"]}
    )
    assert len(rest.json()["data"]) == 1
    assert rest.json()["next"] is None
    assert len({x["event_id"] for x in lines + rest.json()["data"]}) == 3
    none = await client.get(f"{path}/deliveries", params={"status": "delivered"})
    assert none.json()["data"] == []
