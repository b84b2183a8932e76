"""The console's campaign form (web/console/compose.py), on SQLite and PostgreSQL, through the
real app: each kind written, saved as a draft and read back; what a form can get wrong said
beside its field in the staff member's language (French and English), nothing saved; two
editors on one draft (the second save refused, nothing lost); the cron in words; and a
campaign downloaded as a file that ``mailer campaign create`` reads into the same campaign."""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from mailer import campaigns
from mailer.lists import import_file
from mailer.models import Content
from mailer.storage import Store
from mailer.web.console.campaign_form import MAX_BODY
from tests.console_support import Console, now

pytestmark = pytest.mark.timeout(60)

YEAR = now().year + 1  # the times the forms give are always ahead


def last_sunday(month: int) -> int:
    """The day of the last Sunday of ``month`` in :data:`YEAR` (Europe's clock changes)."""
    day = datetime(YEAR, month, 31)
    return (day - timedelta(days=(day.weekday() + 1) % 7)).day


async def a_list(store: Store, tmp_path: Path, slug: str = "researchers", count: int = 3) -> None:
    path = tmp_path / f"{slug}.csv"
    lines = ["email,name", *(f"p{i}.{slug}@example.org,Personne {i}" for i in range(count))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert (await import_file(store, path, now=now())).ok


def fields(kind: str, name: str, **extra: Any) -> dict[str, Any]:
    """A valid form of ``kind``, as a browser posts it (French and English words)."""
    data: dict[str, Any] = {
        "name": name, "kind": kind, "lists": ["researchers"], "languages": ["fr", "en"],
        "timezone": "Europe/Paris", "body_format": "markdown", "ambiguous": "first",
        "content.fr.subject": "Des nouvelles", "content.fr.body": "Bonjour {{ subscriber.name }}",
        "content.en.subject": "News", "content.en.body": "Hello {{ subscriber.name }}",
    }  # fmt: skip
    if kind == "announcement":
        data["send_at"] = f"{YEAR}-06-15T09:00"
    elif kind == "event":
        data.update({
            "event.title": "Journée de recherche", "event.start": f"{YEAR}-06-15T09:00",
            "event.end": f"{YEAR}-06-15T17:30", "event.place": "Paris", "event.reminders": "7d, 1d",
            "event.invite": "request", "content.en.event.title": "Research day",
        })  # fmt: skip
    elif kind == "newsletter":
        data["newsletter.cron"] = "0 9 1 * *"
    data.update(extra)
    return data


async def post(console: Console, client: httpx.AsyncClient, path: str, data: dict[str, Any],
               **headers: str) -> httpx.Response:  # fmt: skip
    data = {**data, "csrf": await console.csrf(client)}
    return await client.post(path, data=data, headers=headers)


def error_of(page: str, field_id: str) -> str:
    """The error shown beside a field (its ``-error`` element), unescaped; "" if none."""
    found = re.search(rf'id="{field_id}-error">(.*?)</small>', page, re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))) if found else ""


def invalid(page: str, field_id: str) -> bool:
    tag = re.search(rf'<(?:input|textarea|select)[^>]*id="{field_id}"[^>]*>', page)
    return tag is not None and 'aria-invalid="true"' in tag.group(0)


# --- choosing, each kind saved and read back -----------------------------------------------------


CHOOSING = {
    "fr": ("Annonce", "Événement", "Lettre d’information", "Enregistrez, puis ouvrez l’aperçu"),
    "en": ("Announcement", "Event", "Newsletter", "Save, then preview"),
}
SQLITE = pytest.mark.parametrize("backend", ["sqlite"])  # pages that read little of the store


@SQLITE
@pytest.mark.parametrize("lang", ["fr", "en"])
async def test_a_kind_is_chosen_then_its_empty_form_shown(
    console: Console, tmp_path: Path, lang: str
) -> None:
    words = CHOOSING[lang]
    await a_list(console.store, tmp_path)
    editor = await console.client("editor")
    editor.headers["accept-language"] = lang
    choose = await editor.get("/admin/compose")
    assert choose.status_code == 200
    for kind in ("announcement", "event", "newsletter"):
        assert f'href="/admin/compose?kind={kind}"' in choose.text
    assert words[0] in choose.text
    assert words[1] in choose.text
    assert words[2] in choose.text
    form = await editor.get("/admin/compose?kind=event")
    assert form.status_code == 200
    for name in ("name", "event.start", "event.reminders", "content.fr.body", "content.en.body",
                 "content.en.event.title", "lists", "languages", "timezone"):  # fmt: skip
        assert f'name="{name}"' in form.text, name
    assert 'value="researchers"' in form.text
    assert words[3] in form.text
    assert 'hx-post="/admin/preview"' in form.text
    assert "compose.css" in form.text
    assert 'value="Europe/Paris"' in form.text  # the zone the setting gives, shown
    posted = await post(console, editor, "/admin/compose", fields("webinar", "w"))
    assert posted.status_code == 400
    assert "webinar" in posted.text
    odd = await editor.get("/admin/compose?kind=webinar")
    assert odd.status_code == 400
    assert "webinar" in odd.text
    viewer = await console.client("viewer")
    assert (await viewer.get("/admin/compose?kind=event")).status_code == 403


async def test_each_kind_is_saved_as_a_draft_and_read_back(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path)
    editor = await console.client("editor")
    for kind, lang in (("announcement", "fr"), ("event", "en"), ("newsletter", "fr"),
                       ("newsletter-en", "en")):  # fmt: skip
        editor.headers["accept-language"] = lang
        await one_kind_saved_and_edited(console, editor, kind, lang)
    audit = await store.audit.page(action="campaign.save")
    assert len(audit) == 8
    assert {a.target for a in audit} == {"c-announcement", "c-event", "c-newsletter",
                                         "c-newsletter-en"}  # fmt: skip


async def one_kind_saved_and_edited(
    console: Console, editor: httpx.AsyncClient, kind: str, lang: str
) -> None:
    store = console.store
    name, kind = f"c-{kind}", kind.removesuffix("-en")
    saved = await post(console, editor, "/admin/compose", fields(kind, name))
    assert saved.status_code == 303, saved.text
    assert saved.headers["location"] == f"/admin/campaigns/{name}?done=saved"
    record = await store.campaigns.record(name)
    assert (record.status, record.version, record.lists) == ("draft", 1, ("researchers",))
    assert record.updated_by == "editor@staff.example.org"
    assert record.approved_at is None
    assert record.spec is not None
    assert record.spec["content"]["en"]["subject"] == "News"
    assert not await store.sends.of_campaign(record.id)  # a draft schedules nothing
    audit = await store.audit.page(action="campaign.save")
    assert audit[0].target == name
    assert audit[0].details["version"] == 1
    again = await editor.get(f"/admin/campaigns/{name}/edit")
    assert again.status_code == 200
    assert 'value="Des nouvelles"' in again.text
    assert 'name="version" value="1"' in again.text
    assert "readonly" in again.text  # the name does not change
    if kind == "event":
        assert 'value="7d, 1d"' in again.text
        assert f'value="{YEAR}-06-15T17:30"' in again.text
    if kind == "newsletter":  # the cron in words, without JavaScript
        assert ("le 1er de chaque mois" if lang == "fr" else "the 1st of every month") in again.text
    changed = fields(kind, "ignored", version="1", **{"content.en.subject": "Newer"})
    second = await post(console, editor, f"/admin/campaigns/{name}/edit", changed)
    assert second.status_code == 303, second.text
    record = await store.campaigns.record(name)
    assert record.version == 2
    assert record.spec is not None
    assert record.spec["content"]["en"]["subject"] == "Newer"
    assert record.name == name


# --- what a form gets wrong --------------------------------------------------------------------


@SQLITE
@pytest.mark.parametrize(
    ("lang", "lead", "error"),
    [("fr", "Le brouillon n’a pas été enregistré", "Erreur\u202f:"),
     ("en", "The draft was not saved", "Error:")],
)  # fmt: skip
async def test_errors_are_said_beside_their_fields_with_the_values_as_typed(
    console: Console, tmp_path: Path, lang: str, lead: str, error: str
) -> None:
    store = console.store
    await a_list(store, tmp_path)
    editor = await console.client("editor")
    editor.headers["accept-language"] = lang
    bad = fields(
        "event", "Bad Name!", **{"event.end": f"{YEAR}-06-15T08:00",
                                 "content.fr.subject": "Ligne <b>gras</b>"},
    )  # fmt: skip
    answer = await post(console, editor, "/admin/compose", bad)
    assert answer.status_code == 400
    page = answer.text
    assert lead in page
    assert error in page
    assert invalid(page, "f-name")
    assert "should match pattern" in error_of(page, "f-name")
    assert "end must be after start" in error_of(page, "f-event-end")
    assert 'href="#f-event-end"' in page
    assert 'href="#f-name"' in page
    assert 'value="Bad Name!"' in page
    assert f'value="{YEAR}-06-15T08:00"' in page
    assert "&lt;b&gt;gras&lt;/b&gt;" in page
    assert "<b>gras</b>" not in page
    planned = await post(console, editor, "/admin/compose",
                         fields("event", "x", **{"event.reminders": "7d, 7x"}))  # fmt: skip
    assert planned.status_code == 400
    assert 'value="7d, 7x"' in planned.text
    assert "expected a number and d, h or m" in error_of(planned.text, "f-event-reminders")
    nothing = await post(console, editor, "/admin/compose", fields("event", "x", languages=[]))
    assert nothing.status_code == 400
    assert "choose at least one language" in error_of(nothing.text, "f-languages")
    assert await store.campaigns.listing() == []


@SQLITE
async def test_markup_in_the_words_is_shown_escaped_in_the_form(
    console: Console, tmp_path: Path
) -> None:
    await a_list(console.store, tmp_path)
    editor = await console.client("editor")
    attack = '"><script>alert(1)</script>'
    data = fields("announcement", "xss", **{"content.fr.subject": attack,
                                           "content.fr.body": f"</textarea>{attack}"})  # fmt: skip
    saved = await post(console, editor, "/admin/compose", data)
    assert saved.status_code == 303
    page = (await editor.get("/admin/campaigns/xss/edit")).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;/textarea&gt;&#34;&gt;&lt;script&gt;" in page
    assert 'value="&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page


@SQLITE
async def test_a_body_too_long_is_said_beside_it_and_far_too_long_gets_the_413_page(
    console: Console, tmp_path: Path
) -> None:
    await a_list(console.store, tmp_path)
    editor = await console.client("editor")
    long = fields("announcement", "long", **{"content.en.body": "a" * (MAX_BODY + 1)})
    answer = await post(console, editor, "/admin/compose", long, **{"accept-language": "en"})
    assert answer.status_code == 400
    assert "at most 1,000,000" in error_of(answer.text, "f-content-en-body")
    huge = fields("announcement", "huge", **{"content.en.body": "a" * (9 << 20)})
    refused = await post(console, editor, "/admin/compose", huge, **{"accept-language": "fr"})
    assert refused.status_code == 413
    assert "<html" in refused.text
    assert await console.store.campaigns.listing() == []


@SQLITE
async def test_a_template_error_in_a_body_is_said_beside_that_body_with_its_line(
    console: Console, tmp_path: Path
) -> None:
    await a_list(console.store, tmp_path)
    editor = await console.client("editor")
    body = "Bonjour,\n\nà bientôt {{ subscriber.name }\n"
    answer = await post(console, editor, "/admin/compose",
                        fields("announcement", "jinja", **{"content.fr.body": body}))  # fmt: skip
    assert answer.status_code == 400
    said = error_of(answer.text, "f-content-fr-body")
    assert "the campaign's body (fr)" in said
    assert "syntax error" in said
    assert re.search(r"\(fr\):\d+:", said)  # the line
    assert error_of(answer.text, "f-content-en-body") == ""
    unknown = await post(console, editor, "/admin/compose",
                         fields("announcement", "tpl", template="nope"))  # fmt: skip
    assert unknown.status_code == 400
    assert "nope" in error_of(unknown.text, "f-template")
    assert '<option value="nope" selected>' in unknown.text
    assert await console.store.campaigns.listing() == []


@SQLITE
async def test_a_time_in_the_spring_gap_is_refused_and_one_in_the_fold_is_noted(
    console: Console, tmp_path: Path
) -> None:
    await a_list(console.store, tmp_path)
    editor = await console.client("editor")
    gap = f"{YEAR}-03-{last_sunday(3):02d}T02:30"
    answer = await post(console, editor, "/admin/compose",
                        fields("announcement", "gap", send_at=gap))  # fmt: skip
    assert answer.status_code == 400
    said = error_of(answer.text, "f-send-at")
    assert "does not exist in Europe/Paris" in said
    assert "01:59 and 03:00" in said
    fold = f"{YEAR}-10-{last_sunday(10):02d}T02:30"
    saved = await post(console, editor, "/admin/compose",
                       fields("announcement", "fold", send_at=fold), **{"accept-language": "fr"})  # fmt: skip
    assert saved.status_code == 200  # saved, with the note on the instant chosen
    assert "Brouillon enregistré" in saved.text
    assert "happens twice" in saved.text
    assert "using the first" in saved.text
    assert (await console.store.campaigns.record("fold")).status == "draft"


async def test_a_deleted_list_and_a_name_taken_are_said_beside_their_field(
    console: Console, tmp_path: Path
) -> None:
    await a_list(console.store, tmp_path)
    editor = await console.client("editor")
    for lang, lead in (("fr", "Listes"), ("en", "Lists")):
        answer = await post(console, editor, "/admin/compose",
                            fields("announcement", "lost", lists=["researchers", "gone"]),
                            **{"accept-language": lang})  # fmt: skip
        assert answer.status_code == 400
        assert "gone" in error_of(answer.text, "f-lists")
        assert 'value="gone" checked' in answer.text
        assert f'href="#f-lists">{lead}' in answer.text
    assert (
        await post(console, editor, "/admin/compose", fields("event", "twice"))
    ).status_code == 303
    taken = await post(console, editor, "/admin/compose", fields("event", "twice"))
    assert taken.status_code == 409
    assert "a campaign named twice exists" in error_of(taken.text, "f-name")
    assert (await console.store.campaigns.record("twice")).version == 1


# --- two editors, edits after submission, campaigns the form cannot edit -----------------------


async def test_the_second_of_two_editors_is_refused_and_keeps_what_they_typed(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path)
    anne = await console.client("editor", "anne@staff.example.org")
    assert (
        await post(console, anne, "/admin/compose", fields("event", "shared"))
    ).status_code == 303
    bob = await console.client("editor", "bob@staff.example.org")
    assert 'name="version" value="1"' in (await bob.get("/admin/campaigns/shared/edit")).text
    anne_edit = fields("event", "shared", version="1", **{"content.en.subject": "Anne's"})
    assert (await post(console, anne, "/admin/campaigns/shared/edit", anne_edit)).status_code == 303
    bob_edit = fields("event", "shared", version="1", **{"content.en.subject": "Bob's words"})
    for lang, words in (("fr", "Modifiée par anne@"), ("en", "Changed by anne@")):
        refused = await post(console, bob, "/admin/campaigns/shared/edit", bob_edit,
                             **{"accept-language": lang})  # fmt: skip
        assert refused.status_code == 409
        assert words in refused.text
        assert 'value="Bob&#39;s words"' in refused.text
    record = await store.campaigns.record("shared")
    assert record.version == 2
    assert record.spec is not None
    assert record.spec["content"]["en"]["subject"] == "Anne's"


async def test_editing_a_submitted_campaign_says_it_returns_to_draft_and_does(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path)
    editor = await console.client("editor")
    await post(console, editor, "/admin/compose", fields("announcement", "asked"))
    record = await store.campaigns.record("asked")
    await store.campaigns.submit(record.id, version=1, actor="editor@staff.example.org", now=now())
    for lang, words in (("fr", "l’enregistrer la remet en brouillon"),
                        ("en", "saving returns it to draft")):  # fmt: skip
        page = await editor.get("/admin/campaigns/asked/edit", headers={"accept-language": lang})
        assert words in page.text
    saved = await post(console, editor, "/admin/campaigns/asked/edit",
                       fields("announcement", "asked", version="1"))  # fmt: skip
    assert saved.status_code == 303
    record = await store.campaigns.record("asked")
    assert (record.status, record.version, record.submitted_by) == ("draft", 2, None)


async def test_campaigns_the_form_cannot_edit_say_what_to_do(
    console: Console, tmp_path: Path
) -> None:
    store = console.store
    await a_list(store, tmp_path)
    old_content = Content(name="old-file", kind="announcement", subject="Ancien", body="Texte")
    content = Content(name="going", kind="announcement", subject="Ancien", body="Texte")
    campaign_id = await store.campaigns.save(
        old_content, list_slugs=["researchers"], sender_name=None, sender_address=None, event=None,
        now=now(),
    )  # fmt: skip
    editor = await console.client("editor")
    old = await editor.get("/admin/campaigns/old-file/edit", headers={"accept-language": "en"})
    assert old.status_code == 200
    assert "mailer campaign create" in old.text
    assert (await editor.get("/admin/campaigns/old-file/download")).status_code == 404
    await post(console, editor, "/admin/compose", fields("announcement", "going"))
    going = await store.campaigns.record("going")  # then approved as a file is, and started
    await store.campaigns.save(
        content, list_slugs=["researchers"], sender_name=None, sender_address=None, event=None,
        now=now(), spec=going.spec,
    )  # fmt: skip
    version = (await store.campaigns.record("going")).version
    send_id, _ = await store.sends.create(
        going.id, key="announce", action="announcement", due_at=now(), now=now()
    )
    assert await store.sends.start(await store.sends.spec(send_id), node="test", now=now())
    started = await editor.get("/admin/campaigns/going/edit", headers={"accept-language": "fr"})
    assert "a commencé" in started.text
    assert "pause" in started.text
    refused = await post(console, editor, "/admin/campaigns/going/edit",
                         fields("announcement", "going", version="1"))  # fmt: skip
    assert refused.status_code == 409
    assert (await store.campaigns.record("going")).version == version
    for path in ("/admin/campaigns/nope/edit", "/admin/campaigns/Bad%20Name/edit",
                 "/admin/campaigns/nope/download"):  # fmt: skip
        assert (await editor.get(path)).status_code == 404, path
    assert campaign_id


# --- the cron in words, the download --------------------------------------------------------------


@SQLITE
@pytest.mark.parametrize(
    ("lang", "words", "bad"),
    [("fr", "Le 1er de chaque mois à 9", "Ce calendrier ne se lit pas"),
     ("en", "On the 1st of every month at 09:00", "This schedule cannot be read")],
)  # fmt: skip
async def test_the_cron_fragment_says_it_in_words_with_the_next_dates(
    console: Console, lang: str, words: str, bad: str
) -> None:
    editor = await console.client("editor")
    editor.headers["accept-language"] = lang
    answer = await editor.get(
        "/admin/compose/cron?cron=" + quote("0 9 1 * *") + "&zone=Europe/Paris"
    )
    assert answer.status_code == 200
    assert "<html" not in answer.text
    assert words in answer.text
    assert answer.text.count("<li>") == 5
    assert "CET" in answer.text or "CEST" in answer.text
    typed = await editor.get("/admin/compose/cron?newsletter.cron=" + quote("0 9 1 *"))
    assert bad in typed.text
    assert "expected 5" in typed.text
    zone = await editor.get("/admin/compose/cron?cron=" + quote("0 9 * * 1") + "&zone=Mars/Base")
    assert "Mars/Base" in zone.text
    viewer = await console.client("viewer")
    assert (await viewer.get("/admin/compose/cron?cron=x")).status_code == 403


async def test_a_downloaded_campaign_file_loads_into_the_same_campaign(
    console: Console, tmp_path: Path
) -> None:
    await a_list(console.store, tmp_path)
    editor = await console.client("editor")
    for kind in ("announcement", "event", "newsletter"):
        await downloaded_and_loaded(console, editor, tmp_path, kind)
    viewer = await console.client("viewer")
    assert (await viewer.get("/admin/campaigns/file-event/download")).status_code == 403


async def downloaded_and_loaded(
    console: Console, editor: httpx.AsyncClient, tmp_path: Path, kind: str
) -> None:
    extra = {"newsletter.until": f"{YEAR}-12-01T09:00"} if kind == "newsletter" else {}
    saved = await post(console, editor, "/admin/compose", fields(kind, f"file-{kind}", **extra))
    assert saved.status_code == 303
    answer = await editor.get(f"/admin/campaigns/file-{kind}/download")
    assert answer.status_code == 200
    assert answer.headers["content-disposition"] == f'attachment; filename="file-{kind}.toml"'
    if kind != "newsletter":  # local times as TOML date-times, not strings
        assert re.search(rf"^(send_at|start) = {YEAR}-06-15[T ]09:00:00$", answer.text, re.M)
    assert f'kind = "{kind}"' in answer.text
    path = tmp_path / "downloaded" / f"file-{kind}.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(answer.content)
    loaded = campaigns.load(
        path, default_zone="Europe/Paris", templates_dir=console.settings.paths.templates_dir
    )
    assert loaded.spec() == (await console.store.campaigns.record(f"file-{kind}")).spec
