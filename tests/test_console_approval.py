"""A campaign's approval in the console: an editor submits, a second person approves (the
snapshot frozen: content hash, lists and audience), a sender sends it back or schedules it
(the plan at local times); self-approval refused unless the setting allows it; a draft
scheduled directly where approval is not required, recorded so; a version someone saved
since refused with "changed by"; in French and English, each step audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailer.models import CampaignStatus, SendStatus
from mailer.storage import Store
from tests.console_support import Console, now, open_console
from tests.test_console_campaigns import (
    EDITOR,
    a_draft,
    announcement_raw,
    campaign_of,
    confirm,
    event_raw,
)
from tests.test_console_sends import a_list

pytestmark = pytest.mark.timeout(60)

SENDER = "sender@staff.example.org"
BOSS = "boss@staff.example.org"
PATH = "/admin/campaigns/journee"


async def submitted(store: Store, raw: dict[str, Any], *, by: str = EDITOR) -> int:
    record = await a_draft(store, raw, actor=by)
    await store.campaigns.submit(record.id, version=record.version, actor=by, now=now())
    return record.version


@pytest.mark.parametrize(
    ("lang", "question", "done"),
    [("fr", "Soumettre la version 1 de journee pour approbation", "La campagne est soumise"),
     ("en", "Submit version 1 of journee for approval", "The campaign is submitted")],
)  # fmt: skip
async def test_an_editor_submits_a_draft(
    console: Console, tmp_path: Path, lang: str, question: str, done: str
) -> None:
    await a_list(console.store, tmp_path, 2)
    await a_draft(console.store, event_raw("journee"))
    viewer = await console.client("viewer")
    assert (await viewer.get(f"{PATH}/submit")).status_code == 403
    client = await console.client("editor")
    headers = {"accept-language": lang}
    page = await client.get(PATH, headers=headers)
    assert f'href="{PATH}/submit"' in page.text
    assert f'href="{PATH}/approve"' not in page.text  # an editor does not approve
    confirm_page = await client.get(f"{PATH}/submit", headers=headers)
    assert question in confirm_page.text
    answer = await confirm(console, client, f"{PATH}/submit")
    assert answer.status_code == 303
    record = await console.store.campaigns.record("journee")
    assert (record.status, record.submitted_by) == (CampaignStatus.SUBMITTED, EDITOR)
    assert done in (await client.get(answer.headers["location"], headers=headers)).text
    [entry] = await console.store.audit.page(action="campaign.submit")
    assert (entry.actor, entry.target, entry.details["version"]) == (EDITOR, "journee", 1)
    again = await client.post(
        f"{PATH}/submit",
        data={"csrf": await console.csrf(client), "confirm": "yes", "version": "1"},
        headers=headers,
    )
    assert again.status_code == 409  # submitted already: the lifecycle says why


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ("Approuver la version 1 de journee", "Destinataires aujourd’hui, par liste",
             "Personnes en tout")),
     ("en", ("Approve version 1 of journee", "Recipients today, by list", "People in all"))],
)  # fmt: skip
async def test_a_second_person_approves_and_the_snapshot_is_frozen(
    console: Console, tmp_path: Path, lang: str, words: tuple[str, ...]
) -> None:
    store = console.store
    await a_list(store, tmp_path, 3)
    await a_list(store, tmp_path, 2, slug="clinicians")
    await submitted(store, event_raw("journee", lists=["researchers", "clinicians"]))
    editor = await console.client("editor")
    assert (await editor.get(f"{PATH}/approve")).status_code == 403
    client = await console.client("sender", BOSS)
    headers = {"accept-language": lang}
    page = await client.get(f"{PATH}/approve", headers=headers)
    assert page.status_code == 200
    for word in words:
        assert word in page.text
    # the two lists share person0 and person1: 3 people in all, each mailed once
    assert '<tfoot><tr><th scope="row">' in page.text
    assert (
        page.text.split("<tfoot>")[1]
        .split("</tfoot>")[0]
        .endswith('<td class="numbers">3</td></tr>')
    )
    answer = await confirm(console, client, f"{PATH}/approve")
    assert answer.status_code == 303
    record = await store.campaigns.record("journee")
    assert (record.status, record.approved_by) == (CampaignStatus.APPROVED, BOSS)
    snapshot = record.approval
    assert snapshot is not None
    assert snapshot["lists"] == {"researchers": 3, "clinicians": 2}
    assert (snapshot["audience"], snapshot["version"], snapshot["by"]) == (3, 1, BOSS)
    [entry] = await store.audit.page(action="campaign.approve")
    assert entry.details["content_sha256"] == snapshot["content_sha256"]
    shown = await client.get(PATH, headers=headers)
    assert snapshot["content_sha256"][:12] in shown.text
    assert f'href="{PATH}/schedule"' in shown.text
    assert f'href="{PATH}/send-back"' in shown.text


async def test_self_approval_is_refused_by_default(console: Console, tmp_path: Path) -> None:
    """Who saved the version, or submitted it, may not approve it: a page says why (in the
    staff's language) and nothing changes."""
    store = console.store
    await a_list(store, tmp_path, 1)
    await submitted(store, event_raw("journee"), by=SENDER)
    client = await console.client("sender")
    for lang, words in (("en", "You saved or submitted this version"),
                        ("fr", "Vous avez enregistré ou soumis cette version")):  # fmt: skip
        page = await client.get(f"{PATH}/approve", headers={"accept-language": lang})
        assert page.status_code == 403
        assert words in page.text
    post = await client.post(
        f"{PATH}/approve", data={"csrf": await console.csrf(client), "confirm": "yes",
                                 "version": "1"},
    )  # fmt: skip
    assert post.status_code == 403
    assert (await store.campaigns.record("journee")).status == CampaignStatus.SUBMITTED
    assert await store.audit.page(action="campaign.approve") == []


async def test_who_wrote_an_earlier_version_since_the_approval_may_not_approve(
    console: Console, tmp_path: Path
) -> None:
    """A sender writes version 1, an editor touches it (version 2) and submits: the sender
    would approve words they wrote, so they are refused too; an approval starts the count
    again (who edits after it is who counts for the next one)."""
    store = console.store
    await a_list(store, tmp_path, 1)
    first = await a_draft(store, event_raw("journee"), actor=SENDER)
    campaign = campaign_of(event_raw("journee", days=31))
    second = await store.campaigns.save_draft(
        campaign.content, spec=campaign.spec(), list_slugs=campaign.data.lists,
        sender_name=None, sender_address=None, options={}, expected_version=first.version,
        actor=EDITOR, now=now(),
    )  # fmt: skip
    await store.campaigns.submit(second.id, version=second.version, actor=EDITOR, now=now())
    sender = await console.client("sender")
    assert (await sender.get(f"{PATH}/approve")).status_code == 403
    boss = await console.client("sender", BOSS)
    assert (await confirm(console, boss, f"{PATH}/approve")).status_code == 303
    record = await store.campaigns.record("journee")
    assert record.contributors == ()


async def test_self_approval_is_allowed_with_the_setting(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    await a_list(store, tmp_path, 1)
    await submitted(store, event_raw("journee"), by=SENDER)
    async for console in open_console(store, tmp_path, database_url, allow_self_approval=True):
        client = await console.client("sender")
        assert (await confirm(console, client, f"{PATH}/approve")).status_code == 303
        record = await store.campaigns.record("journee")
        assert (record.status, record.approved_by) == (CampaignStatus.APPROVED, SENDER)


@pytest.mark.parametrize("lang", ["fr", "en"])
async def test_a_sender_sends_an_approved_campaign_back_to_draft(
    console: Console, tmp_path: Path, lang: str
) -> None:
    store = console.store
    await a_list(store, tmp_path, 1)
    await submitted(store, event_raw("journee"))
    client = await console.client("sender")
    assert (await confirm(console, client, f"{PATH}/approve")).status_code == 303
    page = await client.get(f"{PATH}/send-back", headers={"accept-language": lang})
    assert ("Renvoyer la version 1" if lang == "fr" else "Send version 1") in page.text
    answer = await confirm(console, client, f"{PATH}/send-back")
    assert answer.headers["location"] == f"{PATH}?done=sent_back"
    record = await store.campaigns.record("journee")
    assert (record.status, record.approved_at, record.submitted_by) == (
        CampaignStatus.DRAFT,
        None,
        None,
    )
    assert len(await store.audit.page(action="campaign.send_back")) == 1


@pytest.mark.parametrize(
    ("lang", "words"),
    [("fr", ("Programmer la version 1 de journee", "invitation", "rappel 7 jours avant",
             "Envois prévus (heure de Europe/Paris)", "La campagne est programmée")),
     ("en", ("Schedule version 1 of journee", "invitation", "reminder 7 days before",
             "Sends planned (Europe/Paris time)", "The campaign is scheduled"))],
)  # fmt: skip
async def test_an_approved_campaign_is_scheduled_from_its_plan(
    console: Console, tmp_path: Path, lang: str, words: tuple[str, ...]
) -> None:
    """The confirmation shows each planned send at its local time and the audience per list;
    scheduling makes the sends, and the invitation due now goes to the daemon."""
    store = console.store
    await a_list(store, tmp_path, 2)
    await submitted(store, event_raw("journee"))
    client = await console.client("sender")
    assert (await confirm(console, client, f"{PATH}/approve")).status_code == 303
    headers = {"accept-language": lang}
    page = await client.get(f"{PATH}/schedule", headers=headers)
    assert page.status_code == 200
    for word in words[:4]:
        assert word in page.text, word
    assert '<th scope="row">researchers</th><td class="numbers">2</td>' in page.text
    answer = await confirm(console, client, f"{PATH}/schedule")
    assert answer.status_code == 303
    record = await store.campaigns.record("journee")
    assert record.status == CampaignStatus.SCHEDULED
    sends = {s.key: s for s in await store.sends.of_campaign(record.id)}
    assert set(sends) == {"invitation", "reminder:P7D", "reminder:P1D"}
    assert console.queued == [sends["invitation"].id]
    assert all(s.status == SendStatus.SCHEDULED for s in sends.values())
    assert words[4] in (await client.get(answer.headers["location"], headers=headers)).text
    [entry] = await store.audit.page(action="campaign.schedule")
    assert entry.details["created"] == "invitation, reminder:P7D, reminder:P1D"


async def test_a_draft_is_not_scheduled_while_approval_is_required(
    console: Console, tmp_path: Path
) -> None:
    await a_list(console.store, tmp_path, 1)
    await a_draft(console.store, announcement_raw("annonce"))
    client = await console.client("sender")
    page = await client.get("/admin/campaigns/annonce/schedule", headers={"accept-language": "en"})
    assert page.status_code == 409
    assert "campaign annonce is draft: it cannot schedule" in page.text
    shown = await client.get("/admin/campaigns/annonce")
    assert 'href="/admin/campaigns/annonce/schedule"' not in shown.text
    assert (
        await console.store.sends.of_campaign((await console.store.campaigns.record("annonce")).id)
        == []
    )


async def test_without_required_approval_a_sender_schedules_a_draft(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    """Recorded as approved by the sender, with the note saying approval was not required."""
    await a_list(store, tmp_path, 1)
    await a_draft(store, announcement_raw("annonce"), actor=SENDER)
    async for console in open_console(store, tmp_path, database_url, require_approval=False):
        client = await console.client("sender")
        page = await client.get("/admin/campaigns/annonce", headers={"accept-language": "en"})
        assert "Approval is not required here" in page.text
        plan = await client.get(
            "/admin/campaigns/annonce/schedule", headers={"accept-language": "fr"}
        )
        assert "la campagne sera enregistrée comme approuvée par vous" in plan.text
        assert (
            await confirm(console, client, "/admin/campaigns/annonce/schedule")
        ).status_code == 303
        record = await store.campaigns.record("annonce")
        assert (record.status, record.approved_by) == (CampaignStatus.SCHEDULED, SENDER)
        assert record.approval is not None
        assert "MAILER_CONSOLE__REQUIRE_APPROVAL=false" in record.approval["note"]
        [send] = await store.sends.of_campaign(record.id)
        assert send.key == "announce"
        [entry] = await store.audit.page(action="campaign.schedule")
        assert entry.details["approved_by"] == SENDER


@pytest.mark.parametrize("lang", ["fr", "en"])
async def test_a_stale_version_is_refused_with_who_changed_it(
    console: Console, tmp_path: Path, lang: str
) -> None:
    """An approval posted for version 1 after someone saved version 2 changes nothing and
    names who saved it when."""
    store = console.store
    await a_list(store, tmp_path, 1)
    raw = event_raw("journee")
    version = await submitted(store, raw)
    client = await console.client("sender", BOSS)
    page = await client.get(f"{PATH}/approve")
    assert f'name="version" value="{version}"' in page.text
    campaign = campaign_of({**raw, "event": {**raw["event"], "place": "Lyon"}})
    await store.campaigns.save_draft(
        campaign.content, spec=campaign.spec(), list_slugs=["researchers"], sender_name=None,
        sender_address=None, options={}, expected_version=version, actor="other@staff.example.org",
        now=now(),
    )  # fmt: skip
    await store.campaigns.submit(
        (await store.campaigns.record("journee")).id, version=version + 1,
        actor="other@staff.example.org", now=now(),
    )  # fmt: skip
    answer = await client.post(
        f"{PATH}/approve",
        data={"csrf": await console.csrf(client), "confirm": "yes", "version": str(version)},
        headers={"accept-language": lang},
    )
    assert answer.status_code == 409
    assert "changed by other@staff.example.org at" in answer.text
    assert ("Quelqu’un a modifié la campagne" if lang == "fr" else "Someone changed") in answer.text
    record = await store.campaigns.record("journee")
    assert (record.status, record.approved_at) == (CampaignStatus.SUBMITTED, None)
    assert await store.audit.page(action="campaign.approve") == []


async def test_the_pre_flight_of_the_approved_version_is_in_the_snapshot(
    console: Console, tmp_path: Path
) -> None:
    """A pre-flight finished for the version approved is frozen with it (total, failed);
    the campaign's page shows it."""
    from tests.test_console_preflight import finished, start

    store = console.store
    await a_list(store, tmp_path, 3)
    await submitted(store, event_raw("journee"))
    editor = await console.client("editor")
    await start(console, editor, "journee")
    await finished(editor, "journee")
    client = await console.client("sender", BOSS)
    assert (await confirm(console, client, f"{PATH}/approve")).status_code == 303
    record = await store.campaigns.record("journee")
    assert record.approval is not None
    assert record.approval["preflight"] == {"total": 3, "failed": 0}
