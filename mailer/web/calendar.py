"""``/e/TOKEN.ics``: an event's calendar file, the ".ics" link of every event mail.

The token names the event's UID and a language (no subscriber: every reader of that language
gets the same link). The file is the event as it stands now, published (no attendee), in that
language; a cancelled event gets a page saying so. Nothing is changed, whatever the method or
body; an unknown or forged token gets the same page as any other invalid link.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from mailer import ics
from mailer.models import EventStatus
from mailer.tokens import BadToken, Purpose
from mailer.web.context import PageContext
from mailer.web.links import MAX_TOKEN
from mailer.web.locales import LOCALES, pick_locale


async def event_calendar(web: PageContext, request: Request) -> Response:
    """The .ics of the event the token names, in the token's language."""
    token = str(request.path_params["token"])
    payload = None
    if len(token) <= MAX_TOKEN:
        try:
            payload = web.signer.read(Purpose.EVENT, token)
        except (BadToken, ValueError, TypeError, UnicodeError, OverflowError):
            payload = None
    valid = (
        isinstance(payload, list)
        and len(payload) == 2
        and all(isinstance(p, str) and 0 < len(p) <= 255 for p in payload)
    )
    found = await web.store.campaigns.calendar(payload[0]) if valid and payload else None
    if found is None or payload is None:
        return web.views.message(pick_locale(request), "invalid", status=404)
    event, name, address = found
    locale = str(payload[1])
    event = event.localized(locale)
    lang = locale if locale in LOCALES else pick_locale(request)
    if event.status == EventStatus.CANCELLED:
        return web.views.message(lang, "event_cancelled", status=410, title=event.title)
    sender = web.settings.sender
    data = ics.prepare(
        event, method="PUBLISH", organizer_name=name or sender.from_name,
        organizer_address=address or sender.from_address, now=web.clock(),
    ).for_attendee("", "")  # fmt: skip
    return Response(
        data,
        media_type="text/calendar; charset=utf-8",
        headers={
            "Content-Disposition": 'attachment; filename="invite.ics"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        },
    )
