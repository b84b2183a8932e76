"""The import's dry run, its meta and source for an upload, and the one wording of its report
(`mailer.lists.report_lines`, `report_summary`) that the CLI and the console both show.

Database tests run on SQLite and on a real PostgreSQL; the CLI ones run the real command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from mailer.errors import ListImportError, NotFoundError
from mailer.lists import ImportReport, RowError, import_file, report_lines, report_summary
from mailer.models import ImportTally, ListMeta, OptInMode, SuppressionReason
from mailer.storage import Store, SubscriberRow

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LATER = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)

RESEARCHERS = (
    "email,name,organisation\n"
    "claire.dubois@example.org,Claire Dubois,AP-HP\n"
    "j.smith@example.org,John Smith,Inserm\n"
    "amelie+fai2r@example.org,Amélie Roux,FAI²R\n"
    "gone@example.org,Gone Away,CNRS\n"
)

# Every kind of line but "more": a suppressed and an unsubscribed member, an address stored in
# another case (merged, and its organisation updated), a new one and its duplicate, a bad row,
# Marc, already on another list, now with a name (updated too), and gone@ left the file.
NEXT_RESEARCHERS = (
    "email,name,organisation\n"
    "claire.dubois@example.org,Claire Dubois,AP-HP\n"
    "j.smith@example.org,John Smith,Inserm\n"
    "Amelie+FAI2R@example.org,Amélie Roux,CNRS\n"
    "new.person@example.org,New Person,Inria\n"
    "NEW.person@example.org,New Again,Inria\n"
    "not-an-address,Bad,\n"
    "marc.petit@example.org,Marc Petit,\n"
)

TABLES = ("lists", "subscribers", "subscriptions", "consent_events")


def write(folder: Path, name: str, content: str) -> Path:
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return path


async def snapshot(store: Store) -> dict[str, Any]:
    """Row counts of the tables an import touches, and what their rows say."""
    seen: dict[str, Any] = {}
    async with store.engine.connect() as conn:
        for table in TABLES:
            seen[table] = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar()  # noqa: S608
        seen["rows"] = [
            tuple(row)
            for row in await conn.execute(
                text(
                    "SELECT l.slug, l.title, s.email, s.name, s.attributes, s.updated_at,"
                    " u.status, u.source FROM subscriptions u"
                    " JOIN subscribers s ON s.id = u.subscriber_id"
                    " JOIN lists l ON l.id = u.list_id ORDER BY l.slug, s.email_key"
                )
            )
        ]
    return seen


async def prepared(store: Store, tmp_path: Path) -> Path:
    """researchers imported once, then one member unsubscribed, one suppressed, one added by
    hand; Marc on another list. Returns researchers.csv, rewritten as NEXT_RESEARCHERS."""
    path = write(tmp_path, "researchers.csv", RESEARCHERS)
    write(tmp_path, "researchers.toml", 'title = "Chercheurs"\n')
    assert (await import_file(store, path, now=NOW)).ok
    clinicians = write(tmp_path, "clinicians.csv", "email\nmarc.petit@example.org\n")
    assert (await import_file(store, clinicians, now=NOW)).ok
    await store.subscribers.unsubscribe(
        "j.smith@example.org", slug="researchers", source="web", now=NOW
    )
    await store.subscribers.suppress(
        "claire.dubois@example.org", reason=SuppressionReason.HARD_BOUNCE, detail="550", now=NOW
    )
    desk = SubscriberRow(line=0, email="desk@example.org", key="desk@example.org", smtputf8=False)
    await store.subscribers.add(desk, slug="researchers", source="cli", now=NOW)
    return write(tmp_path, "researchers.csv", NEXT_RESEARCHERS)


async def test_a_dry_run_reports_what_the_import_then_does_and_stores_nothing(
    store: Store, tmp_path: Path
) -> None:
    """Dry run, then the real import of the same file: the same report, line for line; the
    database is as it was after the dry run (pruning included) and changed after the import."""
    path = await prepared(store, tmp_path)
    before = await snapshot(store)
    dry = await import_file(store, path, now=LATER, prune=True, dry_run=True)
    assert await snapshot(store) == before
    real = await import_file(store, path, now=LATER, prune=True)
    assert await snapshot(store) != before
    assert dry == real
    assert report_lines(dry) == report_lines(real)
    assert report_summary(dry) == report_summary(real)
    assert {line.kind for line in report_lines(dry)} == {
        "rejected", "duplicate", "merged", "kept_unsubscribed", "suppressed", "vanished",
    }  # fmt: skip
    t = real.tally
    assert (t.added, t.subscribed_existing, t.updated, t.pruned) == (1, 1, 2, 1)
    assert t.vanished == ["gone@example.org"]
    assert report_summary(real) == (
        "researchers: 7 rows read; 1 added, 1 existing subscribers added, 2 updated, "
        "1 duplicates merged, 1 kept unsubscribed, 1 suppressed, 1 rejected, 1 pruned"
    )


async def test_a_dry_run_of_a_new_list_leaves_no_list(store: Store, tmp_path: Path) -> None:
    """The list a dry run would create is rolled back with its members."""
    path = write(tmp_path, "patients.csv", "email\na@example.org\nb@example.org\n")
    report = await import_file(store, path, now=NOW, dry_run=True)
    assert (report.slug, report.tally.added) == ("patients", 2)
    assert await store.lists.meta("patients") is None
    with pytest.raises(NotFoundError):
        await store.lists.id_of("patients")
    assert (await snapshot(store))["subscribers"] == 0


async def test_an_upload_into_an_existing_list_keeps_the_list_as_it_is(
    store: Store, tmp_path: Path
) -> None:
    """With meta= from store.lists.meta, a temporary file named anything (and any sidecar
    beside it) imports into that list, keeps its title, opt-in and public flag, and records
    the source given."""
    first = write(tmp_path, "researchers.csv", RESEARCHERS)
    write(
        tmp_path,
        "researchers.toml",
        'title = "Chercheurs"\ndefault_locale = "en"\nopt_in = "double"\npublic = true\n',
    )
    await import_file(store, first, now=NOW)
    meta = await store.lists.meta("researchers")
    assert meta == ListMeta("researchers", "Chercheurs", "en", OptInMode.DOUBLE, public=True)
    upload = write(tmp_path, "upload-8f3a.csv", "email\nnew.person@example.org\n")
    write(tmp_path, "upload-8f3a.toml", 'title = "Not this one"\n')
    source = "import:console:staff@example.org:clinicians.csv"
    report = await import_file(store, upload, now=NOW, meta=meta, source=source)
    assert (report.slug, report.tally.added) == ("researchers", 1)
    assert await store.lists.meta("researchers") == meta
    view = await store.subscribers.show("new.person@example.org")
    assert view.subscriptions == [("researchers", "subscribed", source)]
    lines = report_lines(report, where="clinicians.csv")
    assert lines[0].text == (
        "clinicians.csv: 4 member(s) no longer in the file (kept; --prune removes): "
        "amelie+fai2r@example.org, claire.dubois@example.org, gone@example.org, "
        "j.smith@example.org"
    )  # members who came from an import are still told apart from the upload's


async def test_meta_of_an_unknown_list_is_none(store: Store) -> None:
    assert await store.lists.meta("nobody") is None


async def test_a_source_is_cut_to_its_column(store: Store, tmp_path: Path) -> None:
    """A long staff address and file name fit the 200-character source column (PostgreSQL
    would refuse the import otherwise)."""
    path = write(tmp_path, "patients.csv", "email\na@example.org\n")
    source = "import:console:" + "s" * 150 + "@example.org:" + "f" * 100 + ".csv"
    assert (await import_file(store, path, now=NOW, source=source)).ok
    view = await store.subscribers.show("a@example.org")
    assert view.subscriptions == [("patients", "subscribed", source[:200])]


async def test_mistaken_calls_are_refused_before_anything_is_stored(
    store: Store, tmp_path: Path
) -> None:
    """A source that is not an import's (its members would never be reported as having left
    the file), a slug other than the meta's, or a bad slug in the meta: refused, nothing kept."""
    path = write(tmp_path, "patients.csv", "email\na@example.org\n")
    with pytest.raises(ValueError, match="starts with 'import:'"):
        await import_file(store, path, now=NOW, source="console:staff@example.org:x.csv")
    meta = ListMeta("patients", "Patients")
    with pytest.raises(ValueError, match="differ"):
        await import_file(store, path, now=NOW, slug="other", meta=meta)
    with pytest.raises(ListImportError, match="not a usable list name"):
        await import_file(store, path, now=NOW, meta=ListMeta("Bad Slug", "Bad"))
    assert await store.lists.meta("patients") is None


def test_report_lines_word_every_case() -> None:
    """The words of each line, the file named as asked, and the rejected rows beyond those
    listed counted in one line."""
    tally = ImportTally(
        kept_unsubscribed=[(4, "u@example.org")],
        suppressed=[(5, "s@example.org")],
        merged=[(6, "M@example.org", "m@example.org")],
        vanished=[f"v{i:02}@example.org" for i in range(12)],
        pruned=12,
    )
    report = ImportReport(
        path=Path("/tmp/upload-1.csv"),
        slug="patients",
        rows=9,
        rejected=[RowError(2, "email", "'x': not an address")],
        rejected_count=3,
        duplicates=[(3, "d@example.org", 1)],
        duplicate_count=1,
        tally=tally,
    )
    shown = [(line.kind, line.line, line.text) for line in report_lines(report, where="p.csv")]
    assert shown == [
        ("rejected", 2, "p.csv:2: email: 'x': not an address"),
        ("more", None, "p.csv: ... and 2 more rejected"),
        ("duplicate", 3, "p.csv:3: duplicate of line 1 (d@example.org), merged"),
        ("merged", 6, "p.csv:6: M@example.org is the stored m@example.org, merged"),
        ("kept_unsubscribed", 4, "p.csv:4: u@example.org unsubscribed earlier; left unsubscribed"),
        ("suppressed", 5, "p.csv:5: s@example.org is suppressed; not subscribed"),
        (
            "vanished",
            None,
            "p.csv: 12 member(s) removed from the list: "
            + ", ".join(f"v{i:02}@example.org" for i in range(10))
            + " ...",
        ),
    ]
    assert report_lines(report)[0].text.startswith("/tmp/upload-1.csv:2: ")
    assert report_summary(report) == (
        "patients: 9 rows read; 1 duplicates merged, 1 kept unsubscribed, 1 suppressed, "
        "3 rejected, 12 pruned"
    )
    assert report_summary(ImportReport(path=Path("e.csv"), slug="e")) == (
        "e: 0 rows read; nothing to do"
    )


# --- the command ----------------------------------------------------------------------------


def mailer(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def said(stream: str) -> list[str]:
    """The lines of an output, without the log lines (the first command upgrades the
    database, and logs it)."""
    return [line for line in stream.splitlines() if not re.match(r"\d{4}-\d\d-\d\d ", line)]


ALUMNI = "email,name\nok@example.org,OK\nOK@example.org,Again\nnot-an-address,Bad\n"


def test_cli_dry_run_prints_the_report_of_the_import_that_follows(tmp_path: Path) -> None:
    """`lists import --dry-run` prints what the import then prints, says nothing was stored,
    exits as the import does; the import that follows still adds the row."""
    (tmp_path / "alumni.csv").write_text(ALUMNI, encoding="utf-8")
    dry = mailer(tmp_path, "lists", "import", "alumni.csv", "--list", "alumni", "--dry-run")
    real = mailer(tmp_path, "lists", "import", "alumni.csv", "--list", "alumni")
    assert (dry.returncode, real.returncode) == (1, 1), dry.stderr
    assert real.stdout == "alumni: 3 rows read; 1 added, 1 duplicates merged, 1 rejected\n"
    assert dry.stdout == real.stdout
    assert said(dry.stderr) == [*said(real.stderr), "dry run: nothing was stored"]
    rejected, *rest = said(real.stderr)
    assert rejected.startswith("alumni.csv:4: email: 'not-an-address': ")
    assert rest == ["alumni.csv:3: duplicate of line 2 (OK@example.org), merged"]


def test_cli_sync_dry_run_stores_no_list(tmp_path: Path) -> None:
    """`lists sync --dry-run` reports each file and leaves the database without a list."""
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "alumni.csv").write_text("email\nok@example.org\n", encoding="utf-8")
    dry = mailer(tmp_path, "lists", "sync", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout == "alumni: 1 rows read; 1 added\n"
    assert said(dry.stderr) == ["dry run: nothing was stored"]
    shown = mailer(tmp_path, "lists", "show")
    assert shown.stdout.startswith("no list yet"), shown.stdout
