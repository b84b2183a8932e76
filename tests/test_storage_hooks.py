"""Storage of the REST API's keys and of the outgoing webhooks (``storage/api_keys.py``,
``storage/webhooks.py``, ``storage/outbox.py``): keys kept as their hash, idempotent answers,
the outbox written in the transaction of the change it reports (and not at all when nobody
listens or the change rolls back), leases that give each event to one daemon and free it
again when the lease runs out, retries, give-ups and endpoints disabled after failing for
long. SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from mailer.errors import StateError
from mailer.intake import Intake
from mailer.lifecycle import SendMove
from mailer.models import DeliveryStatus, EventType, HookAttempt, HookStatus, Scope
from mailer.storage import Store, outbox
from mailer.storage.hook_tables import api_keys, webhook_events
from mailer.tokens import return_path
from tests.console_support import now
from tests.test_console_sends import a_list, a_send, record, start

pytestmark = pytest.mark.timeout(60)
LEASE = timedelta(seconds=30)
DOMAIN = "bounces.example.org"


async def events_of(store: Store) -> list[tuple[str, dict[str, object]]]:
    async with store.db.begin() as conn:
        rows = (
            await conn.execute(
                select(webhook_events.c.type, webhook_events.c.payload).order_by(
                    webhook_events.c.id
                )
            )
        ).all()
    return [(r.type, r.payload["data"]) for r in rows]


async def test_a_key_is_stored_as_its_hash_and_found_while_not_revoked(store: Store) -> None:
    key, raw = await store.api_keys.create(
        name="site", scopes=[Scope.LISTS_READ, Scope.SUBSCRIBERS_WRITE], actor="cli:ops", now=now()
    )
    assert raw.startswith("mlr_")
    assert len(raw) == 4 + 43
    assert key.prefix == raw[:12]
    assert key.scopes == {Scope.LISTS_READ, Scope.SUBSCRIBERS_WRITE}
    async with store.db.begin() as conn:
        stored = (await conn.execute(select(api_keys))).one()
        dump = " ".join(str(v) for v in stored)
    assert raw not in dump
    assert raw[12:] not in dump
    found = await store.api_keys.find(raw, now=now())
    assert found is not None
    assert found.id == key.id
    assert found.last_used_at is not None
    assert await store.api_keys.find(raw[:-1] + ("A" if raw[-1] != "A" else "B"), now=now()) is None
    assert await store.api_keys.find("Bearer " + raw, now=now()) is None
    with pytest.raises(StateError, match="already exists"):
        await store.api_keys.create(name="site", scopes=[], actor="cli:ops", now=now())
    revoked = await store.api_keys.revoke("site", actor="cli:ops", now=now())
    assert not revoked.active
    assert await store.api_keys.find(raw, now=now()) is None
    audit = await store.audit.page()
    assert [e.action for e in audit] == ["api_key.revoke", "api_key.create"]
    assert all(raw not in str(e.details) for e in audit)


async def test_an_idempotency_key_keeps_the_first_answer_for_a_day(store: Store) -> None:
    key, _ = await store.api_keys.create(name="crm", scopes=[], actor="cli:ops", now=now())
    first = await store.api_keys.remembered(key.id, "k1", fingerprint="f", now=now())
    assert first is None  # this request owns the key now
    meanwhile = await store.api_keys.remembered(key.id, "k1", fingerprint="f", now=now())
    assert meanwhile is not None
    assert meanwhile.status == 0
    await store.api_keys.remember(
        key.id, "k1", status=201, body='{"id": "x"}', headers={"location": "/x"}
    )
    again = await store.api_keys.remembered(key.id, "k1", fingerprint="g", now=now())
    assert again is not None
    assert (again.status, again.body, again.fingerprint) == (
        201,
        '{"id": "x"}',
        "f",
    )
    later = now() + timedelta(hours=24, seconds=1)
    assert await store.api_keys.remembered(key.id, "k1", fingerprint="g", now=later) is None
    await store.api_keys.forget(key.id, "k1")
    assert await store.api_keys.remembered(key.id, "k1", fingerprint="h", now=later) is None


async def test_nothing_is_written_when_nobody_listens_or_the_change_rolls_back(
    store: Store,
) -> None:
    async with store.db.begin(write=True) as conn:
        assert await outbox.emit(conn, [(EventType.SEND_STARTED, {"a": 1})], now=now()) == 0
    hook = await store.webhooks.add(
        url="https://example.org/h", events=[EventType.SEND_STARTED], description="",
        actor="cli:ops", now=now(),
    )  # fmt: skip
    async with store.db.begin(write=True) as conn:
        assert await outbox.emit(conn, [(EventType.SEND_PAUSED, {"a": 1})], now=now()) == 0

    class Boom(Exception):
        pass

    async def rolled_back() -> None:
        async with store.db.begin(write=True) as conn:
            assert await outbox.emit(conn, [(EventType.SEND_STARTED, {"a": 2})], now=now()) == 1
            raise Boom

    with pytest.raises(Boom):
        await rolled_back()
    assert await events_of(store) == []
    # A disabled endpoint is given its events too: they wait, unclaimed, until it is enabled.
    await store.webhooks.set_enabled(hook.id, False, actor="cli:ops", now=now())
    async with store.db.begin(write=True) as conn:
        assert await outbox.emit(conn, [(EventType.SEND_STARTED, {"a": 3})], now=now()) == 1
    assert await store.webhooks.claim(node="a", now=now(), limit=10, lease=LEASE) == []
    await store.webhooks.set_enabled(hook.id, True, actor="cli:ops", now=now())
    async with store.db.begin(write=True) as conn:
        assert await outbox.emit(conn, [(EventType.SEND_STARTED, {"a": 4})], now=now()) == 1
    assert await events_of(store) == [("send.started", {"a": 3}), ("send.started", {"a": 4})]
    claimed = await store.webhooks.claim(node="a", now=now(), limit=10, lease=LEASE)
    assert [h.payload["data"] for h in claimed] == [{"a": 3}, {"a": 4}]
    assert hook.secret.startswith("whsec_")
    assert len(hook.secret) == 6 + 44


async def test_changes_report_their_events_in_their_own_transaction(
    store: Store, tmp_path: Path
) -> None:
    await store.webhooks.add(
        url="https://example.org/h", events=list(EventType), description="all",
        actor="cli:ops", now=now(),
    )  # fmt: skip
    await a_list(store, tmp_path, 3)
    send_id = await a_send(store, "annonce")
    await start(store, send_id)
    await record(store, send_id, DeliveryStatus.SENT, DeliveryStatus.FAILED, code=550)
    await store.subscribers.unsubscribe(
        "person2@example.org", slug=None, source="api:crm", now=now()
    )
    assert await store.sends.move(send_id, SendMove.PAUSE, now=now(), reason="staff")
    kinds = [kind for kind, _ in await events_of(store)]
    assert kinds[0] == "send.started"
    assert "subscriber.subscribed" not in kinds
    assert kinds[1:] == [
        "delivery.sent", "delivery.failed", "subscriber.unsubscribed", "send.paused",
    ]  # fmt: skip
    data = dict(await events_of(store))
    sent = data["delivery.sent"]
    assert sent["send"] == {"id": send_id, "action": "announcement", "campaign": "annonce"}
    assert sent["subscriber"]["email"].startswith("person")  # type: ignore[index]
    assert str(sent["delivery"]["message_id"]).endswith("@test>")  # type: ignore[index]
    assert data["delivery.failed"]["smtp"] == {"code": 550, "reply": None}
    gone = data["subscriber.unsubscribed"]
    assert gone["list"] == "researchers"
    assert gone["source"] == "api:crm"
    assert gone["subscriber"]["email"] == "person2@example.org"  # type: ignore[index]
    assert len(gone["subscriber"]["id"]) >= 16  # type: ignore[index]  # the public id
    assert data["send.paused"]["reason"] == "staff"
    assert await store.webhooks.pending() == 5


async def test_a_lease_gives_an_event_to_one_daemon_until_it_runs_out(store: Store) -> None:
    hook = await store.webhooks.add(
        url="https://example.org/h", events=[EventType.SEND_STARTED], description="",
        actor="cli:ops", now=now(),
    )  # fmt: skip
    async with store.db.begin(write=True) as conn:
        await outbox.emit(conn, [(EventType.SEND_STARTED, {"n": i}) for i in range(3)], now=now())
    first = await store.webhooks.claim(node="a", now=now(), limit=2, lease=LEASE)
    second = await store.webhooks.claim(node="b", now=now(), limit=10, lease=LEASE)
    assert len(first) == 2
    assert len(second) == 1
    assert {h.delivery_id for h in first}.isdisjoint({h.delivery_id for h in second})
    assert first[0].secret == hook.secret
    assert first[0].event_id.startswith("msg_")
    assert first[0].payload["type"] == "send.started"
    assert await store.webhooks.claim(node="c", now=now(), limit=10, lease=LEASE) == []
    later = now() + LEASE + timedelta(seconds=1)  # "a" was killed: its leases run out
    again = await store.webhooks.claim(node="c", now=later, limit=10, lease=LEASE)
    assert {h.event_id for h in again} == {h.event_id for h in first + second}


async def test_attempts_retry_give_up_and_disable_a_failing_endpoint(store: Store) -> None:
    hook = await store.webhooks.add(
        url="https://example.org/h", events=[EventType.SEND_STARTED], description="",
        actor="cli:ops", now=now(),
    )  # fmt: skip
    async with store.db.begin(write=True) as conn:
        await outbox.emit(conn, [(EventType.SEND_STARTED, {"n": i}) for i in range(2)], now=now())
    due = await store.webhooks.claim(node="a", now=now(), limit=10, lease=LEASE)
    retry = now() + timedelta(minutes=5)

    def failed(h: object, at: object) -> HookAttempt:
        return HookAttempt(
            delivery_id=h.delivery_id, endpoint_id=hook.id, code=500,  # type: ignore[attr-defined]
            error="500 Internal Server Error", took_ms=3, answer="oops", next_at=at,  # type: ignore[arg-type]
        )  # fmt: skip

    long = timedelta(hours=24)
    assert (
        await store.webhooks.record([failed(h, retry) for h in due], now=now(), disable_after=long)
        == []
    )
    lines = await store.webhooks.lines()
    assert {(x.status, x.attempts, x.last_code) for x in lines} == {(HookStatus.PENDING, 1, 500)}
    assert await store.webhooks.claim(node="a", now=now(), limit=10, lease=LEASE) == []
    assert len(await store.webhooks.claim(node="a", now=retry, limit=10, lease=LEASE)) == 2
    # A day of failures later, five attempts at least: the endpoint is disabled.
    for step in range(1, 4):
        at = now() + long * step / 3
        due = await store.webhooks.claim(node="a", now=at + LEASE * 2, limit=10, lease=LEASE)
        disabled = await store.webhooks.record(
            [failed(h, at + LEASE * 3) for h in due], now=at, disable_after=long
        )
    assert [e.id for e in disabled] == [hook.id]
    assert "failed" in str((await store.webhooks.get(hook.id)).disabled_reason)
    assert await store.webhooks.claim(node="a", now=now() + long * 2, limit=10, lease=LEASE) == []
    back = now() + long * 2
    enabled = await store.webhooks.set_enabled(hook.id, True, actor="cli:ops", now=back)
    assert enabled.active
    assert enabled.failures == 0
    due = await store.webhooks.claim(node="a", now=back, limit=10, lease=LEASE)
    ok = HookAttempt(due[0].delivery_id, hook.id, 204, None, 2, "", None)
    gave_up = failed(due[1], None)
    await store.webhooks.record([ok, gave_up], now=back, disable_after=long)
    assert {x.status for x in await store.webhooks.lines()} == {
        HookStatus.DELIVERED, HookStatus.FAILED,
    }  # fmt: skip
    assert await store.webhooks.pending() == 0
    assert await store.webhooks.purge(now=back + timedelta(days=31), keep=timedelta(days=30)) == 2


async def test_events_older_than_the_retry_window_are_given_up(store: Store) -> None:
    await store.webhooks.add(
        url="https://example.org/h", events=[EventType.SEND_STARTED], description="",
        actor="cli:ops", now=now(),
    )  # fmt: skip
    t0 = now()
    async with store.db.begin(write=True) as conn:
        await outbox.emit(conn, [(EventType.SEND_STARTED, {})], now=t0)
    window = timedelta(hours=72)
    assert await store.webhooks.expire(now=t0 + window, max_age=window) == 0
    assert await store.webhooks.expire(now=t0 + window * 2, max_age=window) == 1
    [line] = await store.webhooks.lines(status=HookStatus.FAILED)
    assert "given up" in str(line.last_error)
    assert await store.webhooks.purge(now=now(), keep=timedelta(days=30)) == 0


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_claims_at_once_on_postgresql_never_share_an_event(store: Store) -> None:
    await store.webhooks.add(
        url="https://example.org/h", events=[EventType.SEND_STARTED], description="",
        actor="cli:ops", now=now(),
    )  # fmt: skip
    async with store.db.begin(write=True) as conn:
        await outbox.emit(conn, [(EventType.SEND_STARTED, {"n": i}) for i in range(60)], now=now())
    claims = await asyncio.gather(
        *(store.webhooks.claim(node=f"n{i}", now=now(), limit=7, lease=LEASE) for i in range(10))
    )
    ids = [h.delivery_id for claim in claims for h in claim]
    assert len(ids) == len(set(ids)) == 60
    async with store.db.begin() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM webhook_deliveries"))).scalar() == 60


async def test_a_bounce_and_a_complaint_report_their_delivery(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    from tests.test_bounce_intake import SIGNER, Clock, hard, sent, settings_for
    from tests.test_bounces_parse import arf

    await store.webhooks.add(
        url="https://example.org/h",
        events=[EventType.DELIVERY_BOUNCED, EventType.COMPLAINT, EventType.UNSUBSCRIBED],
        description="", actor="cli:ops", now=now(),
    )  # fmt: skip
    send_id, ids = await sent(store, tmp_path)
    intake = Intake(store, settings_for(tmp_path, database_url), clock=Clock(), signer=SIGNER)
    await intake.message(hard(return_path(SIGNER, ids[0], DOMAIN), "x@y.example"), source="smtp")
    complaint = arf(
        "Feedback-Type: abuse\nUser-Agent: fbl/1.0\nVersion: 1\n",
        f"From: news@example.org\nTo: person1@example.org\nMessage-ID: <{ids[1]}@test>\n",
    )
    await intake.message(complaint, source="imap")
    again = await intake.message(complaint, source="smtp")  # a duplicate: stored once
    assert again.duplicate
    kinds = [kind for kind, _ in await events_of(store)]
    assert kinds == ["delivery.bounced", "subscriber.unsubscribed", "complaint.received"]
    data = dict(await events_of(store))
    bounced = data["delivery.bounced"]
    assert bounced["delivery"]["id"] == ids[0]  # type: ignore[index]
    assert bounced["delivery"]["status"] == "bounced"  # type: ignore[index]
    assert bounced["bounce"]["kind"] == "hard"  # type: ignore[index]
    assert bounced["bounce"]["status"] == "5.1.1"  # type: ignore[index]
    assert bounced["send"]["id"] == send_id  # type: ignore[index]
    assert data["complaint.received"]["subscriber"]["email"] == "person1@example.org"  # type: ignore[index]


async def test_the_audit_log_keeps_no_token_of_an_endpoint_url(store: Store) -> None:
    hook = await store.webhooks.add(
        url="https://crm.example.org/in?token=s3cret", events=[EventType.SEND_STARTED],
        description="", actor="cli:ops", now=now(),
    )  # fmt: skip
    await store.webhooks.remove(hook.id, actor="cli:ops", now=now())
    audit = await store.audit.page()
    assert [e.details["url"] for e in audit] == ["https://crm.example.org/in?..."] * 2
    assert all(hook.secret not in str(e.details) for e in audit)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_sign_ups_at_once_to_a_new_double_opt_in_list_all_succeed(store: Store) -> None:
    """The first sign-ups of a list make its confirmation campaign: at once on PostgreSQL,
    one made it and the others failed on its unique name (a 503 through the API)."""
    from mailer.addresses import normalize
    from mailer.models import ListMeta, OptInMode, Requested

    meta = ListMeta(slug="club", title="Club", opt_in=OptInMode.DOUBLE, public=True)
    await store.lists.upsert(meta, now=now())
    public = await store.lists.public_list("club")
    assert public is not None
    outcomes = await asyncio.gather(
        *(
            store.consent.request(
                public,
                normalize(f"p{i}@example.org"),
                name="",
                locale="fr",
                ip=None,
                timezone="",
                now=now(),
                interval=timedelta(0),
                per_day=10,
                source="api",
            )
            for i in range(12)
        )
    )
    assert [outcome for outcome, _ in outcomes] == [Requested.MAIL_QUEUED] * 12
    assert len({send for _, send in outcomes}) == 12


async def test_a_request_noted_in_progress_and_never_answered_is_taken_over(store: Store) -> None:
    """Its process was killed between the change and keeping the answer: after a minute, the
    client's retry with the same key is answered, not refused as in progress for a day."""
    key, _ = await store.api_keys.create(name="crm", scopes=[], actor="cli:ops", now=now())
    t0 = now()
    assert await store.api_keys.remembered(key.id, "k", fingerprint="f", now=t0) is None
    soon = await store.api_keys.remembered(key.id, "k", fingerprint="f", now=t0 + LEASE)
    assert soon is not None
    assert soon.status == 0
    later = t0 + timedelta(minutes=1, seconds=1)
    assert await store.api_keys.remembered(key.id, "k", fingerprint="f", now=later) is None


async def test_an_endpoint_removed_mid_post_does_not_refuse_the_others_results(
    store: Store,
) -> None:
    """Its deliveries went with it; their attempts referred to nothing and the foreign key
    refused the whole batch, every endpoint's results with it (from a review)."""
    kept = await store.webhooks.add(
        url="https://a.example.org/h", events=[EventType.SEND_STARTED], description="",
        actor="cli:ops", now=now(),
    )  # fmt: skip
    gone = await store.webhooks.add(
        url="https://b.example.org/h", events=[EventType.SEND_STARTED], description="",
        actor="cli:ops", now=now(),
    )  # fmt: skip
    async with store.db.begin(write=True) as conn:
        await outbox.emit(conn, [(EventType.SEND_STARTED, {})], now=now())
    due = await store.webhooks.claim(node="a", now=now(), limit=10, lease=LEASE)
    await store.webhooks.remove(gone.id, actor="cli:ops", now=now())
    done = [HookAttempt(h.delivery_id, h.endpoint_id, 204, None, 1, "", None) for h in due]
    await store.webhooks.record(done, now=now(), disable_after=timedelta(hours=24))
    [line] = await store.webhooks.lines()
    assert (line.endpoint_id, line.status) == (kept.id, HookStatus.DELIVERED)
