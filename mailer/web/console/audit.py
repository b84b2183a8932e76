"""Console pages: the audit log, admins only (``/admin/audit``).

Newest first, 50 entries a page, filtered by actor and by action (exact, as recorded), paged
by keyset (``?before=<the last id shown>``, :meth:`store.audit.page
<mailer.storage.audit.Audit.page>`); each entry's time in the console's zone with the zone
named, and the client address it came from. Reads only: the log is append-only.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from mailer.models import Role
from mailer.web.console.context import ConsoleContext, Staffer
from mailer.web.console.guard import ConsoleRoute

PAGE = 50
MAX_ID = 2**63 - 1


def _filter(value: str | None, cut: int) -> str | None:
    text = (value or "").strip()[:cut]
    return text or None


async def audit_page(ctx: ConsoleContext, request: Request, staff: Staffer) -> Response:
    """``GET /admin/audit?actor=&action=&before=``: one page of the log."""
    query = request.query_params
    actor = _filter(query.get("actor"), 320)
    if actor is not None and "@" in actor:  # staff addresses are recorded lower-cased
        actor = actor.lower()
    action = _filter(query.get("action"), 64)
    raw = (query.get("before") or "").strip()
    before: int | None = None
    error = None
    if raw:
        if raw.isascii() and raw.isdigit() and 0 < int(raw) <= MAX_ID:
            before = int(raw)
        else:
            error = ctx.views.say(staff.lang, "audit_bad_before")
    found = await ctx.store.audit.page(before=before, limit=PAGE + 1, actor=actor, action=action)
    entries, more = found[:PAGE], len(found) > PAGE
    kept = {k: v for k, v in (("actor", actor), ("action", action)) if v}
    older = None
    if more:
        older = "/admin/audit?" + urlencode({**kept, "before": entries[-1].id})
    newest = "/admin/audit" + ("?" + urlencode(kept) if kept else "")
    return ctx.views.render(
        "audit.html",
        staff.lang,
        title=ctx.views.say(staff.lang, "audit_title"),
        staff=staff,
        section="audit",
        entries=entries,
        actor=actor or "",
        action=action or "",
        older=older,
        newest=newest if before is not None else None,
        error=error,
        status=400 if error else 200,
    )


ROUTES: list[ConsoleRoute] = [ConsoleRoute("/audit", audit_page, read=Role.ADMIN)]
