"""Schemathesis over the REST API's own OpenAPI document, against the real app served by a
real uvicorn (its store opened in the server's loop), so every route in the table, A2's
included, is exercised as soon as it is documented: with a key of every scope, no answer is
a 5xx and every answer (status, content type, headers, body) conforms to the document; with
no key, every answer is a 401 (a method the operation lacks, which schemathesis probes too,
a 405).

Kept fast and deterministic: a few examples per operation, derandomised, no deadline, no
example database.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mailer.models import ListMeta, OptInMode, Scope, SubscriberRow, SuppressionReason
from mailer.storage import Store
from mailer.tokens import Signer
from mailer.web import create_app
from mailer.web.api import api_routes
from mailer.web.api.openapi import document
from tests.api_support import KEY, api_settings, now

pytestmark = pytest.mark.timeout(120)
EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Served:
    base: str
    key: str


async def _seed(store: Store) -> str:
    """Two lists, a subscriber, a suppression; a key of every scope."""
    for slug, opt_in in (("news", OptInMode.SINGLE), ("club", OptInMode.DOUBLE)):
        await store.lists.upsert(ListMeta(slug, slug.title(), "en", opt_in), now=now())
    row = SubscriberRow(line=0, email="ann@example.org", key="ann@example.org", smtputf8=False)
    await store.subscribers.add(row, slug="news", source="test", now=now())
    await store.subscribers.suppress(
        "zed@example.org", reason=SuppressionReason.MANUAL, detail="t", now=now(), actor="test"
    )
    _, raw = await store.api_keys.create(name="fuzz", scopes=list(Scope), actor="test", now=now())
    return raw


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app on a fresh SQLite file, served by uvicorn in a thread with its own loop."""
    tmp: Path = tmp_path_factory.mktemp("api-schema")
    url = f"sqlite+aiosqlite:///{tmp / 'api.sqlite'}"
    config = api_settings(tmp, url, rate_per_minute=1_000_000)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    box: dict[str, Any] = {}

    async def main() -> None:
        async with Store.open(config) as store:
            await store.upgrade()
            box["key"] = await _seed(store)
            app = create_app(config, store, signer=Signer([KEY]), on_send=lambda _: None)
            server = uvicorn.Server(
                uvicorn.Config(app, lifespan="off", log_level="warning", ws="none")
            )
            box["server"] = server
            await server.serve(sockets=[sock])

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while "server" not in box or not box["server"].started:
            assert thread.is_alive(), "the API server stopped"
            assert time.monotonic() < deadline, "the API server did not start"
            time.sleep(0.02)
        yield Served(f"http://127.0.0.1:{sock.getsockname()[1]}", box["key"])
    finally:
        if "server" in box:
            box["server"].should_exit = True
        thread.join(15)
        sock.close()


# The document the app serves, made from the same route table (the served one is compared
# with it below): schemathesis needs it at collection time, before the server runs.
DOCUMENT = document(api_routes())
schema = schemathesis.openapi.from_dict(DOCUMENT)
# Without a key: requests the document allows (no negative data, no coverage phase: a path
# parameter of the wrong type matches no route and is a 404 before any key is read).
anonymous = schemathesis.openapi.from_dict(DOCUMENT)
anonymous.config.phases.update(phases=["examples", "fuzzing"])
anonymous.config.generation.update(modes=[GenerationMode.POSITIVE], deterministic=True)
# With a key: positive and negative data, without the coverage phase (its hundreds of edge
# cases per operation would take minutes on CI's 2 cores).
schema.config.phases.update(phases=["examples", "fuzzing"])
schema.config.generation.update(deterministic=True)


def test_the_served_document_is_the_one_fuzzed(served: Served) -> None:
    answer = httpx.get(served.base + "/api/v1/openapi.json")
    assert answer.json() == json.loads(json.dumps(DOCUMENT))
    assert set(DOCUMENT["paths"]), "no operation to fuzz"


@schema.parametrize()
@FUZZ
def test_with_every_scope_answers_conform(case: Any, served: Served) -> None:
    case.call_and_validate(
        base_url=served.base + "/api/v1",
        headers={"Authorization": f"Bearer {served.key}"},
        checks=CHECKS,
    )


@anonymous.parametrize()
@FUZZ
def test_without_a_key_only_401(case: Any, served: Served) -> None:
    response = case.call(base_url=served.base + "/api/v1")
    if case.method.upper() != case.operation.method.upper():
        # schemathesis also probes methods the operation does not have (TRACE...): 405
        assert response.status_code == 405, (case.method, case.formatted_path)
        return
    assert response.status_code == 401, (case.method, case.formatted_path, response.text[:300])
    assert response.headers["www-authenticate"][0].startswith("Bearer")
