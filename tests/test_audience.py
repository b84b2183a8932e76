"""The audience of a campaign's lists, counted in the database (``store.lists.audience``): the
members who would get mail now, by the rule the send uses (subscribed, active, not
suppressed), each person once across lists; the same figures as walking the recipients."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer.addresses import normalize
from mailer.errors import NotFoundError
from mailer.lists import import_file
from mailer.models import SubscriberRow, SuppressionReason
from mailer.storage import Store


def now() -> datetime:
    return datetime.now(UTC)


async def test_the_audience_counts_whom_a_send_would_reach(store: Store, tmp_path: Path) -> None:
    news = tmp_path / "news.csv"
    news.write_text(
        "email,name\n" + "".join(f"m{i}@example.org,M {i}\n" for i in range(6)), encoding="utf-8"
    )
    events = tmp_path / "events.csv"
    events.write_text("email,name\nm0@example.org,M 0\nonly@example.org,Only\n", encoding="utf-8")
    assert (await import_file(store, news, now=now())).ok
    assert (await import_file(store, events, now=now())).ok
    await store.subscribers.unsubscribe("m1@example.org", slug="news", source="web", now=now())
    await store.subscribers.suppress(
        "m2@example.org", reason=SuppressionReason.COMPLAINT, detail="", now=now()
    )
    counts, total = await store.lists.audience(["news", "events"])
    walked = {
        slug: [r.id async for r in store.lists.recipients(slug)] for slug in ("news", "events")
    }
    assert counts == {"news": 4, "events": 2}
    assert counts == {slug: len(ids) for slug, ids in walked.items()}
    assert total == len({i for ids in walked.values() for i in ids}) == 5  # m0 is on both
    assert await store.lists.audience(["news"]) == ({"news": 4}, 4)
    assert await store.lists.audience([]) == ({}, 0)
    late = normalize("late@example.org")
    await store.subscribers.add(
        SubscriberRow(line=0, email=late.email, key=late.key, smtputf8=False), slug="events",
        source="cli", now=now(),
    )  # fmt: skip
    assert (await store.lists.audience(["events"]))[0] == {"events": 3}
    with pytest.raises(NotFoundError):
        await store.lists.audience(["news", "gone"])
