"""The token in a page's URL: what it names (:func:`read_token`, a :class:`Link`), whether it
is a test send's (:func:`is_test_token`), and the target it leads to in storage
(:func:`linked`), or the page for a link that leads nowhere.

A bad, tampered, foreign, expired or wrong-purpose token, or one naming an erased subscriber,
gets the same generic 404 page; a test send's link gets a page saying so. Nothing here changes
anything, and the token never reaches the logs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from mailer.models import LinkTarget
from mailer.tokens import BadToken, Purpose
from mailer.web.context import PageContext, route_name
from mailer.web.locales import pick_locale

log = logging.getLogger("mailer.web")

MAX_ID = 2**63 - 1  # a list id beyond a BIGINT is no list of ours
MAX_TOKEN = 400  # longer than any token we sign


@dataclass(frozen=True, slots=True)
class Link:
    """What a valid token names: a subscriber's public id and a list (and, for a
    confirmation, the nonce of the sign-up request it was mailed for)."""

    public_id: str
    list_id: int
    nonce: str | None = None
    legacy_id: int | None = None  # a link mailed before public ids: the subscriber's row id


def read_token(web: PageContext, purpose: Purpose, token: str) -> Link | None:
    """The link a token names; None for anything not made by us for this purpose."""
    if len(token) > MAX_TOKEN:
        return None
    max_age = int(web.settings.web.confirm_max_age) if purpose is Purpose.CONFIRM else None
    try:
        payload = web.signer.read(purpose, token, max_age=max_age)
    except (BadToken, ValueError, TypeError, UnicodeError, OverflowError):
        return None
    size = 3 if purpose is Purpose.CONFIRM else 2
    if not isinstance(payload, list) or len(payload) != size:
        return None
    public_id, list_id = payload[0], payload[1]
    if purpose is not Purpose.CONFIRM and _an_id(public_id) and _an_id(list_id):
        # an unsubscribe or preference link mailed before links named public ids (they
        # never expire): the storage honours it only for a subscriber of that time
        return Link("", list_id, legacy_id=public_id)
    if (
        not isinstance(public_id, str)
        or not 0 < len(public_id) <= 32
        or isinstance(list_id, bool)
        or not isinstance(list_id, int)
        or not 0 < list_id <= MAX_ID
    ):
        return None
    nonce = payload[2] if size == 3 else None
    if size == 3 and (not isinstance(nonce, str) or not 0 < len(nonce) <= 32):
        return None
    return Link(public_id, list_id, nonce)


def _an_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def is_test_token(web: PageContext, token: str) -> bool:
    """A link of a test send (``mailer campaign test``): it names nobody."""
    if len(token) > MAX_TOKEN:
        return False
    try:
        payload = web.signer.read(Purpose.TEST, token)
    except (BadToken, ValueError, TypeError, UnicodeError, OverflowError):
        return False
    return isinstance(payload, list) and payload[:1] == ["test"]


async def linked(
    web: PageContext, request: Request, purpose: Purpose
) -> tuple[LinkTarget, Link] | Response:
    """The target of the token in the URL; else the test-message page for a test send's
    link, else the generic invalid-link page. None of these changes anything."""
    token = request.path_params["token"]
    link = read_token(web, purpose, token)
    target = (
        None
        if link is None
        else await web.store.consent.target(link.public_id, link.list_id, legacy_id=link.legacy_id)
    )
    if target is None or link is None:
        lang = pick_locale(request)
        if is_test_token(web, token):
            log.info("%s %s: a test message's link, nothing changed",
                     request.method, route_name(request))  # fmt: skip
            return web.views.message(lang, "test", status=200)
        return web.views.message(lang, "invalid", status=404)
    return target, link
