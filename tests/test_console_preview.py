"""The console's previews, on SQLite and PostgreSQL, through the real app: the live preview of
the compose form for each kind in French and English, the saved version as a member (an
English one), in a chosen language, at phone width; what a body cannot do in the frame (no
script runs: the srcdoc is escaped, the sandbox has no allow-scripts, the page's CSP allows
only the console's scripts); a template error named with its line; a runaway loop stopped by
the render budget; the member search; each role refused where it must be."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer.campaigns import from_data
from mailer.models import ListMeta, SubscriberRow
from mailer.storage import Store
from tests.console_support import Console, now

pytestmark = pytest.mark.timeout(60)
# What rendering alone decides (the frame, a template's errors, the limits): one backend is enough
RENDERING_ONLY = pytest.mark.parametrize("backend", ["sqlite"])

FRAME = re.compile(r"<iframe ([^>]*)>")
SRCDOC = re.compile(r'srcdoc="([^"]*)"')
EDITOR = "editor@staff.example.org"


async def people(store: Store, slug: str = "researchers") -> None:
    """A list (French by default) with a French, an English and a member of no language."""
    await store.lists.upsert(
        ListMeta(slug=slug, title="Chercheurs", default_locale="fr"), now=now()
    )
    for email, name, locale in (
        ("ada@example.org", "Ada Lovelace", "fr"),
        ("bob@example.org", "Bob Smith", "en"),
        ("cy@example.org", "Cy", None),
    ):
        row = SubscriberRow(0, email, email, False, name=name, locale=locale)
        await store.subscribers.add(row, slug=slug, source="cli", now=now())


def local(delta: timedelta) -> str:
    return (now() + delta).strftime("%Y-%m-%dT%H:%M")


def form(kind: str = "announcement", **extra: Any) -> dict[str, Any]:
    """The compose form as a browser posts it (French and English)."""
    data: dict[str, Any] = {
        "name": "nouvelles", "kind": kind, "lists": "researchers", "languages": ["fr", "en"],
        "body_format": "markdown",
        "content.fr.subject": "Nouvelles du labo", "content.fr.body": "Bonjour {{ subscriber.name }} !",
        "content.en.subject": "Lab news", "content.en.body": "Hello {{ subscriber.name }}!",
    }  # fmt: skip
    if kind == "event":
        data.update({
            "name": "seminaire", "event.title": "Séminaire", "event.start": local(timedelta(days=30)),
            "event.end": local(timedelta(days=30, hours=2)), "event.place": "Salle 1",
            "content.fr.event.title": "Séminaire", "content.en.event.title": "Seminar",
        })  # fmt: skip
    if kind == "newsletter":
        data.update({"name": "lettre", "newsletter.cron": "0 9 1 * *"})
    data.update(extra)
    return data


def spec(kind: str = "announcement", **content: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "nouvelles", "kind": kind, "lists": ["researchers"],
        "content": {
            "fr": {"subject": "Nouvelles du labo", "body": "Bonjour {{ subscriber.name }} !",
                   "preheader": "Les nouvelles de décembre"},
            "en": {"subject": "Lab news", "body": "Hello {{ subscriber.name }}!"},
        },
    }  # fmt: skip
    if kind == "event":
        start = now() + timedelta(days=30)
        raw.update({"name": "seminaire", "event": {
            "title": "Séminaire", "start": start.strftime("%Y-%m-%dT%H:%M"), "place": "Salle 1",
        }})  # fmt: skip
    for lang, words in content.items():
        raw["content"][lang].update(words)
    return raw


async def save(store: Store, raw: dict[str, Any]) -> Any:
    campaign = from_data(raw, source=Path(raw["name"]), default_zone="Europe/Paris")
    return await store.campaigns.save_draft(
        campaign.content, spec=campaign.spec(), list_slugs=list(campaign.data.lists),
        sender_name=None, sender_address=None, options={}, expected_version=None,
        actor=EDITOR, now=now(),
    )  # fmt: skip


async def live(console: Console, client: httpx.AsyncClient, data: dict[str, Any],
               lang: str = "fr") -> httpx.Response:  # fmt: skip
    token = await console.csrf(client)
    return await client.post(
        "/admin/preview", data=data,
        headers={"X-CSRF-Token": token, "HX-Request": "true", "accept-language": lang},
    )  # fmt: skip


def frames(text: str) -> list[str]:
    """The HTML of each preview frame, unescaped as the browser reads the attribute."""
    return [html.unescape(SRCDOC.search(attrs).group(1)) for attrs in FRAME.findall(text)]  # type: ignore[union-attr]


def facts(text: str, name: str) -> list[str]:
    return [html.unescape(v) for v in re.findall(rf'data-preview="{name}"[^>]*>([^<]*)<', text)]


# --- the live preview --------------------------------------------------------------------------


FR = ("Aperçu", "Objet", "Le message", "Français", "Anglais")
EN = ("Preview", "Subject", "The message", "French", "English")


@pytest.mark.parametrize(
    ("kind", "lang", "words"),
    [("announcement", "fr", FR), ("event", "en", EN), ("newsletter", "fr", FR)],
)
async def test_the_live_preview_shows_each_language_of_the_form(
    console: Console, kind: str, lang: str, words: tuple[str, ...]
) -> None:
    """Both languages, as a sample subscriber, with subject, text part and headers; an event's
    mail carries its calendar method; a fragment (no page) for htmx, in the staff's language."""
    await people(console.store)
    client = await console.client("editor")
    answer = await live(console, client, form(kind), lang)
    assert answer.status_code == 200, answer.text
    text = answer.text
    assert "<html" not in text
    for word in words:
        assert word in text
    subjects = facts(text, "subject")
    assert len(subjects) == 2
    assert "Lab news" in subjects[1]
    assert "Nouvelles du labo" in subjects[0]
    shown = frames(text)
    assert len(shown) == 2
    assert "Bonjour" in shown[0]
    assert "Hello" in shown[1]
    assert "preview@example.org" in facts(text, "to")
    assert 'data-header="List-Unsubscribe"' in text
    assert 'data-header="Content-Type"' in text
    assert ("REQUEST" in facts(text, "method")) is (kind == "event")
    assert 'href="#preview-mail-en"' in text  # the language tabs


async def test_a_form_with_errors_lists_them_instead_of_a_preview(console: Console) -> None:
    await people(console.store)
    client = await console.client("editor")
    answer = await live(console, client, form(name="Pas un nom", languages=[]), "en")
    assert answer.status_code == 200
    assert "Fix these to see the preview:" in answer.text
    assert "choose at least one language" in answer.text
    assert "<iframe" not in answer.text
    french = await live(console, client, form(languages=[]), "fr")
    assert "Corrigez ceci pour voir l’aperçu\u202f:" in french.text


async def test_a_live_preview_as_a_member_and_at_phone_width(console: Console) -> None:
    await people(console.store)
    client = await console.client("editor")
    answer = await live(
        console, client, form(preview_as="BOB@example.org", preview_width="phone"), "en"
    )
    assert facts(answer.text, "to") == ["bob@example.org", "bob@example.org"]
    assert "Bob Smith" in frames(answer.text)[1]
    assert re.search(r'value="phone" data-width="phone" checked', answer.text)
    unknown = await live(console, client, form(preview_as="nobody@example.org"), "en")
    assert "nobody@example.org is not a subscribed member" in unknown.text
    assert 'aria-invalid="true"' in unknown.text
    assert "<iframe" not in unknown.text


async def test_without_htmx_the_live_preview_is_a_page(console: Console) -> None:
    await people(console.store)
    client = await console.client("editor")
    data = {**form(), "csrf": await console.csrf(client)}
    answer = await client.post("/admin/preview", data=data)
    assert answer.status_code == 200
    assert "<html" in answer.text
    assert len(frames(answer.text)) == 2
    assert (await client.get("/admin/preview")).status_code == 303


# --- what a body cannot do -----------------------------------------------------------------------


@RENDERING_ONLY
async def test_a_script_in_the_body_or_subject_never_runs(console: Console) -> None:
    """The frame is sandboxed without scripts or origin, its srcdoc escaped (a subject that
    closes the frame stays text), and the page allows only the console's own scripts."""
    await people(console.store)
    client = await console.client("editor")
    data = form(**{
        "body_format": "html",
        "content.fr.body": '<p>Salut</p><script>alert("x")</script><img src=x onerror="alert(1)">',
        "content.en.subject": "</iframe><script>alert(2)</script>",
    })  # fmt: skip
    answer = await live(console, client, data)
    assert answer.status_code == 200, answer.text
    text = answer.text
    attrs = FRAME.findall(text)
    assert len(attrs) == 2
    for attr in attrs:
        sandbox = re.search(r"sandbox(=\"([^\"]*)\")?", attr)
        assert sandbox is not None
        assert "allow-scripts" not in (sandbox.group(2) or "")
        assert "allow-same-origin" not in attr
        assert "<" not in attr  # every < of the mail is &lt; inside the attribute
    outside = SRCDOC.sub('srcdoc=""', text)
    assert "<script>alert" not in outside
    assert "</iframe><script>" not in outside
    assert "&lt;/iframe&gt;&lt;script&gt;alert(2)" in outside  # the subject, as text
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self';" in csp or csp.endswith("script-src 'self'")
    assert "'unsafe-inline'" not in csp.split("script-src", 1)[1].split(";")[0]


@RENDERING_ONLY
async def test_a_template_error_is_shown_with_its_line(console: Console) -> None:
    await people(console.store)
    client = await console.client("editor")
    body = "Bonjour\n\n{{ subscriber.nom.x }}"
    answer = await live(console, client, form(**{"content.fr.body": body}), "en")
    assert answer.status_code == 200
    assert "This message cannot be composed:" in answer.text
    error = re.search(r"<pre class=\"mail-error\"[^>]*>([^<]*)<", answer.text)
    assert error is not None
    assert re.search(r"campaign body or subject:\d+", html.unescape(error.group(1)))


@RENDERING_ONLY
async def test_a_runaway_loop_is_stopped_by_the_render_limits(console: Console) -> None:
    """A loop of a billion steps answers (no hang, no 500) with the limit's message."""
    await people(console.store)
    client = await console.client("editor")
    body = "{% for i in range(10**9) %}{{ i }}{% endfor %}"
    answer = await live(console, client, form(**{"content.fr.body": body}), "en")
    assert answer.status_code == 200
    assert "range() gives at most 10000 items" in html.unescape(answer.text)
    nested = "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    slow = await live(console, client, form(**{"content.en.body": nested}), "en")
    assert "the template took more than 2 s for one recipient" in html.unescape(slow.text)


# --- the saved version -------------------------------------------------------------------------


async def test_the_saved_version_as_an_english_member_at_phone_width(console: Console) -> None:
    """?as= a member: their language and why; ?locale= forces one; ?width=phone; a viewer may
    look; an event's chosen mail."""
    await people(console.store)
    await save(console.store, spec())
    client = await console.client("viewer")
    page = await client.get(
        "/admin/campaigns/nouvelles/preview?as=bob@example.org&width=phone",
        headers={"accept-language": "en"},
    )
    assert page.status_code == 200, page.text
    assert facts(page.text, "subject") == ["Lab news"]
    assert "Bob Smith" in frames(page.text)[0]
    assert "English, the member’s language" in html.unescape(page.text)
    assert 'class="mail-preview width-phone"' in page.text
    assert "/admin/campaigns/nouvelles/members" not in page.text  # the search is an editor's
    cy = await client.get("/admin/campaigns/nouvelles/preview?as=cy@example.org")
    assert "la langue par défaut de la liste" in cy.text
    assert facts(cy.text, "preheader") == ["Les nouvelles de décembre"]
    forced = await client.get("/admin/campaigns/nouvelles/preview?as=ada@example.org&locale=en")
    assert facts(forced.text, "subject") == ["Lab news"]
    assert "choisie pour cet aperçu" in forced.text


async def test_the_saved_preview_says_what_is_wrong_with_its_controls(console: Console) -> None:
    await people(console.store)
    await save(console.store, spec())
    client = await console.client("viewer")
    stranger = await client.get(
        "/admin/campaigns/nouvelles/preview?as=eve@example.org", headers={"accept-language": "en"}
    )
    assert stranger.status_code == 200
    assert "eve@example.org is not a subscribed member of the campaign’s lists (researchers)" in (
        html.unescape(stranger.text)
    )
    assert 'aria-describedby="preview-as-help preview-as-error" aria-invalid="true"' in (
        stranger.text
    )
    german = await client.get("/admin/campaigns/nouvelles/preview?locale=de")
    assert "La campagne est écrite en fr, en, pas en «\u202fde\u202f»" in html.unescape(german.text)
    action = await client.get("/admin/campaigns/nouvelles/preview?action=update")
    assert "n’est pas un message d’événement" in html.unescape(action.text)
    for path in ("/admin/campaigns/inconnue/preview", "/admin/campaigns/Pas%20un%20nom/preview"):
        assert (await client.get(path)).status_code == 404


async def test_an_events_preview_shows_the_chosen_mail(console: Console) -> None:
    await people(console.store)
    await save(console.store, spec("event"))
    client = await console.client("viewer")
    invitation = await client.get("/admin/campaigns/seminaire/preview")
    assert facts(invitation.text, "method") == ["REQUEST"]
    cancel = await client.get("/admin/campaigns/seminaire/preview?action=cancellation")
    assert facts(cancel.text, "method") == ["CANCEL"]


async def test_the_member_search_links_to_the_preview_as_each(console: Console) -> None:
    await people(console.store)
    await save(console.store, spec())
    editor = await console.client("editor")
    found = await editor.get("/admin/campaigns/nouvelles/members?q=bo", headers={"HX-Request": "1"})
    assert found.status_code == 200
    assert "<html" not in found.text
    assert "/admin/campaigns/nouvelles/preview?as=bob%40example.org" in found.text
    assert "ada@example.org" not in found.text
    by_name = await editor.get("/admin/campaigns/nouvelles/members?q=Ada")
    assert "ada@example.org" in by_name.text
    assert "<html" in by_name.text
    none = await editor.get("/admin/campaigns/nouvelles/members?q=zz")
    assert "Aucun membre inscrit ne commence par «\u202fzz\u202f»." in html.unescape(none.text)
    viewer = await console.client("viewer")
    assert (await viewer.get("/admin/campaigns/nouvelles/members?q=a")).status_code == 403


async def test_the_live_preview_is_an_editors(console: Console) -> None:
    """A viewer's POST is refused and a POST without the CSRF token changes nothing."""
    await people(console.store)
    viewer = await console.client("viewer")
    refused = await live(console, viewer, form())
    assert refused.status_code == 403
    editor = await console.client("editor")
    no_token = await editor.post("/admin/preview", data=form())
    assert no_token.status_code == 403


async def test_a_previews_links_change_nothing_for_the_member_it_shows(console: Console) -> None:
    """A preview as a member carries inert test links (and List-Unsubscribe), not the member's
    own: a viewer who may not unsubscribe anyone cannot do it with a link copied from the
    frame or the headers."""
    await people(console.store)
    await save(console.store, spec())
    client = await console.client("viewer")
    page = await client.get("/admin/campaigns/nouvelles/preview?as=ada@example.org")
    text = html.unescape(html.unescape(page.text))  # the srcdoc is escaped within the page
    tokens = set(re.findall(r"/u/([A-Za-z0-9_\-.=]+)", text))
    assert tokens, "the preview shows an unsubscribe link"
    anonymous = console.anonymous()
    for token in tokens:
        answer = await anonymous.post(f"/u/{token}", data={"action": "list"})
        assert answer.status_code < 500
    members = [r.email async for r in console.store.lists.recipients("researchers")]
    assert "ada@example.org" in members
