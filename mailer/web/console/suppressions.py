"""Console pages: the suppressed addresses (search by address prefix, newest first, keyset
pages), and, for admins, adding one and lifting one, each with a reason.

Adding and lifting are the calls of ``mailer subscribers suppress`` and ``unsuppress``
(``store.subscribers``), written to the suppression history with the staff member as actor
and to the audit log (``subscriber.suppress``, ``subscriber.unsuppress``, as from a
subscriber's page: the same act). Lifting asks for confirmation first.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from mailer.addresses import normalize
from mailer.errors import AddressError, NotFoundError, StateError
from mailer.models import Role, SuppressionReason
from mailer.storage.browse import Suppression
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute, form_of
from mailer.web.console.people import (
    actor_of,
    cursor,
    done,
    kind_of,
    not_found,
    notice_of,
    query_of,
    reason_of,
    search_of,
)

HOME = "/admin/suppressions"


async def _page(
    ctx: ConsoleContext, request: Request, staff: Staffer, *, error: str | None = None,
    typed: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    q = search_of(request)
    page = await ctx.store.browse.suppressions(search=q, before=cursor(request))
    kept = {"q": q} if q else {}
    following = None if page.next is None else query_of(kept, before=page.next)
    return ctx.views.render(
        "suppressions.html",
        staff.lang,
        title=ctx.views.say(staff.lang, "people_suppressions_title"),
        staff=staff,
        section="suppressions",
        page=page,
        q=q,
        following=following,
        restart=None if cursor(request) is None else query_of(kept),
        kinds=[k.value for k in SuppressionReason],
        typed=typed or {"kind": SuppressionReason.MANUAL.value},
        notice=notice_of(ctx, staff, request),
        error=error,
        status=400 if error else 200,
    )


async def suppressions_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET``: the page; ``POST`` (admins): suppress an address (``address``, ``kind``,
    ``reason``)."""
    if request.method != "POST":
        return await _page(ctx, request, staff)
    form = await form_of(request)
    raw = form.get("address")
    typed = {"address": raw if isinstance(raw, str) else "", "reason": reason_of(form)}
    kind = kind_of(form)
    typed["kind"] = kind.value if kind else SuppressionReason.MANUAL.value
    lang = staff.lang
    try:
        address = normalize(typed["address"])
    except AddressError as exc:
        error = ctx.views.say(lang, "people_bad_address", detail=str(exc))
        return await _page(ctx, request, staff, error=error, typed=typed)
    if kind is None or not typed["reason"]:
        key = "people_bad_kind" if kind is None else "people_reason_missing"
        return await _page(ctx, request, staff, error=ctx.views.say(lang, key), typed=typed)
    added = await ctx.store.subscribers.suppress(
        address.key, reason=kind, detail=typed["reason"], now=ctx.clock(), actor=actor_of(staff)
    )
    if not added:
        return done(HOME, "already_suppressed")
    await ctx.audit(
        staff, request, "subscriber.suppress", address.email,
        {"kind": kind.value, "reason": typed["reason"]},
    )  # fmt: skip
    return done(HOME, "added")


async def _found(ctx: ConsoleContext, request: Request) -> Suppression | None:
    try:
        return await ctx.store.browse.suppression(int(request.path_params["suppression_id"]))
    except NotFoundError:
        return None


def _confirm(ctx: ConsoleContext, staff: Staffer, found: Suppression, **extra: Any) -> Response:
    lang = staff.lang
    return ctx.views.render(
        "confirm.html",
        lang,
        title=ctx.views.say(lang, "people_lift_title"),
        staff=staff,
        section="suppressions",
        question=ctx.views.say(
            lang, "people_lift_question", email=found.email_key,
            reason=ctx.views.say(lang, f"people_kind_{found.reason}"),
        ),
        action=f"{HOME}/{found.id}/lift",
        button=ctx.views.say(lang, "people_lift_button"),
        back=HOME,
        reason=True,
        **extra,
    )  # fmt: skip


async def lift(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """Lift one suppression, saying why (``GET``: the confirmation page)."""
    found = await _found(ctx, request)
    if found is None:
        return not_found(ctx, staff, "people_no_such_suppression", HOME)
    if request.method != "POST":
        return _confirm(ctx, staff, found)
    why = reason_of(await form_of(request))
    if not why:
        error = ctx.views.say(staff.lang, "people_reason_missing")
        return _confirm(ctx, staff, found, error=error, status=400)
    try:
        was = await ctx.store.subscribers.unsuppress(
            found.email_key, why=why, actor=actor_of(staff), now=ctx.clock()
        )
    except StateError:
        return not_found(ctx, staff, "people_no_such_suppression", HOME)
    await ctx.audit(
        staff, request, "subscriber.unsuppress", found.email_key, {"reason": why, "was": was}
    )
    return done(HOME, "lifted")


ROUTES = [
    ConsoleRoute("/suppressions", suppressions_page, write=Role.ADMIN),
    ConsoleRoute("/suppressions/{suppression_id:int}/lift", lift, Role.ADMIN, Role.ADMIN),
]
