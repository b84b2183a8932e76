"""The REST API's lists, subscribers and suppressions through httpx against the real app, on
SQLite and PostgreSQL: adding with a consent record (source ``api``; a double opt-in list's
confirmation send made and handed to the scheduler), the CLI's validation words per field,
search with cursor pages, Idempotency-Key (same answer and one subscriber; another body 422;
in progress 409), ETag/If-Match (412 on a lost update), unsubscribe, erase, suppressions, and
the audit line of each write (actor ``api:<key name>``, never the key).
"""

from __future__ import annotations

import asyncio
import hashlib

import httpx
import pytest

from mailer.models import CONFIRM_ACTION, Scope
from tests.api_support import Api, api_fixture, now  # noqa: F401

pytestmark = pytest.mark.timeout(60)
SUBSCRIBERS = "/api/v1/subscribers"


async def add(
    client: httpx.AsyncClient, email: str, slug: str = "news", **more: object
) -> httpx.Response:
    return await client.post(SUBSCRIBERS, json={"email": email, "list": slug, **more})


async def test_lists_with_their_counts(api: Api) -> None:
    await api.make_list("news", title="The News")
    await api.make_list("club", opt_in="double")
    client = await api.client(Scope.LISTS_READ, Scope.SUBSCRIBERS_WRITE)
    await add(client, "ann@example.org")
    found = (await client.get("/api/v1/lists")).json()
    assert [x["slug"] for x in found["data"]] == ["club", "news"]
    assert found["next"] is None
    news = (await client.get("/api/v1/lists/news")).json()
    assert news["title"] == "The News"
    assert news["counts"] == {"subscribed": 1, "pending": 0, "unsubscribed": 0}
    page = await client.get("/api/v1/lists", params={"limit": 1})
    assert [x["slug"] for x in page.json()["data"]] == ["club"]
    assert 'rel="next"' in page.headers["link"]
    rest = await client.get("/api/v1/lists", params={"cursor": page.json()["next"]})
    assert [x["slug"] for x in rest.json()["data"]] == ["news"]
    missing = await client.get("/api/v1/lists/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["detail"]


async def test_add_to_a_single_opt_in_list_records_consent_and_audit(api: Api) -> None:
    await api.make_list("news")
    raw = await api.key(Scope.SUBSCRIBERS_WRITE, Scope.SUBSCRIBERS_READ, name="crm")
    client = api.client_for(raw)
    answer = await add(client, "Ann@Example.ORG", name="Ann", locale="fr-ca",
                       timezone="Europe/Paris", attributes={"team": "blue"})  # fmt: skip
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["email"] == "Ann@example.org"
    assert body["locale"] == "fr_CA"
    assert body["attributes"] == {"team": "blue"}
    assert body["subscriptions"][0]["status"] == "subscribed"
    assert body["subscriptions"][0]["source"] == "api"
    assert body["created_at"].endswith(("Z", "+00:00"))
    assert answer.headers["location"] == f"{SUBSCRIBERS}/{body['id']}"
    assert answer.headers["etag"]
    assert answer.headers["cache-control"] == "no-store"
    person = await api.store.browse.person(body["id"])
    assert [c.event for c in person.consent] == ["subscribed"]
    assert person.consent[0].source == "api"
    lines = await api.store.audit.page(actor="api:crm")
    assert [(x.action, x.target) for x in lines] == [("subscriber.add", f"subscriber {body['id']}")]
    assert raw not in str(lines)
    again = await client.get(f"{SUBSCRIBERS}/{body['id']}")
    assert again.json() == body
    assert again.headers["etag"] == answer.headers["etag"]


async def test_a_double_opt_in_list_sends_the_confirmation(api: Api) -> None:
    await api.make_list("club", opt_in="double")
    client = await api.client(Scope.SUBSCRIBERS_WRITE)
    answer = await add(client, "bob@example.org", "club", timezone="Europe/Paris")
    assert answer.status_code == 201, answer.text
    assert answer.json()["subscriptions"][0]["status"] == "pending"
    assert answer.json()["subscriptions"][0]["source"] == "api"  # not the sign-up form's
    assert answer.json()["timezone"] == "Europe/Paris"
    assert len(api.queued) == 1
    spec = await api.store.sends.spec(api.queued[0])
    assert spec.action == CONFIRM_ACTION


async def test_refusals_name_the_field_in_the_cli_words(api: Api) -> None:
    await api.make_list("news")
    client = await api.client(Scope.SUBSCRIBERS_WRITE, Scope.SUPPRESSIONS_WRITE)
    bad = await add(client, "not an address", locale="english", timezone="Mars/Olympus",
                    colour="red")  # fmt: skip
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    errors = {e["field"]: e["message"] for e in bad.json()["errors"]}
    assert set(errors) == {"email", "locale", "timezone", "colour"}
    assert errors["locale"] == "'english' is not a language code such as fr or en"
    assert errors["timezone"] == "'Mars/Olympus' is not an IANA time zone such as Europe/Paris"
    unknown = await add(client, "ann@example.org", "nope")
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "list"
    suppressed = await client.post("/api/v1/suppressions",
                                   json={"email": "zed@example.org", "detail": "asked"})  # fmt: skip
    assert suppressed.status_code == 201
    refused = await add(client, "ZED@example.org")
    assert refused.status_code == 409
    assert "suppressed" in refused.json()["detail"]


async def test_search_in_cursor_pages(api: Api) -> None:
    await api.make_list("news")
    client = await api.client(Scope.SUBSCRIBERS_WRITE, Scope.SUBSCRIBERS_READ)
    for n in range(7):
        assert (await add(client, f"member{n}@example.org")).status_code == 201
    await add(client, "other@example.org")
    seen: list[str] = []
    params: dict[str, str | int] = {"list": "news", "q": "member", "limit": 3}
    for _ in range(5):
        page = await client.get(SUBSCRIBERS, params=params)
        assert page.status_code == 200, page.text
        seen += [m["email"] for m in page.json()["data"]]
        if page.json()["next"] is None:
            assert "link" not in page.headers
            break
        params["cursor"] = page.json()["next"]
    assert sorted(seen) == [f"member{n}@example.org" for n in range(7)]
    bad = await client.get(SUBSCRIBERS, params={"list": "news", "cursor": "garbage!"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.cursor"
    too_many = await client.get(SUBSCRIBERS, params={"list": "news", "limit": 501})
    assert too_many.json()["errors"][0]["field"] == "query.limit"
    assert (await client.get(SUBSCRIBERS)).json()["errors"][0]["field"] == "query.list"


async def test_idempotency_key(api: Api) -> None:
    await api.make_list("news")
    client = await api.client(Scope.SUBSCRIBERS_WRITE, Scope.SUBSCRIBERS_READ, name="site")
    key = {"Idempotency-Key": "4f1c-signup-1"}
    body = {"email": "ann@example.org", "list": "news"}
    first = await client.post(SUBSCRIBERS, json=body, headers=key)
    second = await client.post(SUBSCRIBERS, json=body, headers=key)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert second.headers["location"] == first.headers["location"]
    assert len(await api.store.audit.page(actor="api:site")) == 1  # one write
    other = await client.post(SUBSCRIBERS, json={**body, "name": "Ann"}, headers=key)
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    # another key may use the same Idempotency-Key: its answers are its own
    stranger = await api.client(Scope.SUBSCRIBERS_WRITE)
    theirs = await stranger.post(SUBSCRIBERS, json={**body, "email": "bo@example.org"}, headers=key)
    assert theirs.status_code == 201
    assert theirs.json()["email"] == "bo@example.org"
    bad = await client.post(SUBSCRIBERS, json=body, headers={"Idempotency-Key": "x" * 256})
    assert bad.status_code == 400


async def test_concurrent_requests_with_one_key_make_one_subscriber(api: Api) -> None:
    await api.make_list("news")
    client = await api.client(Scope.SUBSCRIBERS_WRITE, Scope.SUBSCRIBERS_READ)
    key = {"Idempotency-Key": "same"}
    body = {"email": "race@example.org", "list": "news"}
    answers = await asyncio.gather(*(client.post(SUBSCRIBERS, json=body, headers=key)
                                     for _ in range(4)))  # fmt: skip
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {201, 409}, [a.text for a in answers]
    assert 201 in codes
    first = next(a for a in answers if a.status_code == 201).json()
    assert all(a.json() == first for a in answers if a.status_code == 201)
    page = await client.get(SUBSCRIBERS, params={"list": "news"})
    assert [m["email"] for m in page.json()["data"]] == ["race@example.org"]


async def test_a_request_still_in_progress_is_409(api: Api) -> None:
    await api.make_list("news")
    raw = await api.key(Scope.SUBSCRIBERS_WRITE, name="slow")
    key = next(k for k in await api.store.api_keys.all() if k.name == "slow")
    client = api.client_for(raw)
    content = b'{"email": "ann@example.org", "list": "news"}'
    # method, path, query, media type, If-Match, then the body
    fingerprint = hashlib.sha256(
        b"POST\0/api/v1/subscribers\0\0application/json\0\0" + content
    ).hexdigest()
    assert await api.store.api_keys.remembered(key.id, "k", fingerprint=fingerprint,
                                               now=now()) is None  # fmt: skip
    busy = await client.post(SUBSCRIBERS, content=content,
                             headers={"Idempotency-Key": "k", "Content-Type": "application/json"})  # fmt: skip
    assert busy.status_code == 409
    assert busy.headers["retry-after"]


async def test_etag_and_if_match(api: Api) -> None:
    await api.make_list("news")
    client = await api.client(Scope.SUBSCRIBERS_WRITE, Scope.SUBSCRIBERS_READ, name="crm")
    made = await add(client, "ann@example.org", name="Ann")
    url = f"{SUBSCRIBERS}/{made.json()['id']}"
    etag = (await client.get(url)).headers["etag"]
    changed = await client.patch(url, json={"name": "Ann B."}, headers={"If-Match": etag})
    assert changed.status_code == 200, changed.text
    assert changed.json()["name"] == "Ann B."
    assert changed.headers["etag"] != etag
    lost = await client.patch(url, json={"locale": "de"}, headers={"If-Match": etag})
    assert lost.status_code == 412
    assert lost.headers["etag"] == changed.headers["etag"]
    assert (await client.get(url)).json()["locale"] is None  # the lost update changed nothing
    blind = await client.patch(url, json={"timezone": "Europe/Berlin", "attributes": {"a": "1"}})
    assert blind.status_code == 200  # without If-Match: accepted (last write wins)
    assert blind.json()["timezone"] == "Europe/Berlin"
    cleared = await client.patch(url, json={"timezone": None})
    assert cleared.json()["timezone"] is None
    bad = await client.patch(url, json={"email": "x@example.org"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "email"
    actions = [x.action for x in await api.store.audit.page(actor="api:crm")]
    assert actions.count("subscriber.update") == 3


async def test_unsubscribe_and_erase(api: Api) -> None:
    await api.make_list("news")
    await api.make_list("jobs")
    client = await api.client(Scope.SUBSCRIBERS_WRITE, Scope.SUBSCRIBERS_READ, name="crm")
    made = (await add(client, "ann@example.org")).json()
    await add(client, "ann@example.org", "jobs")
    url = f"{SUBSCRIBERS}/{made['id']}"
    one = await client.post(url + "/unsubscribe", json={"list": "news"})
    assert one.json() == {"changed": 1}
    statuses = {s["list"]: s["status"] for s in (await client.get(url)).json()["subscriptions"]}
    assert statuses == {"news": "unsubscribed", "jobs": "subscribed"}
    assert (await client.post(url + "/unsubscribe", json={})).json() == {"changed": 1}
    again = await add(client, "ann@example.org")
    assert again.status_code == 409
    assert '"resubscribe": true' in again.json()["detail"]
    back = await add(client, "ann@example.org", resubscribe=True)
    assert back.status_code == 201
    erased = await client.delete(url)
    assert erased.status_code == 204
    assert (await client.get(url)).status_code == 404
    assert (await client.delete(url)).status_code == 404
    line = (await api.store.audit.page(actor="api:crm", action="subscriber.erase"))[0]
    assert line.target == f"subscriber {made['id']}"
    assert "ann" not in str(line.details)


async def test_suppressions(api: Api) -> None:
    client = await api.client(Scope.SUPPRESSIONS_WRITE, Scope.SUBSCRIBERS_READ, name="ops")
    made = await client.post("/api/v1/suppressions", json={"email": "Zed@Example.org",
                             "reason": "complaint", "detail": "phoned us"})  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["email_key"] == "zed@example.org"
    assert made.json()["reason"] == "complaint"
    twice = await client.post("/api/v1/suppressions", json={"email": "zed@example.org",
                              "detail": "again"})  # fmt: skip
    assert twice.status_code == 200
    listed = (await client.get("/api/v1/suppressions", params={"q": "zed"})).json()
    assert [x["email_key"] for x in listed["data"]] == ["zed@example.org"]
    lifted = await client.post("/api/v1/suppressions/zed@example.org/lift",
                               json={"reason": "asked to be mailed again"})  # fmt: skip
    assert lifted.status_code == 200, lifted.text
    assert lifted.json()["was"] == "complaint"
    assert (await client.post("/api/v1/suppressions/zed@example.org/lift",
                              json={"reason": "x"})).status_code == 404  # fmt: skip
    history = await api.store.browse.history("zed@example.org")
    assert [h.actor for h in history] == ["api:ops", "api:ops"]
    actions = [x.action for x in await api.store.audit.page(actor="api:ops")]
    assert sorted(actions) == ["subscriber.suppress", "subscriber.unsuppress"]
    empty = await client.post("/api/v1/suppressions", json={"email": "a@example.org",
                              "detail": "  "})  # fmt: skip
    assert empty.json()["errors"][0]["field"] == "detail"


async def test_a_refusal_for_a_header_is_not_replayed_to_the_fixed_retry(api: Api) -> None:
    """A 415 (or 412, 429) names something the client fixes and retries with the same key:
    the retry is answered anew, not given the kept refusal for a day."""
    await api.make_list("news")
    client = await api.client(Scope.SUBSCRIBERS_WRITE)
    content = b'{"email": "ann@example.org", "list": "news"}'
    once = {"Idempotency-Key": "k-415"}
    wrong = await client.post(SUBSCRIBERS, content=content,
                              headers={**once, "Content-Type": "text/plain"})  # fmt: skip
    assert wrong.status_code == 415
    fixed = await client.post(SUBSCRIBERS, content=content,
                              headers={**once, "Content-Type": "application/json"})  # fmt: skip
    assert fixed.status_code == 201, fixed.text
