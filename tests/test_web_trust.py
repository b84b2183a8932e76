"""The subscriber pages as an attacker and a link scanner see them: safe methods change
nothing, a link never acts on someone it was not mailed to, a stranger cannot undo an
unsubscribe, keys rotate as documented, test mail cannot act, every response forbids framing.

The links are taken from real mail (sent over SMTP to the test server), not signed by hand,
so these tests hold whatever the tokens hold."""

from __future__ import annotations

import email
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from mailer.addresses import normalize
from mailer.compose import make_composer
from mailer.dispatch import Engine
from mailer.errors import ConfigError
from mailer.models import Content, SendInfo
from mailer.render import Renderer
from mailer.settings import Settings
from mailer.storage import ListMeta, Store, SubscriberRow
from mailer.storage.tables import metadata, subscribers, subscriptions
from mailer.tokens import Purpose, Signer, load_signer
from mailer.transport import SmtpTransport
from mailer.web import client_ip, create_app
from tests.conftest import make_settings
from tests.smtpd import SmtpServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "trust-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"
pytestmark = pytest.mark.timeout(90)

CLAIRE = "claire.martin@example.org"
AMELIE = "amelie@example.org"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Lab:
    store: Store
    settings: Settings
    client: httpx.AsyncClient
    smtp: SmtpServer
    queued: list[int]
    signer: Signer

    async def deliver(self, send_id: int) -> list[EmailMessage]:
        """Run one send to the SMTP test server; the messages it received for it."""
        before = len(self.smtp.received)
        async with SmtpTransport(self.settings.smtp) as transport:
            await Engine(
                self.settings, self.store, transport, node="t", signer=self.signer
            ).run_send(send_id)
        return [_message(r.data) for r in self.smtp.received[before:]]

    async def campaign(self, name: str = "nouvelles", slug: str = "researchers") -> int:
        campaign_id = await self.store.campaigns.save(
            Content(name=name, kind="announcement", subject="Nouvelles", body="Bonjour."),
            list_slugs=[slug], sender_name=None, sender_address=None, event=None, now=now(),
        )  # fmt: skip
        send_id, _ = await self.store.sends.create(
            campaign_id, key=f"announce:{now().timestamp()}", action="announcement",
            due_at=now(), now=now(),
        )  # fmt: skip
        return send_id

    async def sign_up(self, address: str, **fields: str) -> list[EmailMessage]:
        """Sign ``address`` up to the public list, and deliver the confirmation mail."""
        before = len(self.queued)
        page = await self.client.post(
            "/s/newsletter", data={"email": address, "locale": "en", **fields}
        )
        assert page.status_code == 200, page.text
        mails = []
        for send_id in self.queued[before:]:
            mails += await self.deliver(send_id)
        return mails

    async def status(self, address: str, slug: str) -> str | None:
        async with self.store.engine.connect() as conn:
            return (
                await conn.execute(
                    select(subscriptions.c.status)
                    .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
                    .where(subscribers.c.email == address)
                    .where(subscriptions.c.list_id == await self.store.lists.id_of(slug))
                )
            ).scalar()


def _message(data: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def links(mail: EmailMessage) -> dict[str, str]:
    """The paths of a mail's links: one-click (List-Unsubscribe), preferences, confirm."""
    found = {"u": re.findall(r"<https?://[^/>]+(/u/[^>]+)>", str(mail["List-Unsubscribe"]))[0]}
    body = mail.get_body(("plain",))
    assert body is not None
    for kind in ("p", "c"):
        if match := re.search(rf"https?://[^/\s]+(/{kind}/[^\s>)\]]+)", body.get_content()):
            found[kind] = match[1]
    return found


def to_of(mails: list[EmailMessage], address: str) -> EmailMessage:
    return next(m for m in mails if address in str(m["To"]))


async def dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: what "nothing changed" is compared with."""
    out = {}
    async with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            rows = (await conn.execute(select(table))).all()
            out[table.name] = sorted((tuple(map(repr, r)) for r in rows), key=str)
    return out


@pytest.fixture
async def lab(
    store: Store, tmp_path: Path, database_url: str, smtp_server: SmtpServer
) -> AsyncIterator[Lab]:
    settings = make_settings(
        tmp_path,
        database={"url": database_url},
        paths={"templates_dir": ROOT / "templates"},
        secret_keys=KEY,
        web={"base_url": "https://lists.test", "signups_per_ip": 5000, "confirm_interval": 0},
        smtp=smtp_server.settings(),
    )
    for slug, title, public in (
        ("researchers", "Chercheurs du réseau", False),
        ("newsletter", "La lettre du réseau", True),
    ):
        await store.lists.upsert(ListMeta(slug, title, public=public), now=now())
    for address, name in ((CLAIRE, "Claire Martin"), (AMELIE, "Amélie")):
        valid = normalize(address)
        row = SubscriberRow(1, valid.email, valid.key, valid.smtputf8, name=name, locale="fr")
        await store.subscribers.add(row, slug="researchers", source="test", now=now())
    queued: list[int] = []
    signer = Signer([KEY])
    app = create_app(settings, store, signer=signer, on_send=queued.append)
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://lists.test") as client:
        yield Lab(store, settings, client, smtp_server, queued, signer)


# --- 1. safe methods are safe -----------------------------------------------------------------

BODIES: list[dict[str, Any]] = [
    {},
    {"data": {"List-Unsubscribe": "One-Click"}},
    {"data": {"action": "all"}},
    {"data": {"email": "intruder@example.org", "name": "x"}},
    {"data": {"list": "1", "locale": "en"}},
    {"files": {"List-Unsubscribe": (None, "One-Click")}},
]


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
async def test_head_options_and_get_change_nothing_on_any_route(lab: Lab, backend: str) -> None:
    new = await lab.sign_up("pending@example.org")
    pending = links(new[0])
    mails = await lab.deliver(await lab.campaign())
    claire = links(to_of(mails, CLAIRE))
    routes = [
        claire["u"], claire["p"], pending["c"], pending["u"],
        "/s/newsletter", "/s/newsletter/", "/", "/healthz", "/metrics",
    ]  # fmt: skip
    before = await dump(lab.store)
    for path in routes:
        for method in ("HEAD", "OPTIONS", "GET", "PUT", "DELETE", "PATCH", "TRACE"):
            for body in BODIES:
                if method in ("GET", "HEAD") and "files" in body:
                    continue
                answer = await lab.client.request(method, path, **body)
                assert answer.status_code < 500, (method, path, body)
                if answer.is_redirect:
                    assert answer.headers["location"].startswith("https://lists.test/")
                elif method not in ("GET", "HEAD"):
                    assert answer.status_code in (404, 405), (method, path, answer.status_code)
    assert await dump(lab.store) == before
    assert await lab.status("pending@example.org", "newsletter") == "pending"
    assert await lab.status(CLAIRE, "researchers") == "subscribed"
    # and POST still works: the one-click request unsubscribes
    done = await lab.client.post(claire["u"], data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200
    assert await lab.status(CLAIRE, "researchers") == "unsubscribed"


# --- 2. tokens cannot outlive their subject ---------------------------------------------------


async def test_an_erased_subscribers_links_never_reach_the_next_person(lab: Lab) -> None:
    mails = await lab.deliver(await lab.campaign())
    old = links(to_of(mails, AMELIE))
    await lab.store.subscribers.remove(normalize(AMELIE).key, slug=None)
    valid = normalize("mallory@example.org")
    row = SubscriberRow(1, valid.email, valid.key, valid.smtputf8, name="Mallory")
    await lab.store.subscribers.add(row, slug="researchers", source="test", now=now())
    before = await dump(lab.store)
    page = await lab.client.get(old["p"])
    assert page.status_code == 404
    assert "mallory" not in page.text.lower()
    for path in (old["u"], old["p"]):
        answer = await lab.client.post(path, data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 404
        answer = await lab.client.post(path, data={"action": "all"})
        assert answer.status_code == 404
    assert await dump(lab.store) == before
    assert await lab.status("mallory@example.org", "researchers") == "subscribed"


async def test_a_strangers_sign_up_cannot_undo_an_unsubscribe(lab: Lab) -> None:
    victim = "victim@example.org"
    first = links((await lab.sign_up(victim))[0])
    assert (await lab.client.post(first["c"])).status_code == 200
    assert await lab.status(victim, "newsletter") == "subscribed"
    await lab.client.post(first["u"], data={"List-Unsubscribe": "One-Click"})
    assert await lab.status(victim, "newsletter") == "unsubscribed"
    # a stranger types the victim's address in the form: the unsubscribe stands
    second = links((await lab.sign_up(victim))[0])
    assert await lab.status(victim, "newsletter") == "unsubscribed"
    async with lab.store.engine.connect() as conn:
        row = (
            await conn.execute(
                select(subscriptions)
                .join(subscribers, subscribers.c.id == subscriptions.c.subscriber_id)
                .where(subscribers.c.email == victim)
            )
        ).one()
    assert row.unsubscribed_at is not None
    assert "one-click" in (row.unsubscribe_source or "")
    # the victim's OLD confirmation link confirms nothing
    stale = await lab.client.post(first["c"])
    assert stale.status_code == 404
    assert await lab.status(victim, "newsletter") == "unsubscribed"
    # only the new mail's link does, when its owner follows it
    assert (await lab.client.post(second["c"])).status_code == 200
    assert await lab.status(victim, "newsletter") == "subscribed"


async def test_the_consent_history_is_kept(lab: Lab) -> None:
    from mailer.storage.tables import consent_events

    who = "history@example.org"
    first = links((await lab.sign_up(who))[0])
    await lab.client.post(first["c"])
    await lab.client.post(first["u"], data={"List-Unsubscribe": "One-Click"})
    second = links((await lab.sign_up(who))[0])
    await lab.client.post(second["c"])
    async with lab.store.engine.connect() as conn:
        events = (
            await conn.execute(
                select(consent_events.c.event, consent_events.c.ip)
                .join(subscribers, subscribers.c.id == consent_events.c.subscriber_id)
                .where(subscribers.c.email == who)
                .order_by(consent_events.c.id)
            )
        ).all()
    assert [e.event for e in events] == [
        "requested", "confirmed", "unsubscribed", "requested", "confirmed",
    ]  # fmt: skip
    assert events[0].ip == "192.0.2.7"


# --- 3. keys ------------------------------------------------------------------------------------

NEW = "new-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"
OLD = "old-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"


def test_new_links_are_signed_with_the_first_key_and_old_ones_still_verify() -> None:
    rotated = Signer([NEW, OLD])
    token = rotated.sign(Purpose.UNSUBSCRIBE, ["abc", 1])
    assert Signer([NEW]).read(Purpose.UNSUBSCRIBE, token) == ["abc", 1]  # OLD can go
    old_token = Signer([OLD]).sign(Purpose.UNSUBSCRIBE, ["abc", 1])
    assert rotated.read(Purpose.UNSUBSCRIBE, old_token) == ["abc", 1]


@pytest.mark.parametrize(
    "key", ["m4x", "short-key", "a" * 64, "abababababababababababababababababababab", "0123" * 10]
)
def test_weak_keys_are_refused_with_how_to_make_one(key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mailer config new-key"):
        load_signer([SecretStr(key)], tmp_path)


def test_a_weak_generated_key_file_is_refused(tmp_path: Path) -> None:
    load_signer([], tmp_path)  # generates a good one
    (tmp_path / "secret.key").write_text("m4x\n")
    with pytest.raises(ConfigError, match="mailer config new-key"):
        load_signer([], tmp_path)


# --- 4. pages -------------------------------------------------------------------------------------


async def test_redirects_never_follow_the_host_header(lab: Lab) -> None:
    page = await lab.client.get("/s/newsletter/", headers={"host": "evil.example"})
    assert "evil.example" not in page.headers.get("location", "")
    if page.is_redirect:
        assert page.headers["location"] == "https://lists.test/s/newsletter"


async def test_every_response_forbids_framing_and_base(lab: Lab) -> None:
    def boom(_: int) -> None:
        raise RuntimeError("unexpected")

    app = create_app(lab.settings, lab.store, signer=lab.signer, on_send=boom)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="https://lists.test") as client:
        answers = [
            await client.get("/s/newsletter"),
            await client.get("/nowhere"),
            await client.get("/u/not-a-token"),
            await client.request("OPTIONS", "/s/newsletter"),
            await client.get("/healthz"),
            await client.post("/s/newsletter", data={"email": "boom@example.org"}),  # 500
        ]
    assert [a.status_code for a in answers] == [200, 404, 404, 405, 200, 500]
    for answer in answers:
        csp = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp, answer.status_code
        assert "base-uri 'none'" in csp
        assert answer.headers["x-frame-options"] == "DENY"
    assert "Traceback" not in answers[-1].text
    assert "Rien n’a été modifié" in answers[-1].text


async def test_a_client_that_disconnects_mid_post_is_one_debug_line(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(lab.settings, lab.store, signer=lab.signer)
    mails = await lab.deliver(await lab.campaign())
    path = links(to_of(mails, CLAIRE))["u"]
    caplog.set_level(logging.DEBUG)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    for _ in range(10):
        scope = {
            "type": "http", "method": "POST", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "scheme": "https", "http_version": "1.1",
            "headers": [(b"host", b"lists.test"),
                        (b"content-type", b"application/x-www-form-urlencoded"),
                        (b"content-length", b"26")],
            "client": ("192.0.2.7", 1), "server": ("lists.test", 443),
        }  # fmt: skip
        await app(scope, receive, send)  # type: ignore[arg-type]
    noisy = [r for r in caplog.records if r.levelno > logging.DEBUG and r.name.startswith("mailer")]
    assert noisy == []
    assert len([r for r in caplog.records if "disconnect" in r.getMessage()]) == 10
    assert all(r.exc_info is None for r in caplog.records)
    assert await lab.status(CLAIRE, "researchers") == "subscribed"


@pytest.mark.parametrize("host", ["x" * 308, "not-an-ip", "1.2.3.4, 5.6.7.8"])
def test_forwarded_addresses_must_be_ip_addresses(host: str) -> None:
    from starlette.requests import Request

    request = Request({"type": "http", "client": (host, 0), "headers": []})
    assert client_ip(request) == "unknown"
    ok = Request({"type": "http", "client": ("2001:db8::1", 0), "headers": []})
    assert client_ip(ok) == "2001:db8::1"


async def test_the_confirmation_mail_does_not_carry_the_name_typed_in_the_form(lab: Lab) -> None:
    bait = "Your account is locked - verify at https://evil.example"
    mails = await lab.sign_up("third.party@example.org", name=bait)
    raw = mails[0].as_string()
    assert "evil.example" not in raw
    assert "locked" not in raw
    assert str(mails[0]["To"]) == "third.party@example.org"


# --- 5. test mail cannot act ----------------------------------------------------------------------


async def test_the_links_of_a_test_mail_change_nothing(lab: Lab) -> None:
    send_id = await lab.campaign()
    spec = await lab.store.sends.spec(send_id)
    (recipient,) = [r async for r in lab.store.lists.recipients("researchers", limit=1)]
    composer = make_composer(
        lab.settings, renderer=Renderer(lab.settings.paths.templates_dir), signer=lab.signer,
        send=SendInfo(
            content=spec.content, list=spec.lists[0], sender_name="Réseau",
            sender_address="news@example.org", action=spec.action, now=now(), event=spec.event,
        ),
        send_id=spec.id, trace="test",
    )  # fmt: skip
    composed = composer.compose_test(recipient, to="staff@example.org", date=now())
    mail = _message(composed.message.data)
    found = links(mail)
    before = await dump(lab.store)
    for path in (found["u"], found["p"]):
        for answer in (
            await lab.client.get(path),
            await lab.client.post(path, data={"List-Unsubscribe": "One-Click"}),
            await lab.client.post(path, data={"action": "all"}),
            await lab.client.post(path, data={"locale": "en"}),
        ):
            assert answer.status_code == 200
            assert "Message de test" in answer.text
            assert "rien n’a été modifié" in answer.text
    english = await lab.client.get(found["u"], headers={"accept-language": "en"})
    assert "nothing was changed" in english.text
    assert await dump(lab.store) == before
    assert await lab.status(recipient.email, "researchers") == "subscribed"


def test_config_new_key_makes_a_key_that_is_accepted(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mailer.cli import cli

    result = CliRunner().invoke(cli, ["config", "new-key"])
    assert result.exit_code == 0
    key = result.output.strip()
    assert load_signer([SecretStr(key)], tmp_path).keys == (key,)


# --- 12. a database that vanished is unhealthy --------------------------------------------------


def _vanish(database: Path, how: str) -> None:
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    else:
        copy = database.with_suffix(".copy")
        copy.write_bytes(database.read_bytes())
        copy.replace(database)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_deleted_or_replaced_sqlite_file_is_unhealthy_and_refuses_writes(
    lab: Lab, backend: str, how: str
) -> None:
    mails = await lab.deliver(await lab.campaign())
    path = links(to_of(mails, CLAIRE))["u"]
    assert (await lab.client.get("/healthz")).status_code == 200
    _vanish(Path(str(lab.store.engine.url.database)), how)
    health = await lab.client.get("/healthz")
    assert health.status_code == 503
    assert how.split()[0] in health.json()["database"]
    page = await lab.client.post(path, data={"List-Unsubscribe": "One-Click"})
    assert page.status_code == 503
    assert "Rien n’a été modifié" in page.text


async def test_a_confirmation_with_no_request_left_is_not_mailed(lab: Lab) -> None:
    """Signed up, then subscribed by staff (or unsubscribed) before the daemon sent the
    confirmation: the mail would carry a dead link, so it is skipped with the reason."""
    sends = []
    for address in ("added@example.org", "gone@example.org"):
        before = len(lab.queued)
        page = await lab.client.post("/s/newsletter", data={"email": address})
        assert page.status_code == 200
        sends += lab.queued[before:]
    added, gone = normalize("added@example.org"), normalize("gone@example.org")
    row = SubscriberRow(1, added.email, added.key, added.smtputf8)
    await lab.store.subscribers.add(row, slug="newsletter", source="cli", now=now())
    await lab.store.subscribers.unsubscribe(gone.key, slug="newsletter", source="cli", now=now())
    for send_id in sends:
        assert await lab.deliver(send_id) == []
        report = [r async for r in lab.store.figures.report(send_id)]
        assert [(r.status, r.reason) for r in report] == [("skipped", "no pending sign-up")]
