"""Rendering: the shipped templates in both languages, locale fallback, escaping, errors."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer.errors import TemplateError
from mailer.models import Content, EventInfo, Links, ListInfo, Recipient, SendInfo
from mailer.render import CompiledSend, Renderer, preflight
from mailer.render.typography import french_text

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2024, 1, 8, 10, 0, tzinfo=UTC)
LIST = ListInfo(id=1, slug="researchers", title="Chercheurs du réseau", default_locale="fr")
EVENT = EventInfo(
    uid="journee-2024@example.org",
    title="8e journée de recherche CRI-IMIDIATE / FAI²R",
    start=datetime(2024, 1, 15, 9, 0, tzinfo=PARIS),
    end=datetime(2024, 1, 15, 17, 30, tzinfo=PARIS),
    timezone="Europe/Paris",
    place="Hôpital Pitié-Salpêtrière, Paris",
)
LINKS = Links(
    unsubscribe="https://lists.example.org/u/TOKEN-U", preferences="https://lists.example.org/p/P"
)
CLAIRE = Recipient(id=1, email="claire@example.org", name="Claire Dubois", locale="fr")
JOHN = Recipient(id=2, email="john@example.org", name="John Okafor", locale="en")


def compiled(
    kind: str = "announcement",
    *,
    action: str | None = None,
    body: str = "Une **avancée** importante.",
    subject: str = "",
    templates: Path = TEMPLATES,
    list_info: ListInfo = LIST,
) -> CompiledSend:
    content = Content(name="actualites", kind=kind, subject=subject, body=body)
    send = SendInfo(
        content=content,
        list=list_info,
        sender_name="Réseau CRI-IMIDIATE",
        sender_address="news@example.org",
        action=action or kind,
        now=NOW,
        event=EVENT if kind == "event" else None,
    )
    return Renderer(templates).compile(send)


def test_an_announcement_in_french() -> None:
    """French subscriber: French layout, Markdown body as HTML, text part, links in both."""
    out = compiled(subject="Des nouvelles du réseau").render(CLAIRE, LINKS)
    assert out.locale == "fr"
    assert out.subject == "Des nouvelles du réseau"
    assert "Bonjour Claire Dubois," in out.text
    assert "<strong>avancée</strong>" in out.html
    assert "Une avancée importante." in out.text  # plain text: no Markdown left
    assert "**" not in out.text
    for link in (LINKS.unsubscribe, LINKS.preferences):
        assert link in out.text
        assert link in out.html
    assert '<html lang="fr"' in out.html


def test_css_is_inlined_and_nothing_is_fetched() -> None:
    """The layout's <style> rules end up in style attributes; no remote asset is referenced."""
    html = compiled().render(CLAIRE, LINKS).html
    assert 'style="' in html
    assert "http://" not in html.replace("http://127.0.0.1", "")
    assert "<link" not in html


@pytest.mark.parametrize(
    ("recipient_locale", "list_locale", "expected"),
    [
        ("en", "fr", "en"),
        ("en_GB", "fr", "en"),
        ("de", "en", "en"),
        (None, "fr", "fr"),
        ("de", "de", "fr"),
    ],
)
def test_locale_falls_back_from_subscriber_to_list_to_french(
    recipient_locale: str | None, list_locale: str, expected: str
) -> None:
    """The subscriber's language if a template exists, else the list's, else French."""
    list_info = ListInfo(id=1, slug="l", title="L", default_locale=list_locale)
    recipient = Recipient(id=3, email="x@example.org", locale=recipient_locale)
    assert compiled(list_info=list_info).render(recipient, LINKS).locale == expected


@pytest.mark.parametrize("action", ["invitation", "reminder", "update", "cancellation"])
@pytest.mark.parametrize("who", [CLAIRE, JOHN], ids=["fr", "en"])
def test_event_mails_show_the_date_in_paris_time(action: str, who: Recipient) -> None:
    """Every event mail names the day and 09:00 Paris time, and its subject says what it is."""
    out = compiled("event", action=action, body="").render(who, LINKS)
    day = "lundi 15 janvier 2024" if who.locale == "fr" else "Monday, January 15, 2024"
    assert day in out.html
    assert day in out.text
    assert "09:00" in out.text or "9:00" in out.text
    expected = {
        ("fr", "invitation"): "Invitation\u00a0: ",  # French typography: no-break space
        ("fr", "reminder"): "Rappel\u00a0: ",
        ("fr", "update"): "Modification\u00a0: ",
        ("fr", "cancellation"): "Annulation\u00a0: ",
        ("en", "invitation"): "Invitation: ",
        ("en", "reminder"): "Reminder: ",
        ("en", "update"): "Update: ",
        ("en", "cancellation"): "Cancelled: ",
    }[(out.locale, action)]
    assert out.subject.startswith(expected), out.subject
    assert "&amp;" not in out.subject


def test_a_reminder_counts_the_days_left() -> None:
    """Seven days before the event, the reminder says so."""
    out = compiled("event", action="reminder", body="").render(CLAIRE, LINKS)
    assert "dans 7 jours" in out.text


def test_newsletter_text_is_derived_from_the_html_per_recipient() -> None:
    """Without a .txt template the text comes from the HTML, with each recipient's own values."""
    send = compiled("newsletter", body="## Édito\n\nVoir [le programme](https://example.org/p).")
    first = send.render(CLAIRE, LINKS)
    other_links = Links(
        unsubscribe="https://lists.example.org/u/OTHER", preferences=LINKS.preferences
    )
    second = send.render(JOHN, other_links)
    assert "Édito" in first.text
    assert "https://example.org/p" in first.text
    assert "Claire Dubois" in first.text
    assert "Claire Dubois" not in second.text
    assert "John Okafor" in second.text
    assert "https://lists.example.org/u/OTHER" in second.text
    assert LINKS.unsubscribe not in second.text
    assert all(line == line.rstrip() for line in first.text.splitlines())


def test_jinja_in_a_markdown_body_survives_links() -> None:
    """Placeholders work in Markdown text and link targets; raw HTML in Markdown is escaped."""
    body = (
        "Bonjour {{ subscriber.name }} !\n\n"
        "[Vos préférences]({{ links.preferences }})\n\n<script>alert(1)</script>"
    )
    out = compiled(body=body).render(CLAIRE, LINKS)
    assert "Bonjour Claire Dubois\u202f!" in out.html  # a narrow no-break space before "!"
    assert f'href="{LINKS.preferences}"' in out.html
    assert "<script>" not in out.html
    assert "&lt;script&gt;" in out.html


class _Structure(HTMLParser):
    """The tags and the text of an HTML document, as a browser would see them."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _tags_and_text(html: str) -> tuple[list[str], str]:
    parsed = _Structure(html)
    return [tag for tag, _ in parsed.tags], "".join(parsed.text)


@pytest.mark.parametrize(
    "evil",
    ["<script>alert(1)</script>", "{{ 7*7 }}", '"><img src=x onerror=alert(1)>', "{% raw %}"],
)
def test_subscriber_data_is_escaped_and_never_evaluated(evil: str) -> None:
    """Names are data: shown as text in HTML (no new element), verbatim in text, never run."""
    recipient = Recipient(id=4, email="e@example.org", name=evil, locale="fr")
    out = compiled().render(recipient, LINKS)
    baseline = compiled().render(Recipient(id=4, email="e@example.org", name="X"), LINKS)
    tags, text = _tags_and_text(out.html)
    assert tags == _tags_and_text(baseline.html)[0]
    assert f"Bonjour {evil}," in text
    assert f"Bonjour {evil}," in out.text
    assert "49" not in out.text


names = st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=60)


@given(names)
def test_any_name_is_text_in_the_html(name: str) -> None:
    """Property: whatever the name, the HTML has the same elements and shows the name as text."""
    recipient = Recipient(id=5, email="p@example.org", name=name, locale="fr")
    tags, text = _tags_and_text(SEND.render(recipient, LINKS).html)
    assert tags == BASELINE_TAGS
    assert name.strip() in text


SEND = compiled()
BASELINE_TAGS = _tags_and_text(
    SEND.render(Recipient(id=5, email="p@example.org", name="X"), LINKS).html
)[0]


def write_templates(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / "email" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return folder


def test_an_undefined_variable_names_template_and_line(tmp_path: Path) -> None:
    """StrictUndefined: a misspelt variable is an error naming the file and the line."""
    folder = write_templates(
        tmp_path,
        {
            "note.fr.html": "{% block subject %}S{% endblock %}\n<p>ok</p>\n<p>{{ subscribr.name }}</p>\n"
        },
    )
    send = compiled("note", templates=folder)
    with pytest.raises(TemplateError, match=r"email/note\.fr\.html:3: 'subscribr' is undefined"):
        send.render(CLAIRE, LINKS)


def test_a_syntax_error_names_template_and_line(tmp_path: Path) -> None:
    """A template that does not compile is refused when the send is compiled."""
    folder = write_templates(tmp_path, {"note.fr.html": "line one\n{% if x %}\nno end\n"})
    with pytest.raises(TemplateError, match=r"note\.fr\.html:\d: syntax error: Unexpected end"):
        compiled("note", templates=folder)


def test_missing_template_and_missing_subject_are_clear(tmp_path: Path) -> None:
    """No template for a kind, or no subject anywhere, is said plainly."""
    with pytest.raises(TemplateError, match=r"no template for 'poster'"):
        compiled("poster")
    folder = write_templates(tmp_path, {"note.fr.html": "<p>no subject block</p>\n"})
    with pytest.raises(TemplateError, match=re.escape("has no {% block subject %}")):
        compiled("note", templates=folder)


def test_a_subject_with_a_line_break_is_refused() -> None:
    """A newline in the campaign's subject would be a second header: refused up front."""
    with pytest.raises(TemplateError, match="line break"):
        compiled(subject="Bonjour\nBcc: everyone@example.org")


def test_preflight_reports_how_many_failed_and_why() -> None:
    """The check renders every recipient and keeps the first reasons, sending nothing."""
    send = compiled(body="Votre organisation : {{ subscriber.attributes.organisation }}")
    recipients = [
        Recipient(
            id=i, email=f"r{i}@example.org", attributes={"organisation": "AP-HP"} if i % 2 else {}
        )
        for i in range(10)
    ]
    report = preflight(send, ((r, LINKS) for r in recipients))
    assert (report.total, report.failed) == (10, 5)
    assert report.reasons[0][0] == "r0@example.org"
    assert "has no attribute 'organisation'" in report.reasons[0][1]
    assert not report.ok


def test_finishing_once_for_many_recipients_keeps_each_ones_values() -> None:
    """HTML finished once (CSS inlined, text derived) and reused must still carry each
    recipient's own name, address and links, whatever the name looks like."""
    send = compiled("newsletter", body="Texte.")
    people = [
        Recipient(id=10, email="a@example.org", name="Claire Dubois", locale="fr"),
        Recipient(id=11, email="b@example.org", name="Marc Petit", locale="fr"),
        Recipient(id=12, email="c@example.org", name="table", locale="fr"),
        Recipient(id=13, email="d@example.org", name="", locale="fr"),
    ]
    for person in people:
        links = Links(
            unsubscribe=f"https://lists.example.org/u/{person.id}",
            preferences=f"https://lists.example.org/p/{person.id}",
        )
        fresh = Renderer(TEMPLATES).compile(send.send).render(person, links)
        reused = send.render(person, links)
        assert reused == fresh
        assert f'href="https://lists.example.org/u/{person.id}"' in reused.html
        assert f"https://lists.example.org/u/{person.id}" in reused.text
        assert 'style="' in reused.html


def test_a_text_template_finished_once_reads_as_each_recipients_own() -> None:
    """The text template's output gets its French typography once for many recipients (their
    values marked, then put back): each must read exactly as the typography applied to their
    own text with their values set aside, whatever their name or attributes look like."""
    send = compiled("event", body="Rendez-vous : salle 2 ; venez ! « Ouvert » à 10 %.")
    people = [
        Recipient(id=20, email="a@example.org", name="Claire Dubois", locale="fr"),
        Recipient(id=21, email="b@example.org", name="Yahoo!", locale="fr"),
        Recipient(id=22, email="c@example.org", name="Jean : Paul", locale="fr"),
        Recipient(id=23, email="d@example.org", name="", locale="fr",
                  attributes={"organisation": "Inserm ; U1234"}),
        Recipient(id=24, email="e@example.org", name="Marc Petit", locale="fr"),
        Recipient(id=25, email="f@example.org", name="Claire Dubois", locale="fr"),
    ]  # fmt: skip
    texts = set()
    for person in people:
        links = Links(
            unsubscribe=f"https://lists.example.org/u/{person.id}",
            preferences=f"https://lists.example.org/p/{person.id}",
        )
        raw = send._jinja(person, links)[3]
        assert raw is not None  # the event template has a text part
        keep = [links.unsubscribe, links.preferences, person.email, person.name,
                *person.attributes.values()]  # fmt: skip
        text = send.render(person, links).text
        assert text == french_text(raw, keep=[v for v in keep if v])
        assert f"https://lists.example.org/u/{person.id}" in text
        assert person.name in text  # as typed: "Yahoo!", "Jean : Paul"
        texts.add(text)
    assert len(texts) == len(people)


# --- limits: a runaway body stops with a clear error -------------------------------------------

RUNAWAY = {
    "nested-range": "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}",
    "silent-loops": (
        "{% set l = range(9000)|list %}"
        "{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}"
    ),
    "macro-fan-out": (
        "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}"
    ),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("body", RUNAWAY.values(), ids=RUNAWAY.keys())
def test_a_runaway_body_stops_within_the_time_budget(body: str) -> None:
    """A body that would loop for hours stops after the per-recipient budget, with a
    TemplateError that says so, not a hang."""
    send = compiled(body=body)
    started = time.monotonic()
    with pytest.raises(TemplateError, match=r"took more than 2 s for one recipient"):
        send.render(CLAIRE, LINKS)
    assert time.monotonic() - started < 2 + 1.5


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "body",
    [
        "{% for i in range(9000) %}{% for j in range(9000) %}xxxxxxxxxxxxxxxxxx{% endfor %}{% endfor %}",
        "{{ 'x' * 99999999 }}",
        "{{ 'x'|center(999999999) }}",
        "{{ 'x'.rjust(999999999) }}",
        "{{ '%999999999s' % 'x' }}",
        "{{ '{:>999999999}'.format('x') }}",
    ],
    ids=["loops", "repeat", "center", "rjust", "percent", "format"],
)
def test_a_body_cannot_produce_more_than_the_output_limit(body: str) -> None:
    """Output past 1 MiB for one recipient is refused before it is all in memory."""
    send = compiled(body=body)
    with pytest.raises(TemplateError, match=r"more than 1 MiB"):
        send.render(CLAIRE, LINKS)


@pytest.mark.timeout(30)
def test_range_is_capped() -> None:
    """range() gives at most 10,000 items (the sandbox's own cap is 100,000)."""
    body = "{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}"
    with pytest.raises(TemplateError, match=r":1: range\(\) gives at most 10000 items"):
        compiled(body=body).render(CLAIRE, LINKS)


@pytest.mark.timeout(30)
def test_huge_powers_do_not_hang_the_compiler() -> None:
    """9 ** 999999999 would take minutes to compute (even folded at compile time): refused."""
    with pytest.raises(TemplateError, match=r"too large"):
        compiled(body="{{ 9 ** 999999999 }}").render(CLAIRE, LINKS)


@pytest.mark.timeout(30)
def test_a_recursive_macro_is_a_clear_error() -> None:
    """A macro that calls itself without end is a TemplateError, not a RecursionError."""
    send = compiled(body="{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")
    with pytest.raises(TemplateError, match=r"calls itself too deeply"):
        send.render(CLAIRE, LINKS)


def test_the_limits_leave_normal_bodies_alone() -> None:
    """Loops, ranges and macros of a normal size still render."""
    body = (
        "{% macro item(n) %}[{{ n }}]{% endmacro %}"
        "{% for n in range(200) %}{{ item(n) }}{% endfor %} "
        "{% for p in [1, 2] %}{% for q in range(3) if q %}{{ p * q }}{% else %}-{% endfor %}{% endfor %}"
        "{{ 'ab' * 3 }} {{ '%5s' % 'x' }} {{ loop_free|default('ok') }}"
    )
    rendered = compiled(body=body, kind="newsletter").render(CLAIRE, LINKS)
    assert "[198][199]" in rendered.html
    assert "1224" in rendered.text
    assert "ababab" in rendered.text


def test_a_template_linked_out_of_the_templates_folder_is_refused(tmp_path: Path) -> None:
    """A template file that is a symlink to a file outside the folder is not read."""
    folder = write_templates(tmp_path / "t", {"base.fr.html": "{% block subject %}S{% endblock %}"})
    (tmp_path / "passwd").write_text("root:x:0:0", encoding="utf-8")
    (folder / "email" / "note.fr.html").symlink_to(tmp_path / "passwd")
    with pytest.raises(TemplateError, match=r"email/note\.fr\.html is outside the templates"):
        compiled("note", templates=folder)


def test_long_numbers_in_text_are_not_mistaken_for_widths() -> None:
    """A phone number next to a brace or a percent sign is text, not a format width."""
    send = compiled(
        body="{{ '{x} 0123456789 100%'|replace('x', 'y') }} {{ 'Tél. 0123456789 : %s' % 'ok' }}",
        kind="newsletter",
    )
    rendered = send.render(CLAIRE, LINKS)
    assert "{y} 0123456789 100\u202f%" in rendered.text  # French typography
    assert "Tél. 0123456789\u00a0: ok" in rendered.text


@pytest.mark.timeout(60)
def test_a_body_too_slow_for_everyone_is_given_up_after_three_recipients() -> None:
    """When the first three recipients all pass the budget, the others fail at once: a
    pre-flight over a list does not take two seconds per member."""
    send = compiled(body=RUNAWAY["silent-loops"])
    recipients = [Recipient(id=i, email=f"r{i}@example.org") for i in range(20)]
    started = time.monotonic()
    report = preflight(send, ((r, LINKS) for r in recipients))
    assert time.monotonic() - started < 3 * 2 + 3
    assert (report.total, report.failed) == (20, 20)
    assert "took more than 2 s" in report.reasons[0][1]
    assert "is not tried for the others" in report.reasons[3][1]


@pytest.mark.parametrize("char", ["\u2028", "\u0085", "\x0b", "\x0c", "\x00"])
def test_a_subject_rendered_with_a_control_character_is_refused(char: str) -> None:
    """A subject that a recipient's data fills with a line break of any kind fails that
    recipient at rendering, before the pre-flight would build it."""
    send = compiled(subject="Bonjour {{ subscriber.name }}")
    with pytest.raises(TemplateError, match=r"the subject has a control character"):
        send.check(Recipient(id=9, email="x@example.org", name=f"A{char}B"), LINKS)
