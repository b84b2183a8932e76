"""The console's pages about people, on SQLite and PostgreSQL, through the real app: the lists
with their counts, a list's members (search, filter, keyset pages), the CSV export, a
subscriber's page, the suppressions page; and what admins do (unsubscribe, suppress,
unsuppress, erase; add and lift a suppression): each works and is audited, while a sender's
POST, or one without the CSRF token, is refused with nothing changed."""

from __future__ import annotations

import csv
import io
import re
import tomllib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from mailer.addresses import normalize
from mailer.lists import import_file
from mailer.models import (
    Content,
    DeliveryResult,
    DeliveryStatus,
    ListMeta,
    OptInMode,
    SubscriberRow,
    SuppressionReason,
)
from mailer.storage import Store, browse
from mailer.storage.engine import starts_with
from mailer.storage.tables import suppressions
from tests.console_support import ROOT, Console, now

pytestmark = pytest.mark.timeout(60)

FILLERS = 55  # members beyond one page of 50
MEMBER_LINK = re.compile(r'href="/admin/subscribers/([\w-]+)">([^<]+)</a>')


@dataclass
class People:
    jean: str  # public ids
    marie: str
    zoe: str
    paul: str


async def seed(store: Store, tmp_path: Path) -> People:
    """Two lists: "news" (Jean, Marie who left it, Zoé suppressed, fillers) and "events"
    (double opt-in, public: Jean, and Paul's pending sign-up)."""
    path = tmp_path / "news.csv"
    rows = ["email,name", "jean.dupont@example.org,Jean Dupont", "Marie@Example.org,Marie Curie",
            "zoe@example.org,=HYPERLINK(\"http://x\")"]  # fmt: skip
    rows += [f"member{i:03}@example.org,Membre {i}" for i in range(FILLERS)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert (await import_file(store, path, now=now())).ok
    meta = ListMeta(slug="events", title="Événements", opt_in=OptInMode.DOUBLE, public=True)
    await store.lists.upsert(meta, now=now())
    public = await store.lists.public_list("events")
    assert public is not None
    await store.consent.request(
        public, normalize("paul@example.org"), name="Paul", locale="fr", ip="192.0.2.7",
        timezone="", now=now(), interval=timedelta(0), per_day=10,
    )  # fmt: skip
    jean = normalize("jean.dupont@example.org")
    await store.subscribers.add(
        SubscriberRow(line=0, email=jean.email, key=jean.key, smtputf8=False), slug="events",
        source="cli",
        now=now(),
    )  # fmt: skip
    await store.subscribers.unsubscribe("marie@example.org", slug="news", source="web", now=now())
    await store.subscribers.suppress(
        "zoe@example.org", reason=SuppressionReason.COMPLAINT, detail="spam report", now=now()
    )
    found = {}
    for key in ("jean.dupont", "marie", "zoe", "paul"):
        for slug in ("news", "events"):
            page = await store.browse.members(slug, search=key)
            if page.members:
                found[key] = page.members[0].public_id
    return People(found["jean.dupont"], found["marie"], found["zoe"], found["paul"])


async def a_delivery(store: Store, name: str, status: DeliveryStatus, **extra: object) -> int:
    """A send of a campaign to the "events" list, its deliveries recorded with ``status``."""
    content = Content(name=name, kind="announcement", subject="Nouvelles", body="Bonjour.")
    campaign = await store.campaigns.save(
        content, list_slugs=["events"], sender_name=None, sender_address=None, event=None,
        now=now(),
    )  # fmt: skip
    send_id, _ = await store.sends.create(
        campaign, key="announce", action="announcement", due_at=now(), now=now()
    )
    assert await store.sends.start(await store.sends.spec(send_id), node="test", now=now())
    due = await store.deliveries.due(send_id, after=0, limit=10, now=now())
    await store.deliveries.record(
        [DeliveryResult(d.id, status, **extra) for d in due],  # type: ignore[arg-type]
        now=now(),
    )
    return send_id


async def post(
    console: Console, client: httpx.AsyncClient, url: str, **data: str
) -> httpx.Response:
    return await client.post(url, data={"csrf": await console.csrf(client), **data})


async def members(client: httpx.AsyncClient, url: str) -> list[str]:
    page = await client.get(url)
    assert page.status_code == 200, page.text
    return [email for _, email in MEMBER_LINK.findall(page.text)]


async def audit_of(store: Store, action: str) -> list[tuple[str, str, dict[str, object]]]:
    return [(e.actor, e.target, e.details) for e in await store.audit.page(action=action)]


# --- the lists and a list's members -------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ("Listes", "Abonnés exclus", "En attente")),
     ("en", ("Lists", "Subscribed, suppressed", "Pending"))],
)  # fmt: skip
async def test_the_lists_page_counts_members_by_status(
    console: Console, tmp_path: Path, lang: str, words: tuple[str, ...]
) -> None:
    """Each list with its pending, subscribed, unsubscribed and suppressed members; the
    export link for editors only."""
    await seed(console.store, tmp_path)
    viewer = await console.client("viewer")
    page = await viewer.get("/admin/lists", headers={"accept-language": lang})
    assert page.status_code == 200
    assert f'<html lang="{lang}">' in page.text
    for word in words:
        assert word in page.text
    news = page.text.split('href="/admin/lists/news"')[1].split("</tr>")[0]
    numbers = re.findall(r'<td class="numbers">([^<]+)</td>', news)
    assert numbers == ["0", str(FILLERS + 2), "1", "1"]  # pending, subscribed, left, suppressed
    events = page.text.split('href="/admin/lists/events"')[1].split("</tr>")[0]
    assert re.findall(r'<td class="numbers">([^<]+)</td>', events) == ["1", "1", "0", "0"]
    assert "export.csv" not in page.text
    editor = await console.client("editor")
    assert "/admin/lists/news/export.csv" in (await editor.get("/admin/lists")).text


@pytest.mark.parametrize(("lang", "word"), [("fr", "Page suivante"), ("en", "Next page")])
async def test_a_lists_members_come_in_keyset_pages_of_50(
    console: Console, tmp_path: Path, lang: str, word: str
) -> None:
    """Newest subscription first, 50 a page, a next link to the rest and back to the first."""
    await seed(console.store, tmp_path)
    client = await console.client("viewer")
    client.headers["accept-language"] = lang
    first = await client.get("/admin/lists/news")
    assert first.status_code == 200
    assert "Nouvelles" in first.text or "news" in first.text
    shown = MEMBER_LINK.findall(first.text)
    assert len(shown) == 50
    following = re.search(r'href="(/admin/lists/news\?before=\d+)" rel="next">' + word, first.text)
    assert following, first.text
    rest = [email for _, email in MEMBER_LINK.findall((await client.get(following[1])).text)]
    everyone = [email for _, email in shown] + rest
    assert len(everyone) == FILLERS + 3 == len(set(everyone))
    assert everyone[-1] == "jean.dupont@example.org"  # the first line of the file, oldest


async def test_members_are_found_by_address_or_name_prefix_and_filtered_by_status(
    console: Console, tmp_path: Path
) -> None:
    """``q`` matches the start of the address (any case) or of the name; ``status`` keeps one
    status (``suppressed``: subscribed but suppressed); an unknown status says so."""
    await seed(console.store, tmp_path)
    client = await console.client("viewer")
    assert await members(client, "/admin/lists/news?q=JEAN.") == ["jean.dupont@example.org"]
    assert await members(client, "/admin/lists/news?q=marie%20c") == ["Marie@example.org"]
    assert await members(client, "/admin/lists/news?q=dupont") == []  # a prefix, not a substring
    assert len(await members(client, "/admin/lists/news?q=membre%201")) == 11  # 1, 10..19
    assert await members(client, "/admin/lists/news?status=unsubscribed") == ["Marie@example.org"]
    assert await members(client, "/admin/lists/news?status=suppressed") == ["zoe@example.org"]
    assert await members(client, "/admin/lists/events?status=pending") == ["paul@example.org"]
    both = await members(client, "/admin/lists/news?q=m&status=subscribed")
    assert len(both) == 50
    assert "Marie@example.org" not in both
    bad = await client.get("/admin/lists/news?status=gone", headers={"accept-language": "en"})
    assert bad.status_code == 400
    assert "There is no such status" in bad.text
    missing = await client.get("/admin/lists/nope", headers={"accept-language": "fr"})
    assert missing.status_code == 404
    assert "Cette liste n’existe pas." in missing.text


async def test_the_export_is_the_clis_formula_safe_csv_for_editors_and_audited(
    console: Console, tmp_path: Path
) -> None:
    """Editors get the subscribed members as CSV, a formula cell defused, and the audit log
    names the export; a viewer gets 403 and no audit line."""
    await seed(console.store, tmp_path)
    viewer = await console.client("viewer")
    assert (await viewer.get("/admin/lists/news/export.csv")).status_code == 403
    assert await audit_of(console.store, "list.export") == []
    editor = await console.client("editor")
    answer = await editor.get("/admin/lists/news/export.csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="news.csv"' in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert len(rows) == FILLERS + 2  # Marie left the list
    zoe = next(r for r in rows if r["email"] == "zoe@example.org")
    assert zoe["name"] == '\'=HYPERLINK("http://x")'
    assert await audit_of(console.store, "list.export") == [
        ("editor@staff.example.org", "news", {"rows": FILLERS + 2})
    ]
    assert (await editor.get("/admin/lists/nope/export.csv")).status_code == 404


# --- a subscriber's page ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ("Historique du consentement", "demande d’inscription", "échec", "plainte")),
     ("en", ("Consent history", "sign-up request", "failed", "complaint"))],
)  # fmt: skip
async def test_a_subscribers_page_shows_lists_consent_suppressions_and_deliveries(
    console: Console, tmp_path: Path, lang: str, words: tuple[str, ...]
) -> None:
    """Found by public id: their lists and statuses, the consent history (with the sign-up's
    IP), the suppression and its history, each delivery with its send, result and reply."""
    store = console.store
    people = await seed(store, tmp_path)
    send_id = await a_delivery(
        store, "annonce-ratee", DeliveryStatus.FAILED, code=550, reply="5.1.1 no such user"
    )
    await store.subscribers.suppress(
        "paul@example.org", reason=SuppressionReason.COMPLAINT, detail="by phone", now=now()
    )
    client = await console.client("viewer")
    client.headers["accept-language"] = lang
    paul = await client.get(f"/admin/subscribers/{people.paul}")
    assert paul.status_code == 200
    assert words[0] in paul.text
    assert words[1] in paul.text  # his sign-up request...
    assert "192.0.2.7" in paul.text  # ...and where it came from
    assert words[3] in paul.text
    assert "by phone" in paul.text
    assert "/unsuppress" not in paul.text  # no admin actions for a viewer
    assert "/erase" not in paul.text
    jean = await client.get(f"/admin/subscribers/{people.jean}")
    assert jean.status_code == 200
    assert 'href="/admin/lists/news"' in jean.text
    assert 'href="/admin/lists/events"' in jean.text
    assert f'href="/admin/sends/{send_id}">announce</a>' in jean.text
    assert "annonce-ratee" in jean.text
    assert words[2] in jean.text
    assert "550 5.1.1 no such user" in jean.text
    missing = await client.get("/admin/subscribers/not-a-public-id")
    assert missing.status_code == 404


async def test_a_subscribers_deliveries_come_in_keyset_pages(
    console: Console, tmp_path: Path
) -> None:
    """Newest first, ``before`` the last id of the page before, none twice, none left out;
    the page's older link carries the cursor."""
    store = console.store
    people = await seed(store, tmp_path)
    sends = [await a_delivery(store, f"envoi-{i}", DeliveryStatus.SENT) for i in range(3)]
    person = await store.browse.person(people.jean)
    first = await store.browse.deliveries(person.id, limit=2)
    assert [d.send_id for d in first.lines] == sends[::-1][:2]
    assert first.next is not None
    rest = await store.browse.deliveries(person.id, before=first.next, limit=2)
    assert [d.send_id for d in rest.lines] == [sends[0]]
    assert rest.next is None
    client = await console.client("viewer")
    page = (await client.get(f"/admin/subscribers/{people.jean}")).text
    assert all(f"/admin/sends/{s}" in page for s in sends)
    assert "?before=" not in page  # three fit on one page of 50


# --- what admins do to a subscriber -------------------------------------------------------------


async def test_an_admin_unsubscribes_from_one_list_then_all_after_confirming(
    console: Console, tmp_path: Path
) -> None:
    """The confirmation page first (no change), then the POST records the unsubscribe, the
    notice says how many lists, and the audit log has it."""
    store = console.store
    people = await seed(store, tmp_path)
    admin = await console.client("admin")
    url = f"/admin/subscribers/{people.jean}/unsubscribe"
    confirm = await admin.get(url + "?list=news", headers={"accept-language": "fr"})
    assert confirm.status_code == 200
    assert (
        "Désabonner jean.dupont@example.org de la liste «\u202fnews\u202f»\u202f?" in confirm.text
    )
    assert (await store.subscribers.show("jean.dupont@example.org")).subscriptions[1][1] == (
        "subscribed"
    )
    answer = await post(console, admin, url, list="news", confirm="yes")
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("?done=unsubscribed&n=1")
    statuses = {
        s: st
        for s, st, _ in (await store.subscribers.show("jean.dupont@example.org")).subscriptions
    }
    assert statuses == {"news": "unsubscribed", "events": "subscribed"}
    notice = await admin.get(answer.headers["location"], headers={"accept-language": "en"})
    assert "Unsubscribe recorded. Lists changed: 1." in notice.text
    answer = await post(console, admin, url, list="", confirm="yes")
    assert answer.headers["location"].endswith("?done=unsubscribed&n=1")
    view = await store.subscribers.show("jean.dupont@example.org")
    assert {st for _, st, _ in view.subscriptions} == {"unsubscribed"}
    assert await audit_of(store, "subscriber.unsubscribe") == [
        ("admin@staff.example.org", "jean.dupont@example.org", {"list": "*", "changed": 1}),
        ("admin@staff.example.org", "jean.dupont@example.org", {"list": "news", "changed": 1}),
    ]
    person = await store.browse.person(people.jean)
    assert person.subscriptions[0].unsubscribe_source == "console:admin@staff.example.org"
    wrong = await post(console, admin, url, list="elsewhere", confirm="yes")
    assert wrong.status_code == 404


async def test_an_admin_suppresses_and_lifts_with_a_reason(
    console: Console, tmp_path: Path
) -> None:
    """Suppress with a kind and a reason, lift with a reason (refused without one): the
    history names the staff member, the audit log has both."""
    store = console.store
    people = await seed(store, tmp_path)
    admin = await console.client("admin")
    home = f"/admin/subscribers/{people.jean}"
    form = await admin.get(home + "/suppress", headers={"accept-language": "en"})
    assert form.status_code == 200
    assert 'name="kind"' in form.text
    assert 'name="reason"' in form.text
    empty = await post(console, admin, home + "/suppress", kind="manual", reason=" ")
    assert empty.status_code == 400
    assert (await store.browse.person(people.jean)).suppression is None
    answer = await post(console, admin, home + "/suppress", kind="complaint", reason="by mail")
    assert answer.status_code == 303
    assert answer.headers["location"] == home + "?done=suppressed"
    person = await store.browse.person(people.jean)
    assert person.suppression is not None
    assert person.suppression.reason == "complaint"
    again = await post(console, admin, home + "/suppress", kind="manual", reason="twice")
    assert again.headers["location"] == home + "?done=already_suppressed"
    refused = await post(console, admin, home + "/unsuppress", reason="")
    assert refused.status_code == 400
    assert "The reason is required" in refused.text or "Le motif est obligatoire" in refused.text
    lifted = await post(console, admin, home + "/unsuppress", reason="asked to come back")
    assert lifted.headers["location"] == home + "?done=unsuppressed"
    person = await store.browse.person(people.jean)
    assert person.suppression is None
    assert [(e.action, e.detail, e.actor) for e in person.suppression_history] == [
        ("suppress", "by mail", "console:admin@staff.example.org"),
        ("unsuppress", "asked to come back", "console:admin@staff.example.org"),
    ]
    assert await audit_of(store, "subscriber.suppress") == [
        ("admin@staff.example.org", "jean.dupont@example.org",
         {"kind": "complaint", "reason": "by mail"})
    ]  # fmt: skip
    assert await audit_of(store, "subscriber.unsuppress") == [
        ("admin@staff.example.org", "jean.dupont@example.org",
         {"reason": "asked to come back", "was": "complaint"})
    ]  # fmt: skip


async def test_an_admin_erases_a_subscriber_and_the_audit_keeps_no_address(
    console: Console, tmp_path: Path
) -> None:
    """After the confirmation, the subscriber and their history are gone (their page 404s),
    their suppression stays, and the audit line names their public id, not their address."""
    store = console.store
    people = await seed(store, tmp_path)
    admin = await console.client("admin")
    home = f"/admin/subscribers/{people.zoe}"
    confirm = await admin.get(home + "/erase", headers={"accept-language": "fr"})
    assert confirm.status_code == 200
    assert "définitif" in confirm.text
    answer = await post(console, admin, home + "/erase", confirm="yes")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/lists?done=erased"
    assert (await admin.get(home)).status_code == 404
    assert (await store.browse.suppressions(search="zoe")).lines[0].public_id is None
    lines = await store.audit.page(action="subscriber.erase")
    assert [(e.target, e.details) for e in lines] == [
        (f"subscriber {people.zoe}", {"lists": 1, "suppressed": True})
    ]
    assert "zoe" not in repr(lines[0])
    done = await admin.get("/admin/lists?done=erased", headers={"accept-language": "en"})
    assert "The person and their history were erased." in done.text


ACTIONS = [
    ("unsubscribe", {"list": "news"}),
    ("suppress", {"kind": "manual", "reason": "why"}),
    ("erase", {}),
]


@pytest.mark.parametrize("role", ["viewer", "sender"])
async def test_below_admin_no_subscriber_action_is_offered_or_done(
    console: Console, tmp_path: Path, role: str
) -> None:
    """A viewer's or a sender's GET of a confirmation page and POST are refused (403) and
    change nothing, and no audit line is written."""
    store = console.store
    people = await seed(store, tmp_path)
    before = await store.browse.person(people.jean)
    client = await console.client(role)
    for action, data in [*ACTIONS, ("unsuppress", {"reason": "why"})]:
        url = f"/admin/subscribers/{people.jean}/{action}"
        assert (await client.get(url)).status_code == 403
        assert (await post(console, client, url, confirm="yes", **data)).status_code == 403
    assert await store.browse.person(people.jean) == before
    assert [e.action for e in await store.audit.page()] == ["staff.sign_in"]


async def test_an_admins_post_without_csrf_changes_nothing(
    console: Console, tmp_path: Path
) -> None:
    """Every subscriber and suppression action, posted by an admin without (or with a wrong)
    CSRF token: 403, nothing changed, nothing audited."""
    store = console.store
    people = await seed(store, tmp_path)
    before = await store.browse.person(people.zoe)
    zoe_sup = before.suppression
    assert zoe_sup is not None
    admin = await console.client("admin")
    urls = [(f"/admin/subscribers/{people.zoe}/{a}", d) for a, d in ACTIONS]
    urls += [
        (f"/admin/subscribers/{people.zoe}/unsuppress", {"reason": "why"}),
        ("/admin/suppressions", {"address": "new@example.org", "reason": "why"}),
        (f"/admin/suppressions/{zoe_sup.id}/lift", {"reason": "why"}),
    ]
    for url, data in urls:
        assert (await admin.post(url, data={"confirm": "yes", **data})).status_code == 403
        wrong = {"csrf": "not-the-token", "confirm": "yes", **data}
        assert (await admin.post(url, data=wrong)).status_code == 403
    assert await store.browse.person(people.zoe) == before
    assert len((await store.browse.suppressions()).lines) == 1
    assert [e.action for e in await store.audit.page()] == ["staff.sign_in"]


# --- the suppressions page ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "word"), [("fr", "Adresses exclues"), ("en", "Suppressed addresses")]
)
async def test_the_suppressions_page_searches_and_pages_newest_first(
    console: Console, tmp_path: Path, lang: str, word: str
) -> None:
    """Newest first, 50 a page with a next link, a search by address prefix, and a link to
    the subscriber's page where there is one; the add form for admins only."""
    store = console.store
    people = await seed(store, tmp_path)
    for i in range(52):
        await store.subscribers.suppress(
            f"gone{i:02}@example.net", reason=SuppressionReason.HARD_BOUNCE, detail="550", now=now()
        )
    client = await console.client("viewer")
    client.headers["accept-language"] = lang
    page = await client.get("/admin/suppressions")
    assert page.status_code == 200
    assert word in page.text
    rows = re.findall(r'<th scope="row">([^<]+)</th>', page.text)
    assert len(rows) == 50
    assert rows[0] == "gone51@example.net"
    following = re.search(r'href="/admin/suppressions(\?before=\d+)" rel="next"', page.text)
    assert following
    rest = await client.get("/admin/suppressions" + following[1])
    assert re.findall(r'<th scope="row">([^<]+)</th>', rest.text) == [
        "gone01@example.net", "gone00@example.net", "zoe@example.org"
    ]  # fmt: skip
    assert f'href="/admin/subscribers/{people.zoe}"' in rest.text
    found = await client.get("/admin/suppressions?q=GONE4")
    assert len(re.findall(r'<th scope="row">([^<]+)</th>', found.text)) == 10
    assert 'name="address"' not in page.text
    assert "/lift" not in page.text


async def test_an_admin_adds_and_lifts_a_suppression_with_a_reason(
    console: Console, tmp_path: Path
) -> None:
    """Adding needs a valid address and a reason (each mistake named, nothing stored);
    lifting needs its confirmation and a reason; both audited, as the subscriber page's."""
    store = console.store
    await seed(store, tmp_path)
    admin = await console.client("admin")
    admin.headers["accept-language"] = "fr"
    bad = await post(console, admin, "/admin/suppressions", address="not an address",
                     kind="manual", reason="test")  # fmt: skip
    assert bad.status_code == 400
    assert "Adresse\u202f: elle n’est pas valide" in bad.text
    assert 'value="not an address"' in bad.text  # what was typed is kept
    no_reason = await post(console, admin, "/admin/suppressions", address="a@example.net")
    assert no_reason.status_code == 400
    assert "Le motif est obligatoire" in no_reason.text
    assert len((await store.browse.suppressions()).lines) == 1
    added = await post(console, admin, "/admin/suppressions", address="Someone@Example.NET",
                       kind="hard_bounce", reason="bounced elsewhere")  # fmt: skip
    assert added.headers["location"] == "/admin/suppressions?done=added"
    line = (await store.browse.suppressions(search="someone")).lines[0]
    assert (line.email_key, line.reason, line.detail) == (
        "someone@example.net",
        "hard_bounce",
        "bounced elsewhere",
    )
    confirm = await admin.get(f"/admin/suppressions/{line.id}/lift")
    assert confirm.status_code == 200
    assert 'name="reason"' in confirm.text
    assert "rejet définitif" in confirm.text
    refused = await post(console, admin, f"/admin/suppressions/{line.id}/lift", reason="")
    assert refused.status_code == 400
    lifted = await post(console, admin, f"/admin/suppressions/{line.id}/lift", reason="typo")
    assert lifted.headers["location"] == "/admin/suppressions?done=lifted"
    assert (await store.browse.suppressions(search="someone")).lines == []
    gone = await admin.get(f"/admin/suppressions/{line.id}/lift")
    assert gone.status_code == 404
    assert await audit_of(store, "subscriber.suppress") == [
        ("admin@staff.example.org", "Someone@example.net",
         {"kind": "hard_bounce", "reason": "bounced elsewhere"})
    ]  # fmt: skip
    assert await audit_of(store, "subscriber.unsuppress") == [
        ("admin@staff.example.org", "someone@example.net", {"reason": "typo", "was": "hard_bounce"})
    ]


async def test_a_sender_cannot_add_or_lift_a_suppression(console: Console, tmp_path: Path) -> None:
    """403 for the add POST, the lift page and its POST; nothing changed or audited."""
    store = console.store
    await seed(store, tmp_path)
    line = (await store.browse.suppressions()).lines[0]
    sender = await console.client("sender")
    assert (await sender.get("/admin/suppressions")).status_code == 200
    added = await post(console, sender, "/admin/suppressions", address="x@example.net",
                       kind="manual", reason="r")  # fmt: skip
    assert added.status_code == 403
    assert (await sender.get(f"/admin/suppressions/{line.id}/lift")).status_code == 403
    lift = await post(console, sender, f"/admin/suppressions/{line.id}/lift", reason="r")
    assert lift.status_code == 403
    assert (await store.browse.suppressions()).lines == [line]
    assert [e.action for e in await store.audit.page()] == ["staff.sign_in"]


# --- words and prefixes -------------------------------------------------------------------------


def test_the_french_words_follow_french_typography() -> None:
    """A narrow no-break space before : ; ! ? and inside « », the typographic apostrophe."""
    words = tomllib.loads((ROOT / "templates/console/strings/people.toml").read_text())["fr"]
    for key, text in words.items():
        assert "'" not in text, key
        assert not re.search(r"[^\u202f][:;!?»]|«[^\u202f]", text), (key, text)


@pytest.mark.parametrize("prefix", ["jean.", "JEAN", "z", "j" + "\U0010ffff", "%", "_", "\\"])
async def test_a_prefix_finds_exactly_the_addresses_that_begin_with_it(
    console: Console, tmp_path: Path, prefix: str
) -> None:
    """Whatever the prefix (a dot, a LIKE wildcard, the last code point), the members found
    are those whose address key begins with it, on each database."""
    store = console.store
    await seed(store, tmp_path)
    for odd in ("%pc@example.org", "_u@example.org", "j\\x@example.org", "jean.x@example.org"):
        await store.subscribers.suppress(odd, reason=SuppressionReason.MANUAL, detail="", now=now())
    keys = {s.email_key for s in (await store.browse.suppressions(limit=200)).lines}
    found = {s.email_key for s in (await store.browse.suppressions(search=prefix)).lines}
    assert found == {k for k in keys if k.startswith(prefix.casefold())}


async def test_a_prefix_search_reads_the_address_index(store: Store) -> None:
    """The prefix is a range of the unique ``email_key`` index (SQLite) or a LIKE the
    C-collated index answers (PostgreSQL), never a scan of the table: a regression here is
    a console page that reads a million rows."""
    query = select(suppressions.c.id).where(starts_with(suppressions.c.email_key, "jean"))
    async with store.db.begin() as conn:
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "sqlite":
            plan = " ".join(
                str(r[-1]) for r in await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)
            )
            assert "(email_key>? AND email_key<?)" in plan, plan
        else:
            await conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " ".join(str(r[0]) for r in await conn.exec_driver_sql("EXPLAIN " + sql))
            assert "Index" in plan, plan
            assert "Seq Scan" not in plan, plan


@pytest.mark.parametrize("search", ["m", "membre 1", "JEAN", "nobody"])
async def test_a_search_naming_many_subscribers_finds_the_same_members(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, search: str
) -> None:
    """Past ``FEW_NAMED`` subscribers named, the search walks the list instead of looking
    each one up: the same members, in the same order, page after page."""
    await seed(store, tmp_path)

    async def pages() -> list[str]:
        found, before = [], None
        while True:
            page = await store.browse.members("news", search=search, before=before, limit=7)
            found += [m.email for m in page.members]
            if page.next is None:
                return found
            before = page.next

    looked_up = await pages()
    monkeypatch.setattr(browse, "FEW_NAMED", 1)
    assert await pages() == looked_up
    assert (looked_up == []) == (search == "nobody")
