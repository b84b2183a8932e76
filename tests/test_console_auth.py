"""The console's gate: signing in and out, sessions and their cookie, CSRF, throttling, TOTP,
the trusted proxy header, and the route x role x method matrix over every console route.

Against the real app (httpx) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import httpx
import pyotp
import pytest

from mailer import accounts
from mailer.models import ROLES, Role, role_allows
from mailer.web.console import CONSOLE_ROUTES
from tests.console_support import PASSWORD, Console, csrf_of, now, open_console

# The gate does not depend on the database: staff storage runs on both in test_staff_storage,
# and each page's queries on both in its own tests.
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


def cookie_header(response: httpx.Response, name: str) -> str:
    for value in response.headers.get_list("set-cookie"):
        if value.startswith(name + "="):
            return value
    raise AssertionError(f"no {name} cookie set")


def without_tokens(html: str) -> str:
    return re.sub(r'value="[A-Za-z0-9_-]{40,}"', 'value=""', html)


async def audit_count(console: Console) -> int:
    return len(await console.store.audit.page(limit=500))


# --- signing in -------------------------------------------------------------------------------


async def test_a_page_without_a_session_goes_to_the_sign_in_form(console: Console) -> None:
    client = console.anonymous()
    answer = await client.get("/admin/me")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/login?next=/admin/me"
    htmx = await client.get("/admin/me", headers={"HX-Request": "true"})
    assert htmx.headers["HX-Redirect"].startswith("/admin/login")
    form = await client.get("/admin/login", headers={"Accept-Language": "fr"})
    assert form.status_code == 200
    assert 'name="email"' in form.text
    assert 'name="password"' in form.text
    assert "Connexion" in form.text
    assert 'lang="fr"' in form.text
    english = await client.get("/admin/login", headers={"Accept-Language": "en"})
    assert "Sign in" in english.text
    csp = form.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp


async def test_sign_in_sets_a_strict_session_cookie_and_a_fresh_id(console: Console) -> None:
    email = await console.user("viewer")
    client = console.anonymous()
    planted = "attacker-chosen-session-id-" + "x" * 20
    client.cookies.set("mailer_console", planted, path="/admin")
    answer = await console.sign_in(client, email)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/"
    header = cookie_header(answer, "mailer_console")
    morsel = SimpleCookie(header)["mailer_console"]
    assert morsel["httponly"]
    assert morsel["path"] == "/admin"
    assert morsel["samesite"].lower() == "lax"
    assert not morsel["secure"]  # the base URL is http:// here
    assert morsel.value != planted
    assert len(morsel.value) >= 43
    assert (await client.get("/admin/me")).status_code == 200
    entries = await console.store.audit.page()
    assert entries[0].action == "staff.sign_in"
    assert entries[0].actor == email
    assert entries[0].client == "192.0.2.10"


async def test_the_cookie_is_secure_when_the_console_is_on_https(
    store: object, tmp_path: object, database_url: str
) -> None:
    from mailer.tokens import Signer
    from mailer.web import create_app
    from tests.console_support import KEY, console_settings

    settings = console_settings(tmp_path, database_url)  # type: ignore[arg-type]
    settings = settings.model_copy(
        update={"web": settings.web.model_copy(update={"base_url": "https://lists.test"})}
    )
    app = create_app(settings, store, signer=Signer([KEY]))  # type: ignore[arg-type]
    found = Console(store, settings, app)  # type: ignore[arg-type]
    email = await found.user("viewer")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://lists.test"
    ) as client:
        answer = await found.sign_in(client, email)
        assert SimpleCookie(cookie_header(answer, "mailer_console"))["mailer_console"]["secure"]


async def test_a_wrong_password_and_an_unknown_account_get_the_same_answer(
    console: Console,
) -> None:
    email = await console.user("admin")
    wrong = await console.sign_in(console.anonymous("192.0.2.21"), email, "not the password!!")
    unknown = await console.sign_in(
        console.anonymous("192.0.2.22"), "nobody@staff.example.org", "not the password!!"
    )
    assert wrong.status_code == unknown.status_code == 401
    assert without_tokens(wrong.text).replace(email, "X") == without_tokens(unknown.text).replace(
        "nobody@staff.example.org", "X"
    )
    assert "mailer_console" not in wrong.headers.get("set-cookie", "")


async def test_a_disabled_account_cannot_sign_in(console: Console) -> None:
    email = await console.user("admin")
    await console.store.staff.set_disabled(email, True, now=now())
    assert (await console.sign_in(console.anonymous(), email)).status_code == 401


async def test_the_sign_in_form_needs_its_own_token(console: Console) -> None:
    email = await console.user("admin")
    client = console.anonymous()
    answer = await client.post(
        "/admin/login", data={"csrf": "forged", "email": email, "password": PASSWORD}
    )
    assert answer.status_code == 403
    assert "mailer_console" not in answer.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "target", ["//evil.example/admin", "https://evil.example/", "/elsewhere", "/admin\\@evil"]
)
async def test_after_sign_in_only_console_paths_are_followed(console: Console, target: str) -> None:
    email = await console.user("viewer")
    client = console.anonymous()
    page = await client.get("/admin/login")
    answer = await client.post(
        "/admin/login",
        data={"csrf": csrf_of(page.text), "email": email, "password": PASSWORD, "next": target},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/"


async def test_throttling_per_account_then_even_the_right_password_waits(console: Console) -> None:
    email = await console.user("admin")
    limit = console.settings.console.login_attempts
    for attempt in range(limit):
        client = console.anonymous(f"198.51.100.{attempt + 1}")  # a new address each time
        assert (await console.sign_in(client, email, "wrong password here")).status_code == 401
    late = await console.sign_in(console.anonymous("198.51.100.200"), email)
    assert late.status_code == 429
    assert int(late.headers["retry-after"]) > 0
    # an unknown account is throttled alike: the answer does not tell which exist
    for attempt in range(limit):
        client = console.anonymous(f"203.0.113.{attempt + 1}")
        await console.sign_in(client, "ghost@staff.example.org", "wrong password here")
    ghost = await console.sign_in(
        console.anonymous("203.0.113.200"), "ghost@staff.example.org", "x" * 12
    )
    assert ghost.status_code == 429


async def test_throttling_per_client_address(console: Console) -> None:
    per_ip = console.settings.console.login_attempts_per_ip
    client = console.anonymous("192.0.2.99")
    for attempt in range(per_ip):
        await console.sign_in(client, f"user{attempt}@staff.example.org", "wrong password!")
    email = await console.user("viewer")
    assert (await console.sign_in(client, email)).status_code == 429
    assert (await console.sign_in(console.anonymous("192.0.2.98"), email)).status_code == 303


async def test_totp_is_asked_when_the_account_has_it(console: Console) -> None:
    email = await console.user("sender")
    secret = accounts.new_totp_secret()
    await console.store.staff.set_totp(email, secret, now=now())
    assert (await console.sign_in(console.anonymous(), email)).status_code == 401
    assert (await console.sign_in(console.anonymous(), email, code="000000")).status_code in (
        401,
        303,  # one chance in a million that it is the code of the moment
    )
    code = pyotp.TOTP(secret).now()
    assert (await console.sign_in(console.anonymous(), email, code=code)).status_code == 303
    # the same code a second time (seen over a shoulder, replayed) is refused
    assert (await console.sign_in(console.anonymous(), email, code=code)).status_code == 401


async def test_a_password_hashed_with_old_parameters_is_rehashed_at_sign_in(
    console: Console,
) -> None:
    email = await console.user("viewer")  # a cheap hash (tests.console_support.FAST)
    before = await console.store.staff.get(email)
    assert before is not None
    assert before.password_hash is not None
    assert accounts.needs_rehash(before.password_hash)
    assert (await console.sign_in(console.anonymous(), email)).status_code == 303
    after = await console.store.staff.get(email)
    assert after is not None
    assert after.password_hash != before.password_hash
    assert after.password_hash is not None
    assert not accounts.needs_rehash(after.password_hash)
    assert accounts.verify_password(after.password_hash, PASSWORD)


# --- sessions end -----------------------------------------------------------------------------


async def test_sign_out_ends_the_session_and_a_get_does_not(console: Console) -> None:
    client = await console.client("viewer")
    assert (await client.get("/admin/logout")).status_code == 303  # a link signs nobody out
    assert (await client.get("/admin/me")).status_code == 200
    kept = client.cookies.get("mailer_console")
    answer = await client.post("/admin/logout", data={"csrf": await console.csrf(client)})
    assert answer.status_code == 303
    stale = console.anonymous()
    stale.cookies.set("mailer_console", kept or "", path="/admin")
    assert (await stale.get("/admin/me")).status_code == 303  # to the sign-in form


@pytest.mark.parametrize("change", ["disable", "role", "password", "totp"])
async def test_a_change_to_the_account_ends_its_sessions(console: Console, change: str) -> None:
    client = await console.client("sender", "ada@staff.example.org")
    email = "ada@staff.example.org"
    assert (await client.get("/admin/me")).status_code == 200
    if change == "disable":
        await console.store.staff.set_disabled(email, True, now=now())
    elif change == "role":
        await console.store.staff.set_role(email, Role.VIEWER, now=now())
    elif change == "password":
        await console.store.staff.set_password(email, accounts.hash_password("a" * 20), now=now())
    else:
        await console.store.staff.set_totp(email, accounts.new_totp_secret(), now=now())
    assert (await client.get("/admin/me")).status_code == 303


async def test_changing_ones_password_ends_every_session(console: Console) -> None:
    first = await console.client("editor", "eve@staff.example.org")
    second = await console.client("editor", "eve@staff.example.org")
    weak = await first.post(
        "/admin/me",
        data={"csrf": await console.csrf(first), "action": "password", "current": PASSWORD,
              "new": "short", "again": "short"},
    )  # fmt: skip
    assert weak.status_code == 400
    assert "12" in weak.text
    answer = await first.post(
        "/admin/me",
        data={"csrf": await console.csrf(first), "action": "password", "current": PASSWORD,
              "new": "a much longer passphrase", "again": "a much longer passphrase"},
    )  # fmt: skip
    assert answer.status_code == 303
    for client in (first, second):
        assert (await client.get("/admin/me")).status_code == 303
    fresh = await console.sign_in(console.anonymous(), "eve@staff.example.org",
                                  "a much longer passphrase")  # fmt: skip
    assert fresh.status_code == 303


# --- CSRF -------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
async def test_a_post_without_the_sessions_token_changes_nothing(
    console: Console, token: str | None
) -> None:
    client = await console.client("admin")
    before = await audit_count(console)
    data = {"action": "language", "locale": "en"}
    if token is not None:
        data["csrf"] = token
    answer = await client.post("/admin/me", data=data)
    assert answer.status_code == 403
    user = await console.store.staff.get("admin@staff.example.org")
    assert user is not None
    assert user.locale is None
    assert await audit_count(console) == before


async def test_the_htmx_header_carries_the_token(console: Console) -> None:
    client = await console.client("admin")
    token = await console.csrf(client)
    answer = await client.post(
        "/admin/me", data={"action": "language", "locale": "en"}, headers={"X-CSRF-Token": token}
    )
    assert answer.status_code == 303
    user = await console.store.staff.get("admin@staff.example.org")
    assert user is not None
    assert user.locale == "en"
    page = await client.get("/admin/me", headers={"Accept-Language": "fr"})
    assert 'lang="en"' in page.text  # the staff member's language beats the browser's


async def test_another_sessions_token_is_refused(console: Console) -> None:
    one = await console.client("admin", "one@staff.example.org")
    two = await console.client("admin", "two@staff.example.org")
    answer = await one.post(
        "/admin/me", data={"csrf": await console.csrf(two), "action": "language", "locale": "en"}
    )
    assert answer.status_code == 403


# --- the trusted proxy header -----------------------------------------------------------------


async def test_the_proxy_header_signs_in_only_from_a_trusted_proxy(
    store: object, tmp_path: object, database_url: str
) -> None:
    from tests.console_support import console_settings

    settings = console_settings(tmp_path, database_url, trusted_header="X-Remote-User")  # type: ignore[arg-type]
    settings = settings.model_copy(
        update={"web": settings.web.model_copy(update={"trusted_proxies": ["10.0.0.0/8"]})}
    )
    from mailer.tokens import Signer
    from mailer.web import create_app
    from tests.console_support import KEY

    app = create_app(settings, store, signer=Signer([KEY]))  # type: ignore[arg-type]
    found = Console(store, settings, app)  # type: ignore[arg-type]
    email = await found.user("viewer")
    headers = {"X-Remote-User": email}
    for peer, expected in (("10.1.2.3", 200), ("192.0.2.50", 303)):
        transport = httpx.ASGITransport(app=app, client=(peer, 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://lists.test") as client:
            answer = await client.get("/admin/me", headers=headers)
            assert answer.status_code == expected, peer
            if expected == 200:
                assert "mailer_console" in answer.headers.get("set-cookie", "")
                assert (await client.get("/admin/me")).status_code == 200  # the cookie now
    transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://lists.test") as client:
        unknown = await client.get("/admin/me", headers={"X-Remote-User": "who@else.org"})
        assert unknown.status_code == 303


# --- every route x every role x every method ----------------------------------------------------


def concrete(path: str) -> str:
    """A console path with its parameters filled with values that name nothing."""
    return re.sub(r"\{[^}]+\}", "0", path).replace("/0:", "/0")


async def test_every_route_answers_each_role_as_the_table_says(console: Console) -> None:
    clients = {role: await console.client(role) for role in ROLES}
    tokens = {role: await console.csrf(clients[role]) for role in ROLES}
    assert len(CONSOLE_ROUTES) >= 2
    routes = sorted(CONSOLE_ROUTES, key=lambda r: r.path == "/logout")  # signing out last
    checked = 0
    for route in routes:
        path = "/admin" + concrete(route.path)
        for role in ROLES:
            client = clients[role]
            before = await audit_count(console)
            answer = await client.get(path)
            allowed = role_allows(role, route.read)
            assert (answer.status_code == 403) is not allowed, (path, role, answer.status_code)
            assert answer.status_code < 500, (path, role, answer.text[:300])
            if route.write is None:
                post = await client.post(path, data={"csrf": tokens[role]})
                assert post.status_code == 405, (path, role)
                continue
            if route.path == "/logout" and role_allows(role, route.write):
                continue  # checked by the sign-out test; it would end this client's session
            post = await client.post(path, data={"csrf": tokens[role]})
            may = role_allows(role, route.write)
            assert (post.status_code == 403) is not may, (path, role, "POST", post.status_code)
            assert post.status_code < 500, (path, role, post.text[:300])
            if not may:
                assert await audit_count(console) == before, (path, role)
            checked += 1
    assert checked > 0


async def test_static_files_are_served_with_long_cache(console: Console) -> None:
    client = console.anonymous()
    page = await client.get("/admin/login")
    found = re.search(r'src="(/admin/static/htmx\.min\.js\?v=[0-9a-f]+)"', page.text)
    assert found
    answer = await client.get(found.group(1))
    assert answer.status_code == 200
    assert "immutable" in answer.headers["cache-control"]
    assert (await client.get("/admin/static/VENDOR.toml")).status_code == 404
    assert (await client.get("/admin/static/..%2Fguard.py")).status_code == 404
    again = await client.get(found.group(1), headers={"If-None-Match": answer.headers["etag"]})
    assert again.status_code == 304


async def test_the_console_can_be_switched_off(
    store: object, tmp_path: object, database_url: str
) -> None:
    async for found in open_console(store, tmp_path, database_url, enabled=False):  # type: ignore[arg-type]
        client = found.anonymous()
        assert (await client.get("/admin/login")).status_code == 404
