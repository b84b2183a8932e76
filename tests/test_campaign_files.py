"""Campaign files that staff (or someone with write access to the folder) get wrong or abuse:
paths out of their folders, header injection, unbounded dates, files that crash the parser."""

from __future__ import annotations

import mailbox
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailer import campaigns
from mailer.campaigns import CampaignFileError

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

ANNOUNCEMENT = """
name = "news"
kind = "announcement"
lists = ["researchers"]
subject = "Nouvelles du réseau"
body = "Bonjour"
"""

EVENT = """
name = "journee"
kind = "event"
lists = ["researchers"]
body = "Programme"
[event]
title = "Journée de recherche"
start = 2027-01-15T09:00:00
end = 2027-01-15T17:30:00
reminders = ["7d"]
"""


def write(folder: Path, text: str, name: str = "campaign.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, *, templates_dir: Path | None = None) -> str:
    """The one-line error that loading and planning ``path`` gives."""

    def load_and_plan() -> None:
        campaign = campaigns.load(path, templates_dir=templates_dir)
        campaigns.plan(campaign, now=NOW, domain="example.org")

    with pytest.raises(CampaignFileError) as caught:
        load_and_plan()
    text = str(caught.value)
    assert "\n" not in text, text
    return text


# --- item 1: bodies and templates only from their folders -------------------------------------


@pytest.mark.parametrize("body_file", ["/etc/passwd", "../secret.md", "sub/../../secret.md"])
def test_a_body_file_outside_the_campaign_folder_is_refused(tmp_path: Path, body_file: str) -> None:
    """body_file names a file in the campaign's folder (or below), never elsewhere."""
    (tmp_path / "secret.md").write_text("secret", encoding="utf-8")
    text = ANNOUNCEMENT.replace('body = "Bonjour"', f'body_file = "{body_file}"')
    path = write(tmp_path / "campaigns", text)
    message = load_error(path)
    assert message.startswith(f"{path}: body_file: ")
    assert "outside the campaign's folder" in message
    assert "secret" not in message.replace("secret.md", "")


def test_a_body_file_symlinked_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    """A symlink in the campaigns folder is resolved: pointing outside is refused."""
    (tmp_path / "secret.md").write_text("secret", encoding="utf-8")
    folder = tmp_path / "campaigns"
    folder.mkdir()
    (folder / "body.md").symlink_to(tmp_path / "secret.md")
    path = write(folder, ANNOUNCEMENT.replace('body = "Bonjour"', 'body_file = "body.md"'))
    assert "outside the campaign's folder" in load_error(path)


def test_a_body_file_in_the_folder_or_below_is_read(tmp_path: Path) -> None:
    """The normal case still works, a sub-folder included."""
    folder = tmp_path / "campaigns"
    (folder / "bodies").mkdir(parents=True)
    (folder / "bodies" / "news.md").write_text("Le texte", encoding="utf-8")
    path = write(folder, ANNOUNCEMENT.replace('body = "Bonjour"', 'body_file = "bodies/news.md"'))
    assert campaigns.load(path).content.body == "Le texte"


@pytest.mark.parametrize("template", ["../../etc/passwd", "/etc/passwd", "email/event", "a.b"])
def test_a_template_is_a_name_not_a_path(tmp_path: Path, template: str) -> None:
    """template names a template kind in the templates folder; a path is refused."""
    path = write(tmp_path, ANNOUNCEMENT + f'template = "{template}"\n')
    message = load_error(path)
    assert message.startswith(f"{path}: template: ")
    assert "name of a template" in message


def test_a_template_must_exist_in_the_templates_folder(tmp_path: Path) -> None:
    """With the templates folder known (check, create), a missing template is named."""
    templates = tmp_path / "templates"
    (templates / "email").mkdir(parents=True)
    (templates / "email" / "seminar.fr.html").write_text("{{ body }}", encoding="utf-8")
    ok = write(tmp_path, ANNOUNCEMENT + 'template = "seminar"\n', "ok.toml")
    assert campaigns.load(ok, templates_dir=templates).content.template == "seminar"
    missing = write(tmp_path, ANNOUNCEMENT + 'template = "webinar"\n', "missing.toml")
    message = load_error(missing, templates_dir=templates)
    assert message.startswith(f"{missing}: template: ")
    assert "email/webinar.fr.html" in message


def test_a_template_symlinked_out_of_the_templates_folder_is_refused(tmp_path: Path) -> None:
    """A template file that is a link to a file outside the templates folder is refused."""
    templates = tmp_path / "templates"
    (templates / "email").mkdir(parents=True)
    (tmp_path / "passwd").write_text("root:x:0:0", encoding="utf-8")
    (templates / "email" / "seminar.fr.html").symlink_to(tmp_path / "passwd")
    path = write(tmp_path, ANNOUNCEMENT + 'template = "seminar"\n')
    message = load_error(path, templates_dir=templates)
    assert message.startswith(f"{path}: template: ")
    assert "outside the templates folder" in message


# --- item 2: header-bound values --------------------------------------------------------------

CONTROLS = ["\r", "\n", "\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x00", "\x1b", "\u202e"]


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
@pytest.mark.parametrize(
    ("field", "template"),
    [
        ("subject", 'subject = "Bonjour{c}Bcc: everyone@example.org"'),
        ("sender.name", '[sender]\nname = "Réseau{c}Bcc: x@example.org"'),
        ("sender.address", '[sender]\naddress = "news@example.org{c}Bcc: x@example.org"'),
    ],
)
def test_header_values_refuse_line_breaks_and_controls(
    tmp_path: Path, char: str, field: str, template: str
) -> None:
    """Subject, sender name and sender address refuse every line break and control."""
    escaped = char.encode("unicode_escape").decode("ascii").replace("\\x", "\\u00")
    line = template.replace("{c}", escaped)
    text = ANNOUNCEMENT.replace('subject = "Nouvelles du réseau"\n', "")
    path = write(tmp_path, (text + line + "\n") if field != "subject" else (line + "\n" + text))
    message = load_error(path)
    assert message.startswith(f"{path}: {field}: "), message


@pytest.mark.parametrize(
    "address",
    [
        "a@example.org, b@example.org",
        "a@example.org,b@example.org",
        "a@example.org;b@example.org",
        "Réseau <a@example.org>",
        "not-an-address",
    ],
)
def test_the_sender_address_is_one_plain_address(tmp_path: Path, address: str) -> None:
    """sender.address is exactly one address, without a display name."""
    path = write(tmp_path, ANNOUNCEMENT + f'[sender]\naddress = "{address}"\n')
    message = load_error(path)
    assert message.startswith(f"{path}: sender.address: "), message


def test_a_good_sender_is_kept(tmp_path: Path) -> None:
    """A display name with commas and an internationalised address are fine."""
    path = write(
        tmp_path,
        ANNOUNCEMENT + '[sender]\nname = "Réseau, équipe 👩‍🔬"\naddress = "news@exämple.org"\n',
    )
    campaign = campaigns.load(path)
    assert campaign.data.sender.name == "Réseau, équipe 👩‍🔬"
    assert campaign.data.sender.address == "news@exämple.org"


# --- item 3: dates, offsets, parser limits ----------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (('body = "Bonjour"', 'body = "x"\nsend_at = 9999-12-31T23:30:00'), "send_at", "years ahead"),
        (('body = "Bonjour"', 'body = "x"\nsend_at = 0001-01-01T00:10:00'), "send_at", "has passed"),
    ],
)  # fmt: skip
def test_an_announcement_time_is_bounded(
    tmp_path: Path, change: tuple[str, str], field: str, message: str
) -> None:
    """send_at far ahead or long past is one clear line."""
    path = write(tmp_path, ANNOUNCEMENT.replace(*change))
    text = load_error(path)
    assert text.startswith(f"{path}: {field}: "), text
    assert message in text


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (('reminders = ["7d"]', 'reminders = ["999999d"]'), "event.reminder", "at most 365 days"),
        (('reminders = ["7d"]', 'reminders = ["99999999999999999999999h"]'), "event.reminder", "at most 365 days"),
        (('start = 2027-01-15T09:00:00', 'start = 2027-01-15T09:00:00+01:00'), "event", "both with a UTC offset or both without"),
        (('end = 2027-01-15T17:30:00', 'end = 2027-01-15T17:30:00Z'), "event", "both with a UTC offset or both without"),
        (("2027-01-15T", "9999-12-31T"), "event.start", "years ahead"),
        (('end = 2027-01-15T17:30:00', 'end = 9999-12-31T17:30:00'), "event.end", "years ahead"),
        (('reminders = ["7d"]', 'reminders = ["7d"]\nannounce = 0001-01-01T00:00:00'), "event.announce", "has passed"),
    ],
)  # fmt: skip
def test_event_times_and_offsets_are_bounded(
    tmp_path: Path, change: tuple[str, str], field: str, message: str
) -> None:
    """Offsets past a year, mixed aware and naive times, years like 9999: one clear line."""
    old, new = change
    assert old in EVENT
    path = write(tmp_path, EVENT.replace(old, new))
    text = load_error(path)
    assert text.startswith(f"{path}: {field}"), text
    assert message in text


def test_a_newsletter_end_far_ahead_is_fine_but_not_year_one(tmp_path: Path) -> None:
    """newsletter.until in 9999 just means no end; in year 1 it is a clear error."""
    text = 'name = "n"\nkind = "newsletter"\nlists = ["l"]\n[newsletter]\ncron = "0 9 1 * *"\n'
    far = write(tmp_path, text + "until = 9999-12-31T23:59:00\n", "far.toml")
    planned, _ = campaigns.plan(campaigns.load(far), now=NOW, domain="example.org")
    assert len(planned) == 3
    past = write(tmp_path, text + "until = 0001-01-01T00:00:00\n", "past.toml")
    assert load_error(past).startswith(f"{past}: newsletter.until: ")


@pytest.mark.parametrize("opening", ["[", "{a="], ids=["arrays", "tables"])
def test_a_file_nested_thousands_deep_is_a_clear_error(tmp_path: Path, opening: str) -> None:
    """tomllib recurses: a file nested 3,000 deep is reported, not a RecursionError."""
    closing = "]" if opening == "[" else "}"
    path = write(tmp_path, "x = " + opening * 3000 + "1" + closing * 3000 + "\n")
    text = load_error(path)
    assert text.startswith(f"{path}: not valid TOML"), text
    assert "nested too deeply" in text


# --- the commands: check, create, preview, test -----------------------------------------------

ROOT = Path(__file__).resolve().parent.parent


def mailer(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``mailer ARGS`` as a user runs it, with only the given MAILER_ variables."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    clean.update(COLUMNS="200", **env)
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=cwd, env=clean, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def errors(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.fixture(scope="module")
def initialised(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A work folder like a fresh checkout after `mailer init`, copied by `project`."""
    base = tmp_path_factory.mktemp("initialised")
    for folder in ("lists", "templates", "campaigns"):
        shutil.copytree(ROOT / folder, base / folder)
    result = mailer(base, "init")
    assert result.returncode == 0, result.stderr
    return base


@pytest.fixture
def project(initialised: Path, tmp_path: Path) -> Path:
    shutil.copytree(initialised, tmp_path / "project")
    return tmp_path / "project"


@pytest.mark.timeout(120)
def test_check_names_a_list_that_does_not_exist(project: Path) -> None:
    """`campaign check` looks the lists up: an unknown one is one line naming it."""
    path = write(project / "campaigns", ANNOUNCEMENT.replace('["researchers"]', '["researchers", "alumni"]'), "x.toml")  # fmt: skip
    result = mailer(project, "campaign", "check", "campaigns/x.toml")
    assert result.returncode == 2, result
    assert errors(result) == [
        "error: campaigns/x.toml: lists: unknown list 'alumni'; known lists: clinicians, "
        "patient-associations, researchers"
    ]
    assert path.is_file()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("command", ["check", "create", "preview"])
def test_commands_refuse_a_body_or_template_out_of_their_folders(
    project: Path, command: str
) -> None:
    """check, create and preview all refuse /etc/passwd as a body and a path as a template."""
    args = ["campaign", command] if command != "preview" else [command]
    write(project / "campaigns", ANNOUNCEMENT.replace('body = "Bonjour"', 'body_file = "/etc/passwd"'), "body.toml")  # fmt: skip
    result = mailer(project, *args, "campaigns/body.toml")
    assert result.returncode == 2, result
    assert errors(result) == [
        "error: campaigns/body.toml: body_file: '/etc/passwd' is outside the campaign's folder "
        f"({(project / 'campaigns').resolve()}); keep the file there"
    ]
    write(project / "campaigns", ANNOUNCEMENT + 'template = "../../etc/passwd"\n', "template.toml")
    result = mailer(project, *args, "campaigns/template.toml")
    assert result.returncode == 2, result
    [line] = errors(result)
    assert line.startswith("error: campaigns/template.toml: template: expected the name of a")
    assert "root:" not in result.stdout + result.stderr


@pytest.mark.timeout(120)
def test_check_and_create_name_a_missing_template(project: Path) -> None:
    """A template kind that has no file in the templates folder fails check and create."""
    write(project / "campaigns", ANNOUNCEMENT + 'template = "seminar"\n', "x.toml")
    for command in ("check", "create"):
        result = mailer(project, "campaign", command, "campaigns/x.toml")
        assert result.returncode == 2, result
        [line] = errors(result)
        assert line.startswith("error: campaigns/x.toml: template: no templates/email/seminar")


@pytest.mark.timeout(120)
def test_create_again_says_there_is_nothing_new(project: Path) -> None:
    """A second `campaign create` of the same file schedules nothing and prints no times."""
    first = mailer(project, "campaign", "create", "campaigns/actualites-car-t.toml")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("campaign actualites-car-t stored; 1 new send(s):")
    assert "announce" in first.stdout
    again = mailer(project, "campaign", "create", "campaigns/actualites-car-t.toml")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "campaign actualites-car-t stored; nothing new to schedule: its 1 send(s) were stored "
        "before (see `mailer campaign show actualites-car-t`)"
    ]


@pytest.mark.timeout(120)
def test_campaign_test_as_looks_in_every_list(project: Path) -> None:
    """--as finds a member of the campaign's second list, and names every list when absent."""
    created = mailer(project, "campaign", "create", "campaigns/actualites-car-t.toml")
    assert created.returncode == 0, created.stderr
    member = "marc.lefevre@example.org"  # on researchers only, not the first list stored
    result = mailer(
        project, "campaign", "test", "actualites-car-t", "--to", "staff@example.org",
        "--as", member,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"as {member} would get it" in result.stdout
    box = mailbox.Maildir(project / "data" / "outbox", create=False)
    [message] = list(box)
    assert "<researchers." in str(message["List-Id"])
    absent = mailer(
        project, "campaign", "test", "actualites-car-t", "--to", "staff@example.org",
        "--as", "nobody@example.org",
    )  # fmt: skip
    assert absent.returncode == 2
    [line] = errors(absent)
    assert line.startswith(
        "error: nobody@example.org is not a subscribed member of any list of campaign "
        "actualites-car-t ("
    )
    assert all(slug in line for slug in ("researchers", "clinicians", "patient-associations"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}",
            "took more than 2 s for one recipient",
        ),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "calls itself too deeply"),
    ],
    ids=["loops", "recursion"],
)
def test_preview_of_a_runaway_body_is_one_clear_error(
    project: Path, body: str, expected: str
) -> None:
    """preview stops a body that would run for hours or recurse without end: one line."""
    (project / "campaigns" / "slow.md").write_text(body, encoding="utf-8")
    text = ANNOUNCEMENT.replace('body = "Bonjour"', 'body_file = "slow.md"')
    write(project / "campaigns", text, "slow.toml")
    started = time.monotonic()
    result = mailer(project, "preview", "campaigns/slow.toml")
    assert time.monotonic() - started < 20
    assert result.returncode == 2, result
    [line] = errors(result)
    assert expected in line


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('body = "Bonjour"', 'body = "x"\nsend_at = 9999-12-31T23:30:00'), "send_at: 9999-12-31 is more than 10 years ahead"),
        (('body = "Bonjour"', 'body = "x"\n[sender]\naddress = "a@example.org, b@example.org"'), "sender.address: give one address"),
        (('subject = "Nouvelles du réseau"', 'subject = "Nouvelles\\u2028Bcc: x@example.org"'), "subject: contains LINE SEPARATOR (U+2028)"),
    ],
    ids=["year-9999", "two-senders", "line-separator"],
)  # fmt: skip
def test_check_reports_header_and_date_mistakes_in_one_line(
    project: Path, change: tuple[str, str], expected: str
) -> None:
    """campaign check: the mistakes of the issue, each one line naming file and field."""
    write(project / "campaigns", ANNOUNCEMENT.replace(*change), "x.toml")
    result = mailer(project, "campaign", "check", "campaigns/x.toml")
    assert result.returncode == 2, result
    [line] = errors(result)
    assert line.startswith(f"error: campaigns/x.toml: {expected}"), line


def test_the_event_title_is_header_text_too(tmp_path: Path) -> None:
    """The event's title goes into subjects and the calendar: no line breaks or controls."""
    path = write(
        tmp_path, EVENT.replace("Journée de recherche", "Journée\\u2028Bcc: x@example.org")
    )
    assert load_error(path).startswith(f"{path}: event.title: contains LINE SEPARATOR")


def test_a_campaign_as_data_validates_again_into_the_same_campaign(tmp_path: Path) -> None:
    """What the console stores (``Campaign.spec``: JSON types, bodies inlined) is read back by
    ``from_data`` into the same campaign, local times included (text in JSON)."""
    from mailer.campaigns import from_data

    (tmp_path / "day.fr.md").write_text("Bonjour {{ name }}", encoding="utf-8")
    path = tmp_path / "day.toml"
    path.write_text(
        'name = "day"\nkind = "event"\nlists = ["researchers"]\n'
        '[content.fr]\nbody_file = "day.fr.md"\n[content.en]\nbody = "Hello"\n'
        '[event]\ntitle = "Journée"\nstart = 2027-01-15T09:00:00\nannounce = 2027-01-02T10:00:00\n'
        'reminders = ["7d"]\n',
        encoding="utf-8",
    )
    first = campaigns.load(path)
    spec = first.spec()
    assert spec["content"]["fr"] == {"subject": "", "body": "Bonjour {{ name }}", "preheader": ""}
    again = from_data(spec, source=Path("day"))
    assert again.data == first.data.model_copy(
        update={"content": {**first.data.content, "fr": again.data.content["fr"]}}
    )
    assert again.data.event is not None
    assert isinstance(again.data.event.announce, datetime)
    assert again.content == first.content


def test_data_from_the_console_may_not_name_a_body_file() -> None:
    from mailer.campaigns import from_data

    with pytest.raises(campaigns.CampaignFileError, match=r"^web: body_file: give the body"):
        from_data(
            {"name": "x", "kind": "announcement", "lists": ["a"], "body_file": "/etc/passwd"},
            source=Path("web"),
        )
