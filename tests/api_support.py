"""What the REST API tests share: the real app (``create_app``) on a real database, API keys
of given scopes made through ``store.api_keys.create``, and httpx clients over the ASGI
transport that send them.

    async def test_x(api: Api) -> None:
        client = await api.client(Scope.LISTS_READ)          # a key with that scope
        await api.make_list("news", opt_in="double")
        answer = await client.get("/api/v1/lists")

``api.anonymous()`` has no key; ``api.client_for(raw)`` sends a given key; ``api.queued`` are
the send ids the app handed to ``on_send`` (a double opt-in confirmation). Import the
``api`` fixture into a test module with ``from tests.api_support import api_fixture  # noqa:
F401`` (its name is ``api``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.models import ListMeta, OptInMode, Scope
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer
from mailer.web import create_app
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
KEY = "Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"
BASE = "http://lists.test"
ALL_SCOPES = tuple(Scope)
_NAMES = count(1)


def now() -> datetime:
    return datetime.now(UTC)


def api_settings(tmp_path: Path, database_url: str, **api: Any) -> Settings:
    return make_settings(
        tmp_path,
        database={"url": database_url},
        paths={"templates_dir": ROOT / "templates"},
        secret_keys=KEY,
        web={"base_url": BASE},
        console={"cache_counts": False},
        api=api,
    )


@dataclass
class Api:
    store: Store
    settings: Settings
    app: Any
    queued: list[int] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    async def key(self, *scopes: Scope | str, name: str | None = None) -> str:
        """A new key with these scopes (all of them if none is given); the raw key."""
        wanted = [Scope(s) for s in scopes] or list(ALL_SCOPES)
        _, raw = await self.store.api_keys.create(
            name=name or f"key-{next(_NAMES)}", scopes=wanted, actor="test", now=now()
        )
        return raw

    def client_for(self, raw: str | None, ip: str = "192.0.2.20") -> httpx.AsyncClient:
        """A client sending ``raw`` as its Bearer key (None: no Authorization header)."""
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        headers = {} if raw is None else {"Authorization": f"Bearer {raw}"}
        client = httpx.AsyncClient(transport=transport, base_url=BASE, headers=headers)
        self.clients.append(client)
        return client

    def anonymous(self) -> httpx.AsyncClient:
        return self.client_for(None)

    async def client(self, *scopes: Scope | str, name: str | None = None) -> httpx.AsyncClient:
        return self.client_for(await self.key(*scopes, name=name))

    async def make_list(
        self, slug: str, *, opt_in: str = "single", title: str | None = None, locale: str = "en"
    ) -> int:
        meta = ListMeta(
            slug=slug, title=title or slug.title(), default_locale=locale,
            opt_in=OptInMode(opt_in), public=False,
        )  # fmt: skip
        return await self.store.lists.upsert(meta, now=now())


async def open_api(
    store: Store, tmp_path: Path, database_url: str, **api: Any
) -> AsyncIterator[Api]:
    """The app on ``store`` with these ``MAILER_API__*`` settings."""
    settings = api_settings(tmp_path, database_url, **api)
    queued: list[int] = []
    app = create_app(settings, store, signer=Signer([KEY]), on_send=queued.append)
    found = Api(store, settings, app, queued)
    try:
        yield found
    finally:
        for client in found.clients:
            await client.aclose()


@pytest.fixture(name="api")
async def api_fixture(store: Store, tmp_path: Path, database_url: str) -> AsyncIterator[Api]:
    """The REST API on the current backend's database."""
    async for found in open_api(store, tmp_path, database_url):
        yield found
