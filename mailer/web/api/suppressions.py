"""The REST API's suppressions: the addresses never mailed again, whatever their lists say
(list them, add one, lift one). The same storage calls as ``mailer subscribers suppress`` /
``unsuppress`` and the console (the suppression history says who: ``api:<key name>``), and
one audit line each. Reading needs ``subscribers:read``; adding and lifting
``suppressions:write``.
"""

from __future__ import annotations

from pydantic import BaseModel

from mailer.addresses import address_key, normalize
from mailer.errors import StateError
from mailer.models import Scope, SuppressionReason
from mailer.storage.browse import MAX_PAGE
from mailer.storage.browse import Suppression as Suppressed
from mailer.web.api import schemas as s
from mailer.web.api.core import Answer, ApiRoute, Call
from mailer.web.api.paging import encode_cursor, int_cursor, page_answer, page_model
from mailer.web.api.problems import Problem

READ = Scope.SUBSCRIBERS_READ


def _suppression(found: Suppressed) -> s.Suppression:
    return s.Suppression(
        email_key=found.email_key,
        reason=SuppressionReason(found.reason),
        detail=found.detail,
        created_at=found.created_at,
        subscriber=found.public_id,
    )


async def suppressions_index(call: Call) -> Answer:
    query: s.SuppressionQuery = call.query
    before = int_cursor(query.cursor)
    lines: list[BaseModel] = []
    while len(lines) < query.limit:
        page = await call.store.browse.suppressions(
            search=query.q or "", before=before, limit=min(MAX_PAGE, query.limit - len(lines))
        )
        lines += [_suppression(x) for x in page.lines]
        before = page.next
        if before is None:
            break
    return page_answer(
        call.request, s.Suppression, lines, None if before is None else encode_cursor(before)
    )


async def _suppression_of(call: Call, key: str) -> s.Suppression | None:
    page = await call.store.browse.suppressions(search=key, limit=MAX_PAGE)
    return next((_suppression(x) for x in page.lines if x.email_key == key), None)


async def suppression_add(call: Call) -> Answer:
    given: s.SuppressionIn = call.body
    key = normalize(given.email).key
    added = await call.store.subscribers.suppress(
        key, reason=given.reason, detail=given.detail, now=call.now, actor=call.actor
    )
    if added:
        await call.audit(
            "subscriber.suppress", key, {"kind": given.reason.value, "reason": given.detail}
        )
    found = await _suppression_of(call, key)
    if found is None:
        raise Problem(409, "the suppression was lifted meanwhile; try again", slug="refused")
    return Answer(found, status=201 if added else 200)


async def suppression_lift(call: Call) -> Answer:
    given: s.LiftIn = call.body
    key = address_key(call.param("email"))
    try:
        was = await call.store.subscribers.unsuppress(
            key, why=given.reason, actor=call.actor, now=call.now
        )
    except StateError:
        raise Problem(404, f"{key[:320]} is not suppressed; nothing to lift") from None
    await call.audit("subscriber.unsuppress", key, {"reason": given.reason, "was": was})
    return Answer(s.Lifted(email_key=key, was=was))


READ, WRITE = Scope.SUBSCRIBERS_READ, Scope.SUBSCRIBERS_WRITE


ROUTES = [
    ApiRoute(
        "GET",
        "/suppressions",
        suppressions_index,
        READ,
        "The suppressed addresses",
        query=s.SuppressionQuery,
        answer=page_model(s.Suppression),
        tag="suppressions",
    ),
    ApiRoute(
        "POST",
        "/suppressions",
        suppression_add,
        Scope.SUPPRESSIONS_WRITE,
        "Suppress an address",
        body=s.SuppressionIn,
        answer=s.Suppression,
        status=201,
        tag="suppressions",
    ),
    ApiRoute(
        "POST",
        "/suppressions/{email}/lift",
        suppression_lift,
        Scope.SUPPRESSIONS_WRITE,
        "Lift a suppression",
        body=s.LiftIn,
        answer=s.Lifted,
        tag="suppressions",
    ),
]
