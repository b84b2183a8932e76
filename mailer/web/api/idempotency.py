"""``Idempotency-Key`` on a POST: the same key and body get the first answer again for 24 h
(with ``Idempotent-Replayed: true``), the same key with another body (or another path) is a
422, and a second request while the first is still being answered is a 409. Answers of 5xx
are not kept (the client may retry with the same key), nor 412, 415 and 429 (the retry that
fixed what they named is answered anew); the fingerprint covers the method, path, query,
media type, ``If-Match`` and body. An answer holding a secret shown once (a webhook's) is kept
without its body: its replay is a 409 saying so. A request noted as in progress that never
finished (its process killed) is taken over after a minute. Kept per API key by
``store.api_keys.remembered/remember/forget``, so two keys never see each other's answers.

And ``ETag`` / ``If-Match`` for updates: :func:`etag_of` a resource's JSON, :func:`check_if_match`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import datetime

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from mailer.errors import StorageError, StorageUnavailable
from mailer.storage import Store
from mailer.web.api.problems import Problem

MAX_KEY = 255
KEPT_HEADERS = ("content-type", "location", "etag", "link", "cache-control")
REPLAYED = "Idempotent-Replayed"


# Answers not kept: a retry with the same key after fixing what they name must be answered
# anew (a stale If-Match, a wrong media type, a rate limit that has passed), as a 5xx.
NOT_KEPT = frozenset({412, 415, 429})
# An answer whose body must not be kept (it holds a secret shown once): its replay is a 409.
SECRET = "X-Mailer-Secret-Answer"  # noqa: S105 - a header name, not a secret


def _fingerprint(request: Request, raw: bytes) -> str:
    digest = hashlib.sha256()
    for part in (
        request.method, request.url.path, request.url.query,
        request.headers.get("content-type", ""), request.headers.get("if-match", ""),
    ):  # fmt: skip
        digest.update(part.encode("utf-8", "surrogatepass") + b"\0")
    digest.update(raw)
    return digest.hexdigest()


def _check_key(value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_KEY or not value.isascii() or not value.isprintable():
        raise Problem(
            400,
            f"Idempotency-Key must be 1 to {MAX_KEY} printable ASCII characters (a UUID will do)",
            slug="idempotency-key",
        )
    return value


async def run(
    store: Store,
    key_id: int,
    request: Request,
    raw: bytes,
    *,
    now: datetime,
    produce: Callable[[], Awaitable[Response]],
) -> Response:
    """Answer a POST that carries an ``Idempotency-Key``: the kept answer, or ``produce``'s
    (kept unless it is a 5xx)."""
    idem = _check_key(request.headers["idempotency-key"])
    fingerprint = _fingerprint(request, raw)
    try:
        kept = await store.api_keys.remembered(key_id, idem, fingerprint=fingerprint, now=now)
    except StorageUnavailable:
        raise
    except StorageError:
        # Two requests noted the same key at once; the other's insert won (a unique
        # constraint refused ours): look again, it is in progress or answered now.
        kept = await store.api_keys.remembered(key_id, idem, fingerprint=fingerprint, now=now)
    if kept is not None:
        if kept.fingerprint != fingerprint:
            raise Problem(
                422,
                "this Idempotency-Key was used for another request (another body or path); "
                "use a new key for a new request",
                slug="idempotency-key-reused",
            )
        if kept.status == 0:
            raise Problem(
                409,
                "a request with this Idempotency-Key is still being answered; retry shortly",
                slug="idempotency-key-in-progress",
                headers={"Retry-After": "1"},
            )
        if kept.headers.get(SECRET.lower()):
            raise Problem(
                409,
                "this Idempotency-Key already created the resource, whose secret was shown "
                "once, in that first answer; if it was lost, remove the resource and add it "
                f"again ({kept.headers.get('location', '')})",
                slug="idempotency-key-secret-shown",
            )
        return Response(
            kept.body, status_code=kept.status, headers={**kept.headers, REPLAYED: "true"}
        )
    try:
        response = await produce()
        if response.status_code >= 500 or response.status_code in NOT_KEPT:
            await store.api_keys.forget(key_id, idem)
            return response
        secret = SECRET in response.headers
        body = "" if secret else bytes(response.body).decode("utf-8", "replace")
        headers = {k: v for k, v in response.headers.items() if k.lower() in KEPT_HEADERS}
        if secret:
            headers[SECRET.lower()] = "1"
            del response.headers[SECRET]
        await store.api_keys.remember(
            key_id, idem, status=response.status_code, body=body, headers=headers
        )
    except BaseException:
        await store.api_keys.forget(key_id, idem)
        raise
    return response


def etag_of(resource: BaseModel) -> str:
    """A strong ETag of a resource: the SHA-256 of its JSON (any change changes it)."""
    return '"' + hashlib.sha256(resource.model_dump_json().encode()).hexdigest()[:32] + '"'


def check_if_match(request: Request, current: str) -> None:
    """A 412 if the request's ``If-Match`` names none of ``current`` (nor ``*``).

    Without ``If-Match`` the update is accepted (last write wins, as with the CLI); a
    client that wants to detect lost updates sends the ETag it read.
    """
    given = request.headers.get("if-match")
    if given is None:
        return
    tags = [t.strip().removeprefix("W/") for t in given.split(",")]
    if "*" in tags or current in tags:
        return
    raise Problem(
        412,
        "the resource changed since you read it (If-Match names another ETag); read it "
        "again, apply your change to what it is now, and send its new ETag",
        slug="stale",
        headers={"ETag": current},
    )
