"""The REST API's people: lists (with their counts), subscribers (search a list's members,
add with a consent record, read, update, unsubscribe, erase); suppressions are in
:mod:`~mailer.web.api.suppressions`. Each write makes the same storage call as the CLI and
the console (so consent events, suppression histories and the webhooks' outbox rows are
recorded the same way) and one audit line (actor ``api:<key name>``). A double opt-in list's
new member gets a pending subscription and a confirmation send, handed to the scheduler like
the sign-up form's.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel

from mailer.addresses import Address, normalize
from mailer.errors import NotFoundError, StateError
from mailer.models import (
    ListSummary,
    OptInMode,
    PublicList,
    Requested,
    Scope,
    SubscriberRow,
    SubscriptionStatus,
)
from mailer.storage.browse import MAX_PAGE, Person
from mailer.web.api import schemas as s
from mailer.web.api.core import Answer, ApiRoute, Call
from mailer.web.api.idempotency import check_if_match, etag_of
from mailer.web.api.paging import (
    PageQuery,
    decode_cursor,
    encode_cursor,
    int_cursor,
    page_answer,
    page_model,
)
from mailer.web.api.problems import Problem, invalid

SOURCE = "api"
PUBLIC_ID_MAX = 64


# --- lists -------------------------------------------------------------------------------------


def _list(summary: ListSummary) -> s.MailingList:
    counts = {st.value: int(summary.counts.get(st.value, 0)) for st in SubscriptionStatus}
    return s.MailingList(
        slug=summary.slug,
        title=summary.title,
        default_locale=summary.default_locale,
        opt_in=OptInMode(summary.opt_in).value,
        counts=s.ListCounts(**counts),
        suppressed=summary.suppressed,
    )


async def lists_index(call: Call) -> Answer:
    query: PageQuery = call.query
    after = decode_cursor(query.cursor)
    found = [x for x in await call.store.browse.lists() if after is None or x.slug > after]
    shown = found[: query.limit]
    following = encode_cursor(shown[-1].slug) if len(found) > query.limit else None
    return page_answer(call.request, s.MailingList, [_list(x) for x in shown], following)


async def list_get(call: Call) -> Answer:
    slug = call.param("slug")
    try:
        found = await call.store.lists.summaries(slug)
    except NotFoundError:
        raise _no_list(slug) from None
    return Answer(_list(found[0]))


def _no_list(slug: str) -> Problem:
    return Problem(404, f"no list is named {slug[:64]!r} (GET /api/v1/lists names them)")


# --- subscribers -------------------------------------------------------------------------------


async def subscribers_search(call: Call) -> Answer:
    """A list's members whose address or name begins with ``q``, newest subscription first."""
    query: s.SearchQuery = call.query
    before = int_cursor(query.cursor)
    members: list[BaseModel] = []
    following = None
    try:
        while len(members) < query.limit:
            want = min(MAX_PAGE, query.limit - len(members))
            page = await call.store.browse.members(
                query.list,
                search=query.q or "",
                before=before,
                limit=want,
                status=None if query.status is None else query.status.value,
            )
            members += [
                s.Member(
                    id=m.public_id,
                    email=m.email,
                    name=m.name,
                    status=m.status,
                    since=m.since,
                    suppressed=m.suppressed,
                )
                for m in page.members
            ]
            before = page.next
            if before is None:
                break
    except NotFoundError:
        raise invalid("query.list", f"no list is named {query.list!r}", status=422) from None
    following = None if before is None else encode_cursor(before)
    return page_answer(call.request, s.Member, members, following)


def _subscriber(person: Person) -> s.Subscriber:
    sup = person.suppression
    return s.Subscriber(
        id=person.public_id,
        email=person.email,
        name=person.name,
        locale=person.locale,
        timezone=person.timezone,
        attributes={k: str(v) for k, v in person.attributes.items()},
        status=person.status,
        created_at=person.created_at,
        subscriptions=[
            s.Subscription(
                list=x.slug,
                status=x.status,
                source=x.source,
                consent_at=x.consent_at,
                confirmed_at=x.confirmed_at,
                unsubscribed_at=x.unsubscribed_at,
                unsubscribe_source=x.unsubscribe_source,
            )
            for x in person.subscriptions
        ],
        suppression=None
        if sup is None
        else s.SuppressionState(reason=sup.reason, detail=sup.detail, since=sup.created_at),
    )


async def _person(call: Call, public_id: str | None = None) -> Person:
    public_id = public_id or call.param("public_id")
    if len(public_id) <= PUBLIC_ID_MAX:
        try:
            return await call.store.browse.person(public_id)
        except NotFoundError:
            pass
    raise Problem(404, "no subscriber has this id (erased, or mistyped)")


def _with_etag(body: s.Subscriber, status: int = 200, **headers: str) -> Answer:
    return Answer(body, status=status, headers={"ETag": etag_of(body), **headers})


async def subscriber_get(call: Call) -> Answer:
    return _with_etag(_subscriber(await _person(call)))


async def subscriber_add(call: Call) -> Answer:
    """Add to a list: at once (single opt-in) or pending their confirmation (double)."""
    given: s.SubscriberIn = call.body
    meta = await call.store.lists.meta(given.list)
    if meta is None:
        raise invalid("list", f"no list is named {given.list!r}")
    address = normalize(given.email)
    if meta.opt_in == OptInMode.DOUBLE:
        what = await _request(call, given, address)
    else:
        row = SubscriberRow(
            line=0,
            email=address.email,
            key=address.key,
            smtputf8=address.smtputf8,
            name=given.name,
            locale=given.locale,
            timezone=given.timezone,
            attributes=given.attributes,
        )
        try:
            what = await call.store.subscribers.add(
                row, slug=given.list, source=SOURCE, now=call.now, force=given.resubscribe
            )
        except StateError as exc:
            raise Problem(409, _api_words(str(exc)), slug="refused") from None
    public_id = await call.store.api_people.public_id(address.key)
    if public_id is None:  # erased meanwhile
        raise Problem(409, "the subscriber was erased meanwhile; try again", slug="refused")
    await call.audit("subscriber.add", f"subscriber {public_id}", {"list": given.list, "did": what})
    body = _subscriber(await _person(call, public_id))
    return _with_etag(body, 201, Location=f"/api/v1/subscribers/{public_id}")


def _api_words(text: str) -> str:
    return text.replace("with --force", 'with "resubscribe": true')


async def _request(call: Call, given: s.SubscriberIn, address: Address) -> str:
    """A double opt-in list: a pending subscription and a confirmation mail (a send the
    scheduler runs), as the sign-up form makes them."""
    info = await call.store.lists.info(given.list)
    web = call.settings.web
    outcome, send_id = await call.store.consent.request(
        PublicList(info.id, info.slug, info.title, info.default_locale),
        address,
        name=given.name or "",
        locale=given.locale or info.default_locale,
        ip=call.client,
        timezone=call.settings.scheduler.timezone,
        now=call.now,
        interval=timedelta(seconds=web.confirm_interval),
        per_day=web.confirm_per_day,
        source="api",
    )
    if outcome is Requested.SUPPRESSED:
        raise Problem(
            409,
            f"{address.email} is suppressed and is never mailed again; it cannot be subscribed",
            slug="suppressed",
        )
    if outcome is Requested.RATE_LIMITED:
        raise Problem(
            429,
            "a confirmation mail went to this address recently; it may ask again later",
            slug="confirmation-rate",
            headers={"Retry-After": "3600"},
        )
    if outcome is Requested.MAIL_QUEUED and send_id is not None and call.ctx.on_send is not None:
        call.ctx.on_send(send_id)
    extra = {
        k: v
        for k, v in (("timezone", given.timezone), ("attributes", given.attributes or None))
        if v is not None
    }
    if extra:
        people = call.store.api_people
        public_id = await people.public_id(address.key)
        stamp = None if public_id is None else await people.stamp(public_id)
        if public_id is not None and stamp is not None:
            await people.update(public_id, extra, expected=stamp, now=call.now)
    return outcome.value


async def subscriber_update(call: Call) -> Answer:
    """Change name, language, time zone or attributes; 412 if If-Match is stale."""
    given: s.SubscriberPatch = call.body
    people = call.store.api_people
    public_id = call.param("public_id")
    stamp = await people.stamp(public_id) if len(public_id) <= PUBLIC_ID_MAX else None
    person = await _person(call)
    if stamp is None:
        raise Problem(404, "no subscriber has this id (erased, or mistyped)")
    check_if_match(call.request, etag_of(_subscriber(person)))
    changes = given.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        changes["name"] = ""
    if changes:
        if not await people.update(public_id, changes, expected=stamp, now=call.now):
            raise Problem(
                412,
                "the subscriber changed while this update was made; read it again and retry",
                slug="stale",
            )
        await call.audit(
            "subscriber.update", f"subscriber {public_id}", {"fields": " ".join(sorted(changes))}
        )
    return _with_etag(_subscriber(await _person(call)))


async def subscriber_unsubscribe(call: Call) -> Answer:
    given: s.UnsubscribeIn = call.body
    person = await _person(call)
    if given.list is not None and given.list not in {x.slug for x in person.subscriptions}:
        raise invalid("list", f"the subscriber is not on the list {given.list!r}")
    try:
        changed = await call.store.subscribers.unsubscribe(
            person.email_key, slug=given.list, source=call.actor, now=call.now
        )
    except NotFoundError:
        raise Problem(404, "no subscriber has this id (erased, or mistyped)") from None
    await call.audit(
        "subscriber.unsubscribe",
        f"subscriber {person.public_id}",
        {"list": given.list or "*", "changed": changed},
    )
    return Answer(s.Unsubscribed(changed=changed))


async def subscriber_erase(call: Call) -> Answer:
    """Erase the subscriber and their history (a suppression of the address stays)."""
    person = await _person(call)
    try:
        await call.store.subscribers.remove(person.email_key, slug=None)
    except NotFoundError:
        raise Problem(404, "no subscriber has this id (erased, or mistyped)") from None
    await call.audit(
        "subscriber.erase",
        f"subscriber {person.public_id}",
        {"lists": len(person.subscriptions), "suppressed": person.suppression is not None},
    )
    return Answer(status=204)


READ, WRITE = Scope.SUBSCRIBERS_READ, Scope.SUBSCRIBERS_WRITE
ROUTES = [
    ApiRoute(
        "GET",
        "/lists",
        lists_index,
        Scope.LISTS_READ,
        "Every list, with its counts",
        query=PageQuery,
        answer=page_model(s.MailingList),
        tag="lists",
    ),
    ApiRoute(
        "GET",
        "/lists/{slug}",
        list_get,
        Scope.LISTS_READ,
        "A list, with its counts",
        answer=s.MailingList,
        tag="lists",
    ),
    ApiRoute(
        "GET",
        "/subscribers",
        subscribers_search,
        READ,
        "Search a list's members",
        query=s.SearchQuery,
        answer=page_model(s.Member),
        tag="subscribers",
    ),
    ApiRoute(
        "POST",
        "/subscribers",
        subscriber_add,
        WRITE,
        "Add a subscriber to a list",
        body=s.SubscriberIn,
        answer=s.Subscriber,
        status=201,
        tag="subscribers",
        etag=True,
        problems=(409,),
        description="A double opt-in list gets a pending subscription and sends the "
        "confirmation mail; a single opt-in list subscribes at once (consent source `api`).",
    ),
    ApiRoute(
        "GET",
        "/subscribers/{public_id}",
        subscriber_get,
        READ,
        "A subscriber",
        answer=s.Subscriber,
        tag="subscribers",
        etag=True,
    ),
    ApiRoute(
        "PATCH",
        "/subscribers/{public_id}",
        subscriber_update,
        WRITE,
        "Change a subscriber's name, language, time zone or attributes",
        body=s.SubscriberPatch,
        answer=s.Subscriber,
        tag="subscribers",
        etag=True,
    ),
    ApiRoute(
        "POST",
        "/subscribers/{public_id}/unsubscribe",
        subscriber_unsubscribe,
        WRITE,
        "Unsubscribe from one list or all",
        body=s.UnsubscribeIn,
        answer=s.Unsubscribed,
        tag="subscribers",
    ),
    ApiRoute(
        "DELETE",
        "/subscribers/{public_id}",
        subscriber_erase,
        WRITE,
        "Erase a subscriber and their history",
        status=204,
        tag="subscribers",
    ),
]
