"""Who is calling the REST API: the ``Authorization: Bearer mlr_...`` key, looked up by its
SHA-256 (``store.api_keys.find``: a lookup by hash, so no comparison leaks time), and the
scope a route needs. A missing, malformed, unknown or revoked key is a 401 with
``WWW-Authenticate: Bearer``; a key without the route's scope a 403 naming it."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request

from mailer.models import ApiKey, Scope
from mailer.storage import Store
from mailer.web.api.problems import Problem

MAX_HEADER = 300
REALM = 'Bearer realm="mailer api"'


async def authenticate(store: Store, request: Request, now: datetime) -> ApiKey:
    """The active key of the request, or a 401 problem."""
    header = request.headers.get("authorization", "")
    if not header:
        raise _unauthorized(
            "send an API key as `Authorization: Bearer mlr_...` (see `mailer api-keys create`)",
            REALM,
        )
    scheme, _, raw = header.strip().partition(" ")
    raw = raw.strip()
    if scheme.lower() != "bearer" or not raw or len(header) > MAX_HEADER:
        raise _unauthorized(
            "the Authorization header must be `Bearer mlr_...`",
            REALM + ', error="invalid_request"',
        )
    key = await store.api_keys.find(raw, now=now)
    if key is None:
        raise _unauthorized(
            "this API key is unknown or revoked (see `mailer api-keys list`)",
            REALM + ', error="invalid_token"',
        )
    return key


def require(key: ApiKey, scope: Scope) -> None:
    """A 403 unless ``key`` has ``scope``."""
    if scope not in key.scopes:
        raise Problem(
            403,
            f"this key lacks the scope {scope.value}; create a key with it "
            f"(`mailer api-keys create --scopes {scope.value}`)",
            slug="scope",
            extra={"scope": scope.value},
        )


def _unauthorized(detail: str, challenge: str) -> Problem:
    return Problem(401, detail, slug="unauthorized", headers={"WWW-Authenticate": challenge})
