"""``mailer webhooks add|list|test|deliveries|enable|disable|remove``: the endpoints the daemon
posts signed events to (``mailer.outbox``), and what it tried and got.

``add`` checks the URL as the daemon will (https to public addresses unless
``MAILER_WEBHOOKS__ALLOW_PRIVATE``) and prints the signing secret once; nothing prints it
again. ``test ID`` posts a signed ``webhook.test`` event at once from this process (not
through the outbox) and says what came back. Times are shown in ``MAILER_SCHEDULER__TIMEZONE``
with their offset.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import click
from rich.table import Table

from mailer.cli.support import (
    EXIT_REJECTED,
    cli_actor,
    current_settings,
    open_store,
    out,
    run_async,
    safe,
)
from mailer.models import DEFAULT_EVENTS, Endpoint, EventType, HookStatus
from mailer.storage.outbox import new_event_id
from mailer.webhook_urls import TargetError, check_url, system_resolve

MAX_DESCRIPTION = 300


@click.group("webhooks")
def webhooks_group() -> None:
    """Endpoints that receive signed events (subscriptions, deliveries, bounces, sends)."""


def _events(lists: tuple[str, ...], singles: tuple[str, ...]) -> list[EventType]:
    """The events asked for by --events a,b and --event X (``all``: every one); the default
    when none is given."""
    names = [n.strip() for item in lists for n in item.split(",") if n.strip()] + [
        n.strip() for n in singles if n.strip()
    ]
    if not names:
        return list(DEFAULT_EVENTS)
    if "all" in names:
        return list(EventType)
    valid = {e.value: e for e in EventType}
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise click.BadParameter(
            f"unknown event {', '.join(map(repr, unknown))}; valid: {', '.join(valid)} (or all)",
            param_hint="--events/--event",
        )
    return list(dict.fromkeys(valid[n] for n in names))


async def _checked(url: str) -> None:
    try:
        await check_url(url, current_settings().webhooks.allow_private, system_resolve)
    except TargetError as exc:
        raise click.BadParameter(str(exc), param_hint="URL") from None


@webhooks_group.command("add")
@click.argument("url")
@click.option("--events", "lists", multiple=True, help="Events, comma-separated (or all).")
@click.option("--event", "singles", multiple=True, help="One event (repeat for more).")
@click.option("--description", default="", help="What the endpoint is for.")
@run_async
async def webhooks_add(
    url: str, lists: tuple[str, ...], singles: tuple[str, ...], description: str
) -> None:
    """Add an endpoint; prints its signing secret, once.

    Without --events it gets every event but delivery.sent (one per message)."""
    events = _events(lists, singles)
    if len(description) > MAX_DESCRIPTION or not description.isprintable():
        raise click.BadParameter(
            f"at most {MAX_DESCRIPTION} printable characters", param_hint="--description"
        )
    await _checked(url)
    async with open_store() as store:
        added = await store.webhooks.add(
            url=url, events=events, description=description, actor=cli_actor(),
            now=datetime.now(UTC),
        )  # fmt: skip
    out.print(f"webhook endpoint {added.id} added: {safe(added.url)}")
    out.print(f"events: {', '.join(sorted(added.events))}")
    out.print(f"secret: {added.secret}", markup=False)
    out.print(
        "The secret is shown only now and will not be shown again: give it to the receiver, "
        "which checks each webhook-signature with it (Standard Webhooks)."
    )


def _when(at: datetime | None, zone: ZoneInfo) -> str:
    return at.astimezone(zone).isoformat(timespec="minutes") if at else "-"


def _status(endpoint: Endpoint) -> str:
    if endpoint.active:
        return "active"
    return f"disabled: {endpoint.disabled_reason or 'no reason given'}"


@webhooks_group.command("list")
@run_async
async def webhooks_list() -> None:
    """The endpoints: URL, events, status, failures in a row (never the secret)."""
    zone = ZoneInfo(current_settings().scheduler.timezone)
    async with open_store() as store:
        endpoints = await store.webhooks.all()
    if not endpoints:
        out.print("no webhook endpoint (add one: mailer webhooks add URL)")
        return
    table = Table(
        "id", "url", "events", "status", "failures", "failing since", "created", "by",
        "description", box=None,
    )  # fmt: skip
    for e in endpoints:
        events = "all but delivery.sent" if e.events == set(DEFAULT_EVENTS) else ", ".join(
            sorted(e.events)
        )  # fmt: skip
        table.add_row(
            str(e.id), safe(e.url), events, safe(_status(e)), str(e.failures),
            _when(e.failing_since, zone), _when(e.created_at, zone), safe(e.created_by),
            safe(e.description),
        )  # fmt: skip
    out.print(table)


@webhooks_group.command("test")
@click.argument("endpoint_id", type=int)
@run_async
async def webhooks_test(endpoint_id: int) -> int:
    """Post a signed webhook.test event to an endpoint now and show what it answered."""
    from mailer.outbox.client import open_client, post  # httpx: not in every command's start

    settings = current_settings().webhooks
    async with open_store() as store:
        endpoint = await store.webhooks.get(endpoint_id)
    await _checked(endpoint.url)
    now = datetime.now(UTC)
    event_id = new_event_id()
    payload = {
        "type": "webhook.test",
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "data": {"endpoint": endpoint.id, "message": "a test event from `mailer webhooks test`"},
    }
    async with open_client(
        seconds=settings.timeout, concurrency=1, allow_private=settings.allow_private
    ) as client:
        answer = await post(
            client, url=endpoint.url, secret=endpoint.secret, event_id=event_id,
            payload=payload, when=now, seconds=settings.timeout,
        )  # fmt: skip
    said = f"{answer.code}" if answer.code is not None else "no answer"
    out.print(f"POST {safe(endpoint.url)} (webhook-id {event_id}): {said} in {answer.took_ms} ms")
    if answer.text:
        out.print(f"answer: {safe(answer.text[:300])}")
    if answer.code is not None and 200 <= answer.code < 300:
        return 0
    out.print(f"[red]not delivered[/]: {safe(answer.error or '')}")
    return EXIT_REJECTED


@webhooks_group.command("deliveries")
@click.option("--endpoint", "endpoint_id", type=int, help="Only this endpoint's.")
@click.option("--status", type=click.Choice([s.value for s in HookStatus]), help="Only these.")
@click.option("--event", "event_type", type=click.Choice([e.value for e in EventType]))
@click.option("--before", type=int, help="Only deliveries with a smaller id (the next page).")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@run_async
async def webhooks_deliveries(
    endpoint_id: int | None, status: str | None, event_type: str | None, before: int | None,
    limit: int,
) -> None:  # fmt: skip
    """What was tried and answered, newest first: one line per event and endpoint (the
    event's webhook-id, the last answer or error, when it was tried and is tried next)."""
    zone = ZoneInfo(current_settings().scheduler.timezone)
    async with open_store() as store:
        lines = await store.webhooks.lines(
            endpoint_id=endpoint_id, status=HookStatus(status) if status else None,
            type=EventType(event_type) if event_type else None, before=before, limit=limit,
        )  # fmt: skip
    if not lines:
        out.print("no webhook delivery matches")
        return
    table = Table(box=None)
    for name in ("id", "endpoint", "event", "type", "status", "attempts"):
        table.add_column(name, no_wrap=True)
    table.add_column("last answer", overflow="fold", min_width=20)
    for name in ("last attempt", "next attempt"):
        table.add_column(name, no_wrap=True)
    for h in lines:
        last = h.last_error or (str(h.last_code) if h.last_code is not None else "-")
        if h.last_error and h.last_code is not None and str(h.last_code) not in h.last_error:
            last = f"{h.last_code} {h.last_error}"
        table.add_row(
            str(h.delivery_id), str(h.endpoint_id), h.event_id, h.type, h.status,
            str(h.attempts), safe(last[:160]), _when(h.last_at, zone), _when(h.next_at, zone),
        )  # fmt: skip
    out.print(table)
    if len(lines) == limit:
        out.print(f"more: --before {lines[-1].delivery_id}")


@webhooks_group.command("enable")
@click.argument("endpoint_id", type=int)
@run_async
async def webhooks_enable(endpoint_id: int) -> None:
    """Enable an endpoint again: what it missed is posted at once."""
    async with open_store() as store:
        endpoint = await store.webhooks.set_enabled(
            endpoint_id, True, actor=cli_actor(), now=datetime.now(UTC)
        )
        waiting = len(
            await store.webhooks.lines(
                endpoint_id=endpoint_id, status=HookStatus.PENDING, limit=500
            )
        )
    more = "500 or more" if waiting == 500 else str(waiting)
    out.print(f"webhook endpoint {endpoint.id} enabled; {more} event(s) to post to it")


@webhooks_group.command("disable")
@click.argument("endpoint_id", type=int)
@click.option("--reason", default="", help="Why (shown by list).")
@run_async
async def webhooks_disable(endpoint_id: int, reason: str) -> None:
    """Stop posting to an endpoint; its events wait until `mailer webhooks enable ID`."""
    async with open_store() as store:
        endpoint = await store.webhooks.set_enabled(
            endpoint_id, False, actor=cli_actor(), now=datetime.now(UTC), reason=reason[:300]
        )
    out.print(f"webhook endpoint {endpoint.id} disabled ({safe(_status(endpoint))})")


@webhooks_group.command("remove")
@click.argument("endpoint_id", type=int)
@run_async
async def webhooks_remove(endpoint_id: int) -> None:
    """Delete an endpoint and what it has not received yet."""
    async with open_store() as store:
        gone = await store.webhooks.remove(endpoint_id, actor=cli_actor(), now=datetime.now(UTC))
    out.print(f"webhook endpoint {gone.id} removed ({safe(gone.url)}); nothing more goes to it")


__all__ = ["webhooks_group"]
