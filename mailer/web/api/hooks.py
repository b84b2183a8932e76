"""The REST API's webhook endpoints (``webhooks:manage``): list, add (the signing secret
``whsec_...`` is in the creation's answer only, never shown again), read, change the events,
the description or whether it is enabled, remove, and what was delivered to it
(``store.webhooks.lines``). Each change is written to the audit log by ``store.webhooks``
(actor ``api:<key name>``), never with the secret.

Where an endpoint may point (:func:`check_url`, the daemon's and the CLI's rule from
:mod:`mailer.webhook_urls`): with ``MAILER_WEBHOOKS__ALLOW_PRIVATE=false`` (the default)
only ``https`` to a host whose every address is public, so a key cannot aim the daemon at the
inside of the network. The name is resolved when the endpoint is added: it may resolve
elsewhere later (DNS rebinding), which is why the daemon checks each address again when it
connects.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mailer.errors import NotFoundError
from mailer.models import DEFAULT_EVENTS, Endpoint, EventType, HookStatus, Scope
from mailer.web.api import idempotency
from mailer.web.api.core import Answer, ApiRoute, Call
from mailer.web.api.idempotency import check_if_match, etag_of
from mailer.web.api.paging import PageQuery, encode_cursor, int_cursor, page_answer, page_model
from mailer.web.api.problems import Problem, invalid
from mailer.webhook_urls import MAX_URL, Resolve, TargetError, system_resolve
from mailer.webhook_urls import check_url as check_target

MAX_ID = 2**63 - 1


async def check_url(url: str, *, allow_private: bool, resolve: Resolve) -> str | None:
    """Why an endpoint may not be at ``url`` (None: it may): the daemon's own rule
    (:func:`mailer.webhook_urls.check_url`)."""
    try:
        await check_target(url, allow_private, resolve)
    except TargetError as exc:
        return str(exc)
    return None


# --- the models -----------------------------------------------------------------------------------


def _one_line(value: str) -> str:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError("must be one line of plain text")
    return value.strip()


def _events(value: list[EventType]) -> list[EventType]:
    if not value:
        raise ValueError("name at least one event (or leave the field out for the default)")
    return sorted(set(value))


class Webhook(BaseModel):
    """A webhook endpoint (its secret is only in the answer that created it)."""

    id: int
    url: str
    events: list[EventType]
    description: str
    enabled: bool
    created_by: str
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None = Field(description="The first failure of the current run.")
    failures: int = Field(description="Failed attempts in a row.")


class WebhookCreated(Webhook):
    """A new endpoint, with its signing secret: keep it now, it is never shown again."""

    secret: str = Field(description="`whsec_...`: verify each `webhook-signature` with it.")


class WebhookIn(BaseModel):
    """A new endpoint: where to post, which events (default: all but delivery.sent)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=MAX_URL, description="https://...")
    events: list[EventType] = Field(default_factory=lambda: list(DEFAULT_EVENTS), max_length=20)
    description: str = Field(default="", max_length=200)

    @field_validator("events")
    @classmethod
    def _some(cls, value: list[EventType]) -> list[EventType]:
        return _events(value)

    @field_validator("description")
    @classmethod
    def _line(cls, value: str) -> str:
        return _one_line(value)


class WebhookPatch(BaseModel):
    """What to change (absent: unchanged)."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventType] | None = Field(default=None, max_length=20)
    description: str | None = Field(default=None, max_length=200)
    enabled: bool | None = Field(
        default=None, description="true resumes it with what it missed; false stops posting."
    )

    @field_validator("events")
    @classmethod
    def _some(cls, value: list[EventType] | None) -> list[EventType] | None:
        return None if value is None else _events(value)

    @field_validator("description")
    @classmethod
    def _line(cls, value: str | None) -> str | None:
        return None if value is None else _one_line(value)


class HookDelivery(BaseModel):
    """One event for one endpoint: where it stands, what the last attempt got."""

    id: int
    event_id: str = Field(description="The `webhook-id`, the same on every retry.")
    type: EventType
    status: HookStatus
    attempts: int
    created_at: datetime
    next_at: datetime | None
    last_at: datetime | None
    last_code: int | None
    last_error: str | None


class DeliveriesQuery(PageQuery):
    status: HookStatus | None = None
    type: EventType | None = None


def _webhook(endpoint: Endpoint) -> Webhook:
    return Webhook(
        id=endpoint.id, url=endpoint.url, events=sorted(endpoint.events),
        description=endpoint.description, enabled=endpoint.active,
        created_by=endpoint.created_by, created_at=endpoint.created_at,
        disabled_at=endpoint.disabled_at, disabled_reason=endpoint.disabled_reason,
        failing_since=endpoint.failing_since, failures=endpoint.failures,
    )  # fmt: skip


async def _endpoint(call: Call) -> Endpoint:
    endpoint_id = int(call.param("webhook_id"))
    if endpoint_id <= MAX_ID:
        try:
            return await call.store.webhooks.get(endpoint_id)
        except NotFoundError:
            pass
    raise Problem(404, f"no webhook endpoint {endpoint_id} (GET /api/v1/webhooks lists them)")


def _tagged(webhook: Webhook, status: int = 200, **headers: str) -> Answer:
    return Answer(webhook, status=status, headers={"ETag": etag_of(webhook), **headers})


# --- the routes -----------------------------------------------------------------------------------


async def webhooks_index(call: Call) -> Answer:
    query: PageQuery = call.query
    after = int_cursor(query.cursor)
    found = [e for e in await call.store.webhooks.all() if after is None or e.id > after]
    shown = found[: query.limit]
    following = encode_cursor(shown[-1].id) if len(found) > query.limit else None
    data = [_webhook(e) for e in shown]
    return page_answer(call.request, Webhook, data, following)


async def webhook_add(call: Call) -> Answer:
    """A new endpoint; its secret is in this answer only."""
    given: WebhookIn = call.body
    why = await check_url(
        given.url, allow_private=call.settings.webhooks.allow_private, resolve=system_resolve
    )
    if why is not None:
        raise invalid("url", why)
    added = await call.store.webhooks.add(
        url=given.url, events=given.events, description=given.description, actor=call.actor,
        now=call.now,
    )  # fmt: skip
    body = WebhookCreated(**_webhook(added).model_dump(), secret=added.secret)
    where = {"Location": f"/api/v1/webhooks/{added.id}", idempotency.SECRET: "1"}
    return Answer(body, status=201, headers=where)  # the secret's answer is never kept


async def webhook_get(call: Call) -> Answer:
    return _tagged(_webhook(await _endpoint(call)))


async def webhook_update(call: Call) -> Answer:
    """New events or description; enabled (its missed events due again) or disabled."""
    given: WebhookPatch = call.body
    endpoint = await _endpoint(call)
    check_if_match(call.request, etag_of(_webhook(endpoint)))
    store, now = call.store.webhooks, call.now
    if given.events is not None or given.description is not None:
        endpoint = await store.update(
            endpoint.id, events=given.events, description=given.description, actor=call.actor,
            now=now,
        )  # fmt: skip
    if given.enabled is not None and given.enabled != endpoint.active:
        endpoint = await store.set_enabled(
            endpoint.id, given.enabled, actor=call.actor, now=now,
            reason="" if given.enabled else f"disabled by {call.actor}",
        )  # fmt: skip
    return _tagged(_webhook(endpoint))


async def webhook_remove(call: Call) -> Answer:
    """The endpoint and what it had not received are gone."""
    endpoint = await _endpoint(call)
    check_if_match(call.request, etag_of(_webhook(endpoint)))
    try:
        await call.store.webhooks.remove(endpoint.id, actor=call.actor, now=call.now)
    except NotFoundError:
        raise Problem(404, f"no webhook endpoint {endpoint.id}") from None
    return Answer(status=204)


async def webhook_deliveries(call: Call) -> Answer:
    """The events posted (or to post) to the endpoint, newest first."""
    query: DeliveriesQuery = call.query
    endpoint = await _endpoint(call)
    before = int_cursor(query.cursor)
    found = await call.store.webhooks.lines(
        endpoint_id=endpoint.id, status=query.status, type=query.type, before=before,
        limit=query.limit + 1,
    )  # fmt: skip
    shown = found[: query.limit]
    following = encode_cursor(shown[-1].delivery_id) if len(found) > query.limit else None
    data = [
        HookDelivery(
            id=x.delivery_id,
            event_id=x.event_id,
            type=x.type,
            status=x.status,
            attempts=x.attempts,
            created_at=x.created_at,
            next_at=x.next_at,
            last_at=x.last_at,
            last_code=x.last_code,
            last_error=x.last_error,
        )
        for x in shown
    ]
    return page_answer(call.request, HookDelivery, data, following)


MANAGE = Scope.WEBHOOKS_MANAGE
ONE = "/webhooks/{webhook_id:int}"
ROUTES = [
    ApiRoute("GET", "/webhooks", webhooks_index, MANAGE, "Every webhook endpoint",
             query=PageQuery, answer=page_model(Webhook), tag="webhooks"),
    ApiRoute("POST", "/webhooks", webhook_add, MANAGE, "Add a webhook endpoint",
             body=WebhookIn, answer=WebhookCreated, status=201, tag="webhooks",
             description="The answer holds the endpoint's signing secret (`whsec_...`), "
             "shown this once. The URL must be https to a public address unless "
             "MAILER_WEBHOOKS__ALLOW_PRIVATE is true."),
    ApiRoute("GET", ONE, webhook_get, MANAGE, "A webhook endpoint (without its secret)",
             answer=Webhook, tag="webhooks", etag=True),
    ApiRoute("PATCH", ONE, webhook_update, MANAGE,
             "Change a webhook endpoint's events, description, or enable it",
             body=WebhookPatch, answer=Webhook, tag="webhooks", etag=True),
    ApiRoute("DELETE", ONE, webhook_remove, MANAGE, "Remove a webhook endpoint", status=204,
             tag="webhooks", etag=True),
    ApiRoute("GET", f"{ONE}/deliveries", webhook_deliveries, MANAGE,
             "What was posted to a webhook endpoint", query=DeliveriesQuery,
             answer=page_model(HookDelivery), tag="webhooks"),
]  # fmt: skip
