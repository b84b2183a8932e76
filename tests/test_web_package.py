"""The web package's shape: every name imported from ``mailer.web`` before it was a package is
still there, nothing under it reaches dispatch, transport or SQL even indirectly, and its
small pieces (trusted proxies, the loop lag, the page table) do what the app relies on."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grimp
import httpx
import pytest

import mailer.web
from mailer.web.limits import TrustedProxies
from mailer.web.metrics import LoopLag
from mailer.web.pages import PAGES
from tests.conftest import make_settings

# What the daemon, the CLI and the tests imported from the single module mailer/web.py.
BEFORE = ("WebServer", "create_app", "IpLimit", "Views", "pick_locale", "client_ip")
NEVER = ("mailer.dispatch", "mailer.transport", "aiosmtplib")
SQL = ("sqlalchemy", "aiosqlite", "asyncpg", "alembic")


def _web_modules(graph: grimp.ImportGraph) -> list[str]:
    return sorted(m for m in graph.modules if m == "mailer.web" or m.startswith("mailer.web."))


def test_the_names_of_the_old_module_are_importable_from_the_package() -> None:
    """``from mailer.web import X`` keeps working for every X callers used before."""
    missing = [name for name in BEFORE if not hasattr(mailer.web, name)]
    assert missing == []


@pytest.mark.parametrize("forbidden", NEVER)
def test_web_reaches_no_sending_not_even_indirectly(forbidden: str) -> None:
    """The web app never sends: no chain of imports from any module of mailer.web leads to
    dispatch, transport or aiosmtplib (typing-only imports included)."""
    graph = grimp.build_graph(
        "mailer", include_external_packages=True, exclude_type_checking_imports=False
    )
    assert forbidden in graph.modules
    chains = [
        m
        for m in _web_modules(graph)
        if graph.find_shortest_chain(importer=m, imported=forbidden, as_packages=True) is not None
    ]
    assert chains == []


def test_web_speaks_no_sql_itself() -> None:
    """Only storage speaks SQL: no module of mailer.web imports a database library."""
    graph = grimp.build_graph("mailer", include_external_packages=True)
    direct = [
        (m, imported)
        for m in _web_modules(graph)
        for imported in graph.find_modules_directly_imported_by(m)
        if imported.split(".")[0] in SQL
    ]
    assert direct == []


def test_trusted_proxies_trust_nobody_by_default() -> None:
    """No configured proxy: uvicorn reads no forwarding header at all."""
    nobody = TrustedProxies([])
    assert (nobody.proxy_headers, nobody.forwarded_allow_ips) == (False, None)
    some = TrustedProxies(["10.0.0.1"])
    assert (some.proxy_headers, some.forwarded_allow_ips) == (True, ["10.0.0.1"])


@pytest.mark.parametrize(("proxies", "client"), [([], "127.0.0.1"), (["127.0.0.1"], "203.0.113.5")])
async def test_the_server_applies_the_trusted_proxies_and_keeps_the_peer(
    tmp_path: Path, proxies: list[str], client: str
) -> None:
    """``MAILER_WEB__TRUSTED_PROXIES`` decides whose X-Forwarded-For becomes the client (none
    by default), and the connection's own peer stays in the scope for the console's trusted
    sign-in header."""
    seen: list[tuple[str, str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen.append((scope["client"][0], scope["mailer.peer"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    settings = make_settings(tmp_path, web={"trusted_proxies": proxies, "port": 0})
    server = mailer.web.WebServer(app, settings)
    url = await server.start()
    try:
        async with httpx.AsyncClient() as http:
            answer = await http.get(url + "/", headers={"x-forwarded-for": "203.0.113.5"})
        assert answer.status_code == 204
    finally:
        await server.stop()
    assert seen == [(client, "127.0.0.1")]


async def test_loop_lag_measures_while_running_and_stops_after() -> None:
    """The app's lifespan runs the lag probe and cancels it on the way out."""
    lag = LoopLag(period=0.01)
    before = set(asyncio.all_tasks())
    async with lag.running():
        await asyncio.sleep(0.05)
        assert len(lag._recent) > 0
    await asyncio.sleep(0)
    assert set(asyncio.all_tasks()) - before == set()


def test_the_page_table_lists_every_subscriber_page() -> None:
    """The pages the app factory mounts, in order; all but the index and the calendar file
    act on POST."""
    paths = [page.path for page in PAGES]
    assert paths == ["/", "/u/{token}", "/s/{slug}", "/c/{token}", "/p/{token}", "/e/{token}.ics"]
    posting = {page.path for page in PAGES if page.methods and "POST" in page.methods}
    assert {"/u/{token}", "/s/{slug}", "/c/{token}", "/p/{token}"} == posting


def test_a_templates_folder_without_the_console_says_what_to_do(tmp_path: Path) -> None:
    """An operator's own templates folder from before the console stops start-up with the
    folder named and both ways out, not a traceback."""
    from mailer.errors import ConfigError
    from mailer.web.console.views import ConsoleViews

    with pytest.raises(ConfigError, match=r"console/ folder of this release.*ENABLED=false"):
        ConsoleViews(tmp_path, zone="Europe/Paris")
