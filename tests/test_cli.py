"""The `mailer` command as a user runs it: real files, real exit codes; the daemon (and the
`python -m mailer` entry) as a real process, the other commands in this process
(tests/cli_support.py: same arguments, folder and environment, without Python's start-up)."""

from __future__ import annotations

import csv
import email
import io
import json
import mailbox
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from email import policy
from pathlib import Path

import httpx
import pytest

from tests import cli_support
from tests.cli_support import Ran

ROOT = Path(__file__).resolve().parent.parent
MAILER = [sys.executable, "-m", "mailer"]

pytestmark = pytest.mark.timeout(120)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_WEB__PORT"] = "0"  # any free port: tests run side by side
    env.update(extra)
    env["COLUMNS"] = "200"
    return env


def mailer(
    cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> Ran:
    return cli_support.mailer(cwd, *args, env=env or clean_env(), stdin=stdin)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder laid out like a fresh checkout: the shipped example lists and templates, no
    data yet."""
    shutil.copytree(ROOT / "lists", tmp_path / "lists")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    return tmp_path


def test_init_creates_the_database_and_imports_the_example_lists(workdir: Path) -> None:
    """`mailer init` on embedded defaults: SQLite in ./data, every example list imported."""
    result = mailer(workdir, "init")
    assert result.returncode == 0, result.stderr
    assert (workdir / "data" / "mailer.sqlite3").is_file()
    # Claire is on two lists: the second file subscribes the stored subscriber
    assert "researchers: 6 rows read; 5 added, 1 existing subscribers added" in result.stdout
    shown = mailer(workdir, "lists", "show")
    assert shown.returncode == 0
    rows = {
        cells[0]: cells
        for line in shown.stdout.splitlines()
        if (cells := [c.strip() for c in line.split("│") if c.strip()])
    }
    assert rows["researchers"] == [
        "researchers", "Chercheurs du réseau CRI-IMIDIATE", "fr", "single", "6", "0", "0", "0"
    ]  # fmt: skip
    assert rows["patient-associations"][3:5] == ["double", "4"]
    assert "clinicians" in rows
    again = mailer(workdir, "init")
    assert "researchers: 6 rows read; 6 unchanged\n" in again.stdout


def test_daemon_starts_and_stops_cleanly_on_sigterm(workdir: Path) -> None:
    """`mailer run` comes up on defaults and exits 0 on SIGTERM, saying so."""
    process = subprocess.Popen(
        [*MAILER, "run"],
        cwd=workdir,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        started = ""
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            started += line
            if "mailer started" in line or not line:
                break
        assert "mailer started" in started, started
        assert "capture to data/outbox" in started
        # the daemon serves the pages and the health check on the port it was given (any)
        url = re.search(r"web pages (http://127\.0\.0\.1:\d+)", started)
        assert url is not None, started
        health = httpx.get(f"{url[1]}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["scheduler"] == "ok"
        # a second daemon (or a foreground send) on the same SQLite file is refused
        for args in (("run",), ("send", "run", "1")):
            second = mailer(workdir, *args)
            assert second.returncode != 0
            assert (
                f"error: another mailer process (pid {process.pid}) is sending from "
                in second.stderr
            ), second.stderr
            assert "use PostgreSQL (MAILER_DATABASE__URL) to run several" in second.stderr
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "mailer stopped cleanly" in rest


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        (
            {"MAILER_SMTP__PORT": "abc"},
            ["config", "show"],
            "error: MAILER_SMTP__PORT (in environment): Input should be a valid integer",
        ),
        (
            {"MAILER_SMTP__HOTS": "relay"},
            ["config", "show"],
            "error: MAILER_SMTP__HOTS (in environment): unknown setting; did you mean",
        ),
        (
            {"MAILER_DATABASE__URL": "postgresql+asyncpg://u:secret@127.0.0.1:1/mailer"},
            ["db", "upgrade"],
            "error: cannot use the database postgresql+asyncpg://u:***@127.0.0.1:1/mailer",
        ),
        (
            {"MAILER_PATHS__DATA_DIR": "lists/README.md/data"},
            ["init"],
            "error: data folder lists/README.md/data (MAILER_PATHS__DATA_DIR) is not writable",
        ),
        ({}, ["lists", "export", "alumni"], "error: unknown list 'alumni'"),
        ({}, ["lists", "import", "missing.csv"], "error: missing.csv: cannot be opened"),
    ],
    ids=["bad-value", "unknown-variable", "unreachable-db", "data-dir", "unknown-list", "no-file"],
)
def test_user_mistakes_are_one_clear_line_without_traceback(
    workdir: Path, env: dict[str, str], args: list[str], expected: str
) -> None:
    """A user mistake exits 2 with an `error:` line that names the culprit; no traceback."""
    result = mailer(workdir, *args, env=clean_env(**env))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(expected)
    assert "secret" not in result.stderr


def test_rejected_rows_are_listed_like_compiler_errors(workdir: Path) -> None:
    """`lists import` prints file:line: column: reason per bad row and exits 1."""
    (workdir / "alumni.csv").write_text(
        "email,name\nok@example.org,OK\nnot-an-address,Bad\n", encoding="utf-8"
    )
    result = mailer(workdir, "lists", "import", "alumni.csv", "--list", "alumni")
    assert result.returncode == 1
    assert "\nalumni.csv:3: email: 'not-an-address': " in result.stderr
    assert "alumni: 2 rows read; 1 added, 1 rejected\n" in result.stdout


def test_subscriber_commands(workdir: Path) -> None:
    """add, show, unsubscribe, suppress and remove work end to end on one address."""
    assert mailer(workdir, "init").returncode == 0
    added = mailer(
        workdir, "subscribers", "add", "Lea.Moreau@Example.org", "--list", "researchers",
        "--name", "Léa Moreau", "--locale", "fr",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "Lea.Moreau@example.org subscribed to researchers"
    shown = mailer(workdir, "subscribers", "show", "lea.moreau@example.org")
    assert "Léa Moreau" in shown.stdout
    assert "subscribed (cli)" in shown.stdout
    gone = mailer(workdir, "subscribers", "unsubscribe", "lea.moreau@example.org")
    assert gone.stdout.strip() == "lea.moreau@example.org: unsubscribed from 1 list(s)"
    again = mailer(workdir, "subscribers", "add", "lea.moreau@example.org", "--list", "researchers")
    assert again.returncode == 2
    assert "re-subscribe only at their request, with --force" in again.stderr
    suppressed = mailer(workdir, "subscribers", "suppress", "lea.moreau@example.org")
    assert suppressed.stdout.strip() == "lea.moreau@example.org: suppressed"
    erased = mailer(workdir, "subscribers", "remove", "lea.moreau@example.org", "--yes")
    assert erased.returncode == 0
    missing = mailer(workdir, "subscribers", "show", "lea.moreau@example.org")
    assert missing.returncode == 2
    assert "no subscriber with the address lea.moreau@example.org" in missing.stderr


def test_export_writes_a_file_atomically(workdir: Path) -> None:
    """`lists export -o` writes the CSV in full (through a .part file renamed at the end)."""
    assert mailer(workdir, "init").returncode == 0
    result = mailer(workdir, "lists", "export", "clinicians", "-o", "out.csv")
    assert result.returncode == 0, result.stderr
    text = (workdir / "out.csv").read_text(encoding="utf-8").splitlines()
    # attributes belong to the subscriber: Claire brings her "role" from the researchers list
    assert text[0] == "email,name,locale,timezone,organisation,role,speciality"
    assert len(text) == 6
    assert not list(workdir.glob("*.part"))


def test_config_show_masks_secrets(workdir: Path) -> None:
    """`config show` prints the effective settings with the password masked."""
    result = mailer(workdir, "config", "show", env=clean_env(MAILER_SMTP__PASSWORD="hunter2"))
    assert result.returncode == 0
    assert "hunter2" not in result.stdout
    assert "MAILER_SMTP__PASSWORD" in result.stdout
    assert "**********" in result.stdout


def test_schema_check_without_auto_upgrade(workdir: Path) -> None:
    """With auto-upgrade off, an old schema stops the daemon and says which command to run."""
    result = mailer(workdir, "run", env=clean_env(MAILER_DATABASE__AUTO_UPGRADE="false"))
    assert result.returncode == 2
    assert "run `mailer db upgrade`" in result.stderr


@pytest.fixture
def project(workdir: Path) -> Path:
    """The work folder with the example campaigns too."""
    shutil.copytree(ROOT / "campaigns", workdir / "campaigns")
    return workdir


def test_preview_writes_the_message_one_subscriber_gets(project: Path) -> None:
    """`preview` writes the .eml and .html for a member; --all checks every member."""
    assert mailer(project, "init").returncode == 0
    result = mailer(
        project, "preview", "campaigns/journee-recherche-2024.toml",
        "--subscriber", "john.okafor@example.org", "--action", "reminder", "--all",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "pre-flight: 6 members of researchers, 0 failed" in result.stdout
    eml = project / "data/preview/journee-recherche-2024-reminder-john.okafor@example.org.eml"
    message = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
    # John's locale is English: the English words of the campaign and of its event
    assert message["Subject"].startswith("Reminder: 8th CRI-IMIDIATE / FAI²R research day")
    assert message["To"].addresses[0].display_name == "John Okafor"
    assert "text/calendar" in [p.get_content_type() for p in message.walk()]
    assert (eml.parent / (eml.name.removesuffix(".eml") + ".html")).is_file()
    assert (project / "data" / "secret.key").is_file()


def test_preview_writes_under_the_configured_data_folder(project: Path) -> None:
    """With MAILER_PATHS__DATA_DIR elsewhere, the preview goes there, not to ./data."""
    env = clean_env(MAILER_PATHS__DATA_DIR=str(project / "elsewhere"))
    assert mailer(project, "init", env=env).returncode == 0
    result = mailer(project, "preview", "campaigns/actualites-car-t.toml", env=env)
    assert result.returncode == 0, result.stderr
    assert list((project / "elsewhere" / "preview").glob("*.eml"))
    assert not (project / "data").exists()


def test_preview_names_the_campaign_file_field_that_is_wrong(project: Path) -> None:
    """A mistake in a campaign file is reported as file: field: what is expected."""
    bad = project / "campaigns" / "bad.toml"
    bad.write_text(
        'name = "bad"\nkind = "event"\nlists = ["researchers"]\ntimezone = "Paris"\n',
        encoding="utf-8",
    )
    result = mailer(project, "preview", "campaigns/bad.toml")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: campaigns/bad.toml: timezone: expected an IANA time zone such as Europe/Paris, "
        "got 'Paris'"
    ]


def test_send_create_stores_the_files_campaign_as_campaign_create_does(project: Path) -> None:
    """`send create` keeps the campaign's spec (the console edits and previews from it) and
    records the operator's approval by name, as `campaign create` does."""
    assert mailer(project, "init").returncode == 0
    assert mailer(project, "send", "create", "campaigns/actualites-car-t.toml").returncode == 0
    with sqlite3.connect(project / "data" / "mailer.sqlite3") as db:
        spec, approved_by = db.execute(
            "SELECT spec, approved_by FROM campaigns WHERE name = 'actualites-car-t'"
        ).fetchone()
    assert spec is not None
    assert json.loads(spec)["name"] == "actualites-car-t"
    assert approved_by.startswith("cli:")


def test_send_end_to_end_into_the_capture_maildir(project: Path) -> None:
    """With no SMTP host: create a send, run it, read the Maildir, report who got it."""
    assert mailer(project, "init").returncode == 0
    created = mailer(project, "send", "create", "campaigns/actualites-car-t.toml")
    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == "send 1 (actualites-car-t, announcement) created"
    ran = mailer(project, "send", "run", "1")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("send 1: done; sent 14, deferred 0, failed 0, skipped 0")
    box = mailbox.Maildir(project / "data" / "outbox", create=False)
    recipients = sorted(str(message["To"]) for message in box)
    assert len(recipients) == 14  # 15 memberships, Claire is on two lists: one mail
    assert any(r == "Claire Dubois <claire.dubois@example.org>" for r in recipients)
    report = mailer(project, "send", "report", "1", "--csv")
    rows = list(csv.DictReader(io.StringIO(report.stdout)))
    assert len(rows) == 14
    assert {r["status"] for r in rows} == {"sent"}
    assert all(r["message_id"].endswith("@example.org>") for r in rows)
    again = mailer(project, "send", "run", "1")
    assert again.stdout.startswith("send 1: done; sent 14")
    assert len(mailbox.Maildir(project / "data" / "outbox", create=False)) == 14


def test_daemon_sends_what_is_due_and_stops_cleanly(project: Path) -> None:
    """`mailer run` picks up a send due now, delivers it to the capture, and exits 0 on SIGTERM."""
    assert mailer(project, "init").returncode == 0
    assert (
        mailer(project, "send", "create", "campaigns/journee-recherche-2024.toml").returncode == 0
    )
    env = clean_env(MAILER_SCHEDULER__SYNC_INTERVAL="0.2")
    process = subprocess.Popen(
        [*MAILER, "run"], cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        outbox = project / "data" / "outbox" / "new"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(list(outbox.glob("*"))) < 14:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, logs = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, logs
    assert "mailer stopped cleanly" in logs
    status = mailer(project, "send", "status", "1")
    assert status.stdout.startswith("send 1: done; sent 14"), status.stdout
    first = next(iter(mailbox.Maildir(project / "data" / "outbox", create=False)))
    types = [p.get_content_type() for p in first.walk()]
    assert types[-2:] == ["text/calendar", "application/ics"]  # the invitation, twice
