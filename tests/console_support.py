"""What the console tests share: an app on a real database with a signed-in browser per role.

``Console.client(role)`` gives an httpx client whose cookie jar holds a live session of a user
of that role (signed in through ``/admin/login``, the real form), and ``csrf(client)`` the
session's CSRF token, read from a page as a browser would. Argon2 runs at its real cost only
in the sign-in tests; elsewhere users get a cheap hash (``FAST_HASH``) so tests stay quick.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from argon2 import PasswordHasher

from mailer.message import Built
from mailer.models import Role
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer
from mailer.web import create_app
from mailer.web.console.context import TestResult
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
KEY = "Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"
PASSWORD = "correct horse battery staple 42"
FAST = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_settings(tmp_path: Path, database_url: str, **console: Any) -> Settings:
    return make_settings(
        tmp_path,
        database={"url": database_url},
        paths={"templates_dir": ROOT / "templates"},
        secret_keys=KEY,
        web={"base_url": "http://lists.test"},
        # exact counts at every look: a count slowed by a loaded machine is not kept
        console={"cache_counts": False, **console},
    )


def now() -> datetime:
    return datetime.now(UTC)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no csrf field on the page"
    return found.group(1)


@dataclass
class Console:
    store: Store
    settings: Settings
    app: Any
    queued: list[int] = field(default_factory=list)
    clients: list[httpx.AsyncClient] = field(default_factory=list)
    # the test sends the console handed to the daemon's transport (``test_mail``), in order
    mailed: list[Built] = field(default_factory=list)

    def anonymous(self, ip: str = "192.0.2.10") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(ip, 40000))
        client = httpx.AsyncClient(transport=transport, base_url="http://lists.test")
        self.clients.append(client)
        return client

    async def user(self, role: Role | str, email: str | None = None, **extra: Any) -> str:
        email = email or f"{role}@staff.example.org"
        if await self.store.staff.get(email) is None:
            await self.store.staff.add(
                email, name=extra.get("name"), role=Role(role),
                password_hash=FAST.hash(PASSWORD), now=now(),
            )  # fmt: skip
        return email

    async def sign_in(self, client: httpx.AsyncClient, email: str, password: str = PASSWORD,
                      code: str = "") -> httpx.Response:  # fmt: skip
        page = await client.get("/admin/login")
        return await client.post(
            "/admin/login",
            data={"csrf": csrf_of(page.text), "email": email, "password": password,
                  "code": code, "next": "/admin/"},
        )  # fmt: skip

    async def client(self, role: Role | str, email: str | None = None) -> httpx.AsyncClient:
        """A client signed in as a user of ``role``."""
        address = await self.user(role, email)
        client = self.anonymous()
        answer = await self.sign_in(client, address)
        assert answer.status_code == 303, answer.text
        return client

    async def csrf(self, client: httpx.AsyncClient) -> str:
        return csrf_of((await client.get("/admin/me")).text)


async def open_console(
    store: Store, tmp_path: Path, database_url: str, **console: Any
) -> AsyncIterator[Console]:
    settings = console_settings(tmp_path, database_url, **console)
    queued: list[int] = []
    mailed: list[Built] = []

    async def test_mail(built: Built) -> TestResult:
        """The daemon's side of a test send, as the relay would answer: taken."""
        mailed.append(built)
        return TestResult(True, "250 2.0.0 queued as TEST")

    app = create_app(
        settings, store, signer=Signer([KEY]), on_send=queued.append, test_mail=test_mail
    )
    found = Console(store, settings, app, queued, mailed=mailed)
    try:
        yield found
    finally:
        for client in found.clients:
            await client.aclose()
