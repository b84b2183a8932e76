"""Spam score of each shipped template's sample message, checked offline with SpamAssassin.

Each message is built the way a send builds it (``make_composer`` and ``compose``, the
shipped templates and campaign files) and given to ``spamassassin -L -t``: local tests
only, no network, no DNS blocklists, so the score depends on the message alone. ``HOME``
points at the test's temporary folder and ``-x`` creates no preferences file, so a
developer's own preferences or trained Bayes database never change the result; Bayes
state, if any, goes to that folder. (SpamAssassin itself still makes an empty
``~/.spamassassin`` for the real user, found from the password database, not ``HOME``: its
global state folder.) Each score must stay at or under 2.0; SpamAssassin's spam threshold
is 5.0.

Without SpamAssassin the tests are skipped with the reason, except under CI (the ``CI``
variable set), where that fails: CI installs the ``spamassassin`` package.

SpamAssassin takes about 2 s a message, nearly all of it loading its rules: the messages are
built one after the other, then checked side by side, one process per core (each its own
process, message and ``HOME``, as when they ran one after the other); each case's test reads
its own verdict.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer import campaigns
from mailer.compose import make_composer
from mailer.models import Content, ListInfo, Recipient, SendInfo
from mailer.render import Renderer
from mailer.settings import Settings
from mailer.tokens import Signer

ROOT = Path(__file__).resolve().parent.parent
CAMPAIGNS = ROOT / "campaigns"
SPAMASSASSIN = Path("/usr/bin/spamassassin")
MAX_SCORE = 2.0
NOW = datetime(2024, 1, 8, 10, 0, tzinfo=UTC)  # a week before the research day
LIST = ListInfo(
    id=1, slug="researchers", title="Chercheurs du réseau CRI-IMIDIATE", default_locale="fr"
)
NEWSLETTER_BODIES = {
    "fr": """\
## Les nouvelles du réseau

Le réseau **CRI-IMIDIATE** a accueilli deux nouveaux centres ce trimestre, à Lille et à
Toulouse. Les équipes présenteront leurs travaux lors de la prochaine réunion plénière.

## À lire ce mois-ci

- la mise à jour du protocole national de diagnostic et de soins des vascularites ;
- un point d’étape sur les essais de cellules CAR-T dans le lupus ;
- le compte rendu de la journée des associations de patients.

Retrouvez [le programme de l’année](https://cri-imidiate.example.org/programme) sur notre
site.
""",
    "en": """\
## News from the network

The **CRI-IMIDIATE** network welcomed two new centres this quarter, in Lille and in
Toulouse. The teams will present their work at the next plenary meeting.

## Worth reading this month

- the update of the national diagnosis and care protocol for vasculitis;
- a progress report on CAR-T cell trials in lupus;
- the minutes of the patient associations' day.

See [the programme of the year](https://cri-imidiate.example.org/programme) on our
website.
""",
}


@dataclass(frozen=True)
class Case:
    kind: str  # announcement, event or newsletter
    action: str
    locale: str
    campaign: str | None = None  # a file of campaigns/; None: the newsletter written above

    @property
    def id(self) -> str:
        action = "" if self.action == self.kind else f"-{self.action}"
        return f"{self.kind}{action}-{self.locale}"


CASES = [
    Case("announcement", "announcement", "fr", "actualites-car-t.toml"),
    Case("announcement", "announcement", "en", "actualites-car-t.toml"),
    Case("event", "invitation", "fr", "journee-recherche-2024.toml"),
    Case("event", "invitation", "en", "journee-recherche-2024.toml"),
    Case("event", "reminder", "en", "journee-recherche-2024.toml"),
    Case("event", "update", "fr", "journee-recherche-2024.toml"),
    Case("event", "cancellation", "fr", "journee-recherche-2024.toml"),
    Case("newsletter", "newsletter", "fr"),
    Case("newsletter", "newsletter", "en"),
]


@pytest.fixture(scope="session")
def spamassassin() -> Path:
    if not SPAMASSASSIN.is_file():
        reason = f"{SPAMASSASSIN} not found: apt-get install spamassassin"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must have it (.ci/run installs it)")
        pytest.skip(reason)
    return SPAMASSASSIN


def build_message(case: Case, tmp_path: Path) -> bytes:
    """The bytes a send would hand to the transport for ``case``, addressed to Claire."""
    settings = Settings.model_validate(
        {
            "paths": {
                "data_dir": tmp_path / "data",
                "lists_dir": tmp_path / "lists",
                "templates_dir": ROOT / "templates",
            },
            "web": {"base_url": "https://lists.example.org"},
            "sender": {
                "from_address": "news@cri-imidiate.example.org",
                "from_name": "Réseau CRI-IMIDIATE",
                "domain": "cri-imidiate.example.org",
            },
        }
    )
    event = None
    if case.campaign is None:
        content = Content(
            name="lettre-janvier-2024",
            kind="newsletter",
            body=NEWSLETTER_BODIES[case.locale],
        )
    else:
        campaign = campaigns.load(CAMPAIGNS / case.campaign)
        content = campaign.content
        cancelled = case.action == "cancellation"
        event = campaign.event(
            domain=settings.sender.domain,
            sequence=1 if cancelled else 0,
            status="cancelled" if cancelled else "confirmed",
        )
    composer = make_composer(
        settings,
        renderer=Renderer(settings.paths.templates_dir),
        signer=Signer(["test-secret-key"]),
        send=SendInfo(
            content=content,
            list=LIST,
            sender_name=settings.sender.from_name,
            sender_address=settings.sender.from_address,
            action=case.action,
            now=NOW,
            event=event,
        ),
        send_id=1,
        trace=f"c1/{case.action}",
    )
    recipient = Recipient(
        id=7, email="claire.dubois@example.org", name="Claire Dubois", locale=case.locale
    )
    return composer.compose(recipient, date=NOW).message.data


@dataclass(frozen=True)
class Verdict:
    score: float
    rules: str  # the tests= list of X-Spam-Status
    details: str  # the "Content analysis details" table


def spam_run(spamassassin: Path, message: bytes, home: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``spamassassin -L -t`` on ``message``, with ``home`` as its ``HOME``."""
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(spamassassin), "-L", "-t", "-x"],
        input=message,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(home)},
    )


def spam_check(result: subprocess.CompletedProcess[bytes]) -> Verdict:
    """Read the X-Spam-Status header of what ``spamassassin -L -t`` printed."""
    output = result.stdout.decode("utf-8", "replace").replace("\r\n", "\n")
    errors = result.stderr.decode("utf-8", "replace")
    head = re.sub(r"\n[ \t]+", " ", output.split("\n\n", 1)[0])  # unfolded header lines
    status = re.search(r"^X-Spam-Status: (?:Yes|No), score=(-?\d+(?:\.\d+)?)(.*)$", head, re.M)
    if result.returncode != 0 or status is None:
        pytest.fail(
            f"spamassassin exited with {result.returncode}, X-Spam-Status "
            f"{'found' if status else 'missing'}\nstderr: {errors[-2000:]}\n"
            f"stdout: {output[:2000]}"
        )
    tests = re.search(r"\btests=(.*?)(?:\s+\w+=|$)", status.group(2))
    rules = re.sub(r"\s+", "", tests.group(1)) if tests else ""
    _, found, details = output.partition("Content analysis details:")
    return Verdict(
        score=float(status.group(1)),
        rules=rules,
        details=(found + details).strip() if found else "(no report)",
    )


def _check_all(
    spamassassin: Path, folder: Path, pool: ThreadPoolExecutor
) -> dict[str, Future[subprocess.CompletedProcess[bytes]]]:
    """Each case's message built here, then given to its own SpamAssassin in ``pool``; a
    case whose message cannot be built gets the exception, for its test alone. The first
    runs alone: SpamAssassin makes the real user's ``~/.spamassassin`` if missing, and the
    others find it made."""
    checks: dict[str, Future[subprocess.CompletedProcess[bytes]]] = {}
    for n, case in enumerate(CASES):
        if n == 1:
            wait(checks.values())
        try:
            message = build_message(case, folder / case.id)
        except Exception as exc:  # raised again by the case's own test
            checks[case.id] = Future()
            checks[case.id].set_exception(exc)
            continue
        checks[case.id] = pool.submit(spam_run, spamassassin, message, folder / case.id / "home")
    return checks


@pytest.fixture(scope="module")
def spam_checks(
    spamassassin: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[bytes]]]]:
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        checks = _check_all(spamassassin, tmp_path_factory.mktemp("spam"), pool)
        yield checks
        for check in checks.values():
            check.cancel()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_sample_message_is_not_spam(
    case: Case, spam_checks: dict[str, Future[subprocess.CompletedProcess[bytes]]]
) -> None:
    """The template's sample message scores at most 2.0 with SpamAssassin's local tests."""
    verdict = spam_check(spam_checks[case.id].result())
    print(f"{case.id}: SpamAssassin score {verdict.score} ({verdict.rules or 'no rules'})")
    assert verdict.score <= MAX_SCORE, (
        f"{case.id}: SpamAssassin score {verdict.score} > {MAX_SCORE}; rules: {verdict.rules}\n"
        f"{verdict.details}"
    )
