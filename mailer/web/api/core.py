"""What every REST API route is made of: :class:`ApiRoute` (method, path, scope, models),
:class:`ApiContext` (what the routes share: settings, store, clock, rate limit),
:class:`Call` (what a view is handed: the request, its key, its validated body and query)
and :class:`Answer` (what a view returns), and :func:`endpoint`, which runs one route: the
key and its scope, the rate limit, the body and query read into their models, the
``Idempotency-Key`` of a POST, and every failure answered as a problem, never a traceback.

A view never reads headers for auth, never parses JSON and never builds an error page: it
raises :class:`~mailer.web.api.problems.Problem` and returns an :class:`Answer`.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from mailer.clock import Clock
from mailer.errors import StorageError
from mailer.models import ApiKey, Scope
from mailer.settings import Settings
from mailer.storage import Store
from mailer.web.api import auth, idempotency
from mailer.web.api.problems import (
    NO_STORE,
    Problem,
    field_errors,
    validation_problem,
)
from mailer.web.limits import TooLarge, client_ip

log = logging.getLogger("mailer.web.api")

View = Callable[["Call"], Awaitable["Answer | Response"]]
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODIES = frozenset({"POST", "PUT", "PATCH"})
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One operation of the API, as the app mounts it and the OpenAPI document shows it.

    ``path`` is below ``/api/v1`` (``/subscribers/{public_id}``); ``scope`` is what the key
    needs (None: public, the document and the docs only); ``body``, ``query`` and ``answer``
    are pydantic models (the request body, the query parameters, the 2xx body); ``status``
    the success code; ``etag``: answers carry an ``ETag`` and a write honours ``If-Match``;
    ``media``: the success body's type when it is not JSON (``text/csv``); ``problems``: the
    error codes this operation may answer beyond the ones every operation may.
    """

    method: str
    path: str
    view: View
    scope: Scope | None
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    status: int = 200
    tag: str = ""
    etag: bool = False
    media: str = JSON
    problems: tuple[int, ...] = ()
    description: str = ""

    @property
    def name(self) -> str:
        return getattr(self.view, "__name__", "view").strip("_")


class RateLimit:
    """So many requests per minute per key (a token bucket per key, in this process: with
    several daemons each counts its own, so a key gets up to that many per daemon)."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[int, tuple[float, float]] = {}

    def take(self, key_id: int) -> int | None:
        """None if the key may go on; else the seconds to wait (``Retry-After``)."""
        now = self.clock()
        tokens, since = self._buckets.get(key_id, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - since) * self.refill)
        if tokens >= 1.0:
            self._buckets[key_id] = (tokens - 1.0, now)
            return None
        self._buckets[key_id] = (tokens, now)
        return max(1, math.ceil((1.0 - tokens) / self.refill))


@dataclass
class ApiContext:
    """What every route shares: the settings, the store, the clock, the rate limit, and
    ``on_send`` (how a confirmation send made by a write reaches the daemon's scheduler)."""

    settings: Settings
    store: Store
    clock: Clock
    on_send: Callable[[int], None] | None = None
    rate: RateLimit = field(init=False)

    def __post_init__(self) -> None:
        self.rate = RateLimit(self.settings.api.rate_per_minute)


@dataclass
class Call:
    """One request as a view sees it: checked, parsed, with its key."""

    ctx: ApiContext
    request: Request
    route: ApiRoute
    key: ApiKey | None
    now: datetime
    body: Any = None  # the route's ``body`` model, validated
    query: Any = None  # the route's ``query`` model, validated

    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def actor(self) -> str:
        """Who makes this change, for the audit log and the storage writers."""
        return f"api:{self.key.name}" if self.key is not None else "api"

    @property
    def client(self) -> str:
        return client_ip(self.request)

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])

    async def audit(
        self, action: str, target: str, details: Mapping[str, Any] | None = None
    ) -> None:
        """One line in the audit log for this write (actor ``api:<key name>``)."""
        await self.store.audit.record(
            actor=self.actor,
            action=action,
            target=target,
            details={"via": "api", **(details or {})},
            client=self.client,
            now=self.now,
        )


@dataclass
class Answer:
    """What a view returns: a model (or None: no body), a status, headers."""

    body: BaseModel | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return "" if self.body is None else self.body.model_dump_json()

    def response(self) -> Response:
        headers = {"Cache-Control": NO_STORE, **self.headers}
        if self.body is None:
            return Response(status_code=self.status, headers=headers)
        return Response(self.text(), status_code=self.status, media_type=JSON, headers=headers)


def endpoint(route: ApiRoute, ctx: ApiContext) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint of ``route``: every failure an RFC 9457 problem."""

    async def run(request: Request) -> Response:
        try:
            return await _run(route, ctx, request)
        except Problem as problem:
            return problem.response()
        except TooLarge:
            return Problem(413, _too_large(ctx)).response()
        except ClientDisconnect:
            return Response(status_code=400)  # the client went away: nobody reads this
        except StorageError as exc:
            log.error("%s %s: %s", request.method, route.path, exc)
            return Problem(503, "the database is unavailable; try again later").response()
        except Exception:
            log.exception("%s %s: unexpected error", request.method, route.path)
            return Problem(500, "an unexpected error; it is logged").response()

    run.__name__ = f"api_{route.name}"
    return run


def _too_large(ctx: ApiContext) -> str:
    return f"the body is larger than {ctx.settings.api.max_body} bytes (MAILER_API__MAX_BODY)"


async def _run(route: ApiRoute, ctx: ApiContext, request: Request) -> Response:
    now = ctx.clock()
    key = None
    if route.scope is not None:
        key = await auth.authenticate(ctx.store, request, now)
        auth.require(key, route.scope)
        wait = ctx.rate.take(key.id)
        if wait is not None:
            raise Problem(
                429,
                f"this key made more than {ctx.settings.api.rate_per_minute} requests in a "
                f"minute (MAILER_API__RATE_PER_MINUTE); retry after {wait} s",
                headers={"Retry-After": str(wait)},
            )
    call = Call(ctx, request, route, key, now)
    call.query = _query(route, request)
    raw = await request.body() if request.method in BODIES else b""
    if request.method == "POST" and key is not None and "idempotency-key" in request.headers:
        return await idempotency.run(
            ctx.store, key.id, request, raw, now=now, produce=lambda: _respond(call, raw)
        )
    response = await _respond(call, raw)
    if idempotency.SECRET in response.headers:  # a note for the idempotency layer only
        del response.headers[idempotency.SECRET]
    return response


async def _respond(call: Call, raw: bytes) -> Response:
    try:
        answer = await _answer(call, raw)
    except Problem as problem:
        return problem.response()
    return answer if isinstance(answer, Response) else answer.response()


async def _answer(call: Call, raw: bytes) -> Answer | Response:
    route = call.route
    if route.body is not None:
        call.body = read_body(call.request, route.body, raw)
    return await route.view(call)


def _query(route: ApiRoute, request: Request) -> Any:
    if route.query is None:
        return None
    given: dict[str, Any] = {}
    for name in route.query.model_fields:
        values = request.query_params.getlist(name)
        if values:
            given[name] = values if _is_list(route.query, name) else values[-1]
    try:
        return route.query.model_validate(given)
    except ValidationError as exc:
        raise validation_problem(field_errors(exc.errors(), prefix="query")) from None


def _is_list(model: type[BaseModel], name: str) -> bool:
    annotation = model.model_fields[name].annotation
    return getattr(annotation, "__origin__", None) is list


def read_body(request: Request, model: type[BaseModel], raw: bytes) -> BaseModel:
    """The JSON body read into ``model``: 415 if it is not JSON, 400 if it does not parse,
    422 naming each field refused."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not raw.strip():
        raise Problem(400, "a JSON object is required as the body", slug="body-missing")
    if kind != JSON and not kind.endswith("+json"):
        raise Problem(415, "send the body as application/json", slug="media-type")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Problem(400, "the body is not valid JSON (UTF-8)", slug="bad-json") from None
    if not isinstance(data, dict):
        raise Problem(400, "the body must be a JSON object", slug="bad-json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_problem(field_errors(exc.errors())) from None
    except RecursionError:
        raise Problem(400, "the body is nested too deeply", slug="bad-json") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
