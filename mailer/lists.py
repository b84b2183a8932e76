"""Subscriber list files: read, validate and import CSV files (or dry-run the import), word
the import's report; export a list as CSV.

A list is ``lists/<slug>.csv`` (header row, ``email`` required; ``name``, ``locale``,
``timezone`` known; any other column kept as an attribute) plus an optional sidecar
``lists/<slug>.toml`` (``title``, ``default_locale``, ``opt_in``, ``public``). The CLI and
the console import through the one :func:`import_file` and show the one wording of its
report (:func:`report_lines`, :func:`report_summary`).

Reading is streamed (one line at a time), so a 100,000-row file is never held in memory;
only the comparison keys seen so far are kept, to merge duplicates and report members who
vanished from the file. The database side lives in :mod:`mailer.storage`.
"""

from __future__ import annotations

import csv
import re
import stat
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailer.addresses import check_name, normalize
from mailer.errors import AddressError, ListImportError
from mailer.models import ImportTally, ListMeta, OptInMode, SubscriberRow
from mailer.storage import Store

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
LOCALE = re.compile(r"^([A-Za-z]{2,3})(?:[-_]([A-Za-z]{2}|[0-9]{3}))?$")
KNOWN_COLUMNS = ("email", "name", "locale", "timezone")
MAX_ATTRIBUTE = 1000
MAX_COLUMNS = 100
BATCH = 1000
DETAILS_KEPT = 1000  # rejected rows and duplicates listed in full; beyond, only counted
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class RowError:
    line: int
    column: str
    reason: str


@dataclass(slots=True)
class ImportReport:
    path: Path
    slug: str
    rows: int = 0
    rejected: list[RowError] = field(default_factory=list)
    rejected_count: int = 0
    duplicates: list[tuple[int, str, int]] = field(default_factory=list)  # line, email, first
    duplicate_count: int = 0
    tally: ImportTally = field(default_factory=ImportTally)

    @property
    def ok(self) -> bool:
        return self.rejected_count == 0


class _MetaFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(default=None, min_length=1, max_length=200)
    default_locale: str = Field(default="fr", pattern=LOCALE.pattern)
    opt_in: OptInMode = OptInMode.SINGLE
    public: bool = False

    @field_validator("title")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        return None if value is None else check_name(value, what="title")


def slug_for(path: Path, override: str | None = None) -> str:
    slug = override if override is not None else path.stem.lower()
    if not SLUG.match(slug):
        raise ListImportError(
            str(path),
            f"{slug!r} is not a usable list name: use lower-case letters, digits, - and _ "
            "(rename the file or pass --list)",
        )
    return slug


def read_meta(path: Path, slug: str) -> ListMeta:
    """The list's metadata from the ``.toml`` beside the CSV (defaults when there is none)."""
    sidecar = path.with_suffix(".toml")
    text = _sidecar_text(sidecar)
    data: dict[str, Any] = {}
    if text is not None:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ListImportError(str(sidecar), f"not valid TOML: {exc}") from None
        except RecursionError:
            raise ListImportError(str(sidecar), "not valid TOML: nested too deep") from None
    try:
        meta = _MetaFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(file)"
        raise ListImportError(
            str(sidecar),
            f"{key}: {str(first['msg']).removeprefix('Value error, ')} "
            f"(allowed keys: {', '.join(_MetaFile.model_fields)})",
        ) from None
    return ListMeta(
        slug=slug,
        title=meta.title or slug.replace("-", " ").replace("_", " ").capitalize(),
        default_locale=_locale(meta.default_locale),
        opt_in=meta.opt_in,
        public=meta.public,
    )


def _sidecar_text(sidecar: Path) -> str | None:
    """The sidecar's text; None when there is none. Anything at that path that cannot be read
    (a folder, a dangling or looping link, no permission) is an error: ignoring it would
    silently reset the list's title and opt-in mode."""
    try:
        sidecar.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ListImportError(str(sidecar), f"cannot be read ({exc.strerror})") from None
    fix = "fix it or remove it (it holds the list's title and opt-in mode)"
    try:
        info = sidecar.stat()
    except FileNotFoundError:
        raise ListImportError(
            str(sidecar), f"is a symbolic link to a file that does not exist; {fix}"
        ) from None
    except OSError as exc:
        raise ListImportError(str(sidecar), f"cannot be read ({exc.strerror}); {fix}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ListImportError(str(sidecar), f"is {kind}, not a TOML file; {fix}")
    try:
        return sidecar.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ListImportError(str(sidecar), "not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise ListImportError(str(sidecar), f"cannot be read ({exc.strerror}); {fix}") from None


# --- reading ------------------------------------------------------------------------------


def _text_lines(path: Path, raw: IO[bytes]) -> Iterator[str]:
    """Decode a file line by line as UTF-8 (BOM allowed), naming the first bad line."""
    for number, data in enumerate(raw, start=1):
        if number == 1:
            if data.startswith((b"\xff\xfe", b"\xfe\xff")):
                raise ListImportError(
                    str(path), "the file is UTF-16; save it as UTF-8 ('CSV UTF-8' in Excel)"
                )
            data = data.removeprefix(b"\xef\xbb\xbf")
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError as exc:
            guess = ""
            try:
                sample = data[max(0, exc.start - 10) : exc.end + 10].decode("cp1252").strip()
                guess = f" (near {sample!r} if read as Windows-1252/Latin-1)"
            except UnicodeDecodeError:
                pass
            raise ListImportError(
                str(path),
                f"line {number} is not UTF-8: byte 0x{data[exc.start]:02x}{guess}; "
                "save the file as UTF-8 ('CSV UTF-8' in Excel) and import it again",
            ) from None


def _unneutralise(cell: str) -> str:
    """Undo :func:`neutralise`, so that an exported list imports back unchanged."""
    if len(cell) > 1 and cell[0] == "'" and cell[1] in (*FORMULA_START, "'"):
        return cell[1:]
    return cell


class ListFile:
    """A CSV list file opened for streaming; iterate for rows and row errors."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._raw: IO[bytes] = path.open("rb")
        except OSError as exc:
            raise ListImportError(str(path), f"cannot be opened ({exc.strerror})") from None
        self._lines = _text_lines(path, self._raw)
        try:
            first = next(self._lines)
        except StopIteration:
            self.close()
            raise ListImportError(
                str(path), "the file is empty: expected a header row with an 'email' column"
            ) from None
        except ListImportError:
            self.close()
            raise
        delimiter = ";" if first.count(";") > first.count(",") else ","
        if first.count("\t") > max(first.count(";"), first.count(",")):
            delimiter = "\t"
        self._reader = csv.reader(_chain(first, self._lines), delimiter=delimiter, strict=True)
        try:
            header = [_unneutralise(h.strip().lstrip("\ufeff")).lower() for h in next(self._reader)]
        except csv.Error as exc:
            self.close()
            raise ListImportError(
                str(path), f"line 1: the header row is not valid CSV ({exc})"
            ) from None
        problems = []
        if "email" not in header:
            found = ", ".join(repr(h) for h in header) or "nothing"
            problems.append(f"no 'email' column in the header row (found {found})")
        duplicated = sorted({h for h in header if header.count(h) > 1 and h})
        if duplicated:
            problems.append(f"the header repeats the column(s) {', '.join(duplicated)}")
        if "" in header:
            problems.append(f"column {header.index('') + 1} of the header row has no name")
        if len(header) > MAX_COLUMNS:
            problems.append(f"more than {MAX_COLUMNS} columns")
        if problems:
            self.close()
            raise ListImportError(str(path), "line 1: " + "; ".join(problems))
        self.header = header

    def close(self) -> None:
        self._raw.close()

    def position(self) -> int:
        """Bytes read so far (for progress bars)."""
        return self._raw.tell()

    def __enter__(self) -> ListFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[SubscriberRow | RowError]:
        reader, header = self._reader, self.header
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "unexpected end of data" in str(exc):
                    raise ListImportError(
                        str(self.path),
                        f'line {line}: a quoted field is never closed (unbalanced "); '
                        "fix the file and import it again",
                    ) from None
                yield RowError(line, "-", f"not valid CSV: {exc}")
                continue
            if not any(c.strip() for c in cells):
                continue  # blank line
            yield parse_row(line, header, cells)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


def parse_row(line: int, header: list[str], cells: list[str]) -> SubscriberRow | RowError:
    if len(cells) != len(header):
        return RowError(line, "-", f"{len(cells)} cells where the header has {len(header)}")
    values = dict(zip(header, (_unneutralise(c.strip()) for c in cells), strict=True))
    for column, value in values.items():
        if "\x00" in value:
            return RowError(line, column, "contains a NUL byte")
        if len(value) > MAX_ATTRIBUTE:
            return RowError(line, column, f"longer than {MAX_ATTRIBUTE} characters")
    try:
        address = normalize(values["email"])
    except AddressError as exc:
        return RowError(line, "email", f"{values['email']!r}: {exc}")
    name = values.get("name") or None
    if name is not None:
        try:
            check_name(name)
        except AddressError as exc:
            return RowError(line, "name", str(exc))
    locale = values.get("locale") or None
    if locale is not None:
        if not LOCALE.match(locale):
            return RowError(line, "locale", f"{locale!r} is not a language code such as fr or en")
        locale = _locale(locale)
    zone = values.get("timezone") or None
    if zone is not None and not _zone_ok(zone):
        return RowError(line, "timezone", f"{zone!r} is not an IANA time zone such as Europe/Paris")
    attributes = {k: v for k, v in values.items() if k not in KNOWN_COLUMNS and v}
    return SubscriberRow(
        line=line,
        email=address.email,
        key=address.key,
        smtputf8=address.smtputf8,
        name=name,
        locale=locale,
        timezone=zone,
        attributes=attributes,
    )


def _locale(value: str) -> str:
    match = LOCALE.match(value)
    assert match is not None
    language, region = match.groups()
    return f"{language.lower()}_{region.upper()}" if region else language.lower()


@lru_cache(maxsize=512)
def _zone_ok(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


# --- importing ----------------------------------------------------------------------------


async def import_file(
    store: Store,
    path: Path,
    *,
    now: datetime,
    slug: str | None = None,
    prune: bool = False,
    progress: Callable[[int], None] | None = None,
    dry_run: bool = False,
    meta: ListMeta | None = None,
    source: str | None = None,
) -> ImportReport:
    """Import one list file in one transaction: good rows go in, bad rows are reported.

    ``dry_run``: the whole import runs and is rolled back, so the report is what applying
    would do and nothing is stored. ``meta``: the list as it is to be (an upload's temporary
    file has no sidecar; :meth:`store.lists.meta <mailer.storage.lists.Lists.meta>` keeps an
    existing list as it is); its slug names the list. ``source``: the consent source written
    on the new subscriptions, starting with ``import:`` (default ``import:<file name>``).
    Raises :class:`ListImportError` (and changes nothing) when the file cannot be read.
    """
    if meta is None:
        slug = slug_for(path, slug)
        meta = read_meta(path, slug)
    elif slug is not None and slug != meta.slug:
        raise ValueError(f"slug {slug!r} and meta.slug {meta.slug!r} differ")
    elif not SLUG.match(meta.slug):
        raise ListImportError(meta.slug, "not a usable list name: use a-z, 0-9, - and _")
    report = ImportReport(path=path, slug=meta.slug)
    source = f"import:{path.name}" if source is None else source
    with ListFile(path) as rows:
        opened = store.lists.import_list(meta, source=source, now=now, dry_run=dry_run)
        async with opened as importer:
            seen: dict[str, int] = {}
            batch: list[SubscriberRow] = []
            for item in rows:
                report.rows += 1
                if isinstance(item, RowError):
                    report.rejected_count += 1
                    if len(report.rejected) < DETAILS_KEPT:
                        report.rejected.append(item)
                    continue
                first = seen.get(item.key)
                if first is not None:
                    report.duplicate_count += 1
                    if len(report.duplicates) < DETAILS_KEPT:
                        report.duplicates.append((item.line, item.email, first))
                    continue
                seen[item.key] = item.line
                batch.append(item)
                if len(batch) >= BATCH:
                    await importer.add(batch)
                    batch = []
                    if progress is not None:
                        progress(rows.position())
            await importer.add(batch)
            report.tally = await importer.finish(seen.keys(), prune=prune)
    return report


# --- the report, in words -------------------------------------------------------------------


ReportKind = Literal[
    "rejected", "more", "duplicate", "merged", "kept_unsubscribed", "suppressed", "vanished"
]  # "more": the rejected rows beyond those listed


@dataclass(frozen=True, slots=True)
class ReportLine:
    """One line of an import's report: ``where:line: ...`` (``line`` None for the file)."""

    kind: ReportKind
    line: int | None
    text: str


def report_lines(report: ImportReport, *, where: str | None = None) -> list[ReportLine]:
    """The report's lines in the CLI's order (rejected, duplicates, merged, kept unsubscribed,
    suppressed, left the file); ``where`` names the file (default: the path imported; the
    console passes the uploaded file's name). Raw text: escape it where it is shown."""
    t, more = report.tally, report.rejected_count - len(report.rejected)
    found: list[tuple[ReportKind, int | None, str]] = [
        ("rejected", r.line, f"{r.column}: {r.reason}") for r in report.rejected
    ]
    if more > 0:
        found.append(("more", None, f"... and {more} more rejected"))
    found += [("duplicate", n, f"duplicate of line {first} ({email}), merged")
              for n, email, first in report.duplicates]  # fmt: skip
    found += [("merged", n, f"{given} is the stored {stored}, merged")
              for n, given, stored in t.merged]  # fmt: skip
    found += [("kept_unsubscribed", n, f"{email} unsubscribed earlier; left unsubscribed")
              for n, email in t.kept_unsubscribed]  # fmt: skip
    found += [("suppressed", n, f"{email} is suppressed; not subscribed")
              for n, email in t.suppressed]  # fmt: skip
    if t.vanished:
        kept = "no longer in the file (kept; --prune removes)"
        verb = "removed from the list" if t.pruned else kept
        shown = ", ".join(t.vanished[:10]) + (" ..." if len(t.vanished) > 10 else "")
        found.append(("vanished", None, f"{len(t.vanished)} member(s) {verb}: {shown}"))
    at = str(report.path) if where is None else where
    return [
        ReportLine(kind, n, f"{at}: {text}" if n is None else f"{at}:{n}: {text}")
        for kind, n, text in found
    ]


def report_summary(report: ImportReport) -> str:
    """The report in one sentence: ``slug: N rows read; 3 added, 1 rejected``."""
    t = report.tally
    parts = [
        (t.added, "added"),
        (t.subscribed_existing, "existing subscribers added"),
        (t.updated, "updated"),
        (t.unchanged, "unchanged"),
        (report.duplicate_count, "duplicates merged"),
        (len(t.kept_unsubscribed), "kept unsubscribed"),
        (len(t.suppressed), "suppressed"),
        (report.rejected_count, "rejected"),
        (t.pruned, "pruned"),
    ]
    done = ", ".join(f"{n} {label}" for n, label in parts if n) or "nothing to do"
    return f"{report.slug}: {report.rows} rows read; {done}"


def list_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ListImportError(
            str(directory), "the lists folder does not exist (MAILER_PATHS__LISTS_DIR)"
        )
    return sorted(p for p in directory.glob("*.csv") if p.is_file())


# --- exporting ----------------------------------------------------------------------------


def neutralise(cell: str) -> str:
    """Defuse a cell a spreadsheet would run as a formula (OWASP CSV injection).

    A cell that already looks defused (a quote, then a formula character or a quote) gets one
    more quote, so that the import's :func:`_unneutralise` gives it back as it was.
    """
    if cell.startswith(FORMULA_START) or (
        len(cell) > 1 and cell[0] == "'" and cell[1] in (*FORMULA_START, "'")
    ):
        return "'" + cell
    return cell


async def export_csv(store: Store, slug: str, out: IO[str]) -> int:
    """Write the subscribed members of a list as CSV; return how many rows were written."""
    attribute_keys: set[str] = set()
    async for row in store.lists.export_rows(slug):
        attribute_keys.update(row.attributes)
    columns = [*KNOWN_COLUMNS, *sorted(attribute_keys - set(KNOWN_COLUMNS))]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([neutralise(c) for c in columns])  # attribute names come from the files
    count = 0
    async for row in store.lists.export_rows(slug):
        known = [row.email, row.name, row.locale or "", row.timezone or ""]
        extra = [str(row.attributes.get(k, "")) for k in columns[len(KNOWN_COLUMNS) :]]
        writer.writerow([neutralise(c) for c in (*known, *extra)])
        count += 1
    return count
