"""The REST API's sends and bounces (``sends:read``): every send, one send's status and counts
(``mailer send status``: its deliveries by status, the rate, the next retry, the bounces by
kind), its per-recipient report in keyset pages (the console's ``store.overview.report``:
a status filter, an address prefix) and as CSV (the columns of ``mailer send report --csv``,
each cell defused against spreadsheet formulas, as the console's export), and the bounces
that came back (``store.bounces``: by kind, address prefix and send; one message's findings).

A bounce message's raw bytes are not served: they quote third parties' mail (the console
shows them to its admins only, and no API scope is an admin's).
"""

from __future__ import annotations

import csv
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from typing import IO

from pydantic import BaseModel, Field
from starlette.responses import Response, StreamingResponse

from mailer.errors import NotFoundError
from mailer.lists import neutralise
from mailer.models import REPORT_COLUMNS, BounceKind, DeliveryStatus, Scope
from mailer.storage.bounces import MAX_PAGE as BOUNCE_PAGE
from mailer.storage.bounces import BounceRow
from mailer.storage.overview import MAX_PAGE as REPORT_PAGE
from mailer.storage.overview import SendLine
from mailer.web.api.campaigns import Counts
from mailer.web.api.core import Answer, ApiRoute, Call
from mailer.web.api.paging import (
    PageQuery,
    decode_cursor,
    encode_cursor,
    int_cursor,
    page_answer,
    page_model,
)
from mailer.web.api.problems import NO_STORE, Problem

MAX_ID = 2**63 - 1
SPOOL = 8 << 20  # a report larger than this is spooled to disk
FLUSH = 64 * 1024  # CSV bytes gathered before a chunk is sent


class SendOut(BaseModel):
    """One send of a campaign."""

    id: int
    campaign: str
    key: str
    action: str
    status: str
    due_at: datetime
    reason: str | None
    timezone: str = Field(description="The campaign's zone.")


class SendStatusOut(SendOut):
    """Where a send stands now."""

    started_at: datetime | None
    finished_at: datetime | None
    counts: Counts
    rate: float = Field(description="Messages sent per second over the last minute.")
    eta_seconds: int | None = Field(description="Time left at the current rate (running).")
    next_retry: datetime | None = Field(description="The next deferred delivery's retry.")
    bounces: dict[str, int] = Field(description="Bounces and complaints by kind.")


class SendsQuery(PageQuery):
    campaign: str | None = Field(default=None, max_length=100, description="A campaign's name.")
    status: str | None = Field(default=None, max_length=20, description="A send status.")


class ReportQuery(PageQuery):
    status: DeliveryStatus | None = None
    q: str | None = Field(default=None, max_length=320, description="Addresses beginning so.")


class Recipient(BaseModel):
    """One recipient of a send and what happened."""

    delivery_id: int
    email: str
    list: str
    status: DeliveryStatus
    attempts: int
    smtp_code: int | None
    smtp_reply: str | None
    reason: str | None
    sent_at: datetime | None


class BouncesQuery(PageQuery):
    kind: BounceKind | None = None
    email: str | None = Field(
        default=None, max_length=320, description="Addresses beginning with this."
    )
    send: int | None = Field(default=None, ge=0, le=MAX_ID, description="One send's bounces.")


class Bounce(BaseModel):
    """One recipient's bounce (or complaint), and what it did."""

    id: int
    bounce_id: int = Field(description="The message it came in (GET /bounces/{bounce_id}).")
    received_at: datetime
    source: str
    recipient: str
    kind: str
    status: str | None = Field(description="The enhanced status code (5.1.1).")
    diagnostic: str
    final: bool
    action: str = Field(description="What it did: suppressed, counted, unmatched...")
    forged: bool = Field(description="Its return path's signature did not check out.")
    delivery_id: int | None
    send_id: int | None
    campaign: str | None
    send_key: str | None
    subscriber: str | None = Field(description="The subscriber's public id.")


class BounceMessageOut(BaseModel):
    """A bounce message: how it came and was read, what it is tied to, its findings."""

    id: int
    received_at: datetime
    source: str
    report: str
    reader: str
    message_id: str | None
    mailer_send: str | None
    forged: bool
    delivery_id: int | None
    send_id: int | None
    campaign: str | None
    send_key: str | None
    raw_size: int | None = Field(description="Bytes kept (null: emptied, or a webhook event).")
    findings: list[Bounce]


def _id(call: Call, name: str) -> int:
    value = int(call.param(name))
    if value > MAX_ID:
        raise Problem(404, f"no {name.removesuffix('_id')} {value}")
    return value


async def _line(call: Call) -> SendLine:
    send_id = _id(call, "send_id")
    try:
        return await call.store.overview.send(send_id)
    except NotFoundError:
        raise Problem(404, f"no send {send_id} (GET /api/v1/sends lists them)") from None


def _send(line: SendLine) -> SendOut:
    return SendOut(
        id=line.id, campaign=line.campaign, key=line.key, action=line.action,
        status=line.status, due_at=line.due_at, reason=line.reason, timezone=line.timezone,
    )  # fmt: skip


async def sends_index(call: Call) -> Answer:
    """Every send, by id (filtered by campaign and status)."""
    query: SendsQuery = call.query
    after = int_cursor(query.cursor)
    found = sorted(
        (
            s for s in await call.store.sends.overview()
            if (query.campaign is None or s.campaign == query.campaign)
            and (query.status is None or s.status == query.status)
            and (after is None or s.id > after)
        ),
        key=lambda s: s.id,
    )  # fmt: skip
    shown = found[: query.limit]
    following = encode_cursor(shown[-1].id) if len(found) > query.limit else None
    data = [
        SendOut(id=s.id, campaign=s.campaign, key=s.key, action=s.action, status=s.status,
                due_at=s.due_at, reason=s.reason, timezone=s.timezone)
        for s in shown
    ]  # fmt: skip
    return page_answer(call.request, SendOut, data, following)


async def send_get(call: Call) -> Answer:
    """A send's status, counts, rate, next retry and bounces."""
    line = await _line(call)
    try:
        progress = await call.store.overview.progress(line.id, now=call.now)
    except NotFoundError:
        raise Problem(404, f"no send {line.id}") from None
    eta = progress.eta
    body = SendStatusOut(
        **_send(line).model_dump(), started_at=line.started_at, finished_at=line.finished_at,
        counts=Counts(**dict(progress.counts)), rate=round(progress.rate, 3),
        eta_seconds=None if eta is None else int(eta.total_seconds()),
        next_retry=await call.store.deliveries.next_retry(line.id),
        bounces=await call.store.bounces.counts(line.id),
    )  # fmt: skip
    return Answer(body)


async def send_report(call: Call) -> Answer:
    """A page of the send's recipients: by status then delivery, or by address with ``q``."""
    query: ReportQuery = call.query
    line = await _line(call)
    after = decode_cursor(query.cursor)
    data: list[BaseModel] = []
    while len(data) < query.limit:
        page = await call.store.overview.report(
            line.id, status=query.status, search=query.q or "", after=after,
            limit=min(REPORT_PAGE, query.limit - len(data)),
        )  # fmt: skip
        data += [
            Recipient(
                delivery_id=r.id,
                email=r.email,
                list=r.list,
                status=DeliveryStatus(r.status),
                attempts=r.attempts,
                smtp_code=r.smtp_code,
                smtp_reply=r.smtp_reply,
                reason=r.reason,
                sent_at=r.sent_at,
            )
            for r in page.lines
        ]
        after = page.next
        if after is None:
            break
    following = None if after is None else encode_cursor(after)
    return page_answer(call.request, Recipient, data, following)


async def send_report_csv(call: Call) -> Response:
    """Every recipient, the columns of ``mailer send report --csv``, formula-safe."""
    line = await _line(call)
    if call.request.method == "HEAD":  # no file made, nothing audited: only a GET exports
        return Response(media_type="text/csv; charset=utf-8", headers={"Cache-Control": NO_STORE})
    # Written to a spool file at the database's pace, then sent at the client's: a slow
    # download holds no database connection.
    spool: IO[str] = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by the stream)
        max_size=SPOOL, mode="w+", encoding="utf-8", newline=""
    )
    try:
        writer = csv.writer(spool, lineterminator="\n")
        writer.writerow(REPORT_COLUMNS)
        async for row in call.store.figures.report(line.id):
            values = (row.value(c) for c in REPORT_COLUMNS)
            writer.writerow([neutralise("" if v is None else str(v)) for v in values])
        await call.audit("send.export", f"send {line.id}", {"what": "report"})
    except BaseException:
        spool.close()
        raise
    spool.seek(0)

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while chunk := spool.read(FLUSH):
                yield chunk.encode("utf-8")
        finally:
            spool.close()

    name = f"send-{line.id}-report.csv"
    return StreamingResponse(
        chunks(), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"',
                 "Cache-Control": NO_STORE},
    )  # fmt: skip


# --- bounces --------------------------------------------------------------------------------------


def _bounce(r: BounceRow) -> Bounce:
    return Bounce(
        id=r.id, bounce_id=r.bounce_id, received_at=r.received_at, source=r.source,
        recipient=r.recipient, kind=r.kind, status=r.status, diagnostic=r.diagnostic,
        final=r.final, action=r.action, forged=r.forged, delivery_id=r.delivery_id,
        send_id=r.send_id, campaign=r.campaign, send_key=r.send_key, subscriber=r.public_id,
    )  # fmt: skip


async def bounces_index(call: Call) -> Answer:
    """Recipients' bounces, newest first."""
    query: BouncesQuery = call.query
    before = int_cursor(query.cursor)
    data: list[BaseModel] = []
    while len(data) < query.limit:
        page = await call.store.bounces.rows(
            kind=None if query.kind is None else query.kind.value,
            email_prefix=(query.email or "").strip().casefold(), send_id=query.send,
            before=before, limit=min(BOUNCE_PAGE, query.limit - len(data)),
        )  # fmt: skip
        data += [_bounce(r) for r in page.lines]
        before = page.next
        if before is None:
            break
    following = None if before is None else encode_cursor(before)
    return page_answer(call.request, Bounce, data, following)


async def bounce_get(call: Call) -> Answer:
    """One bounce message and its findings (never its raw bytes)."""
    bounce_id = _id(call, "bounce_id")
    found = await call.store.bounces.detail(bounce_id, raw_limit=0)
    if found is None:
        raise Problem(404, f"no bounce message {bounce_id} (GET /api/v1/bounces lists them)")
    body = BounceMessageOut(
        id=found.id, received_at=found.received_at, source=found.source, report=found.report,
        reader=found.reader, message_id=found.message_id, mailer_send=found.mailer_send,
        forged=found.forged, delivery_id=found.delivery_id, send_id=found.send_id,
        campaign=found.campaign, send_key=found.send_key, raw_size=found.raw_size,
        findings=[_bounce(r) for r in found.recipients],
    )  # fmt: skip
    return Answer(body)


READ = Scope.SENDS_READ
ROUTES = [
    ApiRoute("GET", "/sends", sends_index, READ, "Every send", query=SendsQuery,
             answer=page_model(SendOut), tag="sends"),
    ApiRoute("GET", "/sends/{send_id:int}", send_get, READ, "A send's status and counts",
             answer=SendStatusOut, tag="sends"),
    ApiRoute("GET", "/sends/{send_id:int}/report", send_report, READ,
             "A send's recipients, page by page", query=ReportQuery,
             answer=page_model(Recipient), tag="sends"),
    ApiRoute("GET", "/sends/{send_id:int}/report.csv", send_report_csv, READ,
             "A send's recipients as CSV", media="text/csv", tag="sends",
             description="The columns of `mailer send report --csv`; every cell defused "
             "against spreadsheet formulas. Each export is written to the audit log."),
    ApiRoute("GET", "/bounces", bounces_index, READ, "The bounces that came back",
             query=BouncesQuery, answer=page_model(Bounce), tag="bounces"),
    ApiRoute("GET", "/bounces/{bounce_id:int}", bounce_get, READ,
             "A bounce message and its findings", answer=BounceMessageOut, tag="bounces"),
]  # fmt: skip
