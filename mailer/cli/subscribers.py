"""The ``mailer subscribers`` commands: one subscriber at a time (add, remove, show,
unsubscribe, suppress, unsuppress).

The rules (who may be re-subscribed, what a suppression overrides) are the store's; this
module parses the options into a row and says what was and was not applied.
"""

from __future__ import annotations

import click
from rich.table import Table

from mailer import lists
from mailer.addresses import address_key, normalize
from mailer.cli.support import (
    EXIT_REJECTED,
    cli_actor,
    err,
    open_store,
    out,
    run_async,
    safe,
    visible,
)
from mailer.clock import utc_now
from mailer.errors import ConfigError, NotFoundError
from mailer.models import SuppressionAction, SuppressionReason


@click.group("subscribers")
def subscribers() -> None:
    """One subscriber at a time."""


@subscribers.command("add")
@click.argument("email")
@click.option("--list", "slug", required=True, help="The list to subscribe to.")
@click.option("--name", default=None)
@click.option("--locale", default=None, help="fr, en...")
@click.option("--timezone", default=None, help="IANA zone, e.g. Europe/Paris.")
@click.option(
    "--force", is_flag=True, help="Re-subscribe someone who unsubscribed, at their request."
)
@run_async
async def subscribers_add(
    email: str, slug: str, name: str | None, locale: str | None, timezone: str | None, force: bool
) -> int:
    """Subscribe an address to a list (the details of someone already stored stay as they are)."""
    header = ["email", "name", "locale", "timezone"]
    row = lists.parse_row(0, header, [email, name or "", locale or "", timezone or ""])
    if isinstance(row, lists.RowError):
        raise ConfigError(f"--{row.column}: {row.reason}")
    async with open_store() as store:
        try:
            before = await store.subscribers.show(row.key)
        except NotFoundError:
            before = None
        message = await store.subscribers.add(
            row, slug=slug, source="cli", now=utc_now(), force=force
        )
    out.print(visible(message), markup=False)
    if before is None:
        return 0
    # The store keeps an existing subscriber's details (their own choice on the preferences
    # page, or their list file): say which options were not applied rather than drop them.
    ignored = [
        f"--{option} {given} not applied (stored: {stored or 'none'})"
        for option, given, stored in (
            ("name", row.name, before.name), ("locale", row.locale, before.locale),
            ("timezone", row.timezone, before.timezone),
        )
        if given is not None and given != (stored or None)
    ]  # fmt: skip
    for note in ignored:
        err.print(
            visible(f"{before.email} already existed: {note}; their list file or their "
                    "preferences page changes it"),
            markup=False,
        )  # fmt: skip
    return EXIT_REJECTED if ignored else 0


@subscribers.command("remove")
@click.argument("email")
@click.option("--list", "slug", help="Remove from this list only; without it, erase everywhere.")
@click.option("--yes", is_flag=True, help="Do not ask before erasing.")
@run_async
async def subscribers_remove(email: str, slug: str | None, yes: bool) -> None:
    """Remove from a list, or erase the subscriber entirely (GDPR erasure)."""
    if slug is None and not yes:
        click.confirm(f"Erase {email} and all their history?", abort=True)
    async with open_store() as store:
        message = await store.subscribers.remove(address_key(email), slug=slug)
    out.print(visible(f"{email}: {message}"), markup=False)


@subscribers.command("show")
@click.argument("email")
@run_async
async def subscribers_show(email: str) -> None:
    """Show a subscriber, their lists and any suppression."""
    async with open_store() as store:
        view = await store.subscribers.show(address_key(email))
    table = Table(box=None, show_header=False)
    for label, value in (
        ("email", view.email),
        ("name", view.name),
        ("locale", view.locale or ""),
        ("timezone", view.timezone or ""),
        ("status", view.status),
        ("suppressed", view.suppression or "no"),
        *(
            (
                "suppression history",
                f"{e.at:%Y-%m-%d %H:%M} UTC {e.action}"
                + (f" ({e.reason})" if e.action == SuppressionAction.SUPPRESS else "")
                + f" by {e.actor}"
                + (f": {e.detail}" if e.detail else ""),
            )
            for e in view.suppression_history
        ),
        ("since", view.created_at.isoformat()),
        *((f"attribute {k}", str(v)) for k, v in sorted(view.attributes.items())),
        *((f"list {slug}", f"{status} ({source})") for slug, status, source in view.subscriptions),
    ):
        table.add_row(safe(label), safe(value))
    out.print(table)


@subscribers.command("unsubscribe")
@click.argument("email")
@click.option("--list", "slug", help="Unsubscribe from this list only; default: every list.")
@run_async
async def subscribers_unsubscribe(email: str, slug: str | None) -> None:
    """Record an unsubscribe (an import never re-subscribes them)."""
    async with open_store() as store:
        changed = await store.subscribers.unsubscribe(
            address_key(email), slug=slug, source="cli", now=utc_now()
        )
    out.print(visible(f"{email}: unsubscribed from {changed} list(s)"), markup=False)


@subscribers.command("suppress")
@click.argument("email")
@click.option(
    "--reason",
    type=click.Choice([r.value for r in SuppressionReason]),
    default=SuppressionReason.MANUAL.value,
    show_default=True,
)
@click.option("--detail", default="", help="Why, for the record.")
@run_async
async def subscribers_suppress(email: str, reason: str, detail: str) -> None:
    """Never mail this address again, whatever any list says (`unsuppress` lifts it)."""
    key = normalize(email).key
    async with open_store() as store:
        added = await store.subscribers.suppress(
            key, reason=SuppressionReason(reason), detail=detail, now=utc_now(), actor=cli_actor()
        )
    out.print(f"{email}: " + ("suppressed" if added else "was already suppressed"), markup=False)


@subscribers.command("unsuppress")
@click.argument("email")
@click.option("--reason", "why", required=True, help="Why it is lifted, for the record.")
@run_async
async def subscribers_unsuppress(email: str, why: str) -> None:
    """Lift a suppression: the address may be mailed again (its lists decide). The history
    keeps both, with who, when and why (`subscribers show`)."""
    if not why.strip():
        raise ConfigError("--reason: say why the suppression is lifted")
    key = normalize(email).key
    async with open_store() as store:
        was = await store.subscribers.unsuppress(
            key, why=why.strip(), actor=cli_actor(), now=utc_now()
        )
    out.print(
        visible(
            f"{email}: suppression ({was}) lifted; `mailer send retry-failed SEND` mails what "
            "it held back"
        ),
        markup=False,
    )


__all__ = ["subscribers"]
