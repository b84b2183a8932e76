"""Content per language (issue 13): campaign files with ``[content.fr]`` / ``[content.en]``,
the choice of language per recipient (theirs, the list's, the campaign's first), the
pre-flight's count of who gets which, the event's words per language, the reader's own time,
the words of a reminder from the real days left, the newsletter's subject naming its issue,
and what is stored (a campaign and event round-trip; rows from before keep their behaviour).

Checked on the message bytes, built as a send builds them."""

from __future__ import annotations

import email
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from mailer import campaigns
from mailer.compose import make_composer
from mailer.models import (
    Content,
    EventInfo,
    EventStatus,
    EventText,
    ListInfo,
    ListMeta,
    LocaleText,
    Recipient,
    SendInfo,
)
from mailer.render import LanguageTally, Renderer, preflight
from mailer.settings import Settings
from mailer.storage import Store
from mailer.tokens import Signer, links_for
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2024, 1, 8, 10, 0, tzinfo=UTC)
FR_LIST = ListInfo(id=1, slug="researchers", title="Chercheurs", default_locale="fr")
EN_LIST = ListInfo(id=2, slug="partners", title="Partners", default_locale="en")
KEY = "xxx-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"
TEXTS = (
    LocaleText("fr", subject="Les avancées du réseau", body="Le réseau **avance**.",
               preheader="Des nouvelles du réseau"),
    LocaleText("en", subject="The network's advances", body="The network **moves on**.",
               preheader="News from the network"),
)  # fmt: skip
EVENT = EventInfo(
    uid="journee@example.org",
    title="8e journée de recherche",
    start=datetime(2024, 1, 15, 9, 0, tzinfo=PARIS),
    end=datetime(2024, 1, 15, 17, 30, tzinfo=PARIS),
    timezone="Europe/Paris",
    place="Hôpital Pitié-Salpêtrière, Paris",
    description="Chercheurs et soignants.",
    texts=(EventText("en", title="8th research day", description="Researchers and carers."),),
)
# An event's mails take their subjects from the template (invitation, reminder, update...).
EVENT_TEXTS = (LocaleText("fr", body="Venez nombreux."), LocaleText("en", body="Do come."))
CLAIRE = Recipient(id=1, email="claire@example.org", name="Claire Dubois", locale="fr")
JOHN = Recipient(
    id=2, email="john@example.org", name="John Okafor", locale="en", timezone="Europe/London"
)
NOBODY = Recipient(id=3, email="anon@example.org")
HANS = Recipient(id=4, email="hans@example.org", name="Hans Weber", locale="de")


def send_info(
    kind: str = "announcement",
    *,
    texts: tuple[LocaleText, ...] = TEXTS,
    list_info: ListInfo = FR_LIST,
    action: str | None = None,
    event: EventInfo | None = None,
    now: datetime = NOW,
    key: str = "",
) -> SendInfo:
    return SendInfo(
        content=Content(name="actualites", kind=kind, texts=texts, subject=texts[0].subject,
                        body=texts[0].body),
        list=list_info, sender_name="Réseau", sender_address="news@example.org",
        action=action or kind, now=now, event=event, key=key,
    )  # fmt: skip


def message(info: SendInfo, recipient: Recipient, tmp_path: Path) -> EmailMessage:
    """The message ``recipient`` gets, built as a send builds it, parsed back."""
    settings: Settings = make_settings(tmp_path, web={"base_url": "https://lists.example.org"})
    composer = make_composer(
        settings, renderer=Renderer(TEMPLATES), signer=Signer([KEY]), send=info, send_id=7,
        trace="c1/announce",
    )  # fmt: skip
    data = composer.compose(replace(recipient, public_id="p" * 22), date=NOW).message.data
    parsed = email.message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(parsed: EmailMessage) -> dict[str, str]:
    """The text parts of a message by content type (text/plain, text/html, text/calendar)."""
    found: dict[str, str] = {}
    for part in parsed.walk():
        if part.get_content_maintype() == "text" and part.get_content_type() not in found:
            found[part.get_content_type()] = part.get_content()  # type: ignore[attr-defined]
    return found


def test_each_recipient_gets_their_language_on_the_message_bytes(tmp_path: Path) -> None:
    """English John gets the English subject, body and footer; French Claire the French."""
    info = send_info()
    john, claire = message(info, JOHN, tmp_path), message(info, CLAIRE, tmp_path)
    assert john["Subject"] == "The network's advances"
    assert claire["Subject"] == "Les avancées du réseau"
    john_parts, claire_parts = parts(john), parts(claire)
    assert "The network" in john_parts["text/html"]
    assert "moves on" in john_parts["text/plain"]
    assert "Unsubscribe" in john_parts["text/plain"]
    assert "réseau" not in john_parts["text/plain"]
    assert "Le réseau" in claire_parts["text/html"]
    assert "avance" in claire_parts["text/plain"]
    assert "Se désinscrire" in claire_parts["text/html"]
    assert "News from the network" in john_parts["text/html"]  # the preheader
    assert "Des nouvelles du réseau" in claire_parts["text/html"]


def test_no_locale_gets_the_lists_default_and_an_unknown_one_falls_back(tmp_path: Path) -> None:
    """No locale: the list's default (English for partners); German: the list's, else first."""
    assert message(send_info(list_info=EN_LIST), NOBODY, tmp_path)["Subject"] == (
        "The network's advances"
    )
    assert message(send_info(list_info=FR_LIST), NOBODY, tmp_path)["Subject"] == (
        "Les avancées du réseau"
    )
    assert message(send_info(list_info=EN_LIST), HANS, tmp_path)["Subject"] == (
        "The network's advances"
    )
    german_list = replace(EN_LIST, default_locale="de")
    assert message(send_info(list_info=german_list), HANS, tmp_path)["Subject"] == (
        "Les avancées du réseau"  # neither German nor the list's: the campaign's first
    )


def test_the_preflight_counts_each_language_and_who_falls_back() -> None:
    compiled = Renderer(TEMPLATES).compile(send_info(list_info=EN_LIST))
    links = links_for(Signer([KEY]), "https://l.example.org", public_id="x", list_id=2)
    report = preflight(compiled, [(r, links) for r in (CLAIRE, JOHN, NOBODY, HANS)])
    assert report.ok
    assert report.languages.counts == {"fr": 1, "en": 3}
    assert (report.languages.without, report.languages.fallbacks) == (1, 1)
    assert report.languages.examples == [("hans@example.org", "de", "en")]
    assert report.languages.summary().startswith("en 3, fr 1; 1 have no language")
    assert "hans@example.org de -> en" in report.languages.summary()
    assert LanguageTally().summary() == "nobody"


def test_a_one_language_campaign_mails_everyone_in_that_language(tmp_path: Path) -> None:
    """No mixing: an English subscriber of a French-only campaign gets French throughout."""
    only_fr = send_info(texts=TEXTS[:1])
    john = message(only_fr, JOHN, tmp_path)
    assert john["Subject"] == "Les avancées du réseau"
    assert "Se désinscrire" in parts(john)["text/html"]


def test_the_events_words_and_the_readers_own_time(tmp_path: Path) -> None:
    """The event's title per language; John in London reads Paris time and his own."""
    info = send_info("event", texts=EVENT_TEXTS, action="invitation", event=EVENT)
    john, claire = parts(message(info, JOHN, tmp_path)), parts(message(info, CLAIRE, tmp_path))
    assert "8th research day" in john["text/plain"]
    assert "Researchers and carers" in john["text/plain"]
    assert (
        "9:00\u202fAM to 5:30\u202fPM, Paris time (8:00\u202fAM to 4:30\u202fPM in London)"
        in (john["text/plain"])
    )
    assert "8e journée de recherche" in claire["text/plain"]
    assert "de 09:00 à 17:30, heure de Paris" in claire["text/plain"]
    assert "Londres" not in claire["text/plain"]  # same zone: no second time
    paris_reader = replace(CLAIRE, timezone="Europe/London")
    assert (
        "heure de Paris (de 08:00 à 16:30 à Londres)"
        in parts(message(info, paris_reader, tmp_path))["text/plain"]
    )


@pytest.mark.parametrize(
    ("now", "fr", "en"),
    [
        (datetime(2024, 1, 8, 9, 0, tzinfo=PARIS), "dans 7 jours", "in 7 days"),
        (datetime(2024, 1, 14, 9, 0, tzinfo=PARIS), "demain", "tomorrow"),
        (datetime(2024, 1, 15, 7, 0, tzinfo=PARIS), "aujourd’hui", "today"),
    ],
)
def test_a_reminder_says_the_real_days_left(
    now: datetime, fr: str, en: str, tmp_path: Path
) -> None:
    info = send_info("event", texts=EVENT_TEXTS, action="reminder", event=EVENT, now=now)
    assert fr in message(info, CLAIRE, tmp_path)["Subject"]
    assert en in message(info, JOHN, tmp_path)["Subject"]


def test_a_rehearsal_counts_its_compressed_days(tmp_path: Path) -> None:
    """--demo: a day of offset lasts 20 s; the D-7 reminder 140 s before says "in 7 days",
    the D-1 "tomorrow", not both "today"."""
    start = datetime(2026, 12, 1, 12, 4, tzinfo=UTC)
    demo = replace(EVENT, start=start, end=start + timedelta(hours=1), day_seconds=20)
    for seconds, words in ((140, "in 7 days"), (20, "tomorrow")):
        now = start - timedelta(seconds=seconds)
        info = send_info("event", texts=EVENT_TEXTS, action="reminder", event=demo, now=now)
        assert words in message(info, JOHN, tmp_path)["Subject"]


def test_the_newsletters_default_subject_names_its_issue(tmp_path: Path) -> None:
    texts = (LocaleText("fr", body="Corps"), LocaleText("en", body="Body"))
    info = send_info("newsletter", texts=texts, key="issue:2026-12-01")
    assert (
        message(info, JOHN, tmp_path)["Subject"] == "Chercheurs: the newsletter of 1 December 2026"
    )
    french = message(info, CLAIRE, tmp_path)["Subject"]
    assert french.startswith("Chercheurs")
    assert "décembre 2026" in french
    assert "actualites" not in french


def test_the_update_mail_says_what_changed(tmp_path: Path) -> None:
    moved = replace(
        EVENT, start=EVENT.start + timedelta(days=7), end=EVENT.end + timedelta(days=7),  # type: ignore[operator]
        place="Institut Imagine, Paris", sequence=1, previous=EVENT,
    )  # fmt: skip
    info = send_info("event", texts=EVENT_TEXTS, action="update", event=moved)
    claire = parts(message(info, CLAIRE, tmp_path))["text/plain"]
    assert "Lieu : Institut Imagine, Paris (au lieu de Hôpital Pitié-Salpêtrière, Paris)" in (
        claire.replace("\u00a0", " ").replace("\u202f", " ")
    )
    assert "lundi 22 janvier 2024" in claire
    assert "au lieu de lundi 15 janvier 2024" in claire
    john = parts(message(info, JOHN, tmp_path))["text/plain"]
    assert "Where: Institut Imagine, Paris (was: Hôpital Pitié-Salpêtrière, Paris)" in john


# --- campaign files ---------------------------------------------------------------------------

BILINGUAL = """
name = "journee"
kind = "event"
lists = ["researchers"]

[content.fr]
subject = "Invitation"
body = "Bonjour"
preheader = "Le 15 janvier"

[content.en]
body_file = "journee.en.md"

[content.en.event]
title = "Research day"
place = "Pitié-Salpêtrière hospital, Paris"

[event]
title = "Journée de recherche"
start = 2030-01-15T09:00:00
place = "Hôpital Pitié-Salpêtrière, Paris"
rsvp = true
"""


def write(folder: Path, text: str, name: str = "c.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "journee.en.md").write_text("Hello **all**", encoding="utf-8")
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_bilingual_file_loads_each_languages_words(tmp_path: Path) -> None:
    campaign = campaigns.load(write(tmp_path, BILINGUAL), templates_dir=TEMPLATES)
    assert campaign.languages == ("fr", "en")
    assert campaign.content.text("en").body == "Hello **all**"
    assert campaign.content.text("fr") == LocaleText("fr", "Invitation", "Bonjour", "Le 15 janvier")
    event = campaign.event(domain="example.org")
    assert event is not None
    assert event.rsvp
    assert event.invite == "request"
    english = event.localized("en")
    assert (english.title, english.place) == ("Research day", "Pitié-Salpêtrière hospital, Paris")
    assert event.localized("fr").title == "Journée de recherche"


def test_a_one_language_file_is_in_its_language(tmp_path: Path) -> None:
    text = 'name = "a"\nkind = "announcement"\nlists = ["x"]\nsubject = "Hi"\nbody = "B"\n'
    assert campaigns.load(write(tmp_path, text)).languages == ("fr",)
    english = campaigns.load(write(tmp_path, text + 'language = "EN"\n'))
    assert english.languages == ("en",)
    assert english.content.text("en").subject == "Hi"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BILINGUAL.replace("[content.en]", "[content.english]"), "content: "),
        (BILINGUAL.replace("[content.en]", "[content.de]").replace(
            "[content.en.event]", "[content.de.evenement]"), "content.de.evenement"),
        (BILINGUAL.replace('subject = "Invitation"', 'subject = "a\\nb"'),
         "content.fr.subject: the subject must be on one line"),
        (BILINGUAL.replace('preheader = "Le 15 janvier"', 'preheader = "a\\u202eb"'),
         "content.fr.preheader"),
    ],
)  # fmt: skip
def test_a_wrong_content_table_names_its_field(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(campaigns.CampaignFileError) as caught:
        campaigns.load(write(tmp_path, text), templates_dir=TEMPLATES)
    assert expected in str(caught.value)


def test_both_top_level_words_and_tables_is_refused_in_plain_words(tmp_path: Path) -> None:
    with pytest.raises(campaigns.CampaignFileError, match="not both"):
        campaigns.load(write(tmp_path, 'subject = "x"\n' + BILINGUAL))


def test_a_language_without_templates_is_named(tmp_path: Path) -> None:
    text = BILINGUAL.replace("[content.en]", "[content.de]").replace(
        "[content.en.event]", "[content.de.event]"
    )
    with pytest.raises(campaigns.CampaignFileError) as caught:
        campaigns.load(write(tmp_path, text), templates_dir=TEMPLATES)
    message_text = str(caught.value)
    assert "written in 'de'" in message_text
    assert "event.de.html" in message_text
    assert "templates exist for: en, fr" in message_text


def test_event_words_only_go_with_an_event(tmp_path: Path) -> None:
    text = (
        'name = "a"\nkind = "announcement"\nlists = ["x"]\n[content.fr]\nbody = "B"\n'
        '[content.fr.event]\ntitle = "T"\n'
    )
    with pytest.raises(campaigns.CampaignFileError, match='only goes with kind = "event"'):
        campaigns.load(write(tmp_path, text))


# --- storage ----------------------------------------------------------------------------------


async def test_languages_and_event_details_are_stored_and_read_back(store: Store) -> None:
    await store.lists.upsert(ListMeta("researchers", "Chercheurs"), now=NOW)
    content = Content(name="journee", kind="event", subject="Invitation", body="Bonjour",
                      texts=TEXTS)  # fmt: skip
    event = replace(EVENT, rsvp=True, day_seconds=20)
    campaign_id = await store.campaigns.save(
        content, list_slugs=["researchers"], sender_name=None, sender_address=None,
        event=event, now=NOW,
    )  # fmt: skip
    send_id, _ = await store.sends.create(
        campaign_id, key="invitation", action="invitation", due_at=NOW, now=NOW
    )
    spec = await store.sends.spec(send_id)
    assert spec.content.texts == TEXTS
    assert spec.event is not None
    assert (spec.event.texts, spec.event.rsvp, spec.event.day_seconds, spec.event.invite) == (
        EVENT.texts, True, 20, "request",
    )  # fmt: skip
    moved = replace(event, start=event.start + timedelta(days=1), place="Ailleurs")
    await store.campaigns.update_event(campaign_id, moved, status=EventStatus.CONFIRMED, now=NOW)
    after = await store.campaigns.event(campaign_id)
    assert after is not None
    assert after.sequence == 1
    assert after.place == "Ailleurs"
    assert after.previous is not None
    assert after.previous.place == EVENT.place
    assert after.previous.start == EVENT.start
    assert after.day_seconds == 20


def calendar_of(parsed: EmailMessage) -> Calendar:
    """The iTIP part of a message (the text/calendar alternative)."""
    part = next(p for p in parsed.walk() if p.get_content_type() == "text/calendar")
    assert part.get_param("method") == "REQUEST"
    return Calendar.from_ical(part.get_content())  # type: ignore[attr-defined]


def test_the_invitation_is_in_each_recipients_language_with_them_as_attendee(
    tmp_path: Path,
) -> None:
    info = send_info("event", texts=EVENT_TEXTS, action="invitation", event=EVENT)
    john = calendar_of(message(info, JOHN, tmp_path)).walk("VEVENT")[0]
    claire = calendar_of(message(info, CLAIRE, tmp_path)).walk("VEVENT")[0]
    assert str(john["SUMMARY"]) == "8th research day"
    assert str(john["DESCRIPTION"]) == "Researchers and carers."
    assert str(claire["SUMMARY"]) == "8e journée de recherche"
    assert str(john["ATTENDEE"]) == "mailto:john@example.org"
    assert john["ATTENDEE"].params["CN"] == "John Okafor"
    assert str(claire["ATTENDEE"]) == "mailto:claire@example.org"
    assert str(john["UID"]) == str(claire["UID"]) == EVENT.uid


def test_campaign_check_and_preview_speak_of_languages(tmp_path: Path) -> None:
    """`campaign check` counts who gets which language; `preview --locale` picks one and
    refuses a language the campaign is not written in."""
    from tests.test_cli import mailer

    shutil.copytree(ROOT / "lists", tmp_path / "lists")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    shutil.copytree(ROOT / "campaigns", tmp_path / "campaigns")
    assert mailer(tmp_path, "init").returncode == 0
    checked = mailer(tmp_path, "campaign", "check", "campaigns/actualites-car-t.toml")
    assert checked.returncode == 0, checked.stderr
    assert "written in: fr, en" in checked.stdout
    assert re.search(r"languages of researchers: en \d+, fr \d+", checked.stdout), checked.stdout
    shown = mailer(
        tmp_path, "preview", "campaigns/actualites-car-t.toml", "--locale", "en",
        "--subscriber", "claire.dubois@example.org", "--all",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "subject: CAR-T cells and auto-immune diseases" in shown.stdout
    assert "languages: " in shown.stdout
    assert mailer(tmp_path, "campaign", "create", "campaigns/actualites-car-t.toml").returncode == 0
    shown_campaign = mailer(tmp_path, "campaign", "show", "actualites-car-t")
    assert "written in fr, en" in shown_campaign.stdout
    refused = mailer(tmp_path, "preview", "campaigns/actualites-car-t.toml", "--locale", "de")
    assert refused.returncode == 2
    assert "is written in fr, en; choose one of those" in refused.stderr


def test_text_parts_are_plain_and_french_reads_right_on_the_bytes(tmp_path: Path) -> None:
    """The example announcement (Markdown with **, ## and links): no Markdown left in the text
    part; no-break spaces before ":" and "?", "1er janvier", never inside a URL."""
    campaign = campaigns.load(ROOT / "campaigns" / "actualites-car-t.toml")
    body = campaign.content.text("fr").body + (
        "\n\nVenez à « {{ event.title }} » ? Voir [le programme](https://example.org/a?b=c:d) !"
    )
    texts = (replace(campaign.content.texts[0], body=body), *campaign.content.texts[1:])
    new_year = replace(
        EVENT, start=datetime(2025, 1, 1, 9, 0, tzinfo=PARIS), end=None, previous=None
    )
    info = send_info("event", texts=texts, action="invitation", event=new_year)
    claire = message(info, CLAIRE, tmp_path)
    found = parts(claire)
    text, html = found["text/plain"], found["text/html"]
    for markdown in ("**", "##", "]("):
        assert markdown not in text
    assert "le programme <https://example.org/a?b=c:d>" in text
    assert "mercredi 1er janvier 2025" in text
    assert "1er janvier 2025" in html
    assert "Date\u00a0: mercredi 1er janvier 2025" in text
    assert "Venez à «\u00a08e journée de recherche\u00a0»\u202f?" in text
    urls = re.findall(r"https?://[^\s<>\"]+", text + html)
    assert urls
    assert all("\u00a0" not in u and "\u202f" not in u for u in urls)
    assert "\u202f!" in text
    assert "\u202f?" in text
    assert (
        claire["Subject"]
        == "CAR-T et maladies auto-immunes\u00a0: les avancées suivies par le réseau"
    )
    english = parts(message(info, JOHN, tmp_path))["text/plain"]
    assert "\u00a0:" not in english
    assert "**" not in english


def test_an_html_body_with_a_loop_between_table_rows_renders_its_text(tmp_path: Path) -> None:
    """An HTML body's text comes from the body each recipient got, not from its template
    source (where a loop between table rows comes apart and every recipient failed)."""
    body = (
        "<table>{% for item in [['Lundi', 'Ouverture'], ['Mardi', 'Ateliers']] %}"
        "<tr><td>{{ item[0] }}</td><td>{{ item[1] }}</td></tr>{% endfor %}</table>"
        "<p>Bonjour {{ subscriber.name }}</p>"
    )
    info = replace(send_info(), content=replace(send_info().content, body_format="html",
                   texts=(LocaleText("fr", subject="Programme", body=body),)))  # fmt: skip
    text = parts(message(info, CLAIRE, tmp_path))["text/plain"]
    assert "Lundi" in text
    assert "Ateliers" in text
    assert "Bonjour Claire Dubois" in text
    assert "{%" not in text
    assert "<td>" not in text


def test_a_test_send_of_an_invitation_never_touches_a_real_entry(tmp_path: Path) -> None:
    """The staff copy of an invitation or a cancellation has its own UID: a staff member
    who is also invited keeps their real calendar entry."""
    settings = make_settings(tmp_path, web={"base_url": "https://lists.example.org"})
    for action in ("invitation", "cancellation"):
        info = send_info("event", texts=EVENT_TEXTS, action=action, event=EVENT)
        composer = make_composer(
            settings, renderer=Renderer(TEMPLATES), signer=Signer([KEY]), send=info,
            send_id=7, trace="c1/test",
        )  # fmt: skip
        data = composer.compose_test(JOHN, to="staff@example.org", date=NOW).message.data
        parsed = email.message_from_bytes(data, policy=policy.default)
        part = next(p for p in parsed.walk() if p.get_content_type() == "text/calendar")
        vevent = Calendar.from_ical(part.get_content()).walk("VEVENT")[0]
        assert str(vevent["UID"]) == f"test-{EVENT.uid}"
        assert str(vevent["ATTENDEE"]) == "mailto:staff@example.org"


def test_language_tables_are_keyed_as_the_templates_name_them(tmp_path: Path) -> None:
    text = BILINGUAL.replace("[content.en]", "[content.EN]").replace(
        "[content.en.event]", "[content.EN.event]"
    )
    assert campaigns.load(write(tmp_path, text), templates_dir=TEMPLATES).languages == ("fr", "en")
    twice = BILINGUAL + '\n[content.FR]\nbody = "x"\n'
    with pytest.raises(campaigns.CampaignFileError, match="the language 'fr' a second time"):
        campaigns.load(write(tmp_path, twice.replace("[event]", "[event]", 1)))


def test_a_file_with_no_words_is_neutral(tmp_path: Path) -> None:
    """A template-only newsletter: each recipient gets their own language's template."""
    text = 'name = "n"\nkind = "newsletter"\nlists = ["x"]\n[newsletter]\ncron = "0 9 1 * *"\n'
    campaign = campaigns.load(write(tmp_path, text), templates_dir=TEMPLATES)
    assert campaign.languages == ()
    info = replace(send_info("newsletter"), content=campaign.content, key="issue:2026-12-01")
    assert message(info, JOHN, tmp_path)["Subject"].startswith("Chercheurs: the newsletter of")


def test_a_readers_time_on_another_day_and_in_utc() -> None:
    from mailer.render.moments import when

    start, end = EVENT.start, EVENT.end
    tokyo = when(start, end, "Europe/Paris", "fr", "Asia/Tokyo")
    assert tokyo.endswith("(du 15 janvier à 17:00 au 16 janvier à 01:30 à Tokyo)")
    assert when(start, None, "Europe/Paris", "en", "UTC").endswith("(8:00\u202fAM UTC)")
    assert when(start, end, "Europe/Paris", "fr", "Europe/Berlin").endswith("(même heure à Berlin)")


def test_typography_leaves_the_subscribers_own_values_alone(tmp_path: Path) -> None:
    body = "Votre centre : {{ subscriber.attributes.centre }}."
    info = send_info(texts=(LocaleText("fr", subject="Info", body=body),))
    claire = replace(CLAIRE, attributes={"centre": "Labo!Paris ; unité?"})
    text = parts(message(info, claire, tmp_path))["text/plain"]
    assert "Votre centre\u00a0: Labo!Paris ; unité?" in text


def test_a_reminder_keeps_its_own_preheader(tmp_path: Path) -> None:
    """The campaign's preheader is the invitation's; a reminder's says when it is."""
    texts = (LocaleText("fr", body="Venez.", preheader="Inscrivez-vous vite"),)
    invitation = send_info("event", texts=texts, action="invitation", event=EVENT)
    reminder = send_info("event", texts=texts, action="reminder", event=EVENT)
    assert "Inscrivez-vous vite" in parts(message(invitation, CLAIRE, tmp_path))["text/html"]
    assert "Inscrivez-vous vite" not in parts(message(reminder, CLAIRE, tmp_path))["text/html"]
