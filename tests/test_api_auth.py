"""The REST API's gate, over every route of the table (``api_routes()``, so a new route is
checked at once): no key, a malformed header, an unknown key and a revoked key get 401 with
``WWW-Authenticate: Bearer``; a key with every scope but the route's gets 403 naming it; the
rate limit answers 429 with ``Retry-After``; and none of them reaches a view (nothing written).
Plus the problems of the core: unknown path, wrong method, bad JSON, wrong media type, a body
too large, all as ``application/problem+json``, never a page.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from mailer.models import Scope
from mailer.storage import Store
from mailer.web.api import api_routes
from mailer.web.api.core import ApiRoute
from tests.api_support import Api, api_fixture, now, open_api  # noqa: F401

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]
ROUTES = api_routes()
PROBLEM = "application/problem+json"


def url_of(route: ApiRoute) -> str:
    path = re.sub(r"{\w+:int}", "1", route.path)
    return "/api/v1" + re.sub(r"{\w+}", "x", path)


async def call(client: httpx.AsyncClient, route: ApiRoute) -> httpx.Response:
    body = {"json": {}} if route.body is not None else {}
    return await client.request(route.method, url_of(route), **body)  # type: ignore[arg-type]


def is_problem(answer: httpx.Response, status: int) -> None:
    assert answer.status_code == status, (answer.request.url, answer.text)
    assert answer.headers["content-type"] == PROBLEM
    body = answer.json()
    assert body["status"] == status
    assert body["detail"]
    assert body["title"]
    assert body["type"]
    assert answer.headers["cache-control"] == "no-store"


def test_every_route_names_a_scope(backend: str) -> None:
    assert ROUTES, "the API has no route"
    for route in ROUTES:
        assert isinstance(route.scope, Scope), route


async def audit_lines(api: Api) -> int:
    return len(await api.store.audit.page(limit=500))


async def test_no_bad_or_revoked_key_is_401_on_every_route(api: Api) -> None:
    raw = await api.key(name="soon-revoked")
    await api.store.api_keys.revoke("soon-revoked", actor="test", now=now())
    before = await audit_lines(api)
    clients = {
        "none": api.anonymous(),
        "malformed": api.client_for(None),
        "unknown": api.client_for("mlr_" + "A" * 43),
        "not ours": api.client_for("sk_live_whatever"),
        "revoked": api.client_for(raw),
    }
    clients["malformed"].headers["Authorization"] = "Basic dXNlcjpwYXNz"
    for route in ROUTES:
        for what, client in clients.items():
            answer = await call(client, route)
            is_problem(answer, 401)
            assert answer.headers["www-authenticate"].startswith("Bearer"), (what, route.path)
            assert raw not in answer.text
    assert await audit_lines(api) == before  # nothing a view would write


async def test_a_key_without_the_route_scope_is_403_naming_it(api: Api) -> None:
    clients = {
        scope: await api.client(*[s for s in Scope if s != scope], name=f"no-{scope.value}")
        for scope in Scope
    }
    for route in ROUTES:
        assert route.scope is not None
        answer = await call(clients[route.scope], route)
        is_problem(answer, 403)
        assert answer.json()["scope"] == route.scope.value
        assert route.scope.value in answer.json()["detail"]


async def test_a_key_with_the_scope_gets_past_the_gate(api: Api) -> None:
    everything = await api.client()
    for route in ROUTES:
        answer = await call(everything, route)
        assert answer.status_code not in (401, 403), (route.path, answer.text)
        assert answer.status_code < 500, (route.path, answer.text)


async def test_the_rate_limit_per_key(store: Store, tmp_path: Path, database_url: str) -> None:
    async for limited in open_api(store, tmp_path, database_url, rate_per_minute=3):
        first = await limited.client(Scope.LISTS_READ)
        second = await limited.client(Scope.LISTS_READ)
        for _ in range(3):
            assert (await first.get("/api/v1/lists")).status_code == 200
        refused = await first.get("/api/v1/lists")
        is_problem(refused, 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert "MAILER_API__RATE_PER_MINUTE" in refused.json()["detail"]
        assert (await second.get("/api/v1/lists")).status_code == 200  # its own bucket


async def test_unknown_paths_and_methods_are_problems(api: Api) -> None:
    client = await api.client()
    is_problem(await client.get("/api/v1/nothing-here"), 404)
    is_problem(await client.get("/api/v2/lists"), 404)
    is_problem(await client.get("/api/v1/lists/"), 404)
    wrong = await client.put("/api/v1/lists")
    is_problem(wrong, 405)
    assert wrong.headers["allow"]


async def test_bodies_that_are_not_json_objects(api: Api) -> None:
    client = await api.client()
    await api.make_list("news")
    url = "/api/v1/subscribers"
    is_problem(await client.post(url, content=b"{not json", headers=_json()), 400)
    is_problem(await client.post(url, content=b"[1, 2]", headers=_json()), 400)
    is_problem(await client.post(url, content=b'{"a": NaN}', headers=_json()), 400)
    is_problem(await client.post(url, content=b"\xff\xfe", headers=_json()), 400)
    is_problem(await client.post(url, content=b"[" * 100_000 + b"]" * 100_000, headers=_json()),
               400)  # fmt: skip
    is_problem(await client.post(url, content=b""), 400)
    is_problem(await client.post(url, data={"email": "a@b.org"}), 415)
    big = b'{"email": "' + b"a" * (api.settings.api.max_body + 10) + b'"}'
    too_large = await client.post(url, content=big, headers=_json())
    is_problem(too_large, 413)
    assert "MAILER_API__MAX_BODY" in too_large.json()["detail"]


async def test_the_docs_and_the_document_need_no_key(api: Api) -> None:
    client = api.anonymous()
    document = await client.get("/api/v1/openapi.json")
    assert document.status_code == 200
    assert document.json()["openapi"].startswith("3.1")
    page = await client.get("/api/v1/docs")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "<script>" not in page.text  # only <script src=...>
    for src in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        asset = await client.get(src.replace("&amp;", "&"))
        assert asset.status_code == 200, src
        assert "max-age" in asset.headers["cache-control"]
    is_problem(await client.get("/api/v1/docs/static/..%2f..%2fapp.py"), 404)
    is_problem(await client.get("/api/v1/docs/static/VENDOR.toml"), 404)


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}
