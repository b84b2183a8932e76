"""The JSON columns of campaigns and events, to and from values: a campaign's words per
language (``campaigns.texts``) and an event's details (``events.details``: its words per
language, invitation mode, RSVP, the length of a reminder day, the details before its last
update). Pure: no SQL here; the writers and readers of those tables call it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from mailer.models import Content, EventInfo, EventText, InviteMode, LocaleText


def texts_json(content: Content) -> list[dict[str, str]] | None:
    """``campaigns.texts`` of ``content`` (None: neutral words, as before languages)."""
    if not content.texts:
        return None
    return [
        {"locale": t.locale, "subject": t.subject, "body": t.body, "preheader": t.preheader}
        for t in content.texts
    ]


def texts_of(value: Any) -> tuple[LocaleText, ...]:
    """The languages' words stored in ``campaigns.texts`` (NULL: none)."""
    if not isinstance(value, list):
        return ()
    return tuple(
        LocaleText(
            str(t["locale"]), subject=str(t.get("subject", "")), body=str(t.get("body", "")),
            preheader=str(t.get("preheader", "")),
        )
        for t in value
        if isinstance(t, dict) and t.get("locale")
    )  # fmt: skip


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _plain(event: EventInfo) -> dict[str, Any]:
    """What an update may change, as JSON (the details before it, to say what changed)."""
    return {
        "title": event.title, "start": _when(event.start), "end": _when(event.end),
        "place": event.place, "link": event.link, "description": event.description,
        "texts": [[t.locale, t.title, t.place, t.description] for t in event.texts],
    }  # fmt: skip


def details_json(event: EventInfo, *, previous: EventInfo | None = None) -> dict[str, Any]:
    """``events.details`` of ``event`` (with ``previous``: the details an update replaced)."""
    details: dict[str, Any] = {
        "texts": [[t.locale, t.title, t.place, t.description] for t in event.texts],
        "invite": event.invite,
        "rsvp": event.rsvp,
        "day_seconds": event.day_seconds,
    }
    if previous is not None:
        details["previous"] = _plain(previous)
    return details


def _event_texts(value: Any) -> tuple[EventText, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(
        EventText(str(t[0]), str(t[1]), str(t[2]), str(t[3]))
        for t in value
        if isinstance(t, list) and len(t) == 4
    )


def event_of(row: Any) -> EventInfo:
    """An ``events`` row as an :class:`EventInfo`. A row stored before details (NULL) is sent
    as it was then: published, not an invitation."""
    details = row.details if isinstance(row.details, dict) else None
    event = EventInfo(
        uid=row.uid, title=row.title, start=row.starts_at, end=row.ends_at,
        timezone=row.timezone, place=row.place, link=row.link, description=row.description,
        sequence=row.sequence, status=row.status,
    )  # fmt: skip
    if details is None:
        return replace(event, invite=InviteMode.PUBLISH.value)
    try:
        return _detailed(event, details, row)
    except (KeyError, TypeError, ValueError, OverflowError):
        # details written by hand or by a tool that got them wrong: sent as a published
        # event without the extras, rather than failing every send of the campaign
        return replace(event, invite=InviteMode.PUBLISH.value)


def _detailed(event: EventInfo, details: dict[str, Any], row: Any) -> EventInfo:
    """``event`` with what ``events.details`` adds (ValueError and the like if malformed)."""
    previous = None
    before = details.get("previous")
    if isinstance(before, dict) and before.get("start"):
        end = before.get("end")
        previous = EventInfo(
            uid=row.uid, title=str(before.get("title", "")),
            start=datetime.fromisoformat(before["start"]),
            end=datetime.fromisoformat(end) if end else None, timezone=row.timezone,
            place=str(before.get("place", "")), link=before.get("link"),
            description=str(before.get("description", "")),
            texts=_event_texts(before.get("texts")),
        )  # fmt: skip
    invite = str(details.get("invite", InviteMode.REQUEST.value))
    return replace(
        event,
        texts=_event_texts(details.get("texts")),
        invite=invite if invite in set(InviteMode) else InviteMode.REQUEST.value,
        rsvp=bool(details.get("rsvp", False)),
        day_seconds=int(details.get("day_seconds", 86400)) or 86400,
        previous=previous,
    )
