"""Console pages about people: the lists with their counts by status, a list's members
(search by address or name prefix, filter by status, keyset pages; the CSV export, editors
and up), and a subscriber's page (their lists, consent history, suppression and its history,
every delivery with its result), found by their public id, never their row id.

What admins do to one subscriber (unsubscribe from one list or all, suppress, unsuppress,
erase) asks for confirmation on a page of its own first, then makes the same storage call as
``mailer subscribers unsubscribe|suppress|unsuppress|remove`` and writes the audit log. An
erasure's audit line names the subscriber's public id, never their address or name (see
:func:`erase`). Reads through ``store.browse``; decides nothing the storage does not.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import IO, Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from mailer import lists as list_files
from mailer.errors import NotFoundError, StateError
from mailer.models import Role, SuppressionReason
from mailer.storage.browse import MEMBER_FILTERS, Person
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, form_of

COUNTS_FRESH = 30.0  # seconds the lists' counts are shown before a new count
MAX_SEARCH = 200
MAX_REASON = 500
PUBLIC_ID_MAX = 64
# The ``?done=`` notices a change redirects to (PRG), each a word of people.toml.
DONE = frozenset(
    {"unsubscribed", "suppressed", "already_suppressed", "unsuppressed", "not_suppressed",
     "erased", "added", "lifted"}
)  # fmt: skip
EXPORT_CHUNK = 64 * 1024
SPOOL = 8 * 1024 * 1024  # an export larger than this goes to a temporary file


# --- shared with the suppressions pages --------------------------------------------------------


def actor_of(staff: Staffer) -> str:
    """Who made a change, for the suppression history and the consent record."""
    return f"console:{staff.user.email}"


def cursor(request: Request, name: str = "before") -> int | None:
    """A keyset cursor from the query string; one that does not parse starts from the top."""
    value = request.query_params.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


def search_of(request: Request) -> str:
    return request.query_params.get("q", "").strip()[:MAX_SEARCH]


def notice_of(ctx: ConsoleContext, staff: Staffer, request: Request) -> str | None:
    """The translated notice of a ``?done=`` redirect (``n``: how many it changed)."""
    done = request.query_params.get("done", "")
    if done not in DONE:
        return None
    count = request.query_params.get("n", "")
    n = (
        ctx.views.number(int(count), staff.lang)
        if count.isascii() and count.isdigit() and len(count) < 10
        else "0"
    )
    return ctx.views.say(staff.lang, f"people_done_{done}", n=n)


def not_found(ctx: ConsoleContext, staff: Staffer, key: str, back: str) -> Response:
    return ctx.views.render(
        "message.html",
        staff.lang,
        title=ctx.views.say(staff.lang, "people_not_found"),
        text=ctx.views.say(staff.lang, key),
        staff=staff,
        back=back,
        status=404,
    )


def reason_of(form: object, field: str = "reason") -> str:
    value = form.get(field)  # type: ignore[attr-defined]
    return value.strip()[:MAX_REASON] if isinstance(value, str) else ""


def kind_of(form: object) -> SuppressionReason | None:
    value = form.get("kind")  # type: ignore[attr-defined]
    try:
        return SuppressionReason(value or SuppressionReason.MANUAL.value)
    except ValueError:
        return None


def query_of(kept: dict[str, str], **extra: int) -> str:
    """A page's query string: the search it keeps, and a cursor."""
    return "?" + urlencode({**kept, **{k: str(v) for k, v in extra.items()}})


def done(path: str, what: str, **extra: int) -> RedirectResponse:
    query = urlencode({"done": what, **{k: str(v) for k, v in extra.items()}})
    return RedirectResponse(f"{path}?{query}", status_code=303)


# --- lists and members ------------------------------------------------------------------------


async def lists_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """Every list with its members by status, and how many subscribed ones are suppressed."""
    # counts over every subscription: read at most every 30 s (at once after a console change)
    found = await ctx.live.get(("lists",), ctx.store.browse.lists, fresh=COUNTS_FRESH)
    return ctx.views.render(
        "lists.html",
        staff.lang,
        title=ctx.views.say(staff.lang, "people_lists_title"),
        staff=staff,
        section="lists",
        lists=found,
        notice=notice_of(ctx, staff, request),
    )


async def list_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """A list's members, newest subscription first, 50 a page."""
    slug = str(request.path_params["slug"])
    q = search_of(request)
    status = request.query_params.get("status") or None
    error = None
    if status is not None and status not in MEMBER_FILTERS:
        error = ctx.views.say(staff.lang, "people_bad_status")
        status = None
    try:
        info = await ctx.store.lists.info(slug)
        page = await ctx.store.browse.members(slug, search=q, status=status, before=cursor(request))
    except NotFoundError:
        return not_found(ctx, staff, "people_no_such_list", "/admin/lists")
    kept = {k: v for k, v in (("q", q), ("status", status or "")) if v}
    following = None if page.next is None else query_of(kept, before=page.next)
    return ctx.views.render(
        "list.html",
        staff.lang,
        title=ctx.views.say(staff.lang, "people_list_title", title=info.title),
        staff=staff,
        section="lists",
        info=info,
        page=page,
        q=q,
        chosen=status or "",
        filters=MEMBER_FILTERS,
        following=following,
        restart=None if cursor(request) is None else query_of(kept),
        error=error,
        status=400 if error else 200,
    )


async def export(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """The subscribed members as CSV, formula-safe: the CLI's ``lists export``, audited."""
    slug = str(request.path_params["slug"])
    if request.method == "HEAD":  # no file made, nothing audited: only a GET exports
        return Response(media_type="text/csv; charset=utf-8")
    spool: IO[str] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by the stream)
        max_size=SPOOL, mode="w+", encoding="utf-8", newline=""
    )
    try:
        rows = await list_files.export_csv(ctx.store, slug, spool)
    except NotFoundError:
        spool.close()
        return not_found(ctx, staff, "people_no_such_list", "/admin/lists")
    except BaseException:
        spool.close()
        raise
    await ctx.audit(staff, request, "list.export", slug, {"rows": rows})
    spool.seek(0)
    return StreamingResponse(
        _chunks(spool),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{slug}.csv"'},
    )


async def _chunks(spool: IO[str]) -> AsyncIterator[bytes]:
    try:
        while chunk := spool.read(EXPORT_CHUNK):
            yield chunk.encode("utf-8")
    finally:
        spool.close()


# --- one subscriber ---------------------------------------------------------------------------


async def _person(ctx: ConsoleContext, request: Request) -> Person | None:
    public_id = str(request.path_params["public_id"])
    if len(public_id) > PUBLIC_ID_MAX:
        return None
    try:
        return await ctx.store.browse.person(public_id)
    except NotFoundError:
        return None


def _home(person: Person) -> str:
    return f"/admin/subscribers/{person.public_id}"


async def subscriber_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """A subscriber: details, lists, suppression, consent history, deliveries (paged)."""
    person = await _person(ctx, request)
    if person is None:
        return not_found(ctx, staff, "people_no_such_subscriber", "/admin/lists")
    before = cursor(request)
    page = await ctx.store.browse.deliveries(person.id, before=before)
    return ctx.views.render(
        "subscriber.html",
        staff.lang,
        title=person.email,
        staff=staff,
        section="lists",
        person=person,
        deliveries=page,
        first=before is None,
        notice=notice_of(ctx, staff, request),
    )


def _confirm(
    ctx: ConsoleContext, staff: Staffer, person: Person, what: str, *, error: str | None = None,
    **values: Any,
) -> Response:  # fmt: skip
    """The confirmation page of one of the subscriber actions (``what``)."""
    lang = staff.lang
    template = "people_suppress.html" if what == "suppress" else "confirm.html"
    return ctx.views.render(
        template,
        lang,
        title=ctx.views.say(lang, f"people_{what}_title"),
        staff=staff,
        section="lists",
        question=ctx.views.say(lang, f"people_{what}_question", email=person.email,
                               list=values.get("list") or ""),
        action=f"{_home(person)}/{what}",
        button=ctx.views.say(lang, f"people_{what}_button"),
        back=_home(person),
        kinds=[k.value for k in SuppressionReason],
        error=error,
        status=400 if error else 200,
        **values,
    )  # fmt: skip


async def unsubscribe(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """Unsubscribe from one list (``list``) or all of them: ``subscribers unsubscribe``."""
    person = await _person(ctx, request)
    if person is None:
        return not_found(ctx, staff, "people_no_such_subscriber", "/admin/lists")
    form = await form_of(request) if request.method == "POST" else None
    raw = (form.get("list") if form is not None else request.query_params.get("list")) or ""
    slug = raw if isinstance(raw, str) and raw else None
    if slug is not None and slug not in {s.slug for s in person.subscriptions}:
        return not_found(ctx, staff, "people_not_on_list", _home(person))
    what = "unsubscribe" if slug is not None else "unsubscribe_all"
    if form is None:
        return _confirm(ctx, staff, person, what, list=slug, fields={"list": slug or ""})
    try:
        changed = await ctx.store.subscribers.unsubscribe(
            person.email_key, slug=slug, source=actor_of(staff), now=ctx.clock()
        )
    except NotFoundError:
        return not_found(ctx, staff, "people_no_such_subscriber", "/admin/lists")
    await ctx.audit(
        staff, request, "subscriber.unsubscribe", person.email,
        {"list": slug or "*", "changed": changed},
    )  # fmt: skip
    return done(_home(person), "unsubscribed", n=changed)


async def suppress(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """Never mail the address again (a kind and a reason): ``subscribers suppress``."""
    person = await _person(ctx, request)
    if person is None:
        return not_found(ctx, staff, "people_no_such_subscriber", "/admin/lists")
    if request.method != "POST":
        return _confirm(ctx, staff, person, "suppress", kind=SuppressionReason.MANUAL.value)
    form = await form_of(request)
    kind, why = kind_of(form), reason_of(form)
    if kind is None or not why:
        key = "people_bad_kind" if kind is None else "people_reason_missing"
        error = ctx.views.say(staff.lang, key)
        return _confirm(ctx, staff, person, "suppress", error=error, kind=kind or "")
    added = await ctx.store.subscribers.suppress(
        person.email_key, reason=kind, detail=why, now=ctx.clock(), actor=actor_of(staff)
    )
    if not added:
        return done(_home(person), "already_suppressed")
    await ctx.audit(
        staff, request, "subscriber.suppress", person.email, {"kind": kind.value, "reason": why}
    )
    return done(_home(person), "suppressed")


async def unsuppress(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """Lift the address's suppression, saying why: ``subscribers unsuppress --reason``."""
    person = await _person(ctx, request)
    if person is None:
        return not_found(ctx, staff, "people_no_such_subscriber", "/admin/lists")
    if request.method != "POST":
        return _confirm(ctx, staff, person, "unsuppress", reason=True)
    why = reason_of(await form_of(request))
    if not why:
        error = ctx.views.say(staff.lang, "people_reason_missing")
        return _confirm(ctx, staff, person, "unsuppress", reason=True, error=error)
    try:
        was = await ctx.store.subscribers.unsuppress(
            person.email_key, why=why, actor=actor_of(staff), now=ctx.clock()
        )
    except StateError:
        return done(_home(person), "not_suppressed")
    await ctx.audit(
        staff, request, "subscriber.unsuppress", person.email, {"reason": why, "was": was}
    )
    return done(_home(person), "unsuppressed")


async def erase(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """Erase the subscriber and all their history: ``subscribers remove`` without ``--list``.

    Storage deletes their row, and with it their subscriptions, consent history and
    deliveries; a suppression of the address stays (it is what keeps the address from ever
    being mailed again), as it does from the CLI. So the audit line keeps no more than that:
    its target is ``subscriber <public id>`` (a random id that nothing names once the row is
    gone), its details how many lists they were on and whether the address stays suppressed;
    never the address or the name.
    """
    person = await _person(ctx, request)
    if person is None:
        return not_found(ctx, staff, "people_no_such_subscriber", "/admin/lists")
    if request.method != "POST":
        return _confirm(ctx, staff, person, "erase")
    try:
        await ctx.store.subscribers.remove(person.email_key, slug=None)
    except NotFoundError:
        return not_found(ctx, staff, "people_no_such_subscriber", "/admin/lists")
    await ctx.audit(
        staff, request, "subscriber.erase", f"subscriber {person.public_id}",
        {"lists": len(person.subscriptions), "suppressed": person.suppression is not None},
    )  # fmt: skip
    return done("/admin/lists", "erased")


ROUTES = [
    ConsoleRoute("/lists", lists_page),
    ConsoleRoute("/lists/{slug}", list_page),
    ConsoleRoute("/lists/{slug}/export.csv", export, read=Role.EDITOR),
    ConsoleRoute("/subscribers/{public_id}", subscriber_page),
    ConsoleRoute("/subscribers/{public_id}/unsubscribe", unsubscribe, Role.ADMIN, Role.ADMIN),
    ConsoleRoute("/subscribers/{public_id}/suppress", suppress, Role.ADMIN, Role.ADMIN),
    ConsoleRoute("/subscribers/{public_id}/unsuppress", unsuppress, Role.ADMIN, Role.ADMIN),
    ConsoleRoute("/subscribers/{public_id}/erase", erase, Role.ADMIN, Role.ADMIN),
]
