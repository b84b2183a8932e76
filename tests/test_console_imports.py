"""The console's import (``/admin/import``): upload, dry run with its progress, the CLI's
per-line report, apply (audited), cancel; and every refusal (not a CSV, not UTF-8, no email
column, too large, a role below admin, no CSRF token), each leaving nothing stored.

Against the real app (httpx) on SQLite and PostgreSQL; the import itself is
:func:`mailer.lists.import_file`, the one the CLI runs.
"""

from __future__ import annotations

import html
import os
import re
import stat
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, text

from mailer.lists import ImportReport, import_file, report_lines
from mailer.models import ListMeta, Role, SuppressionReason
from mailer.storage import Store, SubscriberRow
from mailer.storage.tables import lists as lists_table
from mailer.web.console import import_desk, imports
from tests.console_support import Console, open_console

pytestmark = pytest.mark.timeout(60)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
TABLES = ("lists", "subscribers", "subscriptions", "consent_events", "suppressions")

FIRST = (
    "email,name,organisation\n"
    "claire.dubois@example.org,Claire Dubois,AP-HP\n"
    "j.smith@example.org,John Smith,Inserm\n"
    "amelie+fai2r@example.org,Amélie Roux,FAI²R\n"
    "gone@example.org,Gone Away,CNRS\n"
)
# A suppressed and an unsubscribed member, an address stored in another case, a new one and
# its duplicate, two bad rows, and gone@ left the file.
NEXT = (
    "email,name,organisation\n"
    "claire.dubois@example.org,Claire Dubois,AP-HP\n"
    "j.smith@example.org,John Smith,Inserm\n"
    "Amelie+FAI2R@example.org,Amélie Roux,CNRS\n"
    "new.person@example.org,New Person,Inria\n"
    "NEW.person@example.org,New Again,Inria\n"
    "not-an-address,Bad,\n"
    "x@example.org,Too,many,cells\n"
)
BAD_ROWS = (
    "email,name\n"
    "ok@example.org,Okay\n"
    "not-an-address,Bad\n"
    "second@example.org,Second\n"
    "x@example.org,Too,many\n"
)


async def snapshot(store: Store) -> dict[str, int]:
    async with store.engine.connect() as conn:
        return {
            table: int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar() or 0)  # noqa: S608
            for table in TABLES
        }


async def imports_audited(store: Store) -> list[Any]:
    return [e for e in await store.audit.page(limit=500) if e.action == "list.import"]


def uploads(console: Console) -> list[Path]:
    folder = console.settings.paths.data_dir / "uploads"
    return sorted(folder.iterdir()) if folder.is_dir() else []


async def upload(
    client: httpx.AsyncClient, csrf: str | None, content: bytes | str, *,
    name: str = "members.csv", **fields: str,
) -> httpx.Response:  # fmt: skip
    data = {**({"csrf": csrf} if csrf is not None else {}), **fields}
    body = content.encode() if isinstance(content, str) else content
    files = {"file": (name, body, "text/csv")}
    english = {"Accept-Language": "en"}
    return await client.post("/admin/import", data=data, files=files, headers=english)


async def finished(answer: httpx.Response) -> import_desk.ImportJob:
    """The import a redirect names, once its running pass is over."""
    assert answer.status_code == 303, answer.text[:500]
    job = import_desk.find(answer.headers["location"].rsplit("/", 1)[1])
    assert job is not None
    assert job.task is not None
    await job.task
    return job


def counts_shown(page: str) -> dict[str, int]:
    """The counts table of a report page, by its (English) row headers."""
    found = re.findall(r'<th scope="row">([^<]+)</th><td class="numbers">([^<]+)</td>', page)
    return {label: int(value.replace(",", "")) for label, value in found}


LABELS = {
    "rows": "Rows read", "added": "New addresses",
    "subscribed_existing": "Known addresses added to the list", "updated": "Members updated",
    "unchanged": "Members unchanged", "duplicates": "Duplicates merged",
    "kept_unsubscribed": "Kept unsubscribed", "suppressed": "Kept suppressed (not subscribed)",
    "rejected": "Rows rejected", "left_file": "Members who left the file",
    "pruned": "Members removed from the list",
}  # fmt: skip


def labelled(report: ImportReport, *, prune: bool = False) -> dict[str, int]:
    """The counts of ``report`` as the page labels them (removed members only with prune)."""
    found = imports.counts(report)
    return {LABELS[k]: n for k, n in found.items() if k != "pruned" or prune}


async def prepared(store: Store, tmp_path: Path) -> None:
    """researchers (titled Chercheurs) imported by the CLI's import, then one member
    unsubscribed, one suppressed, one added by hand."""
    folder = tmp_path / "cli"
    folder.mkdir()
    (folder / "researchers.csv").write_text(FIRST, encoding="utf-8")
    (folder / "researchers.toml").write_text('title = "Chercheurs"\n', encoding="utf-8")
    assert (await import_file(store, folder / "researchers.csv", now=NOW)).ok
    await store.subscribers.unsubscribe(
        "j.smith@example.org", slug="researchers", source="web", now=NOW
    )
    await store.subscribers.suppress(
        "claire.dubois@example.org", reason=SuppressionReason.HARD_BOUNCE, detail="550", now=NOW
    )
    desk = SubscriberRow(line=0, email="desk@example.org", key="desk@example.org", smtputf8=False)
    await store.subscribers.add(desk, slug="researchers", source="cli", now=NOW)


@pytest.fixture
async def small(store: Store, tmp_path: Path, database_url: str) -> AsyncIterator[Console]:
    """The console with a 2 KiB upload limit."""
    async for found in open_console(store, tmp_path, database_url, upload_max_bytes=2048):
        yield found


# --- the form ---------------------------------------------------------------------------------


async def test_the_form_in_french_and_english(console: Console, tmp_path: Path) -> None:
    """The form offers the existing lists and a new one, the file, prune; in both languages."""
    await prepared(console.store, tmp_path)
    admin = await console.client(Role.ADMIN)
    french = await admin.get("/admin/import", headers={"Accept-Language": "fr"})
    assert french.status_code == 200
    assert "Importer un fichier CSV" in french.text
    assert 'enctype="multipart/form-data"' in french.text
    assert '<option value="researchers">Chercheurs (researchers)</option>' in french.text
    assert "Retirer de la liste les membres absents du fichier" in french.text
    assert "mémoire de ce processus" in french.text
    assert "Au plus 50\u202fMo." in french.text
    english = await admin.get("/admin/import?list=researchers", headers={"Accept-Language": "en"})
    assert "Import a CSV file" in english.text
    assert '<option value="researchers" selected>' in english.text
    assert "Remove members no longer in the file" in english.text
    assert "At most 50 MB." in english.text


# --- dry run, apply, cancel -------------------------------------------------------------------


async def test_a_dry_run_lists_the_exact_bad_lines_and_stores_nothing(
    console: Console, tmp_path: Path
) -> None:
    """A new list's dry run: the page shows the CLI's lines for the rejected rows (file:line:
    column: reason) and the counts; no list, member or audit entry exists after it, and its
    file is private until the import is cancelled, when it is deleted."""
    admin = await console.client(Role.ADMIN)
    csrf = await console.csrf(admin)
    before = await snapshot(console.store)
    answer = await upload(admin, csrf, BAD_ROWS, new_slug="patients", new_title="Patients")
    job = await finished(answer)
    assert await snapshot(console.store) == before
    assert await imports_audited(console.store) == []
    (kept,) = uploads(console)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert kept.name != "members.csv"

    page = await admin.get(answer.headers["location"], headers={"Accept-Language": "en"})
    assert page.status_code == 200
    shown = html.unescape(page.text)
    assert "Dry run done: nothing is stored yet." in shown
    assert "members.csv:3: email: 'not-an-address': " in shown
    assert "members.csv:5: -: 3 cells where the header has 2" in shown
    copy = tmp_path / "copy.csv"
    copy.write_text(BAD_ROWS, encoding="utf-8")
    meta = ListMeta(slug="patients", title="Patients")
    expected = await import_file(console.store, copy, now=NOW, meta=meta, dry_run=True)
    for line in report_lines(expected, where="members.csv"):
        assert f"<code>{line.text}</code>" in shown
    assert counts_shown(page.text) == labelled(expected)
    assert counts_shown(page.text)["Rows rejected"] == 2
    assert 'action="/admin/import/' + job.id + '/apply"' in page.text
    french = await admin.get(answer.headers["location"], headers={"Accept-Language": "fr"})
    assert "Test à blanc terminé\u202f: rien n’a encore été enregistré." in french.text

    cancel = await admin.post(f"/admin/import/{job.id}/cancel", data={"csrf": csrf})
    assert cancel.status_code == 303
    assert uploads(console) == []
    gone = await admin.get(cancel.headers["location"], headers={"Accept-Language": "en"})
    assert "Import cancelled: the uploaded file was deleted" in gone.text
    assert (await admin.get(f"/admin/import/{job.id}")).status_code == 404
    assert await snapshot(console.store) == before


async def test_apply_stores_what_the_cli_import_reports(console: Console, tmp_path: Path) -> None:
    """Into an existing list, with prune: the dry run's counts equal import_file's on the same
    file; applying stores them, keeps the list's title, deletes the file and writes
    list.import with the counts and no address."""
    store = console.store
    await prepared(store, tmp_path)
    copy = tmp_path / "next.csv"
    copy.write_text(NEXT, encoding="utf-8")
    meta = await store.lists.meta("researchers")
    assert meta is not None
    expected = await import_file(store, copy, now=NOW, meta=meta, prune=True, dry_run=True,
                                 source="import:next.csv")  # fmt: skip
    before = await snapshot(store)
    admin = await console.client(Role.ADMIN)
    csrf = await console.csrf(admin)
    answer = await upload(admin, csrf, NEXT, name="next.csv", list="researchers", prune="yes")
    job = await finished(answer)
    where = answer.headers["location"]
    checked = await admin.get(where, headers={"Accept-Language": "en"})
    assert counts_shown(checked.text) == labelled(expected, prune=True)
    assert await snapshot(store) == before

    applied = await admin.post(f"/admin/import/{job.id}/apply", data={"csrf": csrf})
    assert applied.headers["location"] == where
    await finished(applied)
    assert job.stage is import_desk.Stage.APPLIED
    page = await admin.get(where, headers={"Accept-Language": "en"})
    assert "Import done: the list “researchers” is up to date." in page.text
    assert counts_shown(page.text) == labelled(expected, prune=True)
    assert uploads(console) == []
    assert await snapshot(store) != before
    members = {m.email async for m in store.lists.recipients("researchers")}
    assert "new.person@example.org" in members
    assert "gone@example.org" not in members  # pruned
    assert (await store.lists.meta("researchers")) == meta
    (entry,) = await imports_audited(store)
    assert (entry.actor, entry.target, entry.client) == ("admin@staff.example.org",
                                                         "researchers", "192.0.2.10")  # fmt: skip
    assert entry.details == {"file": "next.csv", "prune": True, "new_list": False,
                             **imports.counts(expected)}  # fmt: skip
    assert "@" not in str(entry.details)
    again = await admin.post(f"/admin/import/{job.id}/apply", data={"csrf": csrf})
    assert again.status_code == 303  # a second click does nothing more
    assert len(await imports_audited(store)) == 1


async def test_a_new_list_is_created_by_apply_only(console: Console) -> None:
    """A new list appears with its title and language when the import is applied."""
    admin = await console.client(Role.ADMIN)
    csrf = await console.csrf(admin)
    answer = await upload(admin, csrf, "email\na@example.org\nb@example.org\n",
                          new_slug="patients", new_title="Patients 2027", new_locale="en")  # fmt: skip
    job = await finished(answer)
    assert await console.store.lists.meta("patients") is None
    await finished(await admin.post(f"/admin/import/{job.id}/apply", data={"csrf": csrf}))
    stored = await console.store.lists.meta("patients")
    assert stored is not None
    assert (stored.title, stored.default_locale) == ("Patients 2027", "en")
    assert len([m async for m in console.store.lists.recipients("patients")]) == 2


async def test_the_progress_bar_while_the_import_waits(console: Console) -> None:
    """While the dry run runs (held here behind another transaction's write on the lists
    table), the page shows the progress bar, htmx's poll and the no-JavaScript refresh; the
    fragment is the bar alone; once over, the fragment asks htmx to reload the page."""
    admin = await console.client(Role.ADMIN)
    csrf = await console.csrf(admin)
    async with console.store.engine.connect() as blocker:
        await blocker.execute(
            insert(lists_table).values(
                slug="stalled", title="x", default_locale="fr", opt_in="single", public=False,
                created_at=NOW, updated_at=NOW,
            )
        )  # fmt: skip
        answer = await upload(admin, csrf, BAD_ROWS, new_slug="stalled", new_title="Stalled")
        assert answer.status_code == 303
        where = answer.headers["location"]
        page = await admin.get(where, headers={"Accept-Language": "en"})
        assert "Dry run running, nothing stored yet:" in page.text
        assert '<noscript><meta http-equiv="refresh" content="2"></noscript>' in page.text
        assert f'hx-get="{where}/progress" hx-trigger="every 1s"' in page.text
        assert "<progress" in page.text
        bar = await admin.get(where + "/progress", headers={"HX-Request": "true"})
        assert bar.status_code == 200
        assert "<progress" in bar.text
        assert "<html" not in bar.text
        assert "HX-Refresh" not in bar.headers
        await blocker.rollback()
    job = import_desk.find(where.rsplit("/", 1)[1])
    assert job is not None
    assert job.task is not None
    await job.task
    over = await admin.get(where + "/progress", headers={"HX-Request": "true"})
    assert over.headers["HX-Refresh"] == "true"
    assert "http-equiv" not in (await admin.get(where)).text


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("members.xlsx", b"email\na@example.org\n", "“members.xlsx” is not a CSV file"),
        ("members.csv", b"PK\x03\x04\x14\x00\x06\x00", "“members.csv” is a workbook"),
        ("members.csv", b"email\x00\x01\x02\n", "“members.csv” is not a text file"),
    ],
)
async def test_what_is_not_a_csv_is_refused_at_once(
    console: Console, name: str, content: bytes, says: str
) -> None:
    """A file that is not a CSV is refused on the form, its copy deleted."""
    admin = await console.client(Role.ADMIN)
    before = await snapshot(console.store)
    answer = await upload(admin, await console.csrf(admin), content, name=name,
                          new_slug="patients", new_title="Patients")  # fmt: skip
    assert answer.status_code == 400
    assert says in answer.text
    assert 'value="patients"' in answer.text  # the form keeps what was typed
    assert uploads(console) == []
    assert await snapshot(console.store) == before


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("email,name\nzoé@example.org,Zoé\n".encode("latin-1"), "members.csv: line 2 is not UTF-8"),
        (b"mail,name\na@example.org,A\n", "members.csv: line 1: no 'email' column"),
        (b"", "members.csv: the file is empty"),
    ],
)
async def test_a_file_the_import_cannot_read_is_refused_with_its_reason(
    console: Console, content: bytes, says: str
) -> None:
    """Not UTF-8, no email column, empty: the dry run ends with the import's own reason
    (ListImportError's), nothing stored, the file deleted, no apply button."""
    admin = await console.client(Role.ADMIN)
    before = await snapshot(console.store)
    answer = await upload(admin, await console.csrf(admin), content,
                          new_slug="patients", new_title="Patients")  # fmt: skip
    job = await finished(answer)
    assert job.stage is import_desk.Stage.FAILED
    page = await admin.get(answer.headers["location"], headers={"Accept-Language": "en"})
    shown = html.unescape(page.text)
    assert "The file cannot be imported, nothing was stored: " + says in shown
    assert "/apply" not in page.text
    assert uploads(console) == []
    assert await snapshot(console.store) == before


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({}, "Choose an existing list, or give the new list a short name."),
        ({"new_slug": "Bad Name", "new_title": "T"}, "The short name “bad name” cannot be used"),
        ({"new_slug": "researchers", "new_title": "T"}, "The list “researchers” exists already"),
        ({"new_slug": "patients"}, "Give the new list a title"),
        ({"list": "nowhere"}, "The list “nowhere” does not exist"),
    ],
)
async def test_a_mistake_in_the_form_is_named(
    console: Console, tmp_path: Path, fields: dict[str, str], says: str
) -> None:
    await prepared(console.store, tmp_path)
    admin = await console.client(Role.ADMIN)
    before = await snapshot(console.store)
    answer = await upload(admin, await console.csrf(admin), "email\na@example.org\n", **fields)
    assert answer.status_code == 400
    assert says in answer.text
    assert uploads(console) == []
    assert await snapshot(console.store) == before


async def test_no_file_chosen_is_named(console: Console) -> None:
    admin = await console.client(Role.ADMIN)
    csrf = await console.csrf(admin)
    answer = await admin.post(
        "/admin/import", data={"csrf": csrf, "new_slug": "p", "new_title": "P"},
        files={"file": ("", b"", "application/octet-stream")},
    )  # fmt: skip
    assert answer.status_code == 400
    assert "Choisissez le fichier CSV à importer (champ Fichier CSV)." in answer.text


async def test_a_file_over_the_limit_is_refused_and_nothing_kept(small: Console) -> None:
    """Past MAILER_CONSOLE__UPLOAD_MAX_BYTES: the copy stops with a clear 413 page; far past
    it, the body limit answers 413 before anything is read. Nothing stored, no file kept."""
    admin = await small.client(Role.ADMIN)
    csrf = await small.csrf(admin)
    before = await snapshot(small.store)
    rows = "".join(f"member{n:05d}@example.org,Member {n}\n" for n in range(120))
    content = "email,name\n" + rows
    assert 2048 < len(content) < 64 * 1024
    answer = await upload(admin, csrf, content, new_slug="big", new_title="Big")
    assert answer.status_code == 413
    assert "“members.csv” is larger than the limit of 2 kB" in answer.text
    huge = await upload(admin, csrf, content * 40, new_slug="big", new_title="Big")
    assert huge.status_code == 413
    assert uploads(small) == []
    assert await snapshot(small.store) == before


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR, Role.SENDER])
async def test_below_admin_the_import_is_refused(console: Console, role: Role) -> None:
    """Viewer, editor, sender: 403 on the form and on an upload; nothing stored or kept."""
    client = await console.client(role)
    csrf = await console.csrf(client)
    before = await snapshot(console.store)
    assert (await client.get("/admin/import")).status_code == 403
    answer = await upload(client, csrf, BAD_ROWS, new_slug="patients", new_title="Patients")
    assert answer.status_code == 403
    assert uploads(console) == []
    assert await snapshot(console.store) == before


async def test_a_job_is_refused_below_admin(console: Console) -> None:
    """Another role cannot see, apply or cancel an admin's import."""
    admin = await console.client(Role.ADMIN)
    job = await finished(await upload(admin, await console.csrf(admin), BAD_ROWS,
                                      new_slug="patients", new_title="Patients"))  # fmt: skip
    sender = await console.client(Role.SENDER)
    csrf = await console.csrf(sender)
    for path in ("", "/progress"):
        assert (await sender.get(f"/admin/import/{job.id}{path}")).status_code == 403
    for path in ("/apply", "/cancel"):
        answer = await sender.post(f"/admin/import/{job.id}{path}", data={"csrf": csrf})
        assert answer.status_code == 403
    assert job.stage is import_desk.Stage.CHECKED
    assert await console.store.lists.meta("patients") is None


async def test_without_the_csrf_token_nothing_happens(console: Console) -> None:
    """An upload, an apply or a cancel without the session's token: 403, nothing changed."""
    admin = await console.client(Role.ADMIN)
    before = await snapshot(console.store)
    for token in (None, "forged"):
        answer = await upload(admin, token, BAD_ROWS, new_slug="patients", new_title="Patients")
        assert answer.status_code == 403
    assert uploads(console) == []
    job = await finished(await upload(admin, await console.csrf(admin), BAD_ROWS,
                                      new_slug="patients", new_title="Patients"))  # fmt: skip
    for path in ("/apply", "/cancel"):
        assert (await admin.post(f"/admin/import/{job.id}{path}")).status_code == 403
    assert job.stage is import_desk.Stage.CHECKED
    assert len(uploads(console)) == 1
    assert await snapshot(console.store) == before
    assert await imports_audited(console.store) == []


def test_an_uploaded_name_is_shown_without_its_folder() -> None:
    assert imports.shown_name("C:\\Users\\me\\liste.csv") == "liste.csv"
    assert imports.shown_name("../../etc/x\r\n.csv") == "x.csv"
    assert imports.shown_name("") == "upload.csv"
    assert imports.size_text(50 * 1024 * 1024, "fr") == "50\u202fMo"
    assert imports.size_text(1536, "en") == "1.5 kB"


async def test_a_day_old_upload_of_another_process_is_swept(console: Console) -> None:
    """Files left in the uploads folder by a process that has gone are deleted after a day."""
    admin = await console.client(Role.ADMIN)
    folder = console.settings.paths.data_dir / "uploads"
    folder.mkdir(parents=True)
    old, fresh = folder / ("a" * 32 + ".csv"), folder / ("b" * 32 + ".csv")
    for path in (old, fresh):
        path.write_bytes(b"email\n")
    day_ago = time.time() - import_desk.KEPT - 60
    os.utime(old, (day_ago, day_ago))
    await finished(await upload(admin, await console.csrf(admin), BAD_ROWS,
                                new_slug="patients", new_title="Patients"))  # fmt: skip
    assert not old.exists()
    assert fresh.exists()
