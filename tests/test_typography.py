"""French typography: each rule, the places it never goes (URLs, addresses, code, tags,
attribute values, entities), idempotence, the markers of recipient values; properties over
any text and any HTML; "1er" for the first of the month in the date filters."""

from __future__ import annotations

from datetime import datetime
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import Environment

from mailer.render.dates import date_filter, datetime_filter
from mailer.render.typography import french_html, french_text

NB = "\u00a0"  # before ":" and inside « »
NN = "\u202f"  # before ";", "!", "?" and units
SPACES = " \t\u00a0\u202f"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Attention : ok", f"Attention{NB}: ok"),
        ("Attention: ok", f"Attention{NB}: ok"),
        ("Attention  \t: ok", f"Attention{NB}: ok"),
        ("Vraiment ? Oui !", f"Vraiment{NN}? Oui{NN}!"),
        ("Vraiment? Oui!", f"Vraiment{NN}? Oui{NN}!"),
        ("un ; deux", f"un{NN}; deux"),
        ("un; deux", f"un{NN}; deux"),
        ("Quoi ?!", f"Quoi{NN}?!"),
        ("Quoi?!", f"Quoi{NN}?!"),
        ("Hello!!", f"Hello{NN}!!"),
        ("(vraiment?)", f"(vraiment{NN}?)"),
        ("« Quoi? »", f"«{NB}Quoi{NN}?{NB}»"),
        ("Il reste 3 places!", f"Il reste 3 places{NN}!"),
        ("mot\u00a0!", f"mot{NN}!"),  # the wrong no-break space made the right one
        ("mot\u202f:", f"mot{NB}:"),
    ],
)
def test_a_space_before_double_signs(text: str, expected: str) -> None:
    """A narrow no-break space before ; ! ?, a no-break space before :, existing spaces
    replaced, one inserted when the sign ends a word."""
    assert french_text(text) == expected


@pytest.mark.parametrize(
    "text", ["12:30", "a:b", "?q=1", "!important", "x ?q=1", "mot !vrai", ": au début",
             "ligne\n: suite", "x\n!"]
)  # fmt: skip
def test_a_sign_inside_a_word_is_left_alone(text: str) -> None:
    """No space where the sign does not end a word (times, ratios, queries, CSS-like text),
    nor before a sign that starts a line."""
    assert french_text(text) == text


def test_a_sign_before_a_tab_or_a_line_end_ends_its_word() -> None:
    """Whitespace of any kind after the sign, or the end of the text, ends the word."""
    assert french_text("note:\tsuite") == f"note{NB}:\tsuite"
    assert french_text("note:\nsuite") == f"note{NB}:\nsuite"
    assert french_text("fin!") == f"fin{NN}!"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("« texte »", f"«{NB}texte{NB}»"),
        ("«texte»", f"«{NB}texte{NB}»"),
        ("«  texte\t»", f"«{NB}texte{NB}»"),
        ("«\ntexte\n»", "«\ntexte\n»"),  # line ends stay
    ],
)
def test_french_quotes_hold_their_text(text: str, expected: str) -> None:
    """A no-break space inside « », replacing the spaces there or inserted."""
    assert french_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10 %", f"10{NN}%"),
        ("10%", f"10{NN}%"),  # inserted for % only
        ("5 ‰", f"5{NN}‰"),
        ("5 km", f"5{NN}km"),
        ("3 h", f"3{NN}h"),
        ("30 min", f"30{NN}min"),
        ("15 €", f"15{NN}€"),
        ("20 °C", f"20{NN}°C"),
        ("2 Mo", f"2{NN}Mo"),
        ("10 000 €", f"10 000{NN}€"),
        ("10km", "10km"),  # no space: none inserted
        ("3 heures", "3 heures"),
        ("1 l’heure", "1 l’heure"),
        ("2 minutes", "2 minutes"),
        ("50%20", "50%20"),
        ("10 %s", "10 %s"),
    ],
)
def test_a_number_keeps_its_unit(text: str, expected: str) -> None:
    """A narrow no-break space between a number and a unit of the list, where a space was
    (and for % where none was); words that start like a unit are not units."""
    assert french_text(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Voir https://example.org/faq?",
        "https://example.org/a?b=c:d !x",
        "http://example.org/?q=1&r=2:",
        "www.example.org/a?b:c",
        "example.org/page?",
        "Écrire à claire@example.org:",
        "mailto:a@example.org?subject=Bonjour !",
        "tel:+33:1",
        "`a : b ; c ! 10 %`",
        "{{ a ! b }} {% if x ; y %} {# c : d #}",
    ],
)
def test_never_inside_an_address_code_or_placeholder(text: str) -> None:
    """URLs, e-mail addresses, mailto:/tel: targets, code between backticks and Jinja
    placeholders are left exactly as written."""
    out = french_text(text)
    for token in text.split(" "):
        if any(mark in token for mark in ("://", "@", "www.", "example.org/", "tel:")):
            assert token in out


def test_after_an_address_the_sentence_still_gets_its_space() -> None:
    """The sign after an address, as its own word, gets its space; the address is intact."""
    assert french_text("Voir https://example.org/a?b=c !") == (
        f"Voir https://example.org/a?b=c{NN}!"
    )
    assert french_text("Voir `x` :") == f"Voir `x`{NB}:"


def test_markers_are_letters() -> None:
    """A recipient's marker before ":" gets the space; nothing goes inside a run of them."""
    assert french_text("Bonjour \ue000\ue001: vous") == f"Bonjour \ue000\ue001{NB}: vous"
    assert french_text("\ue000\ue001\ue002") == "\ue000\ue001\ue002"
    assert french_text("« \ue000\ue003 »") == f"«{NB}\ue000\ue003{NB}»"


def test_text_keeps_its_lines_and_applying_twice_changes_nothing() -> None:
    """Line structure kept; a second pass finds nothing to do."""
    text = "Titre : sous-titre\n\nListe ;\n- un !\n- « deux »\n10 % en 3 h ?\n"
    once = french_text(text)
    assert once.count("\n") == text.count("\n")
    assert french_text(once) == once


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<p>Date : 12:30</p>", f"<p>Date{NB}: 12:30</p>"),
        ("<p><strong>Date</strong>: x</p>", f"<p><strong>Date</strong>{NB}: x</p>"),
        ("<p><strong>Date :</strong> x</p>", f"<p><strong>Date{NB}:</strong> x</p>"),
        ("<p>« <em>texte</em> »</p>", f"<p>«{NB}<em>texte</em>{NB}»</p>"),
        ("<p>«<em>texte</em>»</p>", f"<p>«{NB}<em>texte</em>{NB}»</p>"),
        ("<p><b>10</b> %</p>", f"<p><b>10</b>{NN}%</p>"),
        ("<p>Oui</p><p>!</p>", "<p>Oui</p><p>!</p>"),  # a block tag ends the text
        ("<title>Invitation : x</title>", f"<title>Invitation{NB}: x</title>"),
    ],
)
def test_html_text_gets_the_rules_through_inline_tags(html: str, expected: str) -> None:
    """Inline tags are see-through for the rules, block tags end a run of text."""
    assert french_html(html) == expected


@pytest.mark.parametrize(
    "html",
    [
        '<a href="https://x.org/?a=b: c ! d" title="x ; y ?">lien</a>',
        "<p title='a > b : c'>x</p>",
        "<style>a:b{c:d !important} p{width:10 %}</style>",
        "<STYLE>a:b</STYLE>",
        "<script>if (a<b && c !d) { x : y }</script>",
        "<pre>a : b ! 10 %</pre>",
        "<pre><code>a : b</code></pre>",
        "<code>x!</code> <kbd>Ctrl :</kbd> <samp>ok ?</samp>",
        "<textarea>a : b</textarea>",
        "<!-- a : b ! -->",
        "<style>a:b !important",  # unclosed: the rest is left alone
        '<a href="https://example.org/faq">https://example.org/faq?</a>',
    ],
)
def test_html_never_inside_tags_attributes_comments_or_code(html: str) -> None:
    """Tags, attribute values (a ">" in one too), comments and code-like elements stay
    byte for byte; a link whose text is a URL too."""
    assert french_html(html) == html


def test_entities_are_opaque() -> None:
    """&...; is never broken; &nbsp; is a no-break space already there; others are letters."""
    assert french_html("<p>caf&eacute;!</p>") == f"<p>caf&eacute;{NN}!</p>"
    assert french_html("<p>x&nbsp;: y &amp; z ;</p>") == f"<p>x&nbsp;: y &amp; z{NN};</p>"
    assert french_html("<p>a &lt; b : c</p>") == f"<p>a &lt; b{NB}: c</p>"
    assert french_html("<p>10&#160;%</p>") == "<p>10&#160;%</p>"


def test_markers_in_html() -> None:
    """Markers in text and attributes: letters in text, untouched in attributes."""
    html = '<p>Bonjour \ue000\ue001: <a href="\ue000\ue002">\ue000\ue002</a> !</p>'
    assert french_html(html) == (
        f'<p>Bonjour \ue000\ue001{NB}: <a href="\ue000\ue002">\ue000\ue002</a>{NN}!</p>'
    )


def test_kept_values_are_left_as_they_are() -> None:
    """``keep``: a recipient's value (escaped, in HTML) is set aside wherever it occurs."""
    assert french_text("Bonjour Jean! Et toi!", keep=["Jean!"]) == f"Bonjour Jean! Et toi{NN}!"
    assert french_text("«0 et «1", keep=["«0", " "]) == f"«0 et «{NB}1"  # blank: ignored
    html = "<p>Bonjour O&#39;Brien! et caf&eacute;!</p>"
    assert french_html(html, keep=["O&#39;Brien!"]) == (
        f"<p>Bonjour O&#39;Brien! et caf&eacute;{NN}!</p>"
    )


def test_text_holding_a_standin_character_is_left_alone() -> None:
    """HTML that already holds one of the stand-in characters cannot be told from ours."""
    html = "<p>a : b \U0010fff5</p>"
    assert french_html(html) == html


# --- properties --------------------------------------------------------------------------

WORDS = st.sampled_from(
    ["mot", "Date", "10", "3", "km", "h", "%", "€", ":", ";", "!", "?", "?!", "«", "»", "(",
     ")", "\ue000\ue001", "&nbsp;", "&amp;", "&eacute;", "https://x.org/a?b=c:d",
     "a@b.fr", "`c : d`", "{{ x : y }}", "12:30", "www.x.org", "\n"]
)  # fmt: skip
SEPARATORS = st.sampled_from(["", " ", "  ", "\t", "\u00a0", "\u202f"])
TEXT = st.lists(st.tuples(WORDS, SEPARATORS), max_size=20).map(
    lambda pairs: "".join(w + s for w, s in pairs)
)
ATTRIBUTE = st.text(st.sampled_from(list("ab :;!?%«» 10>/'=&")), max_size=12)


@st.composite
def documents(draw: st.DrawFn) -> str:
    """HTML made of text, inline and block tags with attributes, comments and code."""
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["text", "inline", "block", "comment", "code", "br"]))
        text = draw(TEXT).replace("<", "&lt;")
        if kind == "text":
            parts.append(text)
        elif kind == "inline":
            tag = draw(st.sampled_from(["a", "strong", "em", "span"]))
            value = draw(ATTRIBUTE).replace('"', "&quot;")
            parts.append(f"<{tag} href=\"{value}\" title='x : y'>{text}</{tag}>")
        elif kind == "block":
            tag = draw(st.sampled_from(["p", "div", "td", "h2", "li", "title"]))
            parts.append(f'<{tag} style="a: b; c: 10 %">{text}</{tag}>')
        elif kind == "comment":
            parts.append(f"<!-- {text.replace('--', '')} -->")
        elif kind == "code":
            tag = draw(st.sampled_from(["code", "pre", "style", "script"]))
            parts.append(f"<{tag}>{text}</{tag}>")
        else:
            parts.append("<br>")
    return "".join(parts)


class _Shape(HTMLParser):
    """What french_html must never change: every tag as written, comments, code's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.fixed: list[str] = []
        self.text: list[str] = []
        self._code = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.fixed.append(self.get_starttag_text() or "")
        self._code += tag in ("code", "pre", "style", "script")

    def handle_endtag(self, tag: str) -> None:
        self.fixed.append(f"</{tag}>")
        self._code -= tag in ("code", "pre", "style", "script")

    def handle_comment(self, data: str) -> None:
        self.fixed.append(f"<!--{data}-->")

    def handle_entityref(self, name: str) -> None:
        self.fixed.append(f"&{name};")

    def handle_charref(self, name: str) -> None:
        self.fixed.append(f"&#{name};")

    def handle_data(self, data: str) -> None:
        (self.fixed if self._code else self.text).append(data)


def _shape(html: str) -> tuple[list[str], str]:
    parser = _Shape()
    parser.feed(html)
    parser.close()
    return parser.fixed, "".join(parser.text)


def _without_spaces(text: str) -> str:
    return text.translate({ord(c): None for c in SPACES})


@given(documents())
def test_html_changes_only_spaces_in_text(html: str) -> None:
    """Property: tags (href and every attribute as written), comments, entities and code
    are unchanged; the text differs by spaces only, keeps its line ends; twice is once."""
    out = french_html(html)
    fixed, text = _shape(html)
    fixed_out, text_out = _shape(out)
    assert fixed_out == fixed
    assert _without_spaces(text_out) == _without_spaces(text)
    assert text_out.count("\n") == text.count("\n")
    assert french_html(out) == out


@given(TEXT)
def test_text_changes_only_spaces(text: str) -> None:
    """Property: only spaces change, line ends stay, addresses and code stay whole, and a
    second pass changes nothing."""
    out = french_text(text)
    assert _without_spaces(out) == _without_spaces(text)
    assert out.count("\n") == text.count("\n")
    for token in ("https://x.org/a?b=c:d", "a@b.fr", "`c : d`", "{{ x : y }}"):
        assert out.count(token) == text.count(token)
    assert french_text(out) == out


@given(st.text(max_size=60))
def test_any_text_is_safe(text: str) -> None:
    """Property: whatever the text, only spaces change and twice is once."""
    out = french_text(text)
    assert _without_spaces(out) == _without_spaces(text)
    assert french_text(out) == out


@given(st.text(st.sampled_from(list("<>&;:!? \"'=/-abp«»%1\n")), max_size=60))
def test_any_markup_like_text_is_safe(html: str) -> None:
    """Property: broken or odd markup never makes french_html fail or lose a character."""
    out = french_html(html)
    assert _without_spaces(out) == _without_spaces(html)
    assert french_html(out) == out


# --- the first of the month, in the date filters ------------------------------------------


def _filters(locale: str) -> Environment:
    env = Environment(autoescape=False)  # noqa: S701 - text
    env.filters.update(date=date_filter, datetime=datetime_filter)
    env.globals.update(locale=locale, timezone=ZoneInfo("Europe/Paris"))
    return env


@pytest.mark.parametrize(
    ("template", "day", "expected"),
    [
        ("{{ d|date('d MMMM') }}", 1, "1er décembre"),
        ("{{ d|date('full') }}", 1, "mardi 1er décembre 2026"),
        ("{{ d|date('long') }}", 1, "1er décembre 2026"),
        ("{{ d|date('medium') }}", 1, "1er déc. 2026"),
        ("{{ d|datetime('full') }}", 1, "mardi 1er décembre 2026, 01:01:00 heure normale"),
        ("{{ d|date('full') }}", 11, "vendredi 11 décembre 2026"),
        ("{{ d|date('full') }}", 21, "lundi 21 décembre 2026"),
        ("{{ d|date('short') }}", 1, "01/12/2026"),
        ("{{ d|date('dd MMMM') }}", 1, "01 décembre"),
        ("{{ d|datetime('short') }}", 1, "01/12/2026 01:01"),
    ],
)
def test_the_first_of_the_month_is_1er_in_french(template: str, day: int, expected: str) -> None:
    """ "1er" before the month's name on the 1st only; never 11, 21, 01/12 or a time."""
    when = datetime(2026, 12, day, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    assert _filters("fr").from_string(template).render(d=when).startswith(expected)


def test_other_languages_keep_their_first() -> None:
    """English dates are left as babel writes them."""
    when = datetime(2026, 12, 1, 1, 1, tzinfo=ZoneInfo("Europe/Paris"))
    assert _filters("en").from_string("{{ d|date('full') }}").render(d=when) == (
        "Tuesday, December 1, 2026"
    )
