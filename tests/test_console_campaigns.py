"""The console's campaigns: the list and its filters, a campaign's page (summary, approval
panel, timeline in words at local times with the zone named), and the controls (pause,
resume, cancel, an event's update and cancellation): in French and English, a sender's work,
audited, refused to the roles below and changing nothing when refused."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from mailer.campaigns import Campaign, from_data
from mailer.models import (
    ROLES,
    CampaignRecord,
    CampaignStatus,
    DeliveryStatus,
    EventInfo,
    SendStatus,
    role_allows,
)
from mailer.storage import Store
from mailer.web.console import approval, campaign_control, campaigns
from mailer.workflow.scheduling import options_of, schedule_campaign
from tests.console_support import ROOT, Console, now
from tests.test_console_sends import a_list, record, start

pytestmark = pytest.mark.timeout(60)

PARIS = ZoneInfo("Europe/Paris")
EDITOR = "editor@staff.example.org"


def local(moment: datetime) -> str:
    """A moment as the local text of a campaign file (Paris), to the minute, at 09:00."""
    return moment.astimezone(PARIS).strftime("%Y-%m-%dT09:00")


def event_raw(name: str, *, days: int = 30, reminders: tuple[str, ...] = ("7d", "1d"),
              **extra: Any) -> dict[str, Any]:  # fmt: skip
    start = now() + timedelta(days=days)
    return {
        "name": name, "kind": "event", "lists": ["researchers"], "timezone": "Europe/Paris",
        "content": {"fr": {"subject": "Journée de recherche", "body": "Bonjour."},
                    "en": {"subject": "Research day", "body": "Hello."}},
        "event": {"title": "Journée de recherche", "start": local(start),
                  "end": local(start).replace("T09:00", "T17:30"), "place": "Paris",
                  "reminders": list(reminders)},
        **extra,
    }  # fmt: skip


def announcement_raw(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "kind": "announcement", "lists": ["researchers"],
        "content": {"fr": {"subject": "Nouvelles", "body": "Bonjour."}},
        "send_at": local(now() + timedelta(days=3)), **extra,
    }  # fmt: skip


def campaign_of(raw: dict[str, Any]) -> Campaign:
    return from_data(
        raw, source=Path(raw["name"]), default_zone="Europe/Paris", templates_dir=ROOT / "templates"
    )


async def a_draft(store: Store, raw: dict[str, Any], *, actor: str = EDITOR) -> CampaignRecord:
    """A draft saved as the compose page saves one."""
    campaign = campaign_of(raw)
    return await store.campaigns.save_draft(
        campaign.content, spec=campaign.spec(), list_slugs=campaign.data.lists,
        sender_name=None, sender_address=None, options=options_of(campaign),
        expected_version=None, actor=actor, now=now(),
    )  # fmt: skip


async def a_scheduled(console: Console, raw: dict[str, Any]) -> CampaignRecord:
    """A campaign saved and scheduled with the operator's approval (as from a file)."""
    record_ = await a_draft(console.store, raw)
    await schedule_campaign(
        console.store, console.settings, campaign_of(raw), now=now(), version=record_.version,
        actor="cli:test", approve=True,
    )  # fmt: skip
    return await console.store.campaigns.record(raw["name"])


async def confirm(console: Console, client: httpx.AsyncClient, path: str,
                  **fields: str) -> httpx.Response:  # fmt: skip
    """The confirmation page at ``path``, then its form posted with ``confirm=yes``."""
    page = await client.get(path)
    assert page.status_code == 200, page.text
    assert f'action="{path}"' in page.text
    version = page.text.split('name="version" value="')[1].split('"')[0]
    data = {"csrf": await console.csrf(client), "confirm": "yes", "version": version, **fields}
    return await client.post(path, data=data)


async def event_of(store: Store, campaign_id: int) -> EventInfo:
    event = await store.campaigns.event(campaign_id)
    assert event is not None
    return event


def timeline_of(html: str) -> str:
    return html.split('id="timeline"')[1].split("</table>")[0]


# --- the list --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ("Campagnes", "brouillon", "programmée", "Nouvel événement", "Prochain envoi")),
     ("en", ("Campaigns", "draft", "scheduled", "New event", "Next send"))],
)  # fmt: skip
async def test_the_list_shows_campaigns_and_filters_them(
    console: Console, tmp_path: Path, lang: str, words: tuple[str, ...]
) -> None:
    """Each campaign links to its page with its kind, status and version; the kind and status
    filters narrow it; a filter naming nothing is said beside it, never a 500; system
    campaigns are left out; an editor gets a New link per kind, a viewer none."""
    store = console.store
    await a_list(store, tmp_path, 3)
    await a_draft(store, event_raw("journee"))
    await a_scheduled(console, announcement_raw("annonce"))
    client = await console.client("editor")
    headers = {"accept-language": lang}
    page = await client.get("/admin/campaigns", headers=headers)
    assert page.status_code == 200
    for word in words:
        assert word in page.text
    assert 'href="/admin/campaigns/journee"' in page.text
    assert 'href="/admin/campaigns/annonce"' in page.text
    for kind in ("announcement", "event", "newsletter"):
        assert f'href="/admin/compose?kind={kind}"' in page.text
    events = await client.get("/admin/campaigns?kind=event", headers=headers)
    assert "/admin/campaigns/journee" in events.text
    assert "/admin/campaigns/annonce" not in events.text
    scheduled = await client.get("/admin/campaigns?status=scheduled", headers=headers)
    assert "/admin/campaigns/annonce" in scheduled.text
    assert "/admin/campaigns/journee" not in scheduled.text
    bad = await client.get("/admin/campaigns?status=sent&kind=x", headers=headers)
    assert bad.status_code == 400
    assert 'aria-invalid="true" aria-describedby="status-error"' in bad.text
    assert 'aria-describedby="kind-error"' in bad.text
    assert "/admin/campaigns/journee" in bad.text  # shown unfiltered by what names nothing
    viewer = await console.client("viewer")
    assert "/admin/compose" not in (await viewer.get("/admin/campaigns")).text


async def test_an_unknown_or_impossible_name_is_a_404_page(console: Console) -> None:
    client = await console.client("sender")
    for path in ("/admin/campaigns/nothing-here", "/admin/campaigns/UPPER",
                 "/admin/campaigns/nothing/approve", "/admin/campaigns/x/event"):  # fmt: skip
        answer = await client.get(path)
        assert answer.status_code == 404, path
        assert "<html" in answer.text


# --- a campaign's page --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ("invitation", "rappel 7 jours avant", "rappel 1 jour avant",
             "Chronologie des envois", "programmé", "Approuvée le", "cli:test")),
     ("en", ("invitation", "reminder 7 days before", "reminder 1 day before",
             "Timeline of the sends", "scheduled", "Approved", "cli:test"))],
)  # fmt: skip
async def test_the_timeline_says_each_send_in_words_at_its_local_time(
    console: Console, tmp_path: Path, lang: str, words: tuple[str, ...]
) -> None:
    """Every send in due order, in words, at its time in the campaign's zone with the zone
    named, linked to its page; the summary gives the lists with their member counts."""
    store = console.store
    await a_list(store, tmp_path, 4)
    found = await a_scheduled(console, event_raw("journee"))
    client = await console.client("viewer")
    page = await client.get("/admin/campaigns/journee", headers={"accept-language": lang})
    assert page.status_code == 200
    html = page.text
    timeline = timeline_of(html)
    for word in words[:3]:
        assert word in timeline, word
    for word in words[3:]:
        assert word in html, word
    sends = sorted(await store.sends.of_campaign(found.id), key=lambda s: s.due_at)
    keys = [s.key for s in sends]
    assert keys == ["invitation", "reminder:P7D", "reminder:P1D"]
    positions = [timeline.index(f'data-key="{k}"') for k in keys]
    assert positions == sorted(positions)
    for send in sends:
        assert f'href="/admin/sends/{send.id}"' in timeline
    reminder = sends[2].due_at.astimezone(PARIS)
    assert reminder.strftime("%H:%M") == "09:00"
    assert f"09:00\u00a0{reminder.tzname()}" in timeline
    assert "researchers" in html
    assert ("4 abonnés" if lang == "fr" else "4 subscribed") in html
    assert "/admin/campaigns/journee/pause" not in html  # a viewer gets no control


async def test_a_newsletter_issue_and_an_update_are_said_in_words(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path, 1)
    raw = {"name": "lettre", "kind": "newsletter", "lists": ["researchers"],
           "content": {"en": {"subject": "News", "body": "Hello."}},
           "newsletter": {"cron": "0 9 1 * *"}}  # fmt: skip
    found = await a_scheduled(console, raw)
    client = await console.client("viewer")
    page = await client.get("/admin/campaigns/lettre", headers={"accept-language": "en"})
    first = min(await store.sends.of_campaign(found.id), key=lambda s: s.due_at)
    day = first.due_at.astimezone(ZoneInfo(found.timezone))
    assert f"newsletter issue of 1 {day:%B %Y}" in timeline_of(page.text)


# --- pause, resume, cancel ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "question", "done"),
    [("fr", "2 envoi(s) s’arrêtent", "La campagne est en pause."),
     ("en", "2 send(s) stop", "The campaign is paused.")],
)  # fmt: skip
async def test_a_sender_pauses_resumes_and_cancels_a_campaign(
    console: Console, tmp_path: Path, lang: str, question: str, done: str
) -> None:
    store = console.store
    await a_list(store, tmp_path, 2)
    found = await a_scheduled(console, event_raw("journee", reminders=("7d",)))
    client = await console.client("sender")
    headers = {"accept-language": lang}
    path = "/admin/campaigns/journee"
    page = await client.get(f"{path}/pause", headers=headers)
    assert question in page.text
    answer = await confirm(console, client, f"{path}/pause")
    assert answer.status_code == 303
    assert answer.headers["location"] == f"{path}?done=paused"
    assert (await store.campaigns.record("journee")).status == CampaignStatus.PAUSED
    assert {s.status for s in await store.sends.of_campaign(found.id)} == {SendStatus.PAUSED}
    shown = await client.get(answer.headers["location"], headers=headers)
    assert done in shown.text
    assert f'href="{path}/resume"' in shown.text
    [entry] = await store.audit.page(action="campaign.pause")
    assert (entry.actor, entry.target, entry.details["sends"]) == (
        "sender@staff.example.org",
        "journee",
        2,
    )
    assert (await confirm(console, client, f"{path}/resume")).status_code == 303
    assert {s.status for s in await store.sends.of_campaign(found.id)} == {SendStatus.SCHEDULED}
    invitation = next(s for s in await store.sends.of_campaign(found.id) if s.key == "invitation")
    assert console.queued == [invitation.id]  # due now: handed to the daemon
    assert (await confirm(console, client, f"{path}/cancel")).status_code == 303
    assert (await store.campaigns.record("journee")).status == CampaignStatus.CANCELLED
    assert {s.status for s in await store.sends.of_campaign(found.id)} == {SendStatus.CANCELLED}
    assert len(await store.audit.page(action="campaign.cancel")) == 1
    again = await client.get(f"{path}/pause", headers=headers)
    assert again.status_code == 409  # the lifecycle's words: cancelled cannot pause


async def test_controls_are_a_senders_and_a_refusal_changes_nothing(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path, 1)
    await a_scheduled(console, event_raw("journee"))
    editor = await console.client("editor")
    for name in ("pause", "resume", "cancel", "event", "event-cancel"):
        path = f"/admin/campaigns/journee/{name}"
        assert (await editor.get(path)).status_code == 403
        post = await editor.post(path, data={"csrf": await console.csrf(editor), "confirm": "yes"})
        assert post.status_code == 403
    assert (await store.campaigns.record("journee")).status == CampaignStatus.SCHEDULED
    assert await store.audit.page(action="campaign.cancel") == []
    sender = await console.client("sender")
    no_csrf = await sender.post("/admin/campaigns/journee/cancel", data={"confirm": "yes"})
    assert no_csrf.status_code == 403
    assert (await store.campaigns.record("journee")).status == CampaignStatus.SCHEDULED
    draft = await a_draft(store, announcement_raw("brouillon"))
    refused = await sender.post(
        "/admin/campaigns/brouillon/pause",
        data={"csrf": await console.csrf(sender), "confirm": "yes", "version": "1"},
        headers={"accept-language": "en"},
    )
    assert refused.status_code == 409
    assert "campaign brouillon is draft: it cannot pause" in refused.text
    assert (await store.campaigns.record("brouillon")).status == draft.status


# --- an event's update and cancellation -----------------------------------------------------------


async def invite_everyone(store: Store, campaign_id: int, count: int) -> None:
    """The invitation goes out to ``count`` people, as the daemon would send it."""
    invitation = next(
        s for s in await store.sends.of_campaign(campaign_id) if s.key == "invitation"
    )
    await start(store, invitation.id)
    await record(store, invitation.id, *[DeliveryStatus.SENT] * count)
    await store.sends.finish(invitation.id, now=now())


def event_form(start: str, **extra: str) -> dict[str, str]:
    return {"event.title": "Journée de recherche", "event.start": start,
            "event.end": start[:11] + "17:30", "event.place": "Lyon", **extra}  # fmt: skip


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ("Ce qui changera", "La mise à jour part aux 3 personnes", "heure de Europe/Paris")),
     ("en", ("What will change", "The update goes to the 3 people", "Europe/Paris time"))],
)  # fmt: skip
async def test_an_event_moved_moves_its_reminders_on_the_timeline(
    console: Console, tmp_path: Path, lang: str, words: tuple[str, ...]
) -> None:
    """The form shows the current values and the zone; the review says which reminders move
    (old -> new local time) and who gets the update; applying it moves them, and the
    timeline shows the new times and the update."""
    store = console.store
    await a_list(store, tmp_path, 3)
    found = await a_scheduled(console, event_raw("journee"))
    await invite_everyone(store, found.id, 3)
    client = await console.client("sender")
    headers = {"accept-language": lang}
    path = "/admin/campaigns/journee/event"
    form = await client.get(path, headers=headers)
    assert form.status_code == 200
    assert 'value="Paris"' in form.text
    assert "Europe/Paris" in form.text
    later = local(now() + timedelta(days=44))
    data = {"csrf": await console.csrf(client), "version": str(found.version), "step": "review",
            "sequence": "0", **event_form(later)}  # fmt: skip
    review = await client.post(path, data=data, headers=headers)
    assert review.status_code == 200, review.text
    for word in words:
        assert word in review.text, word
    assert 'name="step" value="apply"' in review.text
    before = {s.key: s.due_at for s in await store.sends.of_campaign(found.id)}
    assert (await event_of(store, found.id)).place == "Paris"  # a review writes nothing
    applied = await client.post(path, data={**data, "step": "apply"}, headers=headers)
    assert applied.status_code == 303
    assert applied.headers["location"] == "/admin/campaigns/journee?done=event_updated"
    event = await event_of(store, found.id)
    assert (event.place, event.sequence) == ("Lyon", 1)
    after = {s.key: s for s in await store.sends.of_campaign(found.id)}
    moved = after["reminder:P7D"].due_at
    assert moved != before["reminder:P7D"]
    assert moved.astimezone(PARIS).strftime("%Y-%m-%dT%H:%M") == local(
        datetime.fromisoformat(later).replace(tzinfo=PARIS) - timedelta(days=7)
    )
    assert after["update:1"].action == "update"
    page = await client.get(applied.headers["location"], headers=headers)
    timeline = timeline_of(page.text)
    assert moved.astimezone(PARIS).strftime("%H:%M") in timeline
    assert ("mise à jour 1" if lang == "fr" else "update 1") in timeline
    [entry] = await store.audit.page(action="event.update")
    assert entry.details["update_to"] == 3


async def test_a_bad_event_form_says_why_beside_the_field(console: Console, tmp_path: Path) -> None:
    """A start in the DST gap gets the model's words (the two nearest valid times) beside the
    field, an end before the start and a past start too; nothing changes."""
    store = console.store
    await a_list(store, tmp_path, 1)
    found = await a_scheduled(console, event_raw("journee"))
    client = await console.client("sender")
    path = "/admin/campaigns/journee/event"
    base = {"csrf": await console.csrf(client), "version": str(found.version), "step": "review",
            "sequence": "0"}  # fmt: skip
    year = now().year + 1
    gap = await client.post(path, data={**base, **event_form(f"{year}-03-28T02:30"),
                                        "event.start": _last_sunday_of_march(year)},
                            headers={"accept-language": "en"})  # fmt: skip
    assert gap.status_code == 400
    assert 'id="e-start"' in gap.text
    assert "does not exist in Europe/Paris" in gap.text
    assert 'aria-invalid="true"' in gap.text
    past = await client.post(path, data={**base, **event_form(local(now() - timedelta(days=2)))},
                             headers={"accept-language": "fr"})  # fmt: skip
    assert past.status_code == 400
    assert "Le contrôle de la campagne répond" in past.text
    assert "the new start has passed" in past.text
    assert (await event_of(store, found.id)).place == "Paris"
    assert await store.audit.page(action="event.update") == []


async def test_an_event_form_shown_before_another_move_is_refused(
    console: Console, tmp_path: Path
) -> None:
    """Two senders with the event's form open: the second to apply is told the event was
    changed meanwhile (409), and those invited get one update, not two."""
    store = console.store
    await a_list(store, tmp_path, 2)
    found = await a_scheduled(console, event_raw("journee"))
    await invite_everyone(store, found.id, 2)
    path = "/admin/campaigns/journee/event"
    first, second = await console.client("sender"), await console.client("admin")
    shown = await second.get(path)
    assert 'name="sequence" value="0"' in shown.text
    for client, days in ((first, 44), (second, 51)):
        data = {"csrf": await console.csrf(client), "version": str(found.version),
                "step": "apply", "sequence": "0", **event_form(local(now() + timedelta(days=days)))}  # fmt: skip
        answer = await client.post(path, data=data, headers={"accept-language": "en"})
        if client is first:
            assert answer.status_code == 303, answer.text
    assert answer.status_code == 409
    assert "changed meanwhile" in answer.text
    keys = [s.key for s in await store.sends.of_campaign(found.id)]
    assert [k for k in keys if k.startswith("update:")] == ["update:1"]


async def test_a_cancelled_campaigns_event_cannot_be_moved(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path, 2)
    found = await a_scheduled(console, event_raw("journee"))
    await invite_everyone(store, found.id, 2)
    client = await console.client("sender")
    assert (await confirm(console, client, "/admin/campaigns/journee/cancel")).status_code == 303
    data = {"csrf": await console.csrf(client), "version": str(found.version), "step": "apply",
            "sequence": "0", **event_form(local(now() + timedelta(days=44)))}  # fmt: skip
    answer = await client.post("/admin/campaigns/journee/event", data=data)
    assert answer.status_code == 409
    keys = [s.key for s in await store.sends.of_campaign(found.id)]
    assert not [k for k in keys if k.startswith("update:")]


def _last_sunday_of_march(year: int) -> str:
    day = datetime(year, 3, 31)
    while day.weekday() != 6:
        day -= timedelta(days=1)
    return day.strftime("%Y-%m-%dT02:30")


@pytest.mark.parametrize("invited", [0, 2])
async def test_an_event_cancelled_tells_those_invited_only_when_someone_was(
    console: Console, tmp_path: Path, invited: int
) -> None:
    store = console.store
    await a_list(store, tmp_path, 2)
    found = await a_scheduled(console, event_raw("journee", days=20))
    if invited:
        await invite_everyone(store, found.id, invited)
    client = await console.client("sender")
    page = await client.get(
        "/admin/campaigns/journee/event-cancel", headers={"accept-language": "en"}
    )
    if invited:
        assert "2 people invited will get the cancellation." in page.text
    else:
        assert "Nobody was invited: no cancellation goes." in page.text
    answer = await confirm(console, client, "/admin/campaigns/journee/event-cancel")
    assert answer.status_code == 303
    sends = {s.key: s for s in await store.sends.of_campaign(found.id)}
    assert ("cancellation:1" in sends) is bool(invited)
    assert (await event_of(store, found.id)).status == "cancelled"
    assert (await store.campaigns.record("journee")).status == CampaignStatus.CANCELLED
    assert all(
        s.status in (SendStatus.CANCELLED, SendStatus.DONE)
        for k, s in sends.items()
        if not k.startswith("cancellation")
    )
    [entry] = await store.audit.page(action="event.cancel")
    assert entry.details["cancellation_to"] == invited
    assert (await client.get("/admin/campaigns/journee/event")).status_code == 409


# --- every route of these pages x every role ------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_each_route_answers_each_role_and_an_empty_post_never_fails(
    console: Console, tmp_path: Path
) -> None:
    """On a real campaign (scheduled, so every page has something to show): a role below the
    route's gets 403 and changes nothing; an empty POST (no confirm, no version) shows a page,
    never a 500 and never a change."""
    store = console.store
    await a_list(store, tmp_path, 1)
    await a_scheduled(console, event_raw("journee"))
    routes = [*campaigns.ROUTES, *approval.ROUTES, *campaign_control.ROUTES]
    for role in ROLES:
        client = await console.client(role)
        token = await console.csrf(client)
        for route in routes:
            path = "/admin" + route.path.replace("{name}", "journee")
            before = len(await store.audit.page(limit=500))
            answer = await client.get(path)
            assert (answer.status_code == 403) is not role_allows(role, route.read), (path, role)
            assert answer.status_code < 500, (path, role)
            if route.write is None:
                continue
            post = await client.post(path, data={"csrf": token})
            assert post.status_code < 500, (path, role, post.text[:300])
            if not role_allows(role, route.write):
                assert post.status_code == 403, (path, role)
            assert len(await store.audit.page(limit=500)) == before, (path, role)
    record_ = await store.campaigns.record("journee")
    assert record_.status == CampaignStatus.SCHEDULED
