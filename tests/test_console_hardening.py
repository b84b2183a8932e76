"""What an attacker or an odd request meets at the console's gate: attempts sent at once,
throttle flushing, the sign-in form without its cookie, ids past any row, NUL bytes,
non-ASCII digits, over-long passwords, HEAD on an export, a doubled or changed proxy header.

Each case was found by a review of the console and failed before its fix.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from mailer import accounts
from mailer.errors import AccountError
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer
from mailer.web import create_app
from mailer.web.console import throttle
from tests.console_support import KEY, PASSWORD, Console, console_settings, csrf_of

pytestmark = pytest.mark.timeout(60)
# The gate does not depend on the database: staff storage runs on both in test_staff_storage,
# and each page's queries on both in its own tests.
SQLITE = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


@SQLITE
async def test_attempts_sent_at_once_are_counted_like_one_after_another(
    console: Console,
) -> None:
    email = await console.user("admin")
    ready = []
    for _ in range(12):  # twelve browsers behind one address, each with its sign-in form
        client = console.anonymous("192.0.2.77")
        page = await client.get("/admin/login")
        ready.append((client, csrf_of(page.text)))
    answers = await asyncio.gather(
        *(
            client.post("/admin/login", data={"csrf": token, "email": email,
                                              "password": "wrong password!"})
            for client, token in ready
        )
    )  # fmt: skip
    codes = sorted(a.status_code for a in answers)
    limit = console.settings.console.login_attempts
    assert codes.count(401) == limit, codes
    assert codes.count(429) == len(ready) - limit


def test_looking_does_not_push_counted_attempts_out() -> None:
    limits = throttle.SignInThrottle(per_account=2, per_address=1000)
    for n in range(2):
        assert limits.begin("ada@example.org", f"198.51.100.{n}", now=0.0) == 0
    assert limits.begin("ada@example.org", "198.51.100.9", now=1.0) > 0
    for n in range(60_000):  # refused looks from junk addresses remember nothing
        limits.begin("ada@example.org", f"2001:db8:{n:x}::1", now=2.0)
    assert limits.begin("ada@example.org", "198.51.100.10", now=3.0) > 0


def test_a_success_is_taken_back_so_an_office_is_not_throttled_by_itself() -> None:
    limits = throttle.SignInThrottle(per_account=5, per_address=3)
    for n in range(10):
        assert limits.begin(f"staff{n}@example.org", "192.0.2.1", now=float(n)) == 0
        limits.succeeded(f"staff{n}@example.org", "192.0.2.1")


def test_ipv6_clients_are_counted_by_their_64() -> None:
    key = throttle.address_key
    assert key("2001:db8:1:2:aaaa::1") == key("2001:db8:1:2:bbbb::2")
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("::ffff:192.0.2.1") == "192.0.2.1"


@SQLITE
async def test_the_sign_in_form_without_its_cookie_is_refused(console: Console) -> None:
    email = await console.user("admin")
    client = console.anonymous()
    answer = await client.post(
        "/admin/login", data={"csrf": "\0", "email": email, "password": PASSWORD}
    )
    assert answer.status_code == 403
    assert "mailer_console" not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "path",
    [
        "/admin/sends/99999999999999999999",
        "/admin/sends/99999999999999999999/progress",
        "/admin/suppressions/99999999999999999999/lift",
        "/admin/sends/1?after=sent:99999999999999999999",
        "/admin/sends/1?after=failed:%C2%B2",
        "/admin/sends/1?done=retry&queued=%C2%B2",
        "/admin/lists/x?before=%C2%B2",
        "/admin/lists?q=%00",
        "/admin/suppressions?q=a%00b",
        "/admin/audit?actor=%00",
        "/admin/subscribers/%00",
        "/admin/lists/%00",
    ],
)
async def test_odd_input_gets_a_page_not_a_500(console: Console, path: str) -> None:
    client = await console.client("admin")
    answer = await client.get(path)
    assert answer.status_code in (200, 400, 404), (path, answer.status_code)


async def test_a_nul_byte_in_a_form_is_refused_before_storage(console: Console) -> None:
    client = await console.client("admin")
    token = await console.csrf(client)
    answer = await client.post(
        "/admin/suppressions",
        data={"csrf": token, "email": "a\0b@example.org", "reason": "x"},
    )
    assert answer.status_code == 400
    nul = await console.anonymous().post(
        "/admin/login", data={"csrf": "x", "email": "\0", "password": "x"}
    )
    assert nul.status_code < 500


def test_a_password_longer_than_1024_characters_is_refused() -> None:
    with pytest.raises(AccountError) as refused:
        accounts.check_password("a long passphrase " * 60, email="x@example.org", name=None)
    assert refused.value.reason == "too_long"


@SQLITE
async def test_changing_ones_password_is_throttled_like_signing_in(console: Console) -> None:
    client = await console.client("editor")
    limit = console.settings.console.login_attempts
    codes = []
    for _ in range(limit + 1):
        answer = await client.post(
            "/admin/me",
            data={"csrf": await console.csrf(client), "action": "password",
                  "current": "not my password", "new": "x" * 20, "again": "x" * 20},
        )  # fmt: skip
        codes.append(answer.status_code)
    assert codes[-1] == 400
    page = await client.get("/admin/me")
    assert page.status_code == 200
    last = await client.post(
        "/admin/me",
        data={"csrf": await console.csrf(client), "action": "password", "current": PASSWORD,
              "new": "a fresh long passphrase", "again": "a fresh long passphrase"},
    )  # fmt: skip
    assert last.status_code == 400  # even the right password waits now
    user = await console.store.staff.get("editor@staff.example.org")
    assert user is not None
    assert accounts.verify_password(user.password_hash, PASSWORD)


@SQLITE
async def test_head_on_an_export_exports_nothing(console: Console, tmp_path: Path) -> None:
    from tests.test_console_sends import a_list, a_send, start

    await a_list(console.store, tmp_path, 3)
    send_id = await a_send(console.store, "annonce")
    await start(console.store, send_id)
    client = await console.client("admin")
    before = len(await console.store.audit.page(limit=500))
    answer = await client.head(f"/admin/sends/{send_id}/report.csv")
    assert answer.status_code == 200
    assert len(await console.store.audit.page(limit=500)) == before
    got = await client.get(f"/admin/sends/{send_id}/report.csv")
    assert got.status_code == 200
    assert got.text.count("\n") == 4
    assert len(await console.store.audit.page(limit=500)) == before + 1


def test_a_wildcard_trusted_proxy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="forge"):
        Settings.model_validate({"web": {"trusted_proxies": "*"}})


@SQLITE
async def test_a_doubled_or_changed_proxy_header(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    settings = console_settings(tmp_path, database_url, trusted_header="X-Remote-User")
    settings = settings.model_copy(
        update={"web": settings.web.model_copy(update={"trusted_proxies": ["10.0.0.0/8"]})}
    )
    app = create_app(settings, store, signer=Signer([KEY]))
    found = Console(store, settings, app)
    viewer = await found.user("viewer")
    admin = await found.user("admin")
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://lists.test") as client:
        doubled = httpx.Headers([("X-Remote-User", viewer), ("X-Remote-User", admin)])
        assert (await client.get("/admin/me", headers=doubled)).status_code == 303
        assert (await client.get("/admin/me", headers={"X-Remote-User": viewer})).status_code == 200
        # the proxy now vouches for someone else: the viewer's session ends, the admin's begins
        page = await client.get("/admin/users", headers={"X-Remote-User": admin})
        assert page.status_code == 200


@SQLITE
async def test_the_cookie_of_a_plain_http_own_listener_is_not_secure(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    from mailer.web.app import create_console_app

    settings = console_settings(tmp_path, database_url, port=0)
    settings = settings.model_copy(
        update={"web": settings.web.model_copy(update={"base_url": "https://lists.test"})}
    )
    app = create_console_app(settings, store)
    found = Console(store, settings, app)
    email = await found.user("viewer")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://10.0.0.5") as client:
        answer = await found.sign_in(client, email)
        assert answer.status_code == 303
        cookie = next(v for v in answer.headers.get_list("set-cookie") if "mailer_console" in v)
        assert "secure" not in cookie.lower()
