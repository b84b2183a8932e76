"""The console's bounces pages through the real app (httpx), on SQLite and PostgreSQL: bounces
taken in by the real ``Intake`` from DSNs and ARF reports built as the intake tests build them
(and a relay webhook's event), listed newest first in French and English with what each did,
filtered by kind, address prefix and send, in keyset pages with the totals by kind; one
bounce message with its tie and findings, its raw message escaped and cut, for admins only;
odd input a 400 or 404 page, never a 500; everything a bounce says escaped."""

from __future__ import annotations

import html
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import pytest

from mailer.bounces import BounceKind, Finding, Report, ReportKind
from mailer.bounces.providers import ProviderEvent
from mailer.intake import Intake
from mailer.models import BounceAction
from mailer.storage import Store
from mailer.tokens import return_path
from mailer.web.console import bounces as pages
from tests.console_support import ROOT, Console
from tests.test_bounce_intake import DOMAIN, SIGNER, hard, sent, settings_for
from tests.test_bounces_parse import arf, block, dsn

pytestmark = pytest.mark.timeout(60)
RECEIVED = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)  # 09:00 CET in the console's zone
XSS = "<script>alert(1)</script>"
ROW = re.compile(r'<tr data-event="(\d+)">')


class Seeded(NamedTuple):
    send_id: int
    ids: list[int]  # the send's deliveries
    hard: int  # bounce ids
    soft: int
    complaint: int
    policy: int
    stranger: int
    forged: int


def addressed(raw: bytes, to: str = "news@example.org") -> bytes:
    """A DSN sent to ``to`` (by default the From address: no return path to check)."""
    return raw.replace(b"b+d42.sig@" + DOMAIN.encode(), to.encode())


async def seed(store: Store, tmp_path: Path, database_url: str) -> Seeded:
    """A send to four people, and one bounce of each kind that matters, oldest first: a hard
    bounce by return path, a soft one by Message-ID, a complaint, a policy refusal, a stranger's
    bounce carrying markup, a forged return path."""
    send_id, ids = await sent(store, tmp_path, 4)
    intake = Intake(store, settings_for(tmp_path, database_url), clock=lambda: RECEIVED,
                    signer=SIGNER)  # fmt: skip

    async def take(raw: bytes, source: str = "smtp") -> int:
        return (await intake.message(raw, source=source)).bounce_id

    first = await take(hard(return_path(SIGNER, ids[0], DOMAIN), "person0@example.org"))
    soft = await take(
        addressed(dsn(block("person1@example.org", "failed", "4.2.2", "452 4.2.2 mailbox full"),
                      returned=f"Message-ID: <{ids[1]}@test>\n")),
        "imap",
    )  # fmt: skip
    complaint = await take(
        arf("Feedback-Type: abuse\nVersion: 1\nOriginal-Rcpt-To: person2@example.org",
            f"From: news@example.org\nMessage-ID: <{ids[2]}@test>\n"),
        "import",
    )  # fmt: skip
    policy = await take(
        addressed(
            dsn(block("person3@example.org", "failed", "5.7.1", "550 5.7.1 blocked by policy")),
            return_path(SIGNER, ids[3], DOMAIN),
        )
    )
    stranger = await take(
        addressed(
            dsn(
                block('"<b>x</b>"@evil.example', "failed", "5.1.1", f"550 5.1.1 {XSS} unknown"),
                text=f"Hello </pre>{XSS}<img src=x onerror=alert(2)>",
            )
        )
    )
    good = return_path(SIGNER, ids[1], DOMAIN)
    forged_to = good[: -len(DOMAIN) - 2] + ("a" if good[-len(DOMAIN) - 2] != "a" else "b")
    forged = await take(hard(forged_to + "@" + DOMAIN, "person1@example.org"))
    return Seeded(send_id, ids, first, soft, complaint, policy, stranger, forged)


def rows(text: str) -> list[int]:
    return [int(n) for n in ROW.findall(text)]


def totals(text: str) -> dict[str, str]:
    return dict(re.findall(r'data-total="([\w-]+)">([^<]*)<', text))


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ("Retours (bounces)", "15 janv. 2027, 09:00\u00a0CET", "définitif", "temporaire",
             "plainte", "refus lié à l’expéditeur", "adresse exclue", "compté, sous la limite",
             "exclue et désabonnée de toutes les listes",
             "compté pour l’envoi, jamais contre l’adresse", "aucun envoi de notre part, ignoré",
             "adresse de retour falsifiée, ignoré", "écouteur SMTP", "boîte IMAP",
             "envoi n°\u00a0")),
     ("en", ("Bounces", "15 Jan 2027, 09:00\u00a0CET", "hard", "soft", "complaint",
             "policy (the sender’s side)", "address suppressed", "counted, under the limit",
             "suppressed and unsubscribed from every list",
             "counted for the send, never against the address",
             "none of our deliveries, ignored", "forged return path, ignored", "SMTP listener",
             "IMAP mailbox", "send "))],
)  # fmt: skip
async def test_the_list_shows_each_recipient_newest_first_in_words(
    console: Console, tmp_path: Path, database_url: str, lang: str, words: tuple[str, ...]
) -> None:
    """One row per recipient, newest first, with the time in the console's zone, the way in,
    the kind and what it did in words, a link to the subscriber and to the send; the totals by
    kind; every part of a bounce escaped."""
    seeded = await seed(console.store, tmp_path, database_url)
    client = await console.client("viewer")
    page = await client.get("/admin/bounces", headers={"Accept-Language": lang})
    assert page.status_code == 200, page.text
    text = html.unescape(page.text)
    for word in words:
        assert word in text, word
    events = rows(page.text)
    assert len(events) == 6
    assert events == sorted(events, reverse=True)
    person0 = (await console.store.browse.members("researchers")).members
    public = {m.email: m.public_id for m in person0}
    assert f'<a href="/admin/subscribers/{public["person0@example.org"]}">person0@example.org' in (
        page.text
    )
    assert f'<a href="/admin/sends/{seeded.send_id}">' in page.text
    assert f'href="/admin/bounces/{seeded.hard}"' in page.text
    assert totals(page.text) == {
        "hard": "3", "soft": "1", "complaint": "1", "policy": "1", "auto-reply": "0",
        "unknown": "0",
    }  # fmt: skip
    assert "<b>x</b>" not in page.text
    assert "&#34;&lt;b&gt;x&lt;/b&gt;&#34;@evil.example" in page.text
    assert 'aria-current="page"' in page.text.split('href="/admin/bounces"')[1][:40]


async def test_filters_by_kind_address_and_send_with_keyset_pages(
    console: Console, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each filter alone and together; the totals follow the address and send filters; the
    pages (two rows each here) go back in time without a gap or a repeat, keeping the filter."""
    seeded = await seed(console.store, tmp_path, database_url)
    client = await console.client("viewer")
    everything = rows((await client.get("/admin/bounces")).text)

    hard = await client.get("/admin/bounces", params={"kind": "hard"})
    assert len(rows(hard.text)) == 3
    assert '<option value="hard" selected>' in hard.text
    by_address = await client.get("/admin/bounces", params={"address": "PERSON1@"})
    assert len(rows(by_address.text)) == 2  # the soft bounce, and the forged one
    assert totals(by_address.text)["hard"] == "1"
    assert totals(by_address.text)["soft"] == "1"
    exact = await client.get("/admin/bounces", params={"address": "person1@example.org",
                                                        "kind": "soft"})  # fmt: skip
    assert len(rows(exact.text)) == 1
    wildcard = await client.get("/admin/bounces", params={"address": "%"})
    assert rows(wildcard.text) == []
    by_send = await client.get("/admin/bounces", params={"send": str(seeded.send_id)})
    assert len(rows(by_send.text)) == 4  # the stranger's and the forged one are nobody's
    assert totals(by_send.text) == {
        "hard": "1", "soft": "1", "complaint": "1", "policy": "1", "auto-reply": "0",
        "unknown": "0",
    }  # fmt: skip

    monkeypatch.setattr(pages, "PAGE", 2)
    seen: list[int] = []
    url: str | None = "/admin/bounces"
    while url is not None:
        answer = await client.get(url)
        assert answer.status_code == 200
        seen += rows(answer.text)
        found = re.search(r'<a href="([^"]+)" rel="next">', answer.text)
        url = html.unescape(found.group(1)) if found else None
    assert seen == everything
    paged = await client.get("/admin/bounces", params={"kind": "hard"})
    following = html.unescape(re.findall(r'<a href="([^"]+)" rel="next">', paged.text)[0])
    assert "kind=hard" in following
    second = await client.get(following)
    assert len(rows(second.text)) == 1
    assert 'href="/admin/bounces?kind=hard"' in second.text  # back to the newest


async def test_one_bounce_shows_its_tie_and_findings_and_the_raw_only_to_admins(
    console: Console, tmp_path: Path, database_url: str
) -> None:
    """The detail page: when and how it came, how it was read, its Message-ID, the delivery
    and send it is tied to, each recipient's finding with its diagnostic; the raw message as
    escaped text for an admin, and for anyone below only a sentence saying why not."""
    seeded = await seed(console.store, tmp_path, database_url)
    viewer = await console.client("viewer")
    admin = await console.client("admin")
    page = await viewer.get(f"/admin/bounces/{seeded.soft}", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    text = html.unescape(page.text)
    assert f"Bounce {seeded.soft}" in text
    assert "IMAP mailbox" in text
    assert "delivery status notification (DSN)" in text
    assert "rfc3464" in text
    assert f"<{seeded.ids[1]}@test>" in text
    assert f"delivery {seeded.ids[1]} · send {seeded.send_id}" in " ".join(
        re.sub(r"<[^>]+>", "", text).split()
    )
    assert "452 4.2.2 mailbox full" in text
    assert "shown to admins only" in text
    assert "data-raw" not in page.text
    assert "Reporting-MTA" not in text

    raw = await admin.get(f"/admin/bounces/{seeded.stranger}", headers={"Accept-Language": "fr"})
    assert raw.status_code == 200
    assert "data-raw" in raw.text
    assert XSS not in raw.text
    assert "<img src=x" not in raw.text
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in raw.text
    assert "Reporting-MTA: dns; mx.example.net" in raw.text
    assert re.search(r"\d+\u202f?\d* octets, en texte", html.unescape(raw.text))
    assert "aucune remise pour le message entier" in html.unescape(raw.text)
    assert "aucun envoi de notre part, ignoré" in html.unescape(raw.text)

    forged = await viewer.get(f"/admin/bounces/{seeded.forged}")
    assert "adresse de retour falsifiée, ignoré" in html.unescape(forged.text)
    assert "sa signature ne correspond pas" in html.unescape(forged.text)


async def test_a_large_raw_message_is_cut_and_its_controls_never_reach_the_page(
    console: Console, tmp_path: Path, database_url: str
) -> None:
    """Only the first 64 KiB are read and shown, with a note saying so; control characters
    and bytes that are not UTF-8 are shown as U+FFFD; a message emptied after KEEP_DAYS says so."""
    await sent(console.store, tmp_path, 1)
    intake = Intake(console.store, settings_for(tmp_path, database_url), signer=SIGNER)
    big = addressed(
        dsn(
            block("person0@example.org", "failed", "5.1.1", "550 5.1.1 unknown"),
            text="bell \x07 escape \x1b[31m " + "x" * 100_000 + " THE-END",
        )
    ).replace(b"bell", b"\xff\xfe bell")
    outcome = await intake.message(big, source="smtp")
    admin = await console.client("admin")
    page = await admin.get(f"/admin/bounces/{outcome.bounce_id}", headers={"Accept-Language": "en"})
    assert page.status_code == 200
    shown = html.unescape(page.text)
    raw = shown.split("data-raw>")[1].split("</pre>")[0]
    assert len(raw.encode()) <= pages.RAW_SHOWN + 3 * 20  # a replacement character is 3 bytes
    assert "THE-END" not in raw
    assert "\x07" not in raw
    assert "\x1b" not in raw
    assert "\ufffd escape \ufffd[31m" in raw
    assert f"The first 65,536 bytes of {len(big):,}, as text." in shown
    assert await console.store.bounces.purge(raw_before=datetime.now(UTC).replace(year=2100)) == 1
    gone = await admin.get(f"/admin/bounces/{outcome.bounce_id}", headers={"Accept-Language": "en"})
    assert "The message is no longer kept (MAILER_BOUNCES__KEEP_DAYS)." in html.unescape(gone.text)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_a_relay_webhook_event_says_where_it_came_from_and_has_no_message(
    console: Console, tmp_path: Path, database_url: str
) -> None:
    await sent(console.store, tmp_path, 1)
    intake = Intake(console.store, settings_for(tmp_path, database_url), signer=SIGNER)
    finding = Finding("person0@example.org", "5.1.1", BounceKind.HARD, "550 5.1.1 no mailbox")
    report = Report(kind=ReportKind.DSN, findings=(finding,), reader="ses")
    (outcome,) = await intake.events([ProviderEvent("ses", "evt-1", report)])
    admin = await console.client("admin")
    listed = html.unescape((await admin.get("/admin/bounces")).text)
    assert "webhook du relais (ses)" in listed
    page = html.unescape((await admin.get(f"/admin/bounces/{outcome.bounce_id}")).text)
    assert "webhook du relais (ses)" in page
    assert "Un évènement de webhook du relais n’a pas de message." in page


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("path", "status"),
    [("/admin/bounces/abc", 404), ("/admin/bounces/99999999999999999999", 404),
     ("/admin/bounces/123456", 404), ("/admin/bounces/0", 404), ("/admin/bounces?kind=lost", 400),
     ("/admin/bounces?kind=%3Cscript%3E", 400), ("/admin/bounces?address=a%00b", 400),
     ("/admin/bounces?address=" + "a" * 5000, 400), ("/admin/bounces?send=abc", 400),
     ("/admin/bounces?send=99999999999999999999", 400), ("/admin/bounces?send=%C2%B2", 400),
     ("/admin/bounces?before=abc", 200), ("/admin/bounces?before=99999999999999999999", 200),
     ("/admin/bounces?address=%25_%5C", 200)],
)  # fmt: skip
async def test_odd_input_gets_a_page_not_a_500(console: Console, path: str, status: int) -> None:
    client = await console.client("admin")
    answer = await client.get(path, headers={"Accept-Language": "en"})
    assert answer.status_code == status, (path, answer.text[:300])
    assert "<script>" not in answer.text
    if "kind=lost" in path:
        assert "The “kind” filter has no “lost”" in html.unescape(answer.text)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_the_pages_need_a_session_take_no_post_and_the_send_links_to_them(
    console: Console, tmp_path: Path, database_url: str
) -> None:
    seeded = await seed(console.store, tmp_path, database_url)
    anonymous = console.anonymous()
    for path in ("/admin/bounces", f"/admin/bounces/{seeded.hard}"):
        assert (await anonymous.get(path)).status_code == 303
    viewer = await console.client("viewer")
    token = await console.csrf(viewer)
    post = await viewer.post("/admin/bounces", data={"csrf": token})
    assert post.status_code == 405
    send_page = await viewer.get(f"/admin/sends/{seeded.send_id}")
    assert f'href="/admin/bounces?send={seeded.send_id}"' in send_page.text
    assert [r.action for r in (await console.store.bounces.rows()).lines][-1] == (
        BounceAction.SUPPRESSED.value
    )
    assert [e.action for e in await console.store.audit.page()] == ["staff.sign_in"]


def test_every_kind_action_and_report_has_its_words_and_the_french_follows_its_typography() -> None:
    words = tomllib.loads((ROOT / "templates/console/strings/bounces.toml").read_text())
    for lang in ("fr", "en"):
        table = words[lang]
        for kind in BounceKind:
            assert f"bounces_kind_{kind.value.replace('-', '_')}" in table
        for action in BounceAction:
            assert f"bounces_did_{action.value.replace(' ', '_')}" in table
        for report in ReportKind:
            assert f"bounces_report_{report.value.replace('-', '_')}" in table
    for key, text in words["fr"].items():
        assert "'" not in text, key
        assert not re.search(r"[^\u202f][:;!?»]|«[^\u202f]", text), (key, text)
