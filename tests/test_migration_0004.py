"""Migration 0004 on a database of the previous release: a campaign and its event stored
before languages keep their behaviour (one text for every language, the event published, not
turned into an invitation), and the new columns round-trip. SQLite and PostgreSQL."""

from __future__ import annotations

import email
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import text

from mailer.compose import make_composer
from mailer.models import InviteMode, Recipient, SendInfo
from mailer.render import Renderer
from mailer.settings import Settings
from mailer.storage import Store
from mailer.storage import engine as _engine
from mailer.storage.engine import head_revision
from mailer.tokens import Signer

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent
KEY = "m4-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_upgrade_from_0003_keeps_old_campaigns_as_they_were_sent(
    app_settings: Settings, backend: str
) -> None:
    t = datetime(2026, 11, 30, 9, 0, tzinfo=UTC).replace(tzinfo=None)
    start = t + timedelta(days=30)
    async with Store.open(app_settings) as store:
        assert await _engine.upgrade(store.engine, "0003") == (None, "0003")
        async with store.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO lists (slug, title, default_locale, opt_in, public, created_at,"
                    " updated_at) VALUES ('r', 'R', 'fr', 'single', false, :t, :t)"
                ),
                {"t": t},
            )
            await conn.execute(
                text(
                    "INSERT INTO campaigns (name, kind, status, template, subject, body,"
                    " body_format, timezone, options, created_at, updated_at) VALUES ('old',"
                    " 'event', 'scheduled', 'event', '', 'Un corps.', 'markdown', 'Europe/Paris',"
                    " '{}', :t, :t)"
                ),
                {"t": t},
            )
            await conn.execute(text("INSERT INTO campaign_lists VALUES (1, 1)"))
            await conn.execute(
                text(
                    "INSERT INTO events (campaign_id, uid, title, starts_at, timezone, place,"
                    " description, sequence, status, created_at, updated_at) VALUES (1,"
                    " 'old@example.org', 'Journée', :s, 'Europe/Paris', 'Paris', '', 0,"
                    " 'confirmed', :t, :t)"
                ),
                {"s": start, "t": t},
            )
            await conn.execute(
                text(
                    "INSERT INTO sends (campaign_id, key, action, due_at, status, total, sent,"
                    " failed, skipped, deferred, created_at, updated_at) VALUES (1,"
                    " 'invitation', 'invitation', :t, 'scheduled', 0, 0, 0, 0, 0, :t, :t)"
                ),
                {"t": t},
            )
        assert await store.upgrade() == ("0003", head_revision())
        spec = await store.sends.spec(1)
        campaign = await store.campaigns.get("old")
    assert spec.content.texts == ()
    assert campaign.texts == ()
    assert spec.content.body == "Un corps."
    assert spec.event is not None
    assert spec.event.invite == InviteMode.PUBLISH
    assert (spec.event.texts, spec.event.previous, spec.event.day_seconds) == ((), None, 86400)
    settings = app_settings.model_copy(
        update={
            "paths": app_settings.paths.model_copy(update={"templates_dir": ROOT / "templates"})
        }
    )
    composer = make_composer(
        settings, renderer=Renderer(ROOT / "templates"), signer=Signer([KEY]),
        send=SendInfo(content=spec.content, list=spec.lists[0], sender_name="R",
                      sender_address="r@example.org", action="invitation", now=t.replace(tzinfo=UTC),
                      event=spec.event, key=spec.key),
        send_id=1, trace="c1/invitation",
    )  # fmt: skip
    english = Recipient(id=1, email="john@example.org", locale="en", public_id="p" * 22)
    composed = composer.compose(english, date=t.replace(tzinfo=UTC))
    # as before the upgrade: the English template around the one body, the event published
    assert composed.rendered.locale == "en"
    assert composed.rendered.subject.startswith("Invitation: Journée")
    assert "Un corps." in composed.rendered.text
    parsed = email.message_from_bytes(composed.message.data, policy=policy.default)
    [part] = [p for p in parsed.walk() if p.get_content_type() == "text/calendar"]
    assert part.get_param("method") == "PUBLISH"
    calendar = part.get_content()  # type: ignore[attr-defined]
    assert "METHOD:PUBLISH" in calendar
    assert "ATTENDEE" not in calendar
