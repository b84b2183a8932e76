"""Real plain text: a Markdown body as text, the text derived from HTML (links as
``text <url>``), the body's text template per format, and the finisher's derived text with
French typography and each recipient's own values."""

from __future__ import annotations

from html import unescape

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import Environment, StrictUndefined

from mailer.errors import TemplateError
from mailer.models import Content, Links, Recipient
from mailer.render.body import body_html, body_html_source, body_text, markdown
from mailer.render.finishing import Finisher, inliner, text_config
from mailer.render.plaintext import (
    html_to_text,
    keep_placeholders,
    markdown_to_text,
    shown_address,
    tidy,
)

MD = markdown()
NB = "\u00a0"
NN = "\u202f"


TEXT_TEMPLATES = Environment(undefined=StrictUndefined, autoescape=False)  # noqa: S701 - text


def text(source: str) -> str:
    return markdown_to_text(source, MD)


def _render(template: str, **context: object) -> str:
    return TEXT_TEMPLATES.from_string(template).render(**context)


def test_headings_are_their_words_on_their_own_line() -> None:
    """No ``#``; a blank line after the heading."""
    assert text("# Titre\n\n## Programme\nLe texte.") == "Titre\n\nProgramme\n\nLe texte.\n"


def test_emphasis_and_strong_are_dropped() -> None:
    """``**x**``, ``*x*``, ``_x_`` become their words."""
    assert text("Le **CRI-IMIDIATE** et *FAI²R* et __x__.") == "Le CRI-IMIDIATE et FAI²R et x.\n"


def test_lists_bulleted_numbered_and_nested() -> None:
    """``- item``, ``1. item`` from the list's own start, nested lists indented under the
    item's text."""
    source = "- un\n- deux\n  - deux a\n  - deux b\n- trois\n\n3. c\n4. d\n"
    assert text(source) == "- un\n- deux\n  - deux a\n  - deux b\n- trois\n\n3. c\n4. d\n"


def test_a_loose_list_keeps_its_blank_lines() -> None:
    """Items written with blank lines between them stay apart; a second paragraph of an item
    is indented under it."""
    source = "1. un\n\n2. deux\n\n   suite de deux\n"
    assert text(source) == "1. un\n\n2. deux\n\n   suite de deux\n"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("[le site](https://example.org/a?b=c)", "le site <https://example.org/a?b=c>"),
        ("<https://example.org>", "https://example.org"),
        ("[https://example.org](https://example.org)", "https://example.org"),
        ("<claire@example.org>", "claire@example.org"),
        ("[claire@example.org](mailto:claire@example.org)", "claire@example.org"),
        ("[Écrire](mailto:claire@example.org)", "Écrire <claire@example.org>"),
        ("[**gras**](https://x.org)", "gras <https://x.org>"),
        ("![le logo](https://x.org/l.png)", "le logo"),
    ],
)
def test_links_and_images(source: str, expected: str) -> None:
    """Links as ``text <url>``, the URL alone when it is the text, ``mailto:`` shown as the
    address; images as their alt text."""
    assert text(source) == expected + "\n"


def test_code_quotes_breaks_and_rules() -> None:
    """Code spans and blocks verbatim, quotes as ``> `` lines, hard breaks kept, a thematic
    break as a line of dashes."""
    source = (
        "Voir `a **b**`.\n\n```\nx  = 1\n  **y**\n```\n\n    indenté\n\n"
        "> cité\n> encore\n>\n> > deux\n\nligne  \ndure\n\n---\n\nfin"
    )
    assert text(source) == (
        "Voir a **b**.\n\nx  = 1\n  **y**\n\nindenté\n\n> cité\n> encore\n>\n> > deux\n\n"
        "ligne\ndure\n\n" + "-" * 40 + "\n\nfin\n"
    )


def test_placeholders_come_out_as_written() -> None:
    """Jinja placeholders anywhere (text, link targets, code, blocks) are kept exactly, so
    the text is still a template."""
    source = (
        "Bonjour **{{ subscriber.name }}** !\n\n[Vos préférences]({{ links.preferences }})\n\n"
        "{% if event %}\nLe {{ event.start|date('full') }}\n{% endif %}\n\n`{{ raw }}` {# note #}"
    )
    out = text(source)
    assert out == (
        "Bonjour {{ subscriber.name }} !\n\nVos préférences <{{ links.preferences }}>\n\n"
        "{% if event %}\nLe {{ event.start|date('full') }}\n{% endif %}\n\n{{ raw }} {# note #}\n"
    )
    rendered = _render(
        out, subscriber={"name": "Claire"}, links={"preferences": "https://p"}, event=None, raw="r"
    )
    assert rendered.startswith("Bonjour Claire !\n\nVos préférences <https://p>")


def test_raw_html_in_markdown_is_text() -> None:
    """Markdown's raw HTML is not passed through: it is shown as written."""
    assert text("a <b>x</b>") == "a <b>x</b>\n"


def test_an_empty_body_is_empty() -> None:
    """Nothing written, nothing shown."""
    assert text("") == ""
    assert text("\n\n") == ""


def test_html_links_as_text_and_url() -> None:
    """inscriptis' ``[text](url)`` is replaced by ``text <url>``; a URL or address shown once;
    anchors and links without a target as their text."""
    html = (
        '<p>Voir <a href="https://example.org/a?b=c">le <b>site</b></a>, '
        '<a href="https://e.org">https://e.org</a>, <a href="mailto:a@b.fr">a@b.fr</a>, '
        '<a href="mailto:a@b.fr">écrire</a>, <a href="#haut">haut</a>, <a>rien</a>, '
        '<a href="https://x.org"><img src="i.png" alt=""></a>.</p>'
    )
    assert html_to_text(html) == (
        "Voir le site <https://example.org/a?b=c>, https://e.org, a@b.fr, écrire <a@b.fr>, "
        "haut, rien, https://x.org.\n"
    )


def test_html_text_has_no_markdown_left() -> None:
    """Headings and strong text in HTML come out as words: no ``##``, ``**`` or ``](``."""
    out = html_to_text(
        "<h2>Programme</h2><p><strong>CRI</strong> <a href='https://x.org'>site</a></p>"
    )
    assert out == "Programme\n\nCRI site <https://x.org>\n"


def test_tidy_leaves_no_runs_of_blank_lines() -> None:
    """Trailing spaces dropped, blank lines never two in a row, one final line end."""
    assert tidy("\n\na  \n\n\n\nb\n\n") == "a\n\nb\n"


def test_shown_address() -> None:
    """The address once, ``mailto:`` dropped, the text alone when there is no address."""
    assert shown_address("https://x.org", "site") == "site <https://x.org>"
    assert shown_address("https://x.org", " https://x.org ") == "https://x.org"
    assert shown_address("MAILTO:a@b.fr", "a@b.fr") == "a@b.fr"
    assert shown_address("", "rien") == "rien"
    assert shown_address("https://x.org", "") == "https://x.org"


def test_keep_placeholders_round_trip() -> None:
    """What keep_placeholders takes out, its restore puts back."""
    kept, restore = keep_placeholders("a {{ b }} c {% d %}")
    assert "{" not in kept
    assert restore(kept) == "a {{ b }} c {% d %}"


BODY = (
    "## Programme\n\nLe réseau **CRI-IMIDIATE** vous invite.\n\n"
    "Voir [le site](https://example.org/a?b=c) : {{ subscriber.name }}.\n"
)


def test_a_rendered_markdown_body_is_plain_text() -> None:
    """The text template of a Markdown body, rendered, has no ``**``, ``##`` or ``](``."""
    out = _render(body_text(BODY, "markdown", MD), subscriber={"name": "Claire"})
    assert out == (
        "Programme\n\nLe réseau CRI-IMIDIATE vous invite.\n\n"
        "Voir le site <https://example.org/a?b=c> : Claire."  # Jinja drops the last \n
    )
    for mark in ("**", "##", "]("):
        assert mark not in out


def test_the_body_text_of_each_format() -> None:
    """HTML bodies give their derived text (placeholders kept, in links too); text bodies
    are themselves; an unknown format is a TemplateError."""
    html = '<h2>Titre</h2><p>Bonjour {{ name }}, <a href="{{ links.p }}">vos choix</a>.</p>'
    assert (
        body_text(html, "html", MD) == "Titre\n\nBonjour {{ name }}, vos choix <{{ links.p }}>.\n"
    )
    assert body_text("**pas du Markdown**", "text", MD) == "**pas du Markdown**"
    with pytest.raises(TemplateError, match="body format"):
        body_text("x", "rtf", MD)
    with pytest.raises(TemplateError, match="body format"):
        body_html_source("x", "rtf", MD)


def test_body_html_keeps_working() -> None:
    """body_html(content) is body_html_source on the content's body and format."""
    content = Content(name="n", kind="newsletter", body=BODY)
    assert body_html(content, MD) == body_html_source(BODY, "markdown", MD)
    assert "<strong>CRI-IMIDIATE</strong>" in body_html(content, MD)
    assert "{{ subscriber.name }}" in body_html(content, MD)
    text_content = Content(name="n", kind="k", body="a < b\n\nc", body_format="text")
    assert body_html(text_content, MD) == "<p>a &lt; b</p>\n<p>c</p>\n"


# --- the finisher -------------------------------------------------------------------------

CLAIRE = Recipient(id=1, email="claire@example.org", name="Claire Dubois", locale="fr")
JOHN = Recipient(id=2, email="john@example.org", name="John Okafor", locale="fr")
LINKS = Links(unsubscribe="https://l.example.org/u/A?x=1&y=2", preferences="https://l/p/A")
PAGE = (
    "<html><head><style>p {{ color: red; }}</style></head><body>"
    "<h2>Programme</h2><p>Bonjour {name} : <strong>CRI-IMIDIATE</strong> !</p>"
    '<p><a href="https://example.org/a?b=c">le site</a> ; 10 %</p>'
    '<p><a href="{unsub}">Se désinscrire</a> · {email}</p></body></html>'
)


def _page(recipient: Recipient, links: Links) -> str:
    return PAGE.format(
        name=recipient.name,
        unsub=links.unsubscribe.replace("&", "&amp;"),
        email=recipient.email,
    )


def test_the_derived_text_shows_links_as_text_and_url() -> None:
    """The finisher's derived text: ``text <url>``, no ``[``, ``](``, ``**`` or ``##``."""
    finisher = Finisher(inliner(), text_config())
    html, derived = finisher.finish(_page(CLAIRE, LINKS), CLAIRE, LINKS, need_text=True)
    assert derived is not None
    assert "le site <https://example.org/a?b=c>" in derived
    assert f"Se désinscrire <{LINKS.unsubscribe}>" in derived
    for mark in ("](", "**", "##", "["):
        assert mark not in derived
    assert 'style="color: red;"' in html


def test_french_typography_in_html_and_text_with_each_recipients_values() -> None:
    """With french=True both parts get the typography, once per marked HTML, and each
    recipient still gets their own name, address and links, untouched by it."""
    finisher = Finisher(inliner(), text_config())
    other = Links(unsubscribe="https://l.example.org/u/B?x=1&y=2", preferences="https://l/p/B")
    first = finisher.finish(_page(CLAIRE, LINKS), CLAIRE, LINKS, need_text=True, french=True)
    second = finisher.finish(_page(JOHN, other), JOHN, other, need_text=True, french=True)
    for (html, derived), person, links in ((first, CLAIRE, LINKS), (second, JOHN, other)):
        assert derived is not None
        assert f"Bonjour {person.name}{NB}: CRI-IMIDIATE{NN}!" in derived
        assert f"le site <https://example.org/a?b=c>{NN}; 10{NN}%" in derived
        assert f"Se désinscrire <{links.unsubscribe}>" in derived
        assert person.email in derived
        assert links.unsubscribe.replace("&", "&amp;") in html
        assert person.name in html
        assert person.email in html
        assert "CRI-IMIDIATE</strong>\u202f!" in html
    assert "Claire" not in second[1]
    assert "Claire" not in second[0]
    assert len(finisher._cache) == 1  # one marked HTML for both


def test_french_is_part_of_the_cache_key() -> None:
    """The same HTML finished with and without typography gives both, not the cached one."""
    finisher = Finisher(inliner(), text_config())
    plain = finisher.finish(_page(CLAIRE, LINKS), CLAIRE, LINKS, need_text=True)
    french = finisher.finish(_page(CLAIRE, LINKS), CLAIRE, LINKS, need_text=True, french=True)
    assert plain[1] is not None
    assert french[1] is not None
    assert "Bonjour Claire Dubois :" in plain[1]
    assert f"Bonjour Claire Dubois{NB}:" in french[1]


def test_html_with_private_characters_is_finished_without_the_cache() -> None:
    """HTML that already holds the marker character is finished directly, typography too."""
    finisher = Finisher(inliner(), text_config())
    html = "<p>Code \ue000 : ok</p>"
    out, derived = finisher.finish(html, CLAIRE, LINKS, need_text=True, french=True)
    assert derived == f"Code \ue000{NB}: ok\n"
    assert "\ue000&nbsp;:" in out or f"\ue000{NB}:" in out


def test_a_one_word_name_is_not_marked_but_kept_from_the_typography() -> None:
    """A name without a space stays in the marked HTML (part of the key); the typography is
    told to leave it alone, so "«0" or "Jean!" comes out as written."""
    finisher = Finisher(inliner(), text_config())
    for name in ("Jean!", "«0", "O'Brien:"):
        person = Recipient(id=4, email="j@example.org", name=name, locale="fr")
        html, derived = finisher.finish(
            f"<p>Bonjour {_escape(name)} ! Oui?</p>", person, LINKS, need_text=True, french=True
        )
        assert derived is not None
        assert f"Bonjour {name}{NN}! Oui{NN}?" in derived
        assert name in unescape(html)


@given(
    st.text(st.characters(blacklist_categories=["Cc", "Cs", "Co", "Z"]), max_size=40),
    st.sampled_from([" ", ""]),
)
def test_any_name_comes_back_whole(name: str, spaced: str) -> None:
    """Property: whatever the recipient's name (marked when it has a space, kept from the
    typography when not), the derived text and the HTML carry it as it was written."""
    person = Recipient(id=3, email="x@example.org", name=f"A{name}{spaced}Z", locale="fr")
    finisher = Finisher(inliner(), text_config())
    html, derived = finisher.finish(
        f"<p>Bonjour {_escape(person.name)} !</p>", person, LINKS, need_text=True, french=True
    )
    assert derived is not None
    assert person.name in derived
    assert person.name in unescape(html)  # one-word names are re-serialized by the inliner
    if spaced:
        assert _escape(person.name) in html  # marked: put back as it was escaped


def _escape(value: str) -> str:
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&#34;")
        .replace("'", "&#39;")
    )
