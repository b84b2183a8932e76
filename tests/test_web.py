"""The subscriber pages against the real app (httpx over ASGI, and a real uvicorn on
loopback with curl): one-click unsubscribe, double opt-in, preferences, health, metrics, and
the bad inputs of the issue. The database is real (SQLite, and PostgreSQL where marked)."""

from __future__ import annotations

import asyncio
import email
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from mailer.addresses import normalize
from mailer.dispatch import Engine
from mailer.errors import ConfigError
from mailer.intake import Intake
from mailer.models import Content, SendStatus, SuppressionReason
from mailer.settings import Settings
from mailer.storage import ListMeta, Store, SubscriberRow
from mailer.storage.tables import sends, subscribers, subscriptions
from mailer.tokens import Purpose, Signer
from mailer.transport import SmtpTransport
from mailer.web import IpLimit, Views, WebServer, create_app, pick_locale
from tests.conftest import make_settings
from tests.smtpd import SmtpServer
from tests.test_bounces_parse import block, dsn

ROOT = Path(__file__).resolve().parent.parent
KEY = "Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"  # 256 bits, as required
pytestmark = pytest.mark.timeout(60)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Probe:
    """A stand-in for the scheduler's state (what /healthz reads)."""

    sync_interval: float = 5.0
    last_sync: datetime | None = field(default_factory=now)
    last_lateness: float | None = 0.012
    running: bool = True

    def alive(self) -> bool:
        return self.running


@dataclass
class Site:
    store: Store
    settings: Settings
    client: httpx.AsyncClient
    signer: Signer
    probe: Probe
    queued: list[int]
    ids: dict[str, int]  # email -> subscriber id
    lists: dict[str, int]  # slug -> list id
    pub: dict[str, str] = field(default_factory=dict)  # email -> public id (what links name)

    def link(self, purpose: Purpose, email_: str, slug: str = "researchers") -> str:
        payload = [self.pub[email_], self.lists[slug]]
        return f"/{purpose.value[0]}/{self.signer.sign(purpose, payload)}"

    async def confirm_link(self, email_: str, slug: str) -> str:
        """The confirmation link of the pending sign-up of ``email_`` (its nonce as stored)."""
        public, nonce = await pending(self.store, email_, self.lists[slug])
        self.pub[email_] = public
        return f"/c/{self.signer.sign(Purpose.CONFIRM, [public, self.lists[slug], nonce])}"

    async def subscription(self, email_: str, slug: str = "researchers") -> dict[str, Any]:
        async with self.store.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(subscriptions).where(
                            subscriptions.c.subscriber_id == self.ids[email_],
                            subscriptions.c.list_id == self.lists[slug],
                        )
                    )
                )
                .mappings()
                .one()
            )
        return dict(row)


def web_settings(tmp_path: Path, database_url: str, **web: Any) -> Settings:
    return make_settings(
        tmp_path,
        database={"url": database_url},
        paths={"templates_dir": ROOT / "templates"},
        secret_keys=KEY,
        web={"base_url": "http://lists.test", **web},
    )


async def populate(store: Store) -> tuple[dict[str, int], dict[str, int]]:
    lists = {}
    for slug, title, public in (
        ("researchers", "Chercheurs du réseau", False),
        ("newsletter", "La lettre du réseau", True),
        ("events", "Journées scientifiques", True),
    ):
        await store.lists.upsert(ListMeta(slug, title, public=public), now=now())
        lists[slug] = await store.lists.id_of(slug)
    ids = {}
    for address, name, locale in (
        ("claire.martin@example.org", "Claire Martin", "fr"),
        ("john.smith@example.org", "John Smith", "en"),
        ("amelie@example.org", "Amélie", None),
    ):
        valid = normalize(address)
        row = SubscriberRow(1, valid.email, valid.key, valid.smtputf8, name=name, locale=locale)
        await store.subscribers.add(row, slug="researchers", source="test", now=now())
        async with store.engine.connect() as conn:
            ids[address] = (
                await conn.execute(select(subscribers.c.id).where(subscribers.c.email == address))
            ).scalar_one()
    return ids, lists


async def public_id(store: Store, address: str) -> str:
    async with store.engine.connect() as conn:
        return str(
            (
                await conn.execute(
                    select(subscribers.c.public_id).where(subscribers.c.email == address)
                )
            ).scalar_one()
        )


async def pending(store: Store, address: str, list_id: int) -> tuple[str, str]:
    """The public id of ``address`` and the nonce of its pending sign-up to ``list_id``."""
    async with store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(subscribers.c.public_id, subscriptions.c.confirm_nonce)
                .join(subscriptions, subscriptions.c.subscriber_id == subscribers.c.id)
                .where(subscribers.c.email == address, subscriptions.c.list_id == list_id)
            )
        ).one()
    return str(row.public_id), str(row.confirm_nonce)


@pytest.fixture
async def site(store: Store, tmp_path: Path, database_url: str) -> AsyncIterator[Site]:
    settings = web_settings(tmp_path, database_url, signups_per_ip=5000)
    ids, lists = await populate(store)
    signer = Signer([KEY])
    probe = Probe()
    queued: list[int] = []
    app = create_app(settings, store, signer=signer, scheduler=probe, on_send=queued.append)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://lists.test") as client:
        pub = {address: await public_id(store, address) for address in ids}
        yield Site(store, settings, client, signer, probe, queued, ids, lists, pub)


CLAIRE = "claire.martin@example.org"
JOHN = "john.smith@example.org"


# --- unsubscribe -------------------------------------------------------------------------------


async def test_get_shows_a_button_and_changes_nothing(site: Site) -> None:
    """Link scanners fetch URLs: GET on the unsubscribe link must not unsubscribe."""
    for _ in range(3):
        page = await site.client.get(site.link(Purpose.UNSUBSCRIBE, CLAIRE))
        assert page.status_code == 200
    assert "claire.martin@example.org" in page.text
    assert 'name="action" value="list"' in page.text
    assert "Me désinscrire de « Chercheurs du réseau »" in page.text  # her language
    assert page.headers["cache-control"] == "no-store"
    assert (await site.subscription(CLAIRE))["status"] == "subscribed"


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
async def test_one_click_post_unsubscribes_once_and_says_200(site: Site, encoding: str) -> None:
    """RFC 8058: POST with List-Unsubscribe=One-Click (either form encoding), no cookie,
    answers 200 without a redirect, records when and how, and is idempotent."""
    url = site.link(Purpose.UNSUBSCRIBE, JOHN)
    kwargs: dict[str, Any] = (
        {"data": {"List-Unsubscribe": "One-Click"}}
        if encoding == "urlencoded"
        else {"files": {"List-Unsubscribe": (None, "One-Click")}}
    )
    first = await site.client.post(url, **kwargs)
    assert first.status_code == 200, first.text
    assert "set-cookie" not in first.headers
    row = await site.subscription(JOHN)
    assert row["status"] == "unsubscribed"
    assert row["unsubscribe_source"] == "one-click (RFC 8058) from 192.0.2.7"
    when = row["unsubscribed_at"]
    assert when is not None
    again = await site.client.post(url, **kwargs)
    assert again.status_code == 200
    assert (await site.subscription(JOHN))["unsubscribed_at"] == when  # not rewritten
    assert "will no longer receive" in again.text  # John reads English
    # his other subscriptions are untouched
    assert (await site.subscription(CLAIRE))["status"] == "subscribed"


async def test_the_page_button_can_leave_every_list(site: Site) -> None:
    await site.store.subscribers.add(
        SubscriberRow(1, CLAIRE, CLAIRE, False), slug="newsletter", source="test", now=now()
    )
    page = await site.client.post(site.link(Purpose.UNSUBSCRIBE, CLAIRE), data={"action": "all"})
    assert page.status_code == 200
    assert "d’aucune de nos listes" in page.text
    for slug in ("researchers", "newsletter"):
        row = await site.subscription(CLAIRE, slug)
        assert (row["status"], row["unsubscribe_source"]) == (
            "unsubscribed",
            "unsubscribe page from 192.0.2.7",
        )


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("List-Unsubscribe=Yes", "application/x-www-form-urlencoded"),
        ("unsubscribe=1", "application/x-www-form-urlencoded"),
        ('{"List-Unsubscribe": "One-Click"}', "application/json"),
        ("List-Unsubscribe=One-Click", "text/plain"),
        ("", "application/x-www-form-urlencoded"),
    ],
)
async def test_a_post_that_is_not_rfc_8058_changes_nothing(
    site: Site, body: str, content_type: str
) -> None:
    page = await site.client.post(
        site.link(Purpose.UNSUBSCRIBE, CLAIRE), content=body, headers={"content-type": content_type}
    )
    assert page.status_code == 400
    assert "Rien n’a été modifié" in page.text
    assert (await site.subscription(CLAIRE))["status"] == "subscribed"


def _tamper(token: str) -> str:
    middle = len(token) // 2
    return token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]


async def test_bad_tokens_get_one_generic_page_and_change_nothing(site: Site) -> None:
    claire = [site.pub[CLAIRE], site.lists["researchers"]]
    good = site.signer.sign(Purpose.UNSUBSCRIBE, claire)
    foreign = Signer(["someone-else"]).sign(Purpose.UNSUBSCRIBE, claire)
    wrong_purpose = site.signer.sign(Purpose.PREFERENCES, claire)
    not_a_pair = site.signer.sign(Purpose.UNSUBSCRIBE, {"id": site.ids[CLAIRE]})
    unknown = site.signer.sign(
        Purpose.UNSUBSCRIBE, ["nobody-has-this-id", site.lists["researchers"]]
    )
    row_id = site.signer.sign(Purpose.UNSUBSCRIBE, [site.ids[CLAIRE], site.lists["researchers"]])
    huge = site.signer.sign(Purpose.UNSUBSCRIBE, [site.pub[CLAIRE], 10**30])
    odd = site.signer.sign(Purpose.UNSUBSCRIBE, [site.pub[CLAIRE], True])
    nested = site.signer.sign(Purpose.UNSUBSCRIBE, [[site.pub[CLAIRE]], {"a": 1}])
    tokens = (_tamper(good), foreign, wrong_purpose, not_a_pair, unknown, row_id, huge, odd, nested)
    bodies = set()
    for token in (*tokens, "x", "a.b.c", "%00", "x" * 5000, good + "." + good):
        for method in ("GET", "POST"):
            page = await site.client.request(
                method, f"/u/{token}", data={"List-Unsubscribe": "One-Click"}
            )
            assert page.status_code == 404, (token, method)
            bodies.add(page.text)
    assert len(bodies) == 1  # the same page, whatever was wrong
    assert "Ce lien n’est pas valide" in bodies.pop()
    assert (await site.subscription(CLAIRE))["status"] == "subscribed"


async def test_rotated_keys_still_accept_links_already_sent(site: Site, store: Store) -> None:
    """The operator adds a new key first: links signed with the old one keep working."""
    old = site.signer.sign(Purpose.UNSUBSCRIBE, [site.pub[JOHN], site.lists["researchers"]])
    rotated = site.settings.model_copy(update={"secret_keys": []})
    app = create_app(rotated, store, signer=Signer(["new-key", KEY]))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://lists.test"
    ) as client:
        page = await client.post(f"/u/{old}", data={"List-Unsubscribe": "One-Click"})
    assert page.status_code == 200
    assert (await site.subscription(JOHN))["status"] == "unsubscribed"


# --- subscribe with double opt-in ---------------------------------------------------------------


async def _sign_up(site: Site, address: str, **fields: str) -> httpx.Response:
    return await site.client.post("/s/newsletter", data={"email": address, **fields})


async def test_sign_up_makes_a_pending_subscription_and_one_confirmation_send(site: Site) -> None:
    form = await site.client.get("/s/newsletter", headers={"accept-language": "en-GB,fr;q=0.5"})
    assert form.status_code == 200
    assert "Subscribe to “La lettre du réseau”" in form.text
    page = await _sign_up(site, "Nouveau.Membre@Example.ORG", name="Nouveau Membre", locale="fr")
    assert page.status_code == 200
    assert "Vérifiez votre boîte de réception" in page.text
    async with site.store.engine.connect() as conn:
        member = (
            await conn.execute(
                select(subscribers).where(subscribers.c.email_key == "nouveau.membre@example.org")
            )
        ).one()
        sub = (
            (
                await conn.execute(
                    select(subscriptions).where(subscriptions.c.subscriber_id == member.id)
                )
            )
            .mappings()
            .one()
        )
        confirm_sends = (await conn.execute(select(sends).where(sends.c.action == "confirm"))).all()
    assert (member.email, member.name, member.locale) == (
        "Nouveau.Membre@example.org",
        "Nouveau Membre",
        "fr",
    )
    assert (sub["status"], sub["source"], sub["consent_ip"]) == ("pending", "web form", "192.0.2.7")
    assert sub["consent_at"] is not None
    assert sub["confirmed_at"] is None
    assert len(confirm_sends) == 1
    assert site.queued == [confirm_sends[0].id]  # handed to the scheduler at once
    counts = await site.store.figures.counts(confirm_sends[0].id)
    assert counts["queued"] == 1


async def test_a_thousand_sign_ups_for_one_address_send_one_mail(site: Site) -> None:
    pages = [await _sign_up(site, "victim@example.org") for _ in range(1000)]
    assert {p.status_code for p in pages} == {200}
    assert len({p.text for p in pages}) == 1
    assert len(site.queued) == 1
    # another list for the same address: one more, and then the daily cap holds
    await site.client.post("/s/events", data={"email": "victim@example.org"})
    assert len(site.queued) == 2


async def test_simultaneous_sign_ups_for_a_new_address_make_one_mail(site: Site) -> None:
    pages = await asyncio.gather(*(_sign_up(site, "twice@example.org") for _ in range(8)))
    assert [p.status_code for p in pages] == [200] * 8
    assert len(site.queued) == 1


async def test_the_page_does_not_reveal_who_is_subscribed(site: Site) -> None:
    await site.store.subscribers.add(
        SubscriberRow(1, JOHN, JOHN, False), slug="newsletter", source="test", now=now()
    )
    await site.store.subscribers.suppress(
        "suppressed@example.org", reason=SuppressionReason.COMPLAINT, detail="", now=now()
    )
    known = await _sign_up(site, JOHN, locale="en")
    suppressed = await _sign_up(site, "suppressed@example.org", locale="en")
    stranger = await _sign_up(site, "stranger@example.org", locale="en")
    assert known.status_code == suppressed.status_code == stranger.status_code == 200
    assert known.text == suppressed.text == stranger.text
    assert len(site.queued) == 1  # only the stranger gets a mail


async def test_sign_up_limits_per_client_address(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    settings = web_settings(tmp_path, database_url, signups_per_ip=3)
    await populate(store)
    app = create_app(settings, store, signer=Signer([KEY]))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("198.51.100.9", 1)),
        base_url="http://lists.test",
    ) as client:
        codes = [
            (await client.post("/s/newsletter", data={"email": f"a{i}@example.org"})).status_code
            for i in range(5)
        ]
    assert codes == [200, 200, 200, 429, 429]


def test_ip_limit_forgets_after_its_window() -> None:
    limit = IpLimit(2, window=60)
    assert [limit.allow("a", now=t) for t in (0, 1, 2)] == [True, True, False]
    assert limit.allow("b", now=2)
    assert limit.allow("a", now=61.5)


@pytest.mark.parametrize(
    ("fields", "status", "expected"),
    [
        ({"email": "not an address"}, 400, "Cette adresse n’est pas valide"),
        ({"email": "a@b@example.org"}, 400, "Cette adresse n’est pas valide"),
        ({"email": ""}, 400, "Cette adresse n’est pas valide"),
        ({"email": "ok@example.org", "name": "x" * 201}, 400, "Le nom est trop long"),
        ({"email": "ok@example.org", "name": "Evil\r\nBcc: x@example.org"}, 400, "Le nom"),
        ({"email": "ok@example.org", "name": "Line\u2028break"}, 400, "Le nom"),
        ({"email": "ok@example.org", "name": "Next\x85line"}, 400, "Le nom"),
        ({"email": "ok@example.org", "name": "Bidi\u202etxt.exe"}, 400, "Le nom"),
    ],
)
async def test_bad_sign_up_fields_redisplay_the_form(
    site: Site, fields: dict[str, str], status: int, expected: str
) -> None:
    page = await site.client.post("/s/newsletter", data=fields)
    assert page.status_code == status
    assert expected in page.text
    assert 'id="email"' in page.text  # the form again, to correct
    assert site.queued == []


async def test_enormous_bodies_are_refused_before_they_are_read(site: Site) -> None:
    huge = {"email": "ok@example.org", "name": "x" * 1_000_000}
    page = await site.client.post("/s/newsletter", data=huge)
    assert page.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield b"email=ok%40example.org&name="
        for _ in range(100):
            yield b"x" * 10_000

    streamed = await site.client.post(
        "/s/newsletter",
        content=chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413
    assert site.queued == []


async def test_unknown_and_private_lists_are_not_found(site: Site) -> None:
    for path in ("/s/nope", "/s/researchers", "/nowhere"):
        page = await site.client.get(path)
        assert page.status_code == 404
        assert "Cette page n’existe pas" in page.text
    index = await site.client.get("/", headers={"accept-language": "en"})
    assert "La lettre du réseau" in index.text
    assert "Chercheurs" not in index.text


async def test_confirmation_link_activates_the_subscription(site: Site) -> None:
    await _sign_up(site, "new@example.org", locale="en")
    async with site.store.engine.connect() as conn:
        site.ids["new@example.org"] = (
            await conn.execute(
                select(subscribers.c.id).where(subscribers.c.email == "new@example.org")
            )
        ).scalar_one()
    url = await site.confirm_link("new@example.org", "newsletter")
    page = await site.client.get(url)
    assert page.status_code == 200
    assert 'id="confirm"' in page.text
    assert (await site.subscription("new@example.org", "newsletter"))["status"] == "pending"
    done = await site.client.post(url)
    assert done.status_code == 200
    assert "Subscription confirmed" in done.text
    row = await site.subscription("new@example.org", "newsletter")
    assert (row["status"], row["confirmed_ip"]) == ("subscribed", "192.0.2.7")
    again = await site.client.post(url)
    assert "already subscribed" in again.text
    # an unsubscribe token is no confirmation token
    wrong = site.link(Purpose.UNSUBSCRIBE, "new@example.org", "newsletter").replace("/u/", "/c/")
    assert (await site.client.post(wrong)).status_code == 404


async def test_an_expired_confirmation_link_changes_nothing(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    settings = web_settings(tmp_path, database_url, confirm_max_age=1)
    _, lists = await populate(store)
    signer = Signer([KEY])
    app = create_app(settings, store, signer=signer)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://lists.test"
    ) as client:
        await client.post("/s/newsletter", data={"email": "late@example.org"})
        async with store.engine.connect() as conn:
            late = (
                await conn.execute(
                    select(subscribers.c.id).where(subscribers.c.email == "late@example.org")
                )
            ).scalar_one()
        public, nonce = await pending(store, "late@example.org", lists["newsletter"])
        token = signer.sign(Purpose.CONFIRM, [public, lists["newsletter"], nonce])
        await asyncio.sleep(2.1)
        page = await client.post(f"/c/{token}")
    assert page.status_code == 404
    assert "a expiré" in page.text
    async with store.engine.connect() as conn:
        status = (
            await conn.execute(
                select(subscriptions.c.status).where(subscriptions.c.subscriber_id == late)
            )
        ).scalar_one()
    assert status == "pending"


# --- preferences ------------------------------------------------------------------------------


async def test_preferences_show_and_change_lists_and_language(site: Site) -> None:
    url = site.link(Purpose.PREFERENCES, CLAIRE)
    page = await site.client.get(url)
    assert page.status_code == 200
    assert "Abonnements de claire.martin@example.org" in page.text
    checked = re.findall(r'value="(\d+)" checked', page.text)
    assert checked == [str(site.lists["researchers"])]
    assert f'value="{site.lists["newsletter"]}"' in page.text  # public: offered
    saved = await site.client.post(
        url, data={"list": [str(site.lists["newsletter"]), "999999", "x"], "locale": "en"}
    )
    assert saved.status_code == 200
    assert "Your preferences are saved." in saved.text  # now in her new language
    assert (await site.subscription(CLAIRE, "newsletter"))["status"] == "subscribed"
    left = await site.subscription(CLAIRE)
    assert (left["status"], left["unsubscribe_source"]) == (
        "unsubscribed",
        "preferences page from 192.0.2.7",
    )
    async with site.store.engine.connect() as conn:
        locale = (
            await conn.execute(
                select(subscribers.c.locale).where(subscribers.c.id == site.ids[CLAIRE])
            )
        ).scalar_one()
    assert locale == "en"


# --- language --------------------------------------------------------------------------------


def test_language_choice() -> None:
    from starlette.requests import Request

    def request(accept: str = "", query: str = "") -> Request:
        return Request(
            {
                "type": "http",
                "method": "GET",
                "path": "/",
                "query_string": query.encode(),
                "headers": [(b"accept-language", accept.encode())] if accept else [],
            }
        )

    assert pick_locale(request("en-US,en;q=0.9,fr;q=0.8"), None) == "en"
    assert pick_locale(request("de-DE,fr;q=0.5,en;q=0.7"), None) == "en"
    assert pick_locale(request("en"), "fr") == "fr"  # the subscriber's own choice wins
    assert pick_locale(request("en", "lang=fr"), "en") == "fr"
    assert pick_locale(request("de;q=1,en;q=0"), None, "en") == "en"  # the list's
    assert pick_locale(request("garbage;q=x"), None) == "fr"


def test_both_languages_have_the_same_words(tmp_path: Path) -> None:
    Views(ROOT / "templates")  # the shipped words load
    (tmp_path / "web").mkdir()
    for name in (ROOT / "templates" / "web").iterdir():
        (tmp_path / "web" / name.name).write_bytes(name.read_bytes())
    strings = tmp_path / "web" / "strings.toml"
    strings.write_text(strings.read_text().replace('confirm_button = "Confirm"\n', ""))
    with pytest.raises(
        ConfigError, match=r"strings\.toml: \[en\] and \[fr\] differ on \['confirm_button'\]"
    ):
        Views(tmp_path)


# --- health and metrics ----------------------------------------------------------------------


async def test_healthz_reports_database_and_scheduler(site: Site) -> None:
    ok = await site.client.get("/healthz")
    assert ok.status_code == 200
    assert ok.json()["status"] == "ok"
    assert ok.json()["scheduler"] == "ok"
    site.probe.last_sync = now() - timedelta(minutes=5)
    stale = await site.client.get("/healthz")
    assert (stale.status_code, stale.json()["scheduler"]) == (503, "stale")
    site.probe.running = False
    assert (await site.client.get("/healthz")).json()["scheduler"] == "stopped"


async def test_database_down_gives_a_clear_503_and_writes_nothing(tmp_path: Path) -> None:
    """A database that does not answer: 503 pages, /healthz says so."""
    settings = web_settings(
        tmp_path, "postgresql+asyncpg://mailer:x@127.0.0.1:9/mailer", signups_per_ip=50
    )
    signer = Signer([KEY])
    async with Store.open(settings) as store:
        app = create_app(settings, store, signer=signer)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://lists.test"
        ) as client:
            health = await client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "unavailable"
            token = signer.sign(Purpose.UNSUBSCRIBE, ["some-public-id", 1])
            page = await client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
            assert page.status_code == 503
            assert "Rien n’a été modifié" in page.text
            signup = await client.post("/s/newsletter", data={"email": "a@example.org"})
            assert signup.status_code == 503


async def test_metrics_expose_the_sends_in_prometheus_format(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    settings = web_settings(tmp_path, database_url, signups_per_ip=50).model_copy(
        update={"smtp": smtp_server.settings()}
    )
    await populate(store)
    smtp_server.plan.reply("RCPT", "550 5.1.1 no such user", recipient="amelie@example.org")
    send_id = await _campaign_send(store, "nouvelles")
    async with SmtpTransport(settings.smtp) as transport:
        summary = await Engine(settings, store, transport, node="t").run_send(send_id)
    assert summary.counts["sent"] == 2
    rows = [r async for r in store.figures.report(send_id)]
    returned = next(r for r in rows if r.status == "sent")  # its mail comes back later
    late = dsn(
        block(returned.email, "failed", "5.1.1"), returned=f"Message-ID: {returned.message_id}\n"
    )
    await Intake(store, settings, signer=Signer([KEY])).message(late, source="imap")
    app = create_app(settings, store, signer=Signer([KEY]), scheduler=Probe())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://lists.test"
    ) as client:
        scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    one = {"send": str(send_id), "campaign": "nouvelles", "action": "announcement"}
    assert value("mailer_deliveries", **one, status="sent") == 1
    assert value("mailer_deliveries", **one, status="bounced") == 1
    assert value("mailer_deliveries", **one, status="failed") == 1
    assert value("mailer_bounces_total", kind="hard") == 1
    assert value("mailer_bounces_total", kind="policy") == 0
    assert value("mailer_bounces_forged_total") == 0
    assert value("mailer_smtp_replies", code="250") == 2
    assert value("mailer_smtp_replies", code="550") == 1
    assert value("mailer_queue_depth") == 0
    assert value("mailer_sends", status="done") == 1
    assert value("mailer_scheduler_lag_seconds") == 0.012
    assert value("mailer_send_rate", send=str(send_id), campaign="nouvelles") == 2 / 60


async def _campaign_send(store: Store, name: str) -> int:
    campaign_id = await store.campaigns.save(
        Content(name=name, kind="announcement", subject="Nouvelles du réseau", body="Bonjour."),
        list_slugs=["researchers"], sender_name=None, sender_address=None, event=None,
        now=now(),
    )  # fmt: skip
    send_id, _ = await store.sends.create(
        campaign_id, key=f"announce:{now().timestamp()}", action="announcement",
        due_at=now(), now=now(),
    )  # fmt: skip
    return send_id


# --- end to end: CSV import, a send over SMTP, curl one-click, the next send ------------------


def _message(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _links(message: EmailMessage) -> dict[str, str]:
    found: dict[str, str] = {}
    header = str(message["List-Unsubscribe"])
    found["one-click"] = re.findall(r"<(https?://[^>]+)>", header)[0]
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    for name, pattern in (("confirm", r"(https?://\S+/c/\S+)"),):
        if match := re.search(pattern, text):
            found[name] = match[1]
    return found


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_end_to_end_import_send_one_click_with_curl_then_the_next_send_skips(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer, backend: str
) -> None:
    """From a CSV file to a scheduled send over real SMTP, the one-click request exactly as a
    mailbox provider sends it (curl, to a real uvicorn), and the next send skipping her."""
    from mailer.lists import import_file
    from mailer.scheduler import Scheduler

    csv_file = tmp_path / "researchers.csv"
    csv_file.write_text(
        "email,name,locale\n"
        "claire.martin@example.org,Claire Martin,fr\n"
        "john.smith@example.org,John Smith,en\n"
        "amelie@example.org,Amélie,\n",
        encoding="utf-8",
    )
    assert (await import_file(store, csv_file, now=now())).ok
    server = WebServer(
        create_app(web_settings(tmp_path, database_url), store, signer=Signer([KEY])),
        web_settings(tmp_path, database_url, port=0),
    )
    base = await server.start()
    settings = web_settings(tmp_path, database_url, base_url=base).model_copy(
        update={"smtp": smtp_server.settings()}
    )
    try:
        first = await _campaign_send(store, "actualites")
        async with SmtpTransport(settings.smtp) as transport:
            engine = Engine(settings, store, transport, node="e2e")
            async with Scheduler(engine, sync_interval=0.1, grace=3600):
                await _until_done(store, first)
                claire = next(
                    _message(m.data) for m in smtp_server.received if CLAIRE in m.rcpt_tos
                )
                link = _links(claire)["one-click"]
                assert link.startswith(f"{base}/u/")
                assert claire["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
                curl = await asyncio.to_thread(
                    subprocess.run,
                    ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                     "-X", "POST", "-d", "List-Unsubscribe=One-Click", link],
                    capture_output=True, text=True, timeout=20, check=False,
                )  # fmt: skip
                assert curl.stdout == "200 ", curl.stderr
                second = await _campaign_send(store, "actualites-2")
                await _until_done(store, second)
        report = {r.email: r async for r in store.figures.report(second)}
        assert report[CLAIRE].status == "skipped"
        assert report[CLAIRE].reason == "unsubscribed"
        assert report[JOHN].status == "sent"
        assert smtp_server.recipients().count(CLAIRE) == 1
        assert smtp_server.recipients().count(JOHN) == 2
    finally:
        await server.stop()


async def _until_done(store: Store, send_id: int) -> None:
    async with asyncio.timeout(30):
        while await store.sends.status(send_id) != SendStatus.DONE:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_sign_up_mail_goes_through_the_daemon_and_its_link_confirms(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> None:
    """The confirmation mail is a send like any other: the scheduler picks it up at once
    (no sync needed), it renders in the chosen language, and its link confirms."""
    from mailer.scheduler import Scheduler

    await populate(store)
    settings = web_settings(tmp_path, database_url, signups_per_ip=50).model_copy(
        update={"smtp": smtp_server.settings()}
    )
    async with SmtpTransport(settings.smtp) as transport:
        engine = Engine(settings, store, transport, node="web")
        async with Scheduler(engine, sync_interval=3600, grace=3600) as scheduler:
            app = create_app(
                settings, store, signer=engine.signer, scheduler=scheduler,
                on_send=scheduler.enqueue,
            )  # fmt: skip
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://lists.test"
            ) as client:
                await client.post("/s/events", data={"email": "jeanne@example.org", "locale": "en"})
                async with asyncio.timeout(20):
                    while not smtp_server.received:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                mail = _message(smtp_server.received[0].data)
                assert (
                    mail["Subject"]
                    == "Please confirm your subscription to “Journées scientifiques”"
                )
                confirm = _links(mail)["confirm"]
                assert confirm.startswith("http://lists.test/c/")
                done = await client.post(confirm.removeprefix("http://lists.test"))
                assert "Subscription confirmed" in done.text
    async with store.engine.connect() as conn:
        status = (
            await conn.execute(
                select(subscriptions.c.status)
                .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
                .where(subscribers.c.email == "jeanne@example.org")
            )
        ).scalar_one()
    assert status == "subscribed"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("trusted", "recorded"), [(["127.0.0.1"], "203.0.113.5"), ([], "127.0.0.1")]
)
async def test_forwarded_addresses_count_only_from_trusted_proxies(
    store: Store, tmp_path: Path, database_url: str, trusted: list[str], recorded: str
) -> None:
    """Behind a trusted reverse proxy the consent records the client's address it forwards;
    anyone else's X-Forwarded-For is ignored."""
    await populate(store)
    settings = web_settings(tmp_path, database_url, port=0, trusted_proxies=trusted)
    server = WebServer(create_app(settings, store, signer=Signer([KEY])), settings)
    url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            page = await client.post(
                "/s/newsletter",
                data={"email": "behind.proxy@example.org"},
                headers={"x-forwarded-for": "203.0.113.5"},
            )
        assert page.status_code == 200
    finally:
        await server.stop()
    async with store.engine.connect() as conn:
        ip = (
            await conn.execute(
                select(subscriptions.c.consent_ip)
                .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
                .where(subscribers.c.email == "behind.proxy@example.org")
            )
        ).scalar_one()
    assert ip == recorded


async def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = web_settings(tmp_path, "sqlite+aiosqlite:///unused.sqlite3", port=port)
        server = WebServer(
            create_app(settings, Store.open(settings), signer=Signer([KEY])), settings
        )
        with pytest.raises(
            ConfigError,
            match=rf"MAILER_WEB__HOST/MAILER_WEB__PORT: cannot listen on 127\.0\.0\.1:{port}",
        ):
            await server.start()
