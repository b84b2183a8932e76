"""Console pages: importing a CSV file into a list, admins only (``/admin/import``).

The upload is copied in chunks from Starlette's spooled file to
``<MAILER_PATHS__DATA_DIR>/uploads/<random>.csv`` (0600), refused past
``MAILER_CONSOLE__UPLOAD_MAX_BYTES``. A dry run then runs in a background task of this process,
through the CLI's one import (:func:`mailer.lists.import_file`, its ``progress`` the bytes
read); ``/admin/import/{id}`` shows a progress bar (htmx polls ``.../progress`` every second;
without JavaScript the page reloads itself), then the CLI's per-line report
(:func:`mailer.lists.report_lines`) and counts, with *apply* and *cancel*. *Apply* runs the
real import the same way and writes ``list.import`` to the audit log (counts, no address).

An import in progress lives in the memory of this process only (``import_desk``): another
daemon does not see it, a restart forgets it. Its file is deleted once applied or cancelled,
and after a day in any case.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
from pathlib import Path
from typing import IO, Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mailer import lists
from mailer.addresses import check_name
from mailer.errors import AddressError, ListImportError, MailerError
from mailer.models import ListMeta, Role
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, form_of
from mailer.web.console.import_desk import ImportJob, Stage, desk

log = logging.getLogger("mailer.console")

UPLOAD_PATHS: tuple[str, ...] = ("/admin/import",)  # allowed MAILER_CONSOLE__UPLOAD_MAX_BYTES
CHUNK = 1 << 20
MAX_JOBS = 10  # imports checking, awaiting apply or applying at once in this process
SHOWN = 2000  # report lines shown on the page; the command line prints them all
SUFFIXES = (".csv", ".txt", ".tsv")
FIELDS = ("list", "new_slug", "new_title", "new_locale", "prune")  # given back after a mistake
WORKBOOKS = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")  # .xlsx/.ods (zip), .xls (OLE)
UTF16 = (b"\xff\xfe", b"\xfe\xff")
NAME_CUT = re.compile(r"[\x00-\x1f\x7f]")


# --- the upload -----------------------------------------------------------------------------


class _TooLarge(Exception):
    """The upload passed ``MAILER_CONSOLE__UPLOAD_MAX_BYTES``."""


class _Refused(Exception):
    """A mistake in the form: the key of its words, and their values."""

    def __init__(self, key: str, status: int = 400, **values: Any) -> None:
        super().__init__(key)
        self.key, self.status, self.values = key, status, values


def shown_name(filename: str | None) -> str:
    """The uploaded file's own name (no folder, no control character), at most 120 chars."""
    base = NAME_CUT.sub("", (filename or "").replace("\\", "/").rsplit("/", 1)[-1]).strip()
    return base[:120] or "upload.csv"


def _copy(source: IO[bytes], target: Path, limit: int) -> tuple[int, bytes]:
    """Copy ``source`` to a new file ``target`` (0600) in chunks; its size and first bytes.
    Raises :class:`_TooLarge` past ``limit`` bytes (and leaves no file)."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    size, head = 0, b""
    try:
        with os.fdopen(fd, "wb") as out:
            source.seek(0)
            while chunk := source.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    raise _TooLarge
                if len(head) < 4096:
                    head += chunk[: 4096 - len(head)]
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return size, head


def _check_kind(name: str, head: bytes) -> None:
    if not name.lower().endswith(SUFFIXES):
        raise _Refused("import_not_csv", name=name)
    if head.startswith(WORKBOOKS):
        raise _Refused("import_workbook", name=name)
    if b"\x00" in head and not head.startswith(UTF16):  # UTF-16: the import names it
        raise _Refused("import_binary", name=name)


async def _target(ctx: ConsoleContext, form: FormData) -> tuple[ListMeta, bool]:
    """The list the form names: an existing one kept as it is, or a new one; and whether new."""
    chosen = str(form.get("list") or "").strip()
    if chosen:
        meta = await ctx.store.lists.meta(chosen)
        if meta is None:
            raise _Refused("import_unknown_list", slug=chosen[:64])
        return meta, False
    slug = str(form.get("new_slug") or "").strip().lower()
    title = str(form.get("new_title") or "").strip()
    locale = str(form.get("new_locale") or "fr")
    if not slug:
        raise _Refused("import_no_list")
    if not lists.SLUG.match(slug):
        raise _Refused("import_bad_slug", slug=slug[:64])
    if await ctx.store.lists.meta(slug) is not None:
        raise _Refused("import_slug_taken", slug=slug)
    if not title:
        raise _Refused("import_no_title")
    try:
        title = check_name(title[:201], what="title")
    except AddressError:
        raise _Refused("import_bad_title") from None
    if len(title) > 200:
        raise _Refused("import_bad_title")
    return ListMeta(slug=slug, title=title, default_locale=locale if locale == "en" else "fr"), True


async def _receive(ctx: ConsoleContext, form: FormData, staff: Staffer) -> ImportJob:
    """The form's list and file, the file copied to the uploads folder: a new import."""
    meta, new_list = await _target(ctx, form)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise _Refused("import_no_file")
    name = shown_name(upload.filename)
    here = desk(ctx)
    here.sweep()
    active = (Stage.CHECKING, Stage.CHECKED, Stage.APPLYING)
    if sum(job.stage in active for job in here.jobs.values()) >= MAX_JOBS:
        raise _Refused("import_too_many", status=429, count=MAX_JOBS)
    here.sweep()
    job_id = secrets.token_hex(16)
    path = here.folder / f"{job_id}.csv"
    limit = ctx.settings.console.upload_max_bytes
    try:
        await asyncio.to_thread(here.folder.mkdir, mode=0o700, parents=True, exist_ok=True)
        size, head = await asyncio.to_thread(_copy, upload.file, path, limit)
    except _TooLarge:
        shown = size_text(limit, staff.lang)
        raise _Refused("import_too_large", status=413, name=name, limit=shown) from None
    except OSError as exc:
        log.error("console: cannot store the upload in %s: %s", here.folder, exc)
        raise _Refused("import_cannot_store", status=500) from None
    try:
        _check_kind(name, head)
    except _Refused:
        path.unlink(missing_ok=True)
        raise
    return ImportJob(
        id=job_id, path=path, name=name, meta=meta, new_list=new_list,
        prune=form.get("prune") == "yes", size=size, owner=staff.user.email,
        created_at=ctx.clock(),
    )  # fmt: skip


# --- running it -----------------------------------------------------------------------------


def counts(report: lists.ImportReport) -> dict[str, int]:
    """The report's numbers, by name (what the page shows and the audit log keeps)."""
    t = report.tally
    return {
        "rows": report.rows, "added": t.added, "subscribed_existing": t.subscribed_existing,
        "updated": t.updated, "unchanged": t.unchanged, "duplicates": report.duplicate_count,
        "kept_unsubscribed": len(t.kept_unsubscribed), "suppressed": len(t.suppressed),
        "rejected": report.rejected_count, "left_file": len(t.vanished), "pruned": t.pruned,
    }  # fmt: skip


async def _run(
    ctx: ConsoleContext, job: ImportJob, *, dry_run: bool, staff: Staffer, request: Request
) -> None:
    """One pass of the import over the job's file: the dry run, or the real import."""
    job.done = 0
    meta = job.meta
    try:
        if not dry_run:
            stored = await ctx.store.lists.meta(meta.slug)
            if job.new_list and stored is not None:  # created elsewhere since the dry run
                _failed(job, f"{job.name}: the list {meta.slug} was created meanwhile; nothing "
                             "was stored: import the file into it again")  # fmt: skip
                return
            meta = stored or meta  # an existing list as it is now, kept as it is
        report = await lists.import_file(
            ctx.store, job.path, now=ctx.clock(), meta=meta, prune=job.prune,
            progress=job.advance, dry_run=dry_run, source=f"import:{job.name}",
        )  # fmt: skip
    except ListImportError as exc:
        _failed(job, f"{job.name}: {exc.reason}")
        return
    except MailerError as exc:
        _failed(job, str(exc).replace(str(job.path), job.name))
        return
    except Exception:
        log.exception("console: the import of %s into %s failed", job.name, meta.slug)
        _failed(job, None)
        return
    job.report, job.done = report, job.size
    if dry_run:
        job.stage = Stage.CHECKED
        return
    job.stage = Stage.APPLIED
    job.path.unlink(missing_ok=True)
    details: dict[str, Any] = {"file": job.name, "prune": job.prune, "new_list": job.new_list}
    try:
        await ctx.audit(staff, request, "list.import", meta.slug, {**details, **counts(report)})
    except Exception:  # the import is stored; say so in the log, where no one can miss it
        log.exception("console: list.import of %s into %s not written to the audit log",
                      job.name, meta.slug)  # fmt: skip


def _failed(job: ImportJob, reason: str | None) -> None:
    job.stage, job.error = Stage.FAILED, reason
    job.path.unlink(missing_ok=True)


def _start(ctx: ConsoleContext, job: ImportJob, request: Request, staff: Staffer) -> None:
    dry_run = job.stage is Stage.CHECKING
    job.task = asyncio.create_task(
        _run(ctx, job, dry_run=dry_run, staff=staff, request=request),
        name=f"console import {job.id}",
    )


# --- the pages ------------------------------------------------------------------------------


def size_text(size: int, lang: str) -> str:
    """A size in bytes as people read it: ``12,5 Mo``, ``12.5 MB``, ``800 ko``."""
    units = ("o", "ko", "Mo", "Go") if lang == "fr" else ("B", "kB", "MB", "GB")
    value, unit = float(size), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    text = f"{value:.0f}" if unit == 0 or value >= 100 else f"{value:.1f}".removesuffix(".0")
    return (text.replace(".", ",") + "\u202f" if lang == "fr" else text + " ") + units[unit]


async def import_form(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET``: the upload form and the imports this process holds; ``POST``: the upload,
    then its dry run."""
    if request.method != "POST":
        done = request.query_params.get("done")
        notice = None
        if done in ("cancelled", "closed"):
            notice = ctx.views.say(staff.lang, f"import_notice_{done}")
        chosen = request.query_params.get("list", "")
        return await _form_page(ctx, staff, values={"list": chosen}, notice=notice)
    form = await form_of(request)
    try:
        job = await _receive(ctx, form, staff)
    except _Refused as refused:
        await form.close()
        values = {key: str(form.get(key) or "")[:200] for key in FIELDS}
        error = ctx.views.say(staff.lang, refused.key, **refused.values)
        return await _form_page(ctx, staff, values=values, error=error, status=refused.status)
    await form.close()  # Starlette's spooled copy of the upload
    desk(ctx).add(job)
    _start(ctx, job, request, staff)
    return RedirectResponse(f"/admin/import/{job.id}", status_code=303)


async def _form_page(
    ctx: ConsoleContext, staff: Staffer, *, values: dict[str, str], error: str | None = None,
    status: int = 200, notice: str | None = None,
) -> Response:  # fmt: skip
    held = sorted(desk(ctx).jobs.values(), key=lambda job: job.started, reverse=True)
    return ctx.views.render(
        "import.html",
        staff.lang,
        title=ctx.views.say(staff.lang, "import_title"),
        staff=staff,
        section="import",
        lists=await ctx.live.get(("summaries",), ctx.store.lists.summaries, fresh=30.0),
        values=values,
        held=held,
        max_size=size_text(ctx.settings.console.upload_max_bytes, staff.lang),
        error=error,
        notice=notice,
        status=status,
    )


def _job_of(ctx: ConsoleContext, request: Request) -> ImportJob | None:
    return desk(ctx).get(str(request.path_params.get("job", "")))


def _unknown(ctx: ConsoleContext, staff: Staffer) -> Response:
    lang = staff.lang
    return ctx.views.render(
        "message.html", lang, title=ctx.views.say(lang, "import_unknown_title"),
        text=ctx.views.say(lang, "import_unknown_text"), back="/admin/import", staff=staff,
        section="import", status=404,
    )  # fmt: skip


def _job_values(ctx: ConsoleContext, job: ImportJob, lang: str) -> dict[str, Any]:
    values: dict[str, Any] = {"job": job, "size": size_text(job.size, lang),
                              "done_size": size_text(job.done, lang)}  # fmt: skip
    if job.report is not None:
        lines = lists.report_lines(job.report, where=job.name)
        values.update(counts=counts(job.report), lines=lines[:SHOWN], hidden=len(lines) - SHOWN,
                      summary=lists.report_summary(job.report))  # fmt: skip
    return values


async def import_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """One import: its progress, then its report, with apply and cancel."""
    job = _job_of(ctx, request)
    if job is None:
        return _unknown(ctx, staff)
    return _job_page(ctx, staff, job)


def _job_page(
    ctx: ConsoleContext, staff: Staffer, job: ImportJob, *, error: str | None = None,
    status: int = 200,
) -> Response:  # fmt: skip
    lang = staff.lang
    if job.stage is Stage.FAILED:
        reason = job.error or ctx.views.say(lang, "import_unexpected")
        error = ctx.views.say(lang, "import_failed", reason=reason)
    notice = None
    if job.stage is Stage.CHECKED:
        notice = ctx.views.say(lang, "import_notice_checked")
    elif job.stage is Stage.APPLIED:
        notice = ctx.views.say(lang, "import_notice_applied", slug=job.meta.slug)
    return ctx.views.render(
        "import_report.html",
        lang,
        title=ctx.views.say(lang, "import_job_title", name=job.name, slug=job.meta.slug),
        staff=staff,
        section="import",
        error=error,
        notice=notice,
        status=status,
        **_job_values(ctx, job, lang),
    )


async def import_progress(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """The progress bar alone, for htmx; once the pass is over, ``HX-Refresh`` reloads the
    page, which then shows the report."""
    job = _job_of(ctx, request)
    if job is None or not job.running:
        return Response(status_code=200, headers={"HX-Refresh": "true"})
    values = _job_values(ctx, job, staff.lang)
    return ctx.views.render("import_progress.html", staff.lang, title="", staff=staff, **values)


async def import_apply(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``POST``: apply a checked import (its dry run was the confirmation); a second click,
    or a ``GET``, only shows the import."""
    job = _job_of(ctx, request)
    if job is None:
        return _unknown(ctx, staff)
    if request.method == "POST" and job.stage is Stage.CHECKED:
        job.stage = Stage.APPLYING
        _start(ctx, job, request, staff)
    return RedirectResponse(f"/admin/import/{job.id}", status_code=303)


async def import_cancel(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``POST``: forget an import and delete its file (refused while it is being applied)."""
    job = _job_of(ctx, request)
    if job is None:
        return _unknown(ctx, staff)
    if request.method != "POST":
        return RedirectResponse(f"/admin/import/{job.id}", status_code=303)
    if job.stage is Stage.APPLYING:
        error = ctx.views.say(staff.lang, "import_cancel_applying")
        return _job_page(ctx, staff, job, error=error, status=409)
    desk(ctx).drop(job)
    done = "closed" if job.stage is Stage.APPLIED else "cancelled"
    return RedirectResponse(f"/admin/import?done={done}", status_code=303)


ROUTES: list[ConsoleRoute] = [
    ConsoleRoute("/import", import_form, read=Role.ADMIN, write=Role.ADMIN),
    ConsoleRoute("/import/{job:str}", import_page, read=Role.ADMIN),
    ConsoleRoute("/import/{job:str}/progress", import_progress, read=Role.ADMIN),
    ConsoleRoute("/import/{job:str}/apply", import_apply, read=Role.ADMIN, write=Role.ADMIN),
    ConsoleRoute("/import/{job:str}/cancel", import_cancel, read=Role.ADMIN, write=Role.ADMIN),
]
