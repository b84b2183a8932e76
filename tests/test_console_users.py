"""The staff accounts page (/admin/users, admins only) and the console's own listener."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mailer import accounts
from mailer.models import Role
from mailer.storage import Store
from mailer.web import WebServer, create_app
from mailer.web.app import create_console_app
from tests.console_support import PASSWORD, Console, console_settings

# staff storage runs on both databases in test_staff_storage; the page itself on SQLite
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


async def post(console: Console, client: httpx.AsyncClient, **data: str) -> httpx.Response:
    return await client.post("/admin/users", data={"csrf": await console.csrf(client), **data})


async def test_an_admin_adds_an_account_that_can_sign_in(console: Console) -> None:
    admin = await console.client("admin")
    page = await admin.get("/admin/users", headers={"Accept-Language": "fr"})
    assert page.status_code == 200
    assert "Comptes du personnel" in page.text
    weak = await post(console, admin, action="add", email="new@staff.example.org", role="editor",
                      name="Nina Durand", new="nina durand 2026", again="nina durand 2026")  # fmt: skip
    assert weak.status_code == 400
    assert "nom" in weak.text
    assert await console.store.staff.get("new@staff.example.org") is None
    added = await post(console, admin, action="add", email="New@Staff.example.org", role="editor",
                       name="Nina Durand", new=PASSWORD, again=PASSWORD)  # fmt: skip
    assert added.status_code == 303
    user = await console.store.staff.get("new@staff.example.org")
    assert user is not None
    assert user.role is Role.EDITOR
    assert user.name == "Nina Durand"
    assert user.password_hash is not None
    assert "argon2id" in user.password_hash
    signed = await console.sign_in(console.anonymous(), "new@staff.example.org")
    assert signed.status_code == 303
    entry = (await console.store.audit.page(action="user.add"))[0]
    assert entry.target == "new@staff.example.org"
    assert entry.actor == "admin@staff.example.org"
    assert PASSWORD not in str(entry.details)


async def test_role_disable_and_password_end_the_persons_sessions(console: Console) -> None:
    admin = await console.client("admin")
    editor = await console.client("editor", "ed@staff.example.org")
    assert (await post(console, admin, action="role", email="ed@staff.example.org",
                       role="sender")).status_code == 303  # fmt: skip
    assert (await editor.get("/admin/me")).status_code == 303
    found = await console.store.staff.get("ed@staff.example.org")
    assert found is not None
    assert found.role is Role.SENDER
    assert (
        await post(console, admin, action="disable", email="ed@staff.example.org")
    ).status_code == 303
    assert (await console.sign_in(console.anonymous(), "ed@staff.example.org")).status_code == 401
    assert (
        await post(console, admin, action="enable", email="ed@staff.example.org")
    ).status_code == 303
    new = "another long passphrase"
    answer = await post(console, admin, action="password", email="ed@staff.example.org", new=new,
                        again=new)  # fmt: skip
    assert answer.status_code == 303
    found = await console.store.staff.get("ed@staff.example.org")
    assert found is not None
    assert accounts.verify_password(found.password_hash, new)
    actions = [e.action for e in await console.store.audit.page(actor="admin@staff.example.org")]
    assert {"user.role", "user.disable", "user.enable", "user.password"} <= set(actions)


async def test_the_last_admin_cannot_be_demoted_or_disabled(console: Console) -> None:
    admin = await console.client("admin")
    for data in ({"action": "role", "role": "viewer"}, {"action": "disable"}):
        answer = await post(console, admin, email="admin@staff.example.org", **data)
        assert answer.status_code == 400
    found = await console.store.staff.get("admin@staff.example.org")
    assert found is not None
    assert found.role is Role.ADMIN
    assert not found.disabled
    await console.user("admin", "second@staff.example.org")
    answer = await post(console, admin, action="role", email="second@staff.example.org",
                        role="viewer")  # fmt: skip
    assert answer.status_code == 303


async def test_a_sender_cannot_reach_the_accounts(console: Console) -> None:
    sender = await console.client("sender")
    assert (await sender.get("/admin/users")).status_code == 403
    answer = await post(
        console, sender, action="role", email="sender@staff.example.org", role="admin"
    )
    assert answer.status_code == 403
    found = await console.store.staff.get("sender@staff.example.org")
    assert found is not None
    assert found.role is Role.SENDER


async def test_the_console_on_its_own_listener_leaves_the_web_port(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    settings = console_settings(tmp_path, database_url, host="127.0.0.1", port=0)
    from mailer.tokens import Signer
    from tests.console_support import KEY

    web = create_app(settings, store, signer=Signer([KEY]))
    transport = httpx.ASGITransport(app=web)
    async with httpx.AsyncClient(transport=transport, base_url="http://lists.test") as client:
        assert (await client.get("/admin/login")).status_code == 404
        assert (await client.get("/healthz")).status_code in (200, 503)
    listen = ("127.0.0.1", 0, "MAILER_CONSOLE__HOST/MAILER_CONSOLE__PORT")
    server = WebServer(create_console_app(settings, store), settings, listen=listen)
    url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            page = await client.get("/admin/login")
            assert page.status_code == 200
            assert 'name="password"' in page.text
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert (await client.get("/healthz")).status_code == 404
    finally:
        await server.stop()
