"""Benchmark of rendering and building messages, per core (one process, one thread).

A French newsletter of about 20 KB (its Markdown body generated here, deterministically:
headings, paragraphs with accents, links, a list; the greeting comes from the template) is
sent to a few thousand distinct fictional recipients (accented names, French and English
locales mixed), and each stage is timed separately:

1. Jinja render only (``CompiledSend.render``, links signed beforehand);
2. fast MIME build only (``MessageBuilder.build`` on content rendered beforehand);
3. render + fast build (``Composer.compose``): the headline, renders + MIME builds per
   second per core;
4. render + reference build (``build_reference``, the standard ``EmailMessage`` path), the
   line to compare with, and the ratio of the two;
5. the headline again for a French event invitation (``.ics`` attached).

Each line is warmed up, then timed three times over every recipient with
``time.perf_counter``; the median is printed. Nothing is written to disk.

    .venv/bin/python bench/render_message.py [--quick] [--recipients 2000] [--seed 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import platform
import random
import statistics
import tempfile
import time
import unicodedata
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from mailer import campaigns
from mailer.compose import Composer, make_composer
from mailer.message import build_reference, make_message_id
from mailer.models import Content, EventInfo, Links, ListInfo, Recipient, Rendered, SendInfo
from mailer.render import Renderer
from mailer.settings import Settings
from mailer.tokens import Signer, links_for

ROOT = Path(__file__).resolve().parent.parent

NOW = datetime(2024, 1, 8, 10, 0, tzinfo=UTC)
LIST = ListInfo(
    id=1, slug="researchers", title="Chercheurs du réseau CRI-IMIDIATE", default_locale="fr"
)
SENDER_NAME = "Réseau CRI-IMIDIATE"
SENDER_ADDRESS = "news@cri-imidiate.example.org"
DOMAIN = "cri-imidiate.example.org"
REPEATS = 3
WARM_UP = 200  # recipients rendered and built before any timing

FIRST_NAMES = (
    "Élodie", "François", "Zoë", "Anaïs", "Jérôme", "Hélène", "Loïc", "Noël", "Agnès",
    "Cédric", "Chloé", "Inès", "Léa", "Mathéo", "Søren", "José", "Marie", "Paul", "Lucas",
    "Emma", "Hugo", "Camille", "Jean", "Louise", "Théo", "Manon", "Gaëlle", "Bénédicte",
    "Océane", "Maël", "Amélie", "Raphaël", "Clémence", "Timothée", "Aurélien", "Ségolène",
    "Grégoire", "Mélanie", "Stéphane", "Frédérique", "John", "Sarah", "Ngozi", "Kenji",
)  # fmt: skip
LAST_NAMES = (
    "Lefèvre", "Müller", "Dupont", "Martin", "Bernard", "Caron", "Gauthier", "Faure",
    "Núñez", "Le Goff", "Béranger", "Côté", "Girard", "Moreau", "Petit", "Durand", "Leroy",
    "Rousseau", "Fontaine", "Chevalier", "Mercier", "Dubois", "Lambert", "Bonnet", "Brontë",
    "Šimek", "Hébert", "Lemaître", "Pétain-Roux", "Okafor", "Nakamura", "Smith", "Désiré",
    "Benoît", "Thévenin", "Crépin", "Évrard", "Noël", "Ménard", "Joly", "Aubé", "Carré",
    "Pâris", "Ribéry", "Séverin",
)  # fmt: skip
LOCALES = ("fr", "fr", "fr", "fr", "fr", "fr", "en", "en", "en", None)  # None: the list's (fr)

# --- the newsletter body -----------------------------------------------------------------

TOPICS = (
    "Les cellules CAR-T au-delà du cancer",
    "Protocoles nationaux de diagnostic et de soins",
    "Vie du réseau et des centres labellisés",
    "Agenda des prochains mois",
)
SUBTOPICS = (
    "Ce qu’il faut retenir",
    "Calendrier prévisionnel",
)
SENTENCES = (
    "Le réseau suit de près une piste thérapeutique nouvelle pour les maladies auto-immunes "
    "réfractaires aux traitements actuels.",
    "Chez des patients atteints de lupus systémique sévère, les premiers résultats décrivent "
    "des rémissions durables.",
    "Les équipes hospitalières et universitaires ont présenté leurs données lors de la "
    "dernière réunion plénière, à Lyon.",
    "Le traitement reste lourd et coûteux, mais il est court : c’est ce qui en fait une "
    "option sérieuse.",
    "La sclérodermie systémique, les myopathies inflammatoires et le syndrome de "
    "Gougerot-Sjögren font l’objet d’études dédiées.",
    "Un comité scientifique indépendant évaluera les dossiers déposés avant la fin du trimestre.",
    "Les associations de patients ont été associées dès la rédaction du protocole, ce qui "
    "a facilité le recrutement.",
    "Les inclusions se poursuivent dans douze centres, dont trois à l’étranger (Genève, "
    "Bruxelles et Montréal).",
    "Une journée d’échanges réunira chercheurs, soignants et industriels autour des "
    "thérapies ciblées.",
    "Le financement obtenu auprès de l’Agence nationale de la recherche couvre quatre "
    "années de suivi.",
    "Les données de tolérance à long terme seront publiées dans un entrepôt ouvert, "
    "conformément au plan de gestion.",
    "Des réunions de concertation pluridisciplinaire mensuelles permettent de discuter les "
    "dossiers complexes.",
    "Le groupe de travail « transition enfant-adulte » a remis ses premières recommandations.",
    "Nous remercions chaleureusement les bénévoles qui ont rendu possible cette édition.",
    "Une synthèse en français facile à lire accompagne désormais chaque publication majeure.",
    "Les candidatures des jeunes chercheurs et chercheuses sont particulièrement encouragées.",
)
LINKS = (
    ("le programme détaillé", "https://cri-imidiate.example.org/programme"),
    ("la page de l’étude", "https://cri-imidiate.example.org/etudes/car-t-lupus"),
    ("le formulaire d’inscription", "https://cri-imidiate.example.org/inscription"),
    ("l’annuaire des centres", "https://cri-imidiate.example.org/centres"),
    ("les archives de la lettre", "https://cri-imidiate.example.org/lettre/archives"),
)
ITEMS = (
    "Réunion du conseil scientifique : **mardi 6 février**, en visioconférence",
    "Date limite de l’appel à projets « Jeunes équipes » : 15 mars",
    "Séminaire méthodologique sur les essais à petits effectifs, à Marseille",
    "Mise à jour du PNDS *vascularites à ANCA*, relecture ouverte",
    "Congrès de la Société française de rhumatologie, session commune",
    "Webinaire patients-experts : « Vivre avec une maladie rare »",
)


def newsletter_body(seed: int) -> str:
    """The newsletter's Markdown (about 5.5 KB: a message of about 20 KB once rendered in
    HTML and text and encoded); deterministic for ``seed``."""
    rng = random.Random(seed)
    parts = [
        "# La lettre du réseau CRI-IMIDIATE, janvier 2024",
        " ".join(rng.sample(SENTENCES, 3)),
    ]
    for number, topic in enumerate(TOPICS):
        parts.append(f"## {topic}")
        for paragraph in range(3):
            sentences = rng.sample(SENTENCES, rng.randint(2, 4))
            if paragraph == 1:
                label, url = LINKS[number % len(LINKS)]
                sentences.append(f"Consultez [{label}]({url}) pour les détails.")
            parts.append(" ".join(sentences))
        if number % 2 == 0:
            parts.append(f"### {SUBTOPICS[number // 2]}")
            parts.append("\n".join(f"- {item}" for item in rng.sample(ITEMS, 4)))
        if number % 3 == 2:
            parts.append(f"> {rng.choice(SENTENCES)}")
    parts.append("---")
    parts.append(
        "Vous avez une information à partager ? Écrivez-nous en répondant à ce message : "
        "la prochaine lettre paraîtra début février."
    )
    return "\n\n".join(parts) + "\n"


# --- recipients --------------------------------------------------------------------------


def _ascii(word: str) -> str:
    plain = unicodedata.normalize("NFKD", word).encode("ascii", "ignore").decode()
    return "".join(c for c in plain.lower() if c.isalnum())


def recipients(count: int, seed: int) -> list[Recipient]:
    """``count`` distinct recipients (ids, addresses, accented names, fr/en locales)."""
    rng = random.Random(seed)
    out = []
    for number in range(count):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        domain = rng.choice(("example.org", "example.net", "univ-exemple.fr"))
        out.append(
            Recipient(
                id=1000 + number,
                email=f"{_ascii(first)}.{_ascii(last)}{number}@{domain}",
                name=f"{first} {last}",
                locale=rng.choice(LOCALES),
            )
        )
    return out


# --- the measurements --------------------------------------------------------------------


def settings() -> Settings:
    return Settings.model_validate(
        {
            "paths": {
                "templates_dir": ROOT / "templates",
                "data_dir": Path(tempfile.gettempdir()) / "mailer-bench-unused",  # not created
            },
            "web": {"base_url": "https://lists.example.org"},
            "sender": {"from_address": SENDER_ADDRESS, "from_name": SENDER_NAME, "domain": DOMAIN},
        }
    )


def composer(
    config: Settings, content: Content, action: str, event: EventInfo | None = None
) -> Composer:
    send = SendInfo(
        content=content,
        list=LIST,
        sender_name=SENDER_NAME,
        sender_address=SENDER_ADDRESS,
        action=action,
        now=NOW,
        event=event,
    )
    return make_composer(
        config,
        renderer=Renderer(config.paths.templates_dir),
        signer=Signer(["bench-secret-key"]),
        send=send,
        send_id=42,
        trace=f"c42/{action}",
    )


Maker = Callable[[Composer, Sequence[Recipient]], Callable[[], int]]


def measure(work: Callable[[], int], *, warm_up: Callable[[], object]) -> list[float]:
    """Items per second of ``work`` (which returns how many it did), REPEATS times."""
    warm_up()
    rates = []
    for _ in range(REPEATS):
        gc.collect()
        start = time.perf_counter()
        done = work()
        rates.append(done / (time.perf_counter() - start))
    return rates


def render_only(comp: Composer, people: Sequence[Recipient]) -> Callable[[], int]:
    links = [
        links_for(comp.signer, comp.base_url, public_id=f"p{r.id}", list_id=LIST.id) for r in people
    ]
    compiled = comp.compiled

    def work() -> int:
        for recipient, link in zip(people, links, strict=True):
            compiled.render(recipient, link)
        return len(people)

    return work


def build_only(comp: Composer, people: Sequence[Recipient]) -> Callable[[], int]:
    prepared: list[tuple[Recipient, Rendered, Links, str]] = []
    for r in people:
        link = links_for(comp.signer, comp.base_url, public_id=f"p{r.id}", list_id=LIST.id)
        message_id = make_message_id(send_id=42, subscriber_id=r.id, domain=DOMAIN)
        prepared.append((r, comp.compiled.render(r, link), link, message_id))
    builder = comp.builder

    def work() -> int:
        for recipient, rendered, link, message_id in prepared:
            builder.build(
                recipient=recipient,
                rendered=rendered,
                message_id=message_id,
                unsubscribe_url=link.unsubscribe,
                date=NOW,
            )
        return len(prepared)

    return work


def compose(comp: Composer, people: Sequence[Recipient]) -> Callable[[], int]:
    def work() -> int:
        for recipient in people:
            comp.compose(recipient, date=NOW)
        return len(people)

    return work


def compose_reference(comp: Composer, people: Sequence[Recipient]) -> Callable[[], int]:
    """What ``compose`` does (sign links, render, Message-ID) with ``build_reference``."""
    identity, calendar, compiled = comp.builder.identity, comp.builder.calendar, comp.compiled

    def work() -> int:
        for r in people:
            link = links_for(comp.signer, comp.base_url, public_id=f"p{r.id}", list_id=LIST.id)
            build_reference(
                identity,
                recipient=r,
                rendered=compiled.render(r, link),
                message_id=make_message_id(send_id=42, subscriber_id=r.id, domain=DOMAIN),
                unsubscribe_url=link.unsubscribe,
                date=NOW,
                calendar=calendar,
            )
        return len(people)

    return work


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def row(label: str, rates: list[float]) -> str:
    runs = ", ".join(f"{r:,.0f}" for r in rates)
    return f"  {label:<46} {statistics.median(rates):>8,.0f} /s   (runs: {runs})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--recipients", type=int, default=2000, help="distinct recipients (default 2000)"
    )
    parser.add_argument("--quick", action="store_true", help="300 recipients: a smoke run")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generator (default 1)")
    args = parser.parse_args()
    count = 300 if args.quick else args.recipients
    if count < 1:
        parser.error("--recipients must be at least 1")

    began = time.perf_counter()
    config = settings()
    people = recipients(count, args.seed)
    body = newsletter_body(args.seed)
    letter = Content(
        name="lettre-janvier-2024",
        kind="newsletter",
        subject="La lettre du réseau CRI-IMIDIATE — janvier 2024",
        body=body,
    )
    news = composer(config, letter, "newsletter")
    day = campaigns.load(ROOT / "campaigns" / "journee-recherche-2024.toml")
    invite = composer(config, day.content, "invitation", day.event(domain=DOMAIN))
    french = [dataclasses.replace(r, locale="fr") for r in people]

    claire = Recipient(id=7, email="claire.dubois@example.org", name="Claire Dubois", locale="fr")
    sample = news.compose(claire, date=NOW)
    sample_invite = invite.compose(claire, date=NOW)

    print(
        f"mailer render + MIME build, per core (one process, one thread): {count:,} distinct "
        f"recipients (locales: {sum(r.locale == 'en' for r in people):,} en, the rest fr), "
        f"seed {args.seed}"
    )
    print(
        f"  Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.machine()}, {_cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} "
        f"{platform.release()}"
    )
    print(
        f"  newsletter (fr): Markdown body {len(body.encode()):,} bytes; one message "
        f"{len(sample.message.data):,} bytes (HTML {len(sample.rendered.html.encode()):,}, "
        f"text {len(sample.rendered.text.encode()):,} before encoding)"
    )
    print(
        f"  event invitation (fr, .ics attached): one message "
        f"{len(sample_invite.message.data):,} bytes"
    )
    print(f"  median of {REPEATS} runs over every recipient, after a warm-up of {WARM_UP}")
    print()

    def run(label: str, make: Maker, comp: Composer, who: list[Recipient]) -> float:
        rates = measure(make(comp, who), warm_up=make(comp, who[:WARM_UP]))
        print(row(label, rates), flush=True)
        return statistics.median(rates)

    print("French newsletter, fr/en recipients")
    run("render only (CompiledSend.render)", render_only, news, people)
    run("fast MIME build only (MessageBuilder.build)", build_only, news, people)
    fast = run("render + fast build (Composer.compose)", compose, news, people)
    slow = run("render + reference build (build_reference)", compose_reference, news, people)
    print("French event invitation (.ics attached), every recipient in French")
    event = run("render + fast build (Composer.compose)", compose, invite, french)
    print()
    print(f"headline: {fast:,.0f} renders + MIME builds per second per core (French newsletter)")
    print(f"          {event:,.0f} per second per core for a French event invitation with .ics")
    print(f"fast / reference build (both with the render): {fast / slow:.2f}x")
    print(f"total {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
