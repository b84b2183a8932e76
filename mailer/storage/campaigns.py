"""Campaigns: what staff wrote (content, lists, sender, options) and their event.

Writes ``campaigns``, ``campaign_lists`` and ``events`` (and no other table; its drafts,
approvals and schedules are its part in ``storage.drafts``): a campaign's pause, resume or
cancel moves its sends through ``sends``, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.errors import EVENT_MOVED_MEANWHILE, NotFoundError, StateError
from mailer.lifecycle import EVENT_MOVABLE, CampaignMove, SendMove, campaign_target
from mailer.models import (
    CONFIRM_KIND,
    Campaign,
    CampaignKind,
    CampaignStatus,
    CampaignSummary,
    Content,
    EventInfo,
    EventStatus,
    Newsletter,
    PublicList,
    SendStatus,
)
from mailer.storage import sends as send_writer
from mailer.storage.drafts import (
    _NO_APPROVAL,
    CampaignDrafts,
    content_values,
    list_ids_of,
    not_found,
    put_event,
    set_lists,
)
from mailer.storage.engine import capabilities
from mailer.storage.tables import campaign_lists, campaigns, events, sends
from mailer.storage.words import details_json, event_of, texts_of

_UNSENT = (CampaignStatus.DRAFT, CampaignStatus.SUBMITTED, CampaignStatus.APPROVED)

CONFIRM_TEMPLATE = "confirm"


class Campaigns(CampaignDrafts):
    """The campaigns (``store.campaigns``); their drafts, approvals and schedules are
    :class:`~mailer.storage.drafts.CampaignDrafts`' methods."""

    async def save(
        self,
        content: Content,
        *,
        list_slugs: Sequence[str],
        sender_name: str | None,
        sender_address: str | None,
        event: EventInfo | None,
        now: datetime,
        options: dict[str, Any] | None = None,
        spec: dict[str, Any] | None = None,
        approved_by: str | None = "cli",
        snapshot: dict[str, Any] | None = None,
    ) -> int:
        """Create or update a campaign by name (``campaign create`` of a file); return its
        id. Its version grows by one. With ``approved_by`` (the operator's approval, by
        default "cli") the approval is recorded with ``snapshot`` and a campaign not yet
        sending is scheduled, as before approvals; without, it is a draft, unapproved."""
        async with self._db.begin(write=True) as conn:
            list_ids = await list_ids_of(conn, list_slugs, campaign=content.name)
            values = content_values(content, sender_name, sender_address, options, now=now)
            values.update(spec=spec, updated_by=approved_by)
            if approved_by is None:
                values.update(_NO_APPROVAL, status=CampaignStatus.DRAFT.value)
            else:
                values.update(
                    approved_by=approved_by, approved_at=now, approval=snapshot, contributors=None
                )
            existing = (
                await conn.execute(
                    select(campaigns.c.id, campaigns.c.status).where(
                        campaigns.c.name == content.name
                    )
                )
            ).one_or_none()
            if existing is None:
                values.setdefault("status", CampaignStatus.SCHEDULED.value)
                result = await conn.execute(
                    campaigns.insert().values(
                        name=content.name, created_at=now, version=1, **values
                    )
                )
                campaign_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            else:
                campaign_id = int(existing.id)
                if approved_by is not None and existing.status in _UNSENT:
                    values["status"] = CampaignStatus.SCHEDULED.value
                await conn.execute(
                    update(campaigns)
                    .where(campaigns.c.id == campaign_id)
                    .values(version=campaigns.c.version + 1, **values)
                )
            await set_lists(conn, campaign_id, list_ids)
            if event is not None:
                await put_event(conn, campaign_id, event, replace_details=False, now=now)
            return campaign_id

    async def get(self, name: str) -> Campaign:
        async with self._db.begin() as conn:
            row = (
                (await conn.execute(select(campaigns).where(campaigns.c.name == name)))
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise await not_found(conn, name)
            return Campaign(
                id=row["id"], name=row["name"], kind=row["kind"], status=row["status"],
                template=row["template"], subject=row["subject"], body=row["body"],
                body_format=row["body_format"], sender_name=row["sender_name"],
                sender_address=row["sender_address"], timezone=row["timezone"],
                options=dict(row["options"] or {}), texts=texts_of(row["texts"]),
            )  # fmt: skip

    async def summaries(self) -> list[CampaignSummary]:
        """Every campaign with its next scheduled send, by name."""
        async with self._db.begin() as conn:
            next_due = (
                select(sends.c.campaign_id, func.min(sends.c.due_at).label("next_due"))
                .where(sends.c.status == SendStatus.SCHEDULED)
                .group_by(sends.c.campaign_id)
                .subquery()
            )
            rows = await conn.execute(
                select(campaigns.c.name, campaigns.c.kind, campaigns.c.status, next_due.c.next_due)
                .outerjoin(next_due, next_due.c.campaign_id == campaigns.c.id)
                .order_by(campaigns.c.name)
            )
            return [CampaignSummary(**r) for r in rows.mappings().all()]

    async def pause(self, campaign_id: int, *, now: datetime) -> int:
        """Pause every send that has not ended; return how many."""
        async with self._db.begin(write=True) as conn:
            paused = await send_writer.move_of_campaign(
                conn, campaign_id, SendMove.PAUSE, now=now, reason="campaign paused"
            )
            await _set_status(conn, campaign_id, CampaignMove.PAUSE, now=now)
            return len(paused)

    async def resume(self, campaign_id: int, *, now: datetime) -> int:
        """Paused sends go back: scheduled if they never started, running if they had."""
        async with self._db.begin(write=True) as conn:
            resumed = 0
            for started, move in ((True, SendMove.RESUME), (False, SendMove.RESUME_UNSTARTED)):
                resumed += len(
                    await send_writer.move_of_campaign(
                        conn, campaign_id, move, now=now, reason=None, started=started
                    )
                )
            await _set_status(conn, campaign_id, CampaignMove.RESUME, now=now)
            return resumed

    async def cancel_sends(
        self, campaign_id: int, *, now: datetime, reason: str, action: str | None = None
    ) -> int:
        """Cancel the sends that have not ended (only reminders, say, with ``action``); without
        ``action``, the campaign itself is cancelled too."""
        async with self._db.begin(write=True) as conn:
            cancelled = await send_writer.move_of_campaign(
                conn, campaign_id, SendMove.CANCEL, now=now, reason=reason, action=action
            )
            if action is None:
                await _set_status(conn, campaign_id, CampaignMove.CANCEL, now=now)
            return len(cancelled)

    async def update_event(
        self,
        campaign_id: int,
        event: EventInfo,
        *,
        status: EventStatus,
        now: datetime,
        expected_sequence: int | None = None,
        spec_event: Mapping[str, Any] | None = None,
        spec_words: Mapping[str, Mapping[str, str]] | None = None,
    ) -> int:
        """New details for an event; SEQUENCE grows by one, the details it replaces are kept
        (the update mail says what changed). Returns the new sequence.

        A move (``expected_sequence`` given: the sequence the caller planned from) is
        refused with StateError, nothing written, when someone moved the event since or
        the campaign is not scheduled (a draft, or cancelled: nobody is to be told). With
        ``spec_event`` (and ``spec_words``, per language) the campaign's stored spec says
        the same afterwards, in the same transaction, so the edit form, the download and a
        later schedule start from the moved event."""
        async with self._db.begin(write=True) as conn:
            row = (
                await conn.execute(select(events).where(events.c.campaign_id == campaign_id))
            ).one_or_none()
            if row is None:
                raise NotFoundError("this campaign has no event")
            if expected_sequence is not None:
                await _check_movable(conn, campaign_id, int(row.sequence), expected_sequence)
            before = event_of(row)
            sequence = int(row.sequence) + 1
            result = await conn.execute(
                update(events)
                .where(events.c.campaign_id == campaign_id, events.c.sequence == row.sequence)
                .values(
                    title=event.title, starts_at=event.start, ends_at=event.end,
                    timezone=event.timezone, place=event.place, link=event.link,
                    description=event.description, sequence=sequence, status=status.value,
                    details=details_json(
                        replace(event, day_seconds=before.day_seconds), previous=before
                    ),
                    updated_at=now,
                )
            )  # fmt: skip
            if result.rowcount != 1:  # another move won the row meanwhile
                raise StateError(EVENT_MOVED_MEANWHILE)
            if spec_event is not None:
                await _patch_spec(conn, campaign_id, spec_event, spec_words or {})
            return sequence

    async def event(self, campaign_id: int) -> EventInfo | None:
        """The campaign's event as it stands (None if it has none)."""
        async with self._db.begin() as conn:
            row = (
                await conn.execute(select(events).where(events.c.campaign_id == campaign_id))
            ).one_or_none()
        return None if row is None else event_of(row)

    async def calendar(self, uid: str) -> tuple[EventInfo, str | None, str | None] | None:
        """The event of UID ``uid`` as it stands, with its campaign's sender name and
        address (None: the configured ones); None if there is no such event."""
        async with self._db.begin() as conn:
            row = (
                await conn.execute(
                    select(events, campaigns.c.sender_name, campaigns.c.sender_address)
                    .join(campaigns, campaigns.c.id == events.c.campaign_id)
                    .where(events.c.uid == uid)
                )
            ).one_or_none()
        return None if row is None else (event_of(row), row.sender_name, row.sender_address)

    async def newsletters(self) -> list[Newsletter]:
        """Active recurring newsletters with their cron, zone and end."""
        async with self._db.begin() as conn:
            rows = await conn.execute(
                select(
                    campaigns.c.id, campaigns.c.name, campaigns.c.timezone, campaigns.c.options
                ).where(
                    campaigns.c.kind == CampaignKind.NEWSLETTER,
                    campaigns.c.status == CampaignStatus.SCHEDULED,
                )
            )
            out = []
            for row in rows.all():
                options = row.options or {}
                if "cron" not in options:
                    continue
                until = options.get("until")
                out.append(
                    Newsletter(
                        id=row.id,
                        name=row.name,
                        cron=options["cron"],
                        zone=ZoneInfo(row.timezone),
                        until=datetime.fromisoformat(until) if until else None,
                    )
                )
            return out


async def _set_status(
    conn: AsyncConnection, campaign_id: int, move: CampaignMove, *, now: datetime
) -> None:
    await conn.execute(
        update(campaigns)
        .where(campaigns.c.id == campaign_id)
        .values(status=campaign_target(move).value, updated_at=now)
    )


# --- writers inside the caller's transaction -------------------------------------------------


async def confirm_campaign(
    conn: AsyncConnection, public: PublicList, *, timezone: str, now: datetime
) -> int:
    """The system campaign that carries a list's confirmation mails, made on first use (by
    the first of sign-ups made at once: the others wait for it and take it)."""
    name = f"confirm:{public.slug}"
    found = (await conn.execute(select(campaigns.c.id).where(campaigns.c.name == name))).scalar()
    if found is not None:
        return int(found)
    made = await conn.execute(
        capabilities(conn.dialect).insert(campaigns).values(
            name=name, kind=CONFIRM_KIND, status=CampaignStatus.SCHEDULED.value,
            template=CONFIRM_TEMPLATE, subject="", body="", body_format="markdown",
            sender_name=None, sender_address=None, timezone=timezone, options={},
            created_at=now, updated_at=now, approved_by="system", approved_at=now,
        ).on_conflict_do_nothing(index_elements=["name"]).returning(campaigns.c.id)
    )  # fmt: skip
    campaign_id = made.scalar()
    if campaign_id is None:  # another sign-up made it meanwhile and committed
        return int(
            (
                await conn.execute(select(campaigns.c.id).where(campaigns.c.name == name))
            ).scalar_one()
        )
    await conn.execute(insert(campaign_lists).values(campaign_id=campaign_id, list_id=public.id))
    return int(campaign_id)


async def _check_movable(
    conn: AsyncConnection, campaign_id: int, sequence: int, expected: int
) -> None:
    """StateError unless the event is still at ``expected`` and its campaign is scheduled."""
    if sequence != expected:
        raise StateError(EVENT_MOVED_MEANWHILE)
    status = (
        await conn.execute(select(campaigns.c.status).where(campaigns.c.id == campaign_id))
    ).scalar_one()
    if CampaignStatus(status) not in EVENT_MOVABLE:
        raise StateError(f"the campaign is {status}: its event cannot be moved")


async def _patch_spec(
    conn: AsyncConnection,
    campaign_id: int,
    spec_event: Mapping[str, Any],
    spec_words: Mapping[str, Mapping[str, str]],
) -> None:
    """The stored spec's event (and its per-language words) as moved; a campaign stored
    without a spec (before migration 0007) keeps none."""
    spec = (
        await conn.execute(select(campaigns.c.spec).where(campaigns.c.id == campaign_id))
    ).scalar_one()
    if not isinstance(spec, dict):
        return
    patched = {**spec, "event": {**(spec.get("event") or {}), **spec_event}}
    content = patched.get("content")
    if isinstance(content, dict):
        patched["content"] = {
            locale: (
                {**words, "event": {**(words.get("event") or {}), **spec_words[locale]}}
                if locale in spec_words and isinstance(words, dict) else words
            )
            for locale, words in content.items()
        }  # fmt: skip
    await conn.execute(update(campaigns).where(campaigns.c.id == campaign_id).values(spec=patched))
