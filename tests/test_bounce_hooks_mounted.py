"""The relays' bounce webhooks as the daemon and `mailer web` serve them: mounted by the app
factory (``create_app``) on the same app as the pages, their events stored by the real intake
(SQLite and PostgreSQL); a relay's batch over the pages' 64 KB body limit still taken (the
webhooks' own limit is 1 MB); a relay without its secret is a 404."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mailer.storage import Store
from mailer.tokens import return_path
from mailer.web import create_app
from tests import hook_support as hs
from tests.conftest import make_settings
from tests.test_bounce_intake import DOMAIN, SIGNER, delivery_lines, sent, suppressed

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parent.parent


async def test_a_mailgun_failure_posted_to_the_app_bounces_its_delivery(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    send_id, ids = await sent(store, tmp_path)
    settings = make_settings(
        tmp_path, database={"url": database_url}, paths={"templates_dir": ROOT / "templates"},
        bounces={"domain": DOMAIN, "webhooks": {"mailgun_signing_key": hs.MAILGUN_KEY}},
    )  # fmt: skip
    app = create_app(settings, store, signer=SIGNER)
    event = hs.mailgun_failed("person0@example.org")
    event["envelope"]["sender"] = return_path(SIGNER, ids[0], DOMAIN)
    event["padding"] = "x" * 200_000  # over the pages' body limit, under the webhooks'
    body = json.dumps(hs.mailgun(event)).encode()
    transport = httpx.ASGITransport(app=app, client=("192.0.2.9", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://lists.test") as client:
        headers = {"content-type": "application/json"}
        answer = await client.post("/hooks/bounces/mailgun", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        off = await client.post("/hooks/bounces/postmark", content=b"{}", headers=headers)
        assert off.status_code == 404
    assert await suppressed(store, "person0@example.org")
    assert [line.status for line in await delivery_lines(store, send_id)] == [
        "bounced", "sent", "sent",
    ]  # fmt: skip
    (line,) = await store.bounces.lines(limit=5)
    assert (line.source, line.kind) == ("webhook:mailgun", "hard")
