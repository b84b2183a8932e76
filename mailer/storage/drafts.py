"""A campaign's writing, approval and schedule: ``store.campaigns``' drafts, submissions,
approvals and schedules (:class:`CampaignDrafts`, which :class:`~mailer.storage.campaigns.
Campaigns` extends).

Writes ``campaigns``, ``campaign_lists`` and ``events`` as ``storage.campaigns`` does (this
module is its part for approvals), and a schedule's sends through ``sends``, in the same
transaction. Every change is conditional on the version the caller read (``StaleEdit`` when
someone saved since: "changed by X at T") and on the statuses of ``mailer.lifecycle``
(``StateError`` in its words). THE GATE lives in ``sends``: nothing of a campaign whose
``approved_at`` is NULL, or that is not scheduled since its approval, is scheduled or
claimed; every save of a draft clears the approval.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from mailer.errors import NotFoundError, StaleEdit, StateError
from mailer.lifecycle import (
    CampaignMove,
    campaign_sources,
    campaign_target,
    check_campaign,
    check_schedule,
    schedule_sources,
)
from mailer.models import (
    CONFIRM_KIND,
    CampaignListing,
    CampaignRecord,
    CampaignStatus,
    Content,
    EventInfo,
    EventStatus,
    PlannedSend,
    ScheduleResult,
    SendStatus,
)
from mailer.storage import sends as send_writer
from mailer.storage.database import Database
from mailer.storage.tables import campaign_lists, campaigns, deliveries, events, lists, sends
from mailer.storage.words import details_json, texts_json

# What no longer holds once a campaign is edited: its submission and its approval.
_NO_APPROVAL: dict[str, Any] = {
    "submitted_by": None, "submitted_at": None, "approved_by": None, "approved_at": None,
    "approval": None,
}  # fmt: skip
_STARTED_SENDS = (SendStatus.RUNNING, SendStatus.PAUSED, SendStatus.DONE)


class CampaignDrafts:
    """The console's part of ``store.campaigns``: records, drafts, approvals, schedules."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, name: str) -> CampaignRecord:
        """The campaign called ``name`` with its spec, version and approval; NotFoundError
        naming the known ones."""
        async with self._db.begin() as conn:
            found = await _record(conn, campaigns.c.name == name)
            if found is None:
                raise await not_found(conn, name)
            return found

    async def listing(
        self, *, kind: str | None = None, status: str | None = None
    ) -> list[CampaignListing]:
        """Staff's campaigns (the system's confirmation campaigns left out), by name, with
        their next scheduled send and how many sends they have."""
        next_due = (
            select(
                sends.c.campaign_id,
                func.min(sends.c.due_at).filter(sends.c.status == SendStatus.SCHEDULED)
                .label("next_due"),
                func.count().label("sends"),
            )
            .group_by(sends.c.campaign_id)
            .subquery()
        )  # fmt: skip
        query = (
            select(
                campaigns.c.name, campaigns.c.kind, campaigns.c.status, campaigns.c.version,
                campaigns.c.updated_by, campaigns.c.updated_at, next_due.c.next_due,
                func.coalesce(next_due.c.sends, 0).label("sends"),
            )
            .outerjoin(next_due, next_due.c.campaign_id == campaigns.c.id)
            .where(campaigns.c.kind != CONFIRM_KIND)
            .order_by(campaigns.c.name)
        )  # fmt: skip
        if kind is not None:
            query = query.where(campaigns.c.kind == kind)
        if status is not None:
            query = query.where(campaigns.c.status == status)
        async with self._db.begin() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [CampaignListing(**r) for r in rows]

    async def save_draft(
        self,
        content: Content,
        *,
        spec: dict[str, Any],
        list_slugs: Sequence[str],
        sender_name: str | None,
        sender_address: str | None,
        options: dict[str, Any],
        expected_version: int | None,
        actor: str,
        now: datetime,
    ) -> CampaignRecord:
        """Create (``expected_version`` None) or update a draft; it is a draft afterwards,
        its version one more, its submission and approval gone (its sends, if scheduled,
        wait for a new approval). Refused: a name taken (create), a version someone saved
        since (StaleEdit), a campaign whose sending started, an unknown list."""
        async with self._db.begin(write=True) as conn:
            list_ids = await list_ids_of(conn, list_slugs, campaign=content.name)
            values = {
                **content_values(content, sender_name, sender_address, options, now=now),
                **_NO_APPROVAL,
                "spec": spec, "status": CampaignStatus.DRAFT.value, "updated_by": actor,
            }  # fmt: skip
            if expected_version is None:
                values["contributors"] = [actor]
                campaign_id = await _create(conn, self._db, content.name, values, now=now)
            else:
                campaign_id = await _update_draft(conn, content.name, expected_version, values)
            await set_lists(conn, campaign_id, list_ids)
            found = await _record(conn, campaigns.c.id == campaign_id)
            assert found is not None
            return found

    async def submit(self, campaign_id: int, *, version: int, actor: str, now: datetime) -> None:
        """draft -> submitted, by ``actor``: an editor asks for approval."""
        async with self._db.begin(write=True) as conn:
            await _move(
                conn, campaign_id, CampaignMove.SUBMIT, version=version,
                values={"submitted_by": actor, "submitted_at": now},
            )  # fmt: skip

    async def approve(
        self,
        campaign_id: int,
        *,
        version: int,
        snapshot: dict[str, Any],
        actor: str,
        now: datetime,
    ) -> None:
        """submitted -> approved, by ``actor``, freezing ``snapshot``: its sends may go."""
        async with self._db.begin(write=True) as conn:
            await _move(
                conn, campaign_id, CampaignMove.APPROVE, version=version,
                values={"approved_by": actor, "approved_at": now, "approval": snapshot,
                        "contributors": None},  # who writes after this counts for the next
            )  # fmt: skip

    async def send_back(self, campaign_id: int, *, version: int, actor: str, now: datetime) -> None:
        """submitted or approved -> draft: returned to its editor (``actor`` goes to the
        audit log, which the caller writes); the submission and approval are gone."""
        async with self._db.begin(write=True) as conn:
            await _move(conn, campaign_id, CampaignMove.RETURN, version=version,
                        values=dict(_NO_APPROVAL))  # fmt: skip

    async def schedule(
        self,
        campaign_id: int,
        *,
        version: int,
        planned: Sequence[PlannedSend],
        event: EventInfo | None,
        options: dict[str, Any],
        approved_by: str | None,
        snapshot: dict[str, Any] | None,
        now: datetime,
    ) -> ScheduleResult:
        """Plan the campaign's sends in ONE transaction; status scheduled.

        With ``approved_by`` the schedule records the approval itself (``campaign create``
        of a file; a console where approval is not required), from draft, submitted,
        approved or scheduled; otherwise the campaign must be approved at ``version``.
        The event is stored, or its details replaced in place (SEQUENCE unchanged) while
        nothing of the campaign was sent. Per planned key: a scheduled send moves to the
        new time, an ended one stays, a missing one is made; a scheduled send no longer
        planned is cancelled ("the campaign changed"). Once a send of the campaign started,
        only missing sends are made (its changes go through ``event update``)."""
        values: dict[str, Any] = {
            "status": CampaignStatus.SCHEDULED.value, "options": options, "updated_at": now,
        }  # fmt: skip
        if approved_by is not None:
            values.update(
                approved_by=approved_by, approved_at=now, approval=snapshot, contributors=None
            )
        async with self._db.begin(write=True) as conn:
            started = bool((await conn.execute(select(started_clause(campaign_id)))).scalar())
            sources = schedule_sources(self_approved=approved_by is not None)
            where = [campaigns.c.status.in_(sources)]
            if approved_by is None:
                where.append(campaigns.c.approved_at.is_not(None))
            moved = await conn.execute(
                update(campaigns)
                .where(campaigns.c.id == campaign_id, campaigns.c.version == version, *where)
                .values(**values)
            )
            if not moved.rowcount:
                await _refusal(conn, campaign_id, version, CampaignMove.SCHEDULE,
                               self_approved=approved_by is not None)  # fmt: skip
            if event is not None:
                await put_event(conn, campaign_id, event, replace_details=not started, now=now)
            created, due_moved, dropped = await send_writer.plan_of_campaign(
                conn, campaign_id, planned, now=now, reason="the campaign changed",
                only_missing=started,
            )  # fmt: skip
            return ScheduleResult(created=created, moved=due_moved, dropped=dropped)


# --- inside the caller's transaction (storage.campaigns uses these too) ------------------------


def content_values(
    content: Content,
    sender_name: str | None,
    sender_address: str | None,
    options: dict[str, Any] | None,
    *,
    now: datetime,
) -> dict[str, Any]:
    """The columns of a campaign that its content sets."""
    return {
        "kind": content.kind, "template": content.template_name, "subject": content.subject,
        "body": content.body, "body_format": content.body_format, "timezone": content.timezone,
        "sender_name": sender_name, "sender_address": sender_address, "options": options or {},
        "texts": texts_json(content), "updated_at": now,
    }  # fmt: skip


async def list_ids_of(conn: AsyncConnection, slugs: Sequence[str], *, campaign: str) -> list[int]:
    """The ids of the lists ``slugs``; NotFoundError naming the first unknown one."""
    list_ids = []
    for slug in slugs:
        found = (await conn.execute(select(lists.c.id).where(lists.c.slug == slug))).scalar()
        if found is None:
            raise NotFoundError(f"unknown list {slug!r} in campaign {campaign!r}")
        list_ids.append(int(found))
    return list_ids


async def set_lists(conn: AsyncConnection, campaign_id: int, list_ids: Sequence[int]) -> None:
    await conn.execute(delete(campaign_lists).where(campaign_lists.c.campaign_id == campaign_id))
    if list_ids:
        await conn.execute(
            campaign_lists.insert(),
            [{"campaign_id": campaign_id, "list_id": list_id} for list_id in list_ids],
        )


async def put_event(
    conn: AsyncConnection,
    campaign_id: int,
    event: EventInfo,
    *,
    replace_details: bool,
    now: datetime,
) -> None:
    """A campaign's event: inserted the first time; otherwise, with ``replace_details``,
    its details replaced in place (uid, SEQUENCE and status kept: nobody got it yet), else
    left as it is (its changes go through ``Campaigns.update_event``, which counts the
    SEQUENCE)."""
    found = (
        await conn.execute(select(events.c.id).where(events.c.campaign_id == campaign_id))
    ).scalar()
    details = {
        "title": event.title, "starts_at": event.start, "ends_at": event.end,
        "timezone": event.timezone, "place": event.place, "link": event.link,
        "description": event.description, "details": details_json(event), "updated_at": now,
    }  # fmt: skip
    if found is None:
        await conn.execute(
            events.insert().values(
                campaign_id=campaign_id, sequence=event.sequence, uid=event.uid,
                status=EventStatus.CONFIRMED.value, created_at=now, **details,
            )
        )  # fmt: skip
    elif replace_details:
        await conn.execute(update(events).where(events.c.id == found).values(**details))


def started_clause(campaign_id: int | ColumnElement[Any]) -> ColumnElement[bool]:
    """True when a send of the campaign started: running, paused or done, started once, or
    with deliveries (an edit is refused from then on)."""
    of_campaign = sends.c.campaign_id == campaign_id
    return or_(
        exists().where(
            of_campaign,
            or_(sends.c.status.in_(_STARTED_SENDS), sends.c.started_at.is_not(None)),
        ),
        exists().where(deliveries.c.send_id == sends.c.id, of_campaign),
    )


async def not_found(conn: AsyncConnection, name: str) -> NotFoundError:
    """The error for an unknown campaign name, naming the known ones."""
    known = (
        (await conn.execute(select(campaigns.c.name).order_by(campaigns.c.name))).scalars().all()
    )
    hint = f"; known: {', '.join(known)}" if known else "; none is stored yet"
    return NotFoundError(f"no campaign named {name!r}{hint}")


async def _record(conn: AsyncConnection, where: ColumnElement[bool]) -> CampaignRecord | None:
    row = (
        (
            await conn.execute(
                select(campaigns, started_clause(campaigns.c.id).label("started")).where(where)
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        return None
    slugs = (
        await conn.execute(
            select(lists.c.slug)
            .join(campaign_lists, campaign_lists.c.list_id == lists.c.id)
            .where(campaign_lists.c.campaign_id == row["id"])
            .order_by(lists.c.slug)
        )
    ).scalars()
    return CampaignRecord(
        id=row["id"], name=row["name"], kind=row["kind"], status=row["status"],
        spec=row["spec"], version=row["version"], lists=tuple(slugs), template=row["template"],
        timezone=row["timezone"], created_at=row["created_at"], updated_at=row["updated_at"],
        updated_by=row["updated_by"], submitted_by=row["submitted_by"],
        submitted_at=row["submitted_at"], approved_by=row["approved_by"],
        approved_at=row["approved_at"], approval=row["approval"], started=bool(row["started"]),
        contributors=tuple(row["contributors"] or ()),
    )  # fmt: skip


async def _create(
    conn: AsyncConnection, db: Database, name: str, values: dict[str, Any], *, now: datetime
) -> int:
    """A new campaign called ``name`` (version 1); StateError if the name is taken (by a
    campaign stored before, or one made meanwhile by someone else)."""
    result = await conn.execute(
        db.insert(campaigns)
        .values(name=name, created_at=now, version=1, **values)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(campaigns.c.id)
    )
    campaign_id = result.scalar()
    if campaign_id is None:
        raise StateError(f"a campaign named {name} exists; choose another name or edit it")
    return int(campaign_id)


async def _update_draft(
    conn: AsyncConnection, name: str, expected_version: int, values: dict[str, Any]
) -> int:
    """The stored campaign ``name`` at ``expected_version``, changed to ``values``.

    The campaign's row is locked first (PostgreSQL; SQLite writes one at a time): a claim of
    one of its sends (``sends._claim``, which shares that lock) either committed before, and
    the check below sees its send started, or waits for this edit and then finds the
    campaign unapproved."""
    await conn.execute(select(campaigns.c.id).where(campaigns.c.name == name).with_for_update())
    row = (
        await conn.execute(
            select(
                campaigns.c.id, campaigns.c.status, campaigns.c.version, campaigns.c.updated_by,
                campaigns.c.updated_at, campaigns.c.contributors,
                started_clause(campaigns.c.id).label("started"),
            ).where(campaigns.c.name == name)
        )
    ).one_or_none()  # fmt: skip
    if row is None:
        raise await not_found(conn, name)
    if row.version != expected_version:
        raise StaleEdit(row.updated_by, row.updated_at)
    if row.started:
        raise StateError(
            f"campaign {name}: its sending has started; it can no longer be edited "
            "(pause or cancel it, or update its event)"
        )
    check_campaign(name, row.status, CampaignMove.EDIT)
    values = {**values, "contributors": sorted({*(row.contributors or ()), values["updated_by"]})}
    result = await conn.execute(
        update(campaigns)
        .where(
            campaigns.c.id == row.id,
            campaigns.c.version == expected_version,
            campaigns.c.status.in_(campaign_sources(CampaignMove.EDIT)),
        )
        .values(version=campaigns.c.version + 1, **values)
    )
    if not result.rowcount:  # someone else won between the read and the write
        await _refusal(conn, int(row.id), expected_version, CampaignMove.EDIT)
    return int(row.id)


async def _move(
    conn: AsyncConnection,
    campaign_id: int,
    move: CampaignMove,
    *,
    version: int,
    values: dict[str, Any],
) -> None:
    result = await conn.execute(
        update(campaigns)
        .where(
            campaigns.c.id == campaign_id,
            campaigns.c.version == version,
            campaigns.c.status.in_(campaign_sources(move)),
        )
        .values(status=campaign_target(move).value, **values)
    )
    if not result.rowcount:
        await _refusal(conn, campaign_id, version, move)


async def _refusal(
    conn: AsyncConnection,
    campaign_id: int,
    version: int,
    move: CampaignMove,
    *,
    self_approved: bool = False,
) -> None:
    """Why a conditional change of a campaign changed nothing: raise it."""
    row = (
        await conn.execute(
            select(
                campaigns.c.name, campaigns.c.status, campaigns.c.version,
                campaigns.c.updated_by, campaigns.c.updated_at, campaigns.c.approved_at,
            ).where(campaigns.c.id == campaign_id)
        )
    ).one_or_none()  # fmt: skip
    if row is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    if row.version != version:
        raise StaleEdit(row.updated_by, row.updated_at)
    if move is CampaignMove.SCHEDULE:
        check_schedule(row.name, row.status, self_approved=self_approved)
        if row.approved_at is None:
            raise StateError(f"campaign {row.name} is not approved: it cannot be scheduled")
    check_campaign(row.name, row.status, move)
    raise StateError(f"campaign {row.name} changed meanwhile; reload it")  # pragma: no cover
