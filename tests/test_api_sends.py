"""The REST API's sends and bounces through httpx against the real app, on SQLite and
PostgreSQL: a send's status and counts, its per-recipient report in cursor pages (every
recipient once, with a status filter and an address prefix), the same report as CSV with the
CLI's columns and every cell formula-safe (the export audited), the bounces an intake stored
(filtered by kind, address and send; one message's findings, never its raw bytes), unknown
ids a 404 problem and the scope ``sends:read`` required.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from mailer.intake import Intake
from mailer.models import REPORT_COLUMNS, DeliveryStatus, Scope
from mailer.tokens import return_path
from tests.api_support import Api, api_fixture  # noqa: F401
from tests.test_bounce_intake import DOMAIN, SIGNER, hard, sent, settings_for
from tests.test_console_sends import a_list, a_send, record, start

pytestmark = pytest.mark.timeout(60)
FORMULA = '=HYPERLINK("http://evil.example")'


async def a_mixed_send(api: Api, tmp_path: Path) -> int:
    """A send to five people: two sent, one failed with a reply a spreadsheet would run,
    two still queued."""
    await a_list(api.store, tmp_path, 5)
    send_id = await a_send(api.store, "annonce")
    await start(api.store, send_id)
    await record(api.store, send_id, DeliveryStatus.SENT, DeliveryStatus.SENT)
    await record(api.store, send_id, DeliveryStatus.FAILED, code=550, reply=FORMULA)
    return send_id


async def test_a_sends_status_and_its_report_in_pages(api: Api, tmp_path: Path) -> None:
    send_id = await a_mixed_send(api, tmp_path)
    client = await api.client(Scope.SENDS_READ)
    listed = (await client.get("/api/v1/sends", params={"campaign": "annonce"})).json()
    assert [(s["id"], s["key"]) for s in listed["data"]] == [(send_id, "announce")]
    status = await client.get(f"/api/v1/sends/{send_id}")
    assert status.status_code == 200, status.text
    body = status.json()
    assert (body["status"], body["campaign"], body["bounces"]) == ("running", "annonce", {})
    assert body["counts"] == {"queued": 2, "sent": 2, "deferred": 0, "failed": 1, "skipped": 0,
                              "bounced": 0}  # fmt: skip
    seen: list[str] = []
    cursor = None
    for _ in range(5):
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await client.get(f"/api/v1/sends/{send_id}/report", params=params)
        assert page.status_code == 200, page.text
        seen += [r["email"] for r in page.json()["data"]]
        cursor = page.json()["next"]
        if cursor is None:
            assert "link" not in page.headers
            break
        assert 'rel="next"' in page.headers["link"]
    assert sorted(seen) == [f"person{i}@example.org" for i in range(5)]
    failed = (await client.get(f"/api/v1/sends/{send_id}/report",
                               params={"status": "failed"})).json()["data"]  # fmt: skip
    assert [(r["smtp_code"], r["smtp_reply"]) for r in failed] == [(550, FORMULA)]
    found = (await client.get(f"/api/v1/sends/{send_id}/report", params={"q": "PERSON3"})).json()
    assert [r["email"] for r in found["data"]] == ["person3@example.org"]
    bad = await client.get(f"/api/v1/sends/{send_id}/report", params={"status": "lost"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.status"


async def test_the_report_as_csv_is_formula_safe_and_audited(api: Api, tmp_path: Path) -> None:
    send_id = await a_mixed_send(api, tmp_path)
    client = api.client_for(await api.key(Scope.SENDS_READ, name="crm"))
    answer = await client.get(f"/api/v1/sends/{send_id}/report.csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["cache-control"] == "no-store"
    rows = list(csv.reader(io.StringIO(answer.text)))
    assert rows[0] == list(REPORT_COLUMNS)
    assert len(rows) == 6
    replies = [r[REPORT_COLUMNS.index("smtp_reply")] for r in rows[1:]]
    assert "'" + FORMULA in replies
    assert FORMULA not in replies
    assert (await client.head(f"/api/v1/sends/{send_id}/report.csv")).status_code == 200
    [entry] = await api.store.audit.page(action="send.export")
    assert (entry.actor, entry.target) == ("api:crm", f"send {send_id}")


async def test_unknown_sends_and_missing_scopes_are_problems(api: Api, tmp_path: Path) -> None:
    send_id = await a_mixed_send(api, tmp_path)
    client = await api.client(Scope.SENDS_READ)
    for path in ("/api/v1/sends/999999", "/api/v1/sends/99999999999999999999999/report",
                 "/api/v1/sends/999999/report.csv", "/api/v1/bounces/999999"):  # fmt: skip
        missing = await client.get(path)
        assert missing.status_code == 404, path
        assert missing.headers["content-type"].startswith("application/problem+json")
    other = await api.client(Scope.CAMPAIGNS_READ)
    refused = await other.get(f"/api/v1/sends/{send_id}/report.csv")
    assert (refused.status_code, refused.json()["scope"]) == (403, "sends:read")


async def test_bounces_are_listed_filtered_and_shown_without_their_raw_bytes(
    api: Api, tmp_path: Path, database_url: str
) -> None:
    send_id, ids = await sent(api.store, tmp_path, 3)
    intake = Intake(api.store, settings_for(tmp_path, database_url), signer=SIGNER)
    taken = await intake.message(
        hard(return_path(SIGNER, ids[0], DOMAIN), "person0@example.org"), source="smtp"
    )
    client = await api.client(Scope.SENDS_READ)
    listed = (await client.get("/api/v1/bounces")).json()
    [line] = listed["data"]
    assert (line["recipient"], line["kind"], line["send_id"]) == (
        "person0@example.org", "hard", send_id
    )  # fmt: skip
    assert (line["bounce_id"], line["delivery_id"], line["forged"]) == (taken.bounce_id, ids[0],
                                                                          False)  # fmt: skip
    for params, count in (({"kind": "soft"}, 0), ({"email": "PERSON0"}, 1),
                          ({"email": "person1"}, 0), ({"send": send_id}, 1),
                          ({"send": send_id + 1}, 0)):  # fmt: skip
        found = (await client.get("/api/v1/bounces", params=params)).json()["data"]
        assert len(found) == count, params
    shown = await client.get(f"/api/v1/bounces/{taken.bounce_id}")
    assert shown.status_code == 200, shown.text
    message = shown.json()
    assert message["raw_size"] > 0
    assert "raw" not in message
    assert [f["recipient"] for f in message["findings"]] == ["person0@example.org"]
    assert (await client.get(f"/api/v1/sends/{send_id}")).json()["bounces"] == {"hard": 1}
    bad = await client.get("/api/v1/bounces", params={"kind": "angry"})
    assert bad.status_code == 422
