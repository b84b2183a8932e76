"""store.staff and store.audit on SQLite and PostgreSQL: accounts, sessions and their ends,
expiry, the last-seen write rule, and the audit log's pages."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select, update

from mailer.errors import NotFoundError, StateError
from mailer.models import ROLES, Role, StaffUser, role_allows
from mailer.storage import Store
from mailer.storage import audit as audit_module
from mailer.storage.tables import audit_log, staff_sessions, staff_users

pytestmark = pytest.mark.timeout(60)

T0 = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
IDLE = timedelta(hours=8)
MAX = timedelta(days=7)


def sid(n: int) -> str:
    return hashlib.sha256(f"cookie-{n}".encode()).hexdigest()


async def add(store: Store, email: str = "Ada@Example.org", role: Role = Role.EDITOR) -> StaffUser:
    return await store.staff.add(email, name="Ada", role=role, password_hash="$argon2id$x", now=T0)


async def sessions_of(store: Store, user_id: int) -> int:
    async with store.engine.connect() as conn:
        query = select(func.count()).where(staff_sessions.c.user_id == user_id)
        return int((await conn.execute(query)).scalar_one())


async def open_two(store: Store, user: StaffUser) -> None:
    for n in (1, 2):
        await store.staff.open_session(user.id, id_hash=sid(n), csrf=f"c{n}", client="::1", now=T0)


async def live(store: Store, n: int, now: datetime = T0) -> bool:
    return await store.staff.session(sid(n), now=now, idle=IDLE, absolute=MAX) is not None


def test_roles_are_hierarchical() -> None:
    """Each role may do what the roles below it may, and nothing above."""
    assert [r.value for r in ROLES] == ["viewer", "editor", "sender", "admin"]
    assert role_allows(Role.ADMIN, Role.VIEWER)
    assert role_allows(Role.SENDER, Role.SENDER)
    assert not role_allows(Role.EDITOR, Role.SENDER)
    assert not role_allows(Role.VIEWER, Role.EDITOR)


async def test_add_stores_the_address_lower_cased_and_finds_it_in_any_case(store: Store) -> None:
    """An account added as Ada@Example.org is stored and found lower-cased, by id too."""
    user = await add(store, "  Ada@Example.ORG ")
    expected = StaffUser(
        id=user.id, email="ada@example.org", name="Ada", role=Role.EDITOR, disabled=False,
        locale=None, password_hash="$argon2id$x", totp_secret=None, created_at=T0, updated_at=T0,
    )  # fmt: skip
    assert expected == user
    assert await store.staff.get("ADA@example.org") == expected
    assert await store.staff.by_id(user.id) == expected
    assert await store.staff.get("bob@example.org") is None
    assert await store.staff.by_id(user.id + 1) is None


async def test_a_second_account_for_one_address_is_refused(store: Store) -> None:
    """Adding the same address again, in another case, raises StateError and changes nothing."""
    await add(store, "ada@example.org", Role.EDITOR)
    with pytest.raises(StateError, match=r"ada@example\.org already has a staff account"):
        await add(store, "ADA@example.org", Role.ADMIN)
    assert [(u.email, u.role) for u in await store.staff.all()] == [
        ("ada@example.org", Role.EDITOR)
    ]


async def test_all_is_in_address_order(store: Store) -> None:
    """all() lists every account by address."""
    for email in ("carol@example.org", "Ada@example.org", "bob@example.org"):
        await add(store, email)
    emails = [u.email for u in await store.staff.all()]
    assert emails == ["ada@example.org", "bob@example.org", "carol@example.org"]


async def test_set_role_ends_that_users_sessions_only(store: Store) -> None:
    """A role change takes effect at once: the user's sessions end, another user's stay."""
    ada, bob = await add(store), await add(store, "bob@example.org")
    await open_two(store, ada)
    await store.staff.open_session(bob.id, id_hash=sid(3), csrf="c3", client=None, now=T0)
    later = T0 + timedelta(minutes=5)
    changed = await store.staff.set_role("ADA@example.org", Role.ADMIN, now=later)
    assert (changed.role, changed.updated_at) == (Role.ADMIN, later)
    assert (await sessions_of(store, ada.id), await sessions_of(store, bob.id)) == (0, 1)
    assert not await live(store, 1)
    assert await live(store, 3)


async def test_disable_ends_sessions_and_a_disabled_users_session_is_refused(
    store: Store,
) -> None:
    """Disabling ends the sessions; a session of a user disabled behind the store's back is
    refused and deleted; a disabled user cannot open one; enabling works again."""
    ada = await add(store)
    await open_two(store, ada)
    assert (await store.staff.set_disabled("ada@example.org", True, now=T0)).disabled
    assert await sessions_of(store, ada.id) == 0
    with pytest.raises(StateError, match="disabled"):
        await store.staff.open_session(ada.id, id_hash=sid(1), csrf="c", client=None, now=T0)
    assert not (await store.staff.set_disabled("ada@example.org", False, now=T0)).disabled
    await store.staff.open_session(ada.id, id_hash=sid(1), csrf="c", client=None, now=T0)
    async with store.engine.begin() as conn:
        await conn.execute(update(staff_users).values(disabled=True))
    assert not await live(store, 1)
    assert await sessions_of(store, ada.id) == 0


async def test_password_and_totp_changes_end_sessions_but_a_rehash_keeps_them(
    store: Store,
) -> None:
    """set_password and set_totp end the sessions; rehash (at login) keeps them."""
    ada = await add(store)
    await open_two(store, ada)
    await store.staff.rehash(ada.id, "$argon2id$rehashed")
    assert await sessions_of(store, ada.id) == 2
    assert (await store.staff.get("ada@example.org")).password_hash == "$argon2id$rehashed"  # type: ignore[union-attr]
    user = await store.staff.set_password("ada@example.org", "$argon2id$new", now=T0)
    assert (user.password_hash, await sessions_of(store, ada.id)) == ("$argon2id$new", 0)
    await open_two(store, ada)
    user = await store.staff.set_totp("ada@example.org", "JBSWY3DPEHPK3PXP", now=T0)
    assert (user.totp_secret, await sessions_of(store, ada.id)) == ("JBSWY3DPEHPK3PXP", 0)
    assert (await store.staff.set_totp("ada@example.org", None, now=T0)).totp_secret is None


async def test_set_locale_and_unknown_accounts(store: Store) -> None:
    """set_locale keeps the language; every change to an unknown account is NotFoundError."""
    ada = await add(store)
    await store.staff.set_locale(ada.id, "fr", now=T0 + timedelta(seconds=1))
    found = await store.staff.by_id(ada.id)
    assert found is not None
    assert (found.locale, found.updated_at) == ("fr", T0 + timedelta(seconds=1))
    with pytest.raises(NotFoundError, match=r"bob@example\.org"):
        await store.staff.set_role("bob@example.org", Role.ADMIN, now=T0)
    with pytest.raises(NotFoundError):
        await store.staff.set_disabled("bob@example.org", True, now=T0)
    with pytest.raises(NotFoundError):
        await store.staff.rehash(ada.id + 1, "h")
    with pytest.raises(NotFoundError):
        await store.staff.set_locale(ada.id + 1, "en", now=T0)
    with pytest.raises(NotFoundError):
        await store.staff.open_session(ada.id + 1, id_hash=sid(9), csrf="c", client=None, now=T0)


async def test_a_session_comes_back_with_its_user_and_csrf(store: Store) -> None:
    """session() returns the user, the CSRF token and the times; an unknown hash is None."""
    ada = await add(store)
    await store.staff.open_session(ada.id, id_hash=sid(1), csrf="tok", client="10.0.0.1", now=T0)
    found = await store.staff.session(sid(1), now=T0, idle=IDLE, absolute=MAX)
    assert found is not None
    assert (found.user, found.csrf, found.created_at, found.last_seen_at) == (ada, "tok", T0, T0)
    assert await store.staff.session(sid(2), now=T0, idle=IDLE, absolute=MAX) is None


async def test_an_idle_session_ends_and_its_row_is_deleted(store: Store) -> None:
    """A session unused for longer than idle is None, and gone from the table."""
    ada = await add(store)
    await open_two(store, ada)
    assert await live(store, 1, T0 + IDLE)
    assert not await live(store, 2, T0 + IDLE + timedelta(seconds=1))
    assert await sessions_of(store, ada.id) == 1


async def test_purging_deletes_only_the_sessions_past_a_limit(store: Store) -> None:
    """purge_sessions removes idle and too-old rows that nobody will look up again."""
    ada = await add(store)
    await open_two(store, ada)  # both opened at T0
    assert await store.staff.purge_sessions(now=T0 + IDLE, idle=IDLE, absolute=MAX) == 0
    assert await live(store, 1, T0 + IDLE)  # session 1 used: last seen at T0 + IDLE
    later = T0 + IDLE + timedelta(seconds=1)
    assert await store.staff.purge_sessions(now=later, idle=IDLE, absolute=MAX) == 1
    assert await sessions_of(store, ada.id) == 1
    assert await store.staff.purge_sessions(now=T0 + MAX * 2, idle=MAX * 3, absolute=MAX) == 1
    assert await sessions_of(store, ada.id) == 0


async def test_a_session_used_all_along_still_ends_at_its_absolute_limit(store: Store) -> None:
    """Kept alive within the idle timeout, a session still ends once older than absolute."""
    ada = await add(store)
    await open_two(store, ada)
    idle, absolute = timedelta(hours=1), timedelta(hours=3)
    for minutes in (50, 100, 150, 180):
        now = T0 + timedelta(minutes=minutes)
        assert await store.staff.session(sid(1), now=now, idle=idle, absolute=absolute)
    now = T0 + absolute + timedelta(seconds=1)
    assert await store.staff.session(sid(1), now=now, idle=idle, absolute=absolute) is None
    assert await sessions_of(store, ada.id) == 1  # the other one, never used, is left alone


async def test_last_seen_is_written_only_when_more_than_a_minute_old(store: Store) -> None:
    """Within a minute of the last write, a request writes nothing; after it, last_seen moves.
    Times given in another zone are compared in UTC."""
    ada = await add(store)
    await open_two(store, ada)

    async def stored() -> datetime:
        async with store.engine.connect() as conn:
            query = select(staff_sessions.c.last_seen_at).where(staff_sessions.c.id_hash == sid(1))
            return (await conn.execute(query)).scalar_one()  # type: ignore[no-any-return]

    paris = timezone(timedelta(hours=1))
    soon = (T0 + timedelta(seconds=60)).astimezone(paris)
    found = await store.staff.session(sid(1), now=soon, idle=IDLE, absolute=MAX)
    assert (found is not None, found and found.last_seen_at, await stored()) == (True, T0, T0)
    later = T0 + timedelta(seconds=61)
    found = await store.staff.session(sid(1), now=later.astimezone(paris), idle=IDLE, absolute=MAX)
    assert (found is not None, found and found.last_seen_at, await stored()) == (True, later, later)
    # the idle timeout now counts from the new last_seen
    assert await live(store, 1, later + IDLE)


async def test_close_session_and_close_sessions(store: Store) -> None:
    """Logout ends one session (twice is harmless); close_sessions ends all and counts them."""
    ada, bob = await add(store), await add(store, "bob@example.org")
    await open_two(store, ada)
    await store.staff.open_session(bob.id, id_hash=sid(3), csrf="c3", client=None, now=T0)
    await store.staff.close_session(sid(1))
    await store.staff.close_session(sid(1))
    assert (await live(store, 1), await live(store, 2)) == (False, True)
    await store.staff.open_session(ada.id, id_hash=sid(4), csrf="c4", client=None, now=T0)
    assert await store.staff.close_sessions(ada.id) == 2
    assert await store.staff.close_sessions(ada.id) == 0
    assert await live(store, 3)


async def test_audit_pages_newest_first_with_keyset_and_filters(store: Store) -> None:
    """page() returns entries newest first, below ``before``, by actor or action."""
    for i in range(7):
        await store.audit.record(
            actor="ada@example.org" if i % 2 == 0 else "cli:root",
            action="user.add" if i < 4 else "subscriber.suppress",
            target=f"t{i}", details={"n": i, "ok": True, "why": None, "note": "é"},
            client="::1" if i else None, now=T0 + timedelta(minutes=i),
        )  # fmt: skip
    page = await store.audit.page(limit=3)
    assert [e.target for e in page] == ["t6", "t5", "t4"]
    first = page[0]
    assert (first.at, first.actor, first.action, first.client) == (
        T0 + timedelta(minutes=6), "ada@example.org", "subscriber.suppress", "::1",
    )  # fmt: skip
    assert first.details == {"n": 6, "ok": True, "why": None, "note": "é"}
    rest = await store.audit.page(before=page[-1].id, limit=3)
    assert [e.target for e in rest] == ["t3", "t2", "t1"]
    last = await store.audit.page(before=rest[-1].id)
    assert [(e.target, e.client) for e in last] == [("t0", None)]
    assert await store.audit.page(before=last[0].id) == []
    assert [e.target for e in await store.audit.page(actor="cli:root")] == ["t5", "t3", "t1"]
    assert [e.target for e in await store.audit.page(action="user.add", before=page[-1].id)] == [
        "t3", "t2", "t1", "t0",
    ]  # fmt: skip
    both = await store.audit.page(actor="ada@example.org", action="user.add")
    assert [e.target for e in both] == ["t2", "t0"]


async def test_audit_record_inside_a_transaction_shares_its_fate(store: Store) -> None:
    """The module-level record() writes in the caller's transaction: rolled back with it."""

    class Boom(Exception):
        pass

    async def record_then_fail() -> None:
        async with store.db.begin(write=True) as conn:
            await audit_module.record(
                conn, actor="cli:root", action="user.add", target="x", details=None,
                client=None, now=T0,
            )  # fmt: skip
            raise Boom

    with pytest.raises(Boom):
        await record_then_fail()
    assert await store.audit.page() == []
    async with store.db.begin(write=True) as conn:
        await audit_module.record(
            conn, actor="cli:root", action="user.add", target="x", details=None,
            client=None, now=T0,
        )  # fmt: skip
    [entry] = await store.audit.page()
    assert (entry.target, entry.details) == ("x", {})


async def test_audit_keeps_details_small_and_plain(store: Store) -> None:
    """Long texts are cut; a value that is not str, int, bool or None is refused."""
    await store.audit.record(
        actor="a" * 400, action="user.add", target="t" * 600, details={"long": "x" * 5000},
        client=None, now=T0,
    )  # fmt: skip
    [entry] = await store.audit.page()
    assert (len(entry.actor), len(entry.target), len(entry.details["long"])) == (320, 500, 1000)
    with pytest.raises(TypeError, match="'when' is a datetime"):
        await store.audit.record(
            actor="cli:root", action="user.add", target="t", details={"when": T0},
            client=None, now=T0,
        )  # fmt: skip
    with pytest.raises(ValueError, match="limit"):
        await store.audit.page(limit=0)
    async with store.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(audit_log))).scalar() == 1


async def test_a_totp_step_signs_in_once(store: Store) -> None:
    """use_totp_step accepts a step once, refuses it and earlier ones after; a new secret
    starts afresh."""
    ada = await add(store)
    assert await store.staff.use_totp_step(ada.id, 100)
    assert not await store.staff.use_totp_step(ada.id, 100)
    assert not await store.staff.use_totp_step(ada.id, 99)
    assert await store.staff.use_totp_step(ada.id, 101)
    await store.staff.set_totp(ada.email, "JBSWY3DPEHPK3PXP", now=T0)
    assert await store.staff.use_totp_step(ada.id, 50)
