"""List import and export, on SQLite and on a real PostgreSQL (every test runs on both)."""

from __future__ import annotations

import io
import os
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer import lists
from mailer.errors import ListImportError, NotFoundError, StateError
from mailer.lists import ListFile, RowError, import_file
from mailer.models import SuppressionReason
from mailer.storage import Store, SubscriberRow

pytestmark = pytest.mark.timeout(120)

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

RESEARCHERS = (
    "email,name,locale,organisation\n"
    "claire.dubois@example.org,Claire Dubois,fr,AP-HP Pitié-Salpêtrière\n"
    "j.smith@example.org,John Smith,en,Inserm\n"
    "amelie+fai2r@example.org,Amélie Roux,fr,FAI²R\n"
)


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


async def members(store: Store, slug: str) -> list[str]:
    return [row.email async for row in store.lists.export_rows(slug)]


async def test_good_rows_go_in_and_bad_rows_are_reported(store: Store, tmp_path: Path) -> None:
    """Each bad row is named by line, column and reason; the good rows are imported."""
    path = write(
        tmp_path,
        "researchers.csv",
        RESEARCHERS
        + "a@b,Short Domain,fr,\n"
        + "has space@example.org,Space,fr,\n"
        + "zero\u200bwidth@example.org,Invisible,fr,\n"
        + ("x" * 65) + "@example.org,Long Local,fr,\n"
        + "ok@example.org,Bad Locale,french,\n",
    )  # fmt: skip
    report = await import_file(store, path, now=NOW)
    assert not report.ok
    assert [(e.line, e.column) for e in report.rejected] == [
        (5, "email"),
        (6, "email"),
        (7, "email"),
        (8, "email"),
        (9, "locale"),
    ]
    assert "ZERO WIDTH SPACE" in report.rejected[2].reason
    assert "space" in report.rejected[1].reason
    assert report.tally.added == 3
    assert await members(store, "researchers") == [
        "amelie+fai2r@example.org",
        "claire.dubois@example.org",
        "j.smith@example.org",
    ]


async def test_reimporting_the_same_file_changes_nothing(store: Store, tmp_path: Path) -> None:
    """The second import of an unchanged file is a no-op."""
    path = write(tmp_path, "researchers.csv", RESEARCHERS)
    first = await import_file(store, path, now=NOW)
    second = await import_file(store, path, now=NOW)
    assert (first.tally.added, first.tally.unchanged) == (3, 0)
    assert (second.tally.added, second.tally.updated, second.tally.unchanged) == (0, 0, 3)
    assert second.tally.vanished == []


async def test_duplicates_merge_case_insensitively_and_tags_stay_distinct(
    store: Store, tmp_path: Path
) -> None:
    """Same address in other case is merged (and reported); +tag addresses are other people."""
    path = write(
        tmp_path,
        "clinicians.csv",
        "email,name\n"
        "Marc.Petit@Example.ORG,Marc Petit\n"
        "marc.petit@example.org,Marc again\n"
        "marc.petit+lupus@example.org,Marc's lupus alias\n",
    )
    report = await import_file(store, path, now=NOW)
    assert report.duplicates == [(3, "marc.petit@example.org", 2)]
    assert await members(store, "clinicians") == [
        "marc.petit+lupus@example.org",  # ordered by key: "+" sorts before "@"
        "Marc.Petit@example.org",
    ]
    other = write(tmp_path, "associations.csv", "email\nMARC.PETIT@example.org\n")
    report = await import_file(store, other, now=NOW)
    assert report.tally.merged == [(2, "MARC.PETIT@example.org", "Marc.Petit@example.org")]
    assert report.tally.subscribed_existing == 1


async def test_an_unsubscribed_or_suppressed_address_is_never_resubscribed(
    store: Store, tmp_path: Path
) -> None:
    """Unsubscribe wins over the file, and a suppression over every list."""
    path = write(tmp_path, "researchers.csv", RESEARCHERS)
    await import_file(store, path, now=NOW)
    await store.subscribers.unsubscribe(
        "j.smith@example.org", slug="researchers", source="web", now=NOW
    )
    await store.subscribers.suppress(
        "claire.dubois@example.org", reason=SuppressionReason.HARD_BOUNCE, detail="550", now=NOW
    )
    report = await import_file(store, path, now=NOW)
    assert report.tally.kept_unsubscribed == [(3, "j.smith@example.org")]
    assert report.tally.suppressed == [(2, "claire.dubois@example.org")]
    assert await members(store, "researchers") == [
        "amelie+fai2r@example.org",
        "claire.dubois@example.org",  # still a member on paper; delivery skips suppressed
    ]
    new_list = write(tmp_path, "patients.csv", "email\nclaire.dubois@example.org\n")
    report = await import_file(store, new_list, now=NOW)
    assert report.tally.suppressed == [(2, "claire.dubois@example.org")]
    assert await members(store, "patients") == []
    summary = (await store.lists.summaries("researchers"))[0]
    assert summary.counts == {"pending": 0, "subscribed": 2, "unsubscribed": 1}
    assert summary.suppressed == 1


async def test_vanished_rows_are_reported_and_removed_only_with_prune(
    store: Store, tmp_path: Path
) -> None:
    """A member missing from the new file stays until --prune; CLI-added members are not touched."""
    path = write(tmp_path, "researchers.csv", RESEARCHERS)
    await import_file(store, path, now=NOW)
    await store.subscribers.add(
        SubscriberRow(line=0, email="desk@example.org", key="desk@example.org", smtputf8=False),
        slug="researchers",
        source="cli",
        now=NOW,
    )
    write(tmp_path, "researchers.csv", "email\nclaire.dubois@example.org\n")
    report = await import_file(store, path, now=NOW)
    assert report.tally.vanished == ["amelie+fai2r@example.org", "j.smith@example.org"]
    assert report.tally.pruned == 0
    assert len(await members(store, "researchers")) == 4
    report = await import_file(store, path, now=NOW, prune=True)
    assert report.tally.pruned == 2
    assert await members(store, "researchers") == [
        "claire.dubois@example.org",
        "desk@example.org",
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"email,name\nzoe@example.org,Zo\xe9\n", "line 2 is not UTF-8: byte 0xe9"),
        ("email,name\n".encode("utf-16"), "the file is UTF-16"),
        (b"", "the file is empty"),
        (b"mail,name\nzoe@example.org,Zoe\n", "no 'email' column in the header row"),
        (b"email,name,name\nzoe@example.org,Zoe,Z\n", "repeats the column(s) name"),
        (
            b'email,name\nfirst@example.org,"Unclosed\nsecond@example.org,Two\n',
            'line 2: a quoted field is never closed (unbalanced ")',
        ),
    ],
    ids=["latin-1", "utf-16", "empty", "no-email-column", "repeated-column", "unbalanced-quote"],
)
async def test_an_unreadable_file_is_refused_and_changes_nothing(
    store: Store, tmp_path: Path, content: bytes, message: str
) -> None:
    """A file that cannot be read as a whole is refused with its name, and nothing is stored."""
    good = write(tmp_path, "researchers.csv", RESEARCHERS)
    await import_file(store, good, now=NOW)
    before = await store.lists.summaries()
    bad = write(tmp_path, "researchers.csv", content)
    with pytest.raises(ListImportError) as caught:
        await import_file(store, bad, now=NOW)
    assert str(caught.value).startswith(str(bad))
    assert message in str(caught.value)
    assert await store.lists.summaries() == before
    assert len(await members(store, "researchers")) == 3


async def test_a_failure_late_in_a_big_file_rolls_back_every_batch(
    store: Store, tmp_path: Path
) -> None:
    """One transaction per file: rows already sent to the database in earlier batches go too."""
    rows = "".join(f"person{i}@example.org,Person {i}\n" for i in range(2500))
    path = write(
        tmp_path, "big.csv", ("email,name\n" + rows).encode() + b"late@example.org,Zo\xe9\n"
    )
    with pytest.raises(ListImportError, match="line 2502 is not UTF-8"):
        await import_file(store, path, now=NOW)
    with pytest.raises(NotFoundError):
        await store.lists.id_of("big")


async def test_nul_bytes_and_huge_fields_reject_only_their_row(
    store: Store, tmp_path: Path
) -> None:
    """A NUL byte or a 200 KB field is one bad row, not a crash; the rest imports."""
    path = write(
        tmp_path,
        "mixed.csv",
        b"email,name\nnul@example.org,Bad\x00Name\n"
        + b"huge@example.org," + b"x" * 200_000 + b"\n"
        + b"fine@example.org,Fine\n",
    )  # fmt: skip
    report = await import_file(store, path, now=NOW)
    assert [(e.line, e.column) for e in report.rejected] == [(2, "name"), (3, "-")]
    assert "NUL" in report.rejected[0].reason
    assert "field larger than field limit" in report.rejected[1].reason
    assert await members(store, "mixed") == ["fine@example.org"]


async def test_bom_semicolons_and_attributes(store: Store, tmp_path: Path) -> None:
    """An Excel 'CSV UTF-8' file with a BOM and semicolons imports; extra columns are kept."""
    path = write(
        tmp_path,
        "associations.csv",
        "\ufeffEmail;Name;Locale;Timezone;City\n"
        "contact@example.org;Association Lupus France;FR;Europe/Paris;Paris\n",
    )
    report = await import_file(store, path, now=NOW)
    assert report.ok
    view = await store.subscribers.show("contact@example.org")
    assert (view.name, view.locale, view.timezone) == (
        "Association Lupus France",
        "fr",
        "Europe/Paris",
    )
    assert view.attributes == {"city": "Paris"}
    assert view.subscriptions == [("associations", "subscribed", "import:associations.csv")]


async def test_a_changed_row_updates_the_subscriber(store: Store, tmp_path: Path) -> None:
    """A new name or attribute in the file updates the stored subscriber, and is counted."""
    path = write(tmp_path, "researchers.csv", RESEARCHERS)
    await import_file(store, path, now=NOW)
    write(
        tmp_path,
        "researchers.csv",
        RESEARCHERS.replace("John Smith,en,Inserm", "John Smith,en,CNRS"),
    )
    report = await import_file(store, path, now=NOW)
    assert (report.tally.updated, report.tally.unchanged) == (1, 2)
    view = await store.subscribers.show("j.smith@example.org")
    assert view.attributes == {"organisation": "CNRS"}


async def test_sidecar_metadata_sets_the_list(store: Store, tmp_path: Path) -> None:
    """The .toml beside the CSV gives the title, default locale and opt-in mode."""
    path = write(tmp_path, "researchers.csv", RESEARCHERS)
    write(
        tmp_path,
        "researchers.toml",
        'title = "Chercheurs du réseau CRI-IMIDIATE"\ndefault_locale = "fr"\nopt_in = "double"\n',
    )
    await import_file(store, path, now=NOW)
    summary = (await store.lists.summaries("researchers"))[0]
    assert (summary.title, summary.default_locale, summary.opt_in) == (
        "Chercheurs du réseau CRI-IMIDIATE",
        "fr",
        "double",
    )


def test_a_wrong_sidecar_names_the_file_and_the_key(tmp_path: Path) -> None:
    """An unknown key or a bad value in the sidecar is refused before any change."""
    path = write(tmp_path, "researchers.csv", RESEARCHERS)
    write(tmp_path, "researchers.toml", 'titel = "Oops"\n')
    with pytest.raises(ListImportError, match=r"researchers\.toml: titel: Extra inputs"):
        lists.read_meta(path, "researchers")
    write(tmp_path, "researchers.toml", 'opt_in = "triple"\n')
    with pytest.raises(ListImportError, match=r"researchers\.toml: opt_in: Input should be"):
        lists.read_meta(path, "researchers")


async def test_unknown_list_is_named_with_the_known_ones(store: Store, tmp_path: Path) -> None:
    """Asking for a list that does not exist lists those that do."""
    await import_file(store, write(tmp_path, "researchers.csv", RESEARCHERS), now=NOW)
    with pytest.raises(NotFoundError, match="unknown list 'reseachers'; known lists: researchers"):
        await store.lists.summaries("reseachers")


async def test_cli_style_subscribe_respects_unsubscribe_and_suppression(
    store: Store, tmp_path: Path
) -> None:
    """Staff cannot re-subscribe an opt-out without --force, nor a suppressed address at all."""
    await import_file(store, write(tmp_path, "researchers.csv", RESEARCHERS), now=NOW)
    await store.subscribers.unsubscribe("j.smith@example.org", slug=None, source="web", now=NOW)
    row = SubscriberRow(
        line=0, email="j.smith@example.org", key="j.smith@example.org", smtputf8=False
    )
    with pytest.raises(StateError, match="with --force"):
        await store.subscribers.add(row, slug="researchers", source="cli", now=NOW)
    message = await store.subscribers.add(
        row, slug="researchers", source="cli", now=NOW, force=True
    )
    assert message == "j.smith@example.org subscribed to researchers"
    await store.subscribers.suppress(
        "j.smith@example.org", reason=SuppressionReason.MANUAL, detail="", now=NOW
    )
    with pytest.raises(StateError, match="suppressed"):
        await store.subscribers.add(row, slug="researchers", source="cli", now=NOW, force=True)


async def test_export_neutralises_formulas_and_imports_back_unchanged(
    store: Store, tmp_path: Path
) -> None:
    """Cells a spreadsheet would execute are defused, and the export re-imports as a no-op."""
    path = write(
        tmp_path,
        "patients.csv",
        "email,name,note\n"
        'eve@example.org,"=HYPERLINK(""http://x"")",+33 1 42 16 00 00\n'
        "-dash@example.org,@mention,\ttab\n",
    )
    await import_file(store, path, now=NOW)
    out = io.StringIO()
    assert await lists.export_csv(store, "patients", out) == 2
    exported = out.getvalue().splitlines()
    assert exported[0] == "email,name,locale,timezone,note"
    assert exported[1] == "'-dash@example.org,'@mention,,,tab"  # cells are stripped on import
    assert exported[2] == 'eve@example.org,"\'=HYPERLINK(""http://x"")",,,\'+33 1 42 16 00 00'
    back = write(tmp_path, "patients.csv", out.getvalue())
    report = await import_file(store, back, now=NOW)
    assert (report.tally.unchanged, report.tally.updated, report.rejected_count) == (2, 0, 0)


async def test_export_of_an_unknown_list_fails(store: Store) -> None:
    with pytest.raises(NotFoundError):
        await lists.export_csv(store, "nobody", io.StringIO())


def test_reading_streams_large_files(tmp_path: Path) -> None:
    """Parsing 20,000 rows keeps memory flat: far less than the file's own size is held."""
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("email,name,organisation\n")
        for i in range(20_000):
            handle.write(f"member{i}@example.org,Member number {i},Organisation {i % 97}\n")
    size = path.stat().st_size
    tracemalloc.start()
    count = 0
    with ListFile(path) as rows:
        for row in rows:
            assert not isinstance(row, RowError)
            count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 20_000
    assert peak < size / 10, f"peak {peak} bytes for a {size}-byte file"


@pytest.mark.parametrize("kind", ["directory", "dangling-link", "link-loop", "unreadable"])
def test_a_sidecar_that_cannot_be_read_is_an_error_naming_it(tmp_path: Path, kind: str) -> None:
    """A sidecar that exists but cannot be read never silently resets the title and opt-in."""
    path = write(tmp_path, "researchers.csv", RESEARCHERS)
    sidecar = tmp_path / "researchers.toml"
    if kind == "directory":
        sidecar.mkdir()
    elif kind == "dangling-link":
        sidecar.symlink_to(tmp_path / "gone.toml")
    elif kind == "link-loop":
        sidecar.symlink_to(tmp_path / "researchers.toml")
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads a file whatever its mode")
        write(tmp_path, "researchers.toml", 'opt_in = "double"\n').chmod(0)
    with pytest.raises(ListImportError) as caught:
        lists.read_meta(path, "researchers")
    message = str(caught.value)
    assert message.startswith(f"{sidecar}: ")
    assert "\n" not in message


def test_a_sidecar_nested_too_deep_is_an_error(tmp_path: Path) -> None:
    """A TOML nested thousands deep is refused with the file named, not a RecursionError."""
    path = write(tmp_path, "researchers.csv", RESEARCHERS)
    write(tmp_path, "researchers.toml", "x = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ListImportError, match=r"researchers\.toml: "):
        lists.read_meta(path, "researchers")


async def test_export_neutralises_the_header_row_too(store: Store, tmp_path: Path) -> None:
    """Attribute column names that a spreadsheet would run are defused and import back."""
    path = write(
        tmp_path,
        "patients.csv",
        'email,"=hyperlink(""http://x"")",+cmd\neve@example.org,a,b\n',
    )
    await import_file(store, path, now=NOW)
    out = io.StringIO()
    await lists.export_csv(store, "patients", out)
    header = out.getvalue().splitlines()[0]
    assert header == 'email,name,locale,timezone,\'+cmd,"\'=hyperlink(""http://x"")"'
    back = write(tmp_path, "patients.csv", out.getvalue())
    report = await import_file(store, back, now=NOW)
    assert (report.tally.unchanged, report.tally.updated, report.rejected_count) == (1, 0, 0)


@pytest.mark.parametrize("bad", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x9b", "\t"])
async def test_a_name_the_message_builder_refuses_is_refused_at_import(
    store: Store, tmp_path: Path, bad: str
) -> None:
    """The import applies the builder's rule for names: the row is rejected, with the reason."""
    path = write(
        tmp_path, "researchers.csv", f"email,name\nok@example.org,Fine\nx@example.org,A{bad}B\n"
    )
    report = await import_file(store, path, now=NOW)
    assert [(e.line, e.column) for e in report.rejected] == [(3, "name")]
    assert "control character" in report.rejected[0].reason
    assert await members(store, "researchers") == ["ok@example.org"]


def test_a_sidecar_title_with_control_characters_is_refused(tmp_path: Path) -> None:
    """The title goes into headers and pages: it follows the rule for names."""
    path = write(tmp_path, "researchers.csv", RESEARCHERS)
    write(tmp_path, "researchers.toml", 'title = "Chercheurs\\u001b[2J\\u2028"\n')
    with pytest.raises(ListImportError, match=r"researchers\.toml: title: .*control character"):
        lists.read_meta(path, "researchers")
