"""The console's audit log page (``/admin/audit``): newest first, times in the console's zone
with the zone named, the client address, filters by actor and action, keyset pages; admins
only. Against the real app (httpx) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest

from mailer.models import Role
from tests.console_support import Console

pytestmark = pytest.mark.timeout(60)

WINTER = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)  # 09:00 CET in Paris
SUMMER = datetime(2027, 7, 15, 8, 0, tzinfo=UTC)  # 10:00 CEST


async def record(console: Console, actor: str, action: str, target: str, at: datetime,
                 client: str | None = "198.51.100.7", **details: object) -> None:  # fmt: skip
    await console.store.audit.record(
        actor=actor, action=action, target=target, details=details, client=client, now=at
    )


def rows(page: str) -> list[str]:
    """The targets of the table's rows, in order (the fourth cell)."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in page else ""
    return [html.unescape(cells[3]) for cells in
            (re.findall(r"<td>(.*?)</td>", row, re.S) for row in body.split("</tr>")) if cells]  # fmt: skip


async def test_the_log_newest_first_in_local_time_in_both_languages(console: Console) -> None:
    await record(console, "editor@staff.example.org", "campaign.draft", "winter", WINTER)
    await record(console, "cli:root", "list.import", "summer", SUMMER, None, added=3, prune=False)
    admin = await console.client(Role.ADMIN)
    english = await admin.get("/admin/audit", headers={"Accept-Language": "en"})
    assert english.status_code == 200
    assert "Audit log" in english.text
    targets = rows(english.text)
    order = [t for t in targets if t in ("winter", "summer")]
    assert order == ["summer", "winter"]  # newest first (by id)
    assert "15 Jan 2027, 09:00\u00a0CET" in english.text
    assert "15 Jul 2027, 10:00\u00a0CEST" in english.text
    assert "198.51.100.7" in english.text
    assert "<code>added=3</code> <code>prune=False</code>" in english.text
    assert "times in Europe/Paris" in english.text
    french = await admin.get("/admin/audit", headers={"Accept-Language": "fr"})
    assert "Journal d’audit" in french.text
    assert "15 janv. 2027, 09:00\u00a0CET" in french.text
    # the admin's own sign-in is there too, from the test client's address
    assert "staff.sign_in" in french.text
    assert "192.0.2.10" in french.text


async def test_filters_by_actor_and_by_action(console: Console) -> None:
    await record(console, "a@staff.example.org", "subscriber.suppress", "one", WINTER)
    await record(console, "b@staff.example.org", "subscriber.suppress", "two", WINTER)
    await record(console, "a@staff.example.org", "list.import", "three", WINTER)
    admin = await console.client(Role.ADMIN)
    by_actor = await admin.get("/admin/audit", params={"actor": " A@Staff.example.org "})
    assert rows(by_actor.text) == ["three", "one"]
    assert 'value="a@staff.example.org"' in by_actor.text
    by_action = await admin.get("/admin/audit", params={"action": "subscriber.suppress"})
    assert rows(by_action.text) == ["two", "one"]
    both = await admin.get(
        "/admin/audit", params={"actor": "a@staff.example.org", "action": "list.import"}
    )
    assert rows(both.text) == ["three"]
    none = await admin.get("/admin/audit", params={"actor": "nobody@example.org"},
                           headers={"Accept-Language": "en"})  # fmt: skip
    assert "No entry matches." in none.text
    assert 'href="/admin/audit?action=list.import"' in both.text  # each action links its filter


async def test_pages_by_keyset(console: Console) -> None:
    """120 entries: 50, 50, then 20, each page older than the last, none twice; the filter is
    kept from page to page."""
    for n in range(120):
        await record(console, "bulk@staff.example.org", "bulk.step", f"t{n:03d}",
                     WINTER + timedelta(seconds=n))  # fmt: skip
    admin = await console.client(Role.ADMIN)
    seen: list[str] = []
    url: str | None = "/admin/audit?actor=bulk%40staff.example.org"
    pages = 0
    while url is not None:
        page = await admin.get(url)
        assert page.status_code == 200
        seen += rows(page.text)
        pages += 1
        found = re.search(r'<a href="([^"]+)" rel="next">', page.text)
        url = html.unescape(found.group(1)) if found else None
        if url is not None:
            assert "actor=bulk%40staff.example.org" in url
            assert "before=" in url
    assert pages == 3
    assert seen == [f"t{n:03d}" for n in reversed(range(120))]


async def test_a_bad_page_mark_is_named(console: Console) -> None:
    await record(console, "a@staff.example.org", "x.y", "one", WINTER)
    admin = await console.client(Role.ADMIN)
    answer = await admin.get("/admin/audit?before=abc", headers={"Accept-Language": "en"})
    assert answer.status_code == 400
    assert "The before parameter must be the number of a log entry" in answer.text
    assert "one" in rows(answer.text)


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR, Role.SENDER])
async def test_below_admin_the_log_is_refused(console: Console, role: Role) -> None:
    await record(console, "a@staff.example.org", "secret.action", "secret-target", WINTER)
    client = await console.client(role)
    answer = await client.get("/admin/audit")
    assert answer.status_code == 403
    assert "secret-target" not in answer.text
    post = await client.post("/admin/audit", data={"csrf": await console.csrf(client)})
    assert post.status_code == 405
