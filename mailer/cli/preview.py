"""``mailer preview``: the message one subscriber would get, written to files; with
``--all``, the pre-flight check of every member.

It composes as a send would (:func:`mailer.compose.make_composer`) but stores and sends
nothing.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from mailer.addresses import address_key
from mailer.campaigns import Campaign, language_code
from mailer.cli.support import (
    EXIT_REJECTED,
    current_settings,
    err,
    load_campaign,
    open_store,
    out,
    run_async,
    visible,
)
from mailer.clock import utc_now
from mailer.errors import ConfigError, NotFoundError
from mailer.models import EVENT_ACTIONS, CampaignKind, Recipient, SendInfo
from mailer.tokens import load_signer


@click.command("preview")
@click.argument("campaign_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--subscriber", "email", help="Render as this subscriber would get it.")
@click.option("--list", "slug", help="Which of the campaign's lists; default: the first.")
@click.option(
    "--action",
    type=click.Choice(EVENT_ACTIONS),
    default="invitation",
    show_default=True,
    help="For an event: which mail of the event.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the .eml and .html; default: MAILER_PATHS__DATA_DIR/preview.",
)
@click.option(
    "--locale", help="Render in this language of the campaign (default: the subscriber's choice)."
)
@click.option("--all", "check_all", is_flag=True, help="Run the pre-flight check on every member.")
@run_async
async def preview(
    campaign_file: Path,
    email: str | None,
    slug: str | None,
    action: str,
    out_dir: Path | None,
    locale: str | None,
    check_all: bool,
) -> int:
    """Write the .eml and .html one subscriber would get; --all checks every member."""
    from mailer.compose import make_composer  # loads rendering: only when previewing
    from mailer.render import Renderer

    settings = current_settings()
    out_dir = out_dir or settings.paths.data_dir / "preview"
    campaign = load_campaign(campaign_file)
    slug = slug or campaign.data.lists[0]
    now = utc_now()
    async with open_store() as store:
        list_info = await store.lists.info(slug)
        key = address_key(email) if email else None
        chosen = [r async for r in store.lists.recipients(slug, email_key=key, limit=1)]
        if email and not chosen:
            raise NotFoundError(f"{email} is not a subscribed member of {slug!r}")
        recipient = chosen[0] if chosen else Recipient(id=0, email="preview@example.org")
        if locale is not None:
            recipient = replace(recipient, locale=_language(campaign, locale))
        kind_action = (
            action if campaign.data.kind == CampaignKind.EVENT else campaign.data.kind.value
        )
        composer = make_composer(
            settings,
            renderer=Renderer(settings.paths.templates_dir),
            signer=load_signer(settings.secret_keys, settings.paths.data_dir),
            send=SendInfo(
                content=campaign.content,
                list=list_info,
                sender_name=campaign.data.sender.name or settings.sender.from_name,
                sender_address=campaign.data.sender.address or settings.sender.from_address,
                action=kind_action,
                now=now,
                event=campaign.event(domain=settings.sender.domain),
                key="issue:" + f"{now.astimezone(campaign.zone):%Y-%m-%d}"
                if campaign.data.kind == CampaignKind.NEWSLETTER
                else kind_action,
            ),
            send_id=0,
            trace=f"preview/{campaign.name}",
        )
        composed = composer.compose(recipient, date=now)
        failed = 0
        if check_all:
            members = [r async for r in store.lists.recipients(slug)]
            report = composer.check(members, date=now)
            for address, reason in report.reasons:
                err.print(visible(f"{address}: {reason}"), markup=False)
            out.print(f"pre-flight: {report.total} members of {slug}, {report.failed} failed")
            out.print(visible(f"languages: {report.languages.summary()}"), markup=False)
            failed = report.failed
    stem = f"{campaign.name}-{kind_action}-{recipient.email}"
    eml, html = out_dir / f"{stem}.eml", out_dir / f"{stem}.html"
    _write(eml, composed.message.data)
    _write(html, composed.rendered.html.encode("utf-8"))
    out.print(visible(f"subject: {composed.rendered.subject}"), markup=False)
    out.print(f"wrote {eml} and {html}", markup=False)
    return EXIT_REJECTED if failed else 0


def _language(campaign: Campaign, locale: str) -> str:
    """``--locale``, if the campaign is written in it; ConfigError naming those it is."""
    try:
        code = language_code(locale)
    except ValueError as exc:
        raise ConfigError(f"--locale: {exc}") from None
    if campaign.languages and code not in campaign.languages:
        raise ConfigError(
            f"--locale {locale}: {campaign.path} is written in "
            f"{', '.join(campaign.languages)}; choose one of those"
        )
    return code


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


__all__ = ["preview"]
