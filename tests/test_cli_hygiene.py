"""The command line against hostile data and user mistakes: no terminal injection, no
traceback, no secret printed, no sending with links that cannot work.

Real files, like tests/test_cli.py: the commands in this process (tests/cli_support.py), the
daemon and what asks for a terminal (FORCE_COLOR) as real processes; the SMTP relay is the
aiosmtpd test server on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
from pathlib import Path

import pytest

from tests import cli_support
from tests.cli_support import Ran
from tests.smtpd import SmtpServer

ROOT = Path(__file__).resolve().parent.parent
MAILER = [sys.executable, "-m", "mailer"]

pytestmark = pytest.mark.timeout(120)

EVIL_LINK = "[link=https://evil.example]click[/link]"
OSC8 = "\x1b]8;"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.pop("FORCE_COLOR", None)
    env["MAILER_WEB__PORT"] = "0"
    env["COLUMNS"] = "200"
    env.update(extra)
    return env


def mailer(cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Ran:
    """`mailer ARGS...` (in this process unless it must be a real one: tests/cli_support.py)."""
    return cli_support.mailer(cwd, *args, env=env or clean_env(), timeout=timeout)


async def amailer(cwd: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``mailer`` without blocking the loop the test SMTP server runs in."""
    ran = await cli_support.amailer(cwd, *args, env=env)
    return ran.returncode, ran.stdout, ran.stderr


def one_error(result: Ran) -> str:
    """The single `error:` line of a failed command (and no traceback)."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh checkout's layout: lists, templates and campaigns, no data yet."""
    for folder in ("lists", "templates", "campaigns"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


@pytest.fixture
def hostile(workdir: Path) -> Path:
    """A list whose members carry rich markup and terminal escapes in their data."""
    (workdir / "lists" / "hostile.csv").write_text(
        "email,name,note\n"
        f"mark@example.org,[/bold],{EVIL_LINK}\n"
        "esc@example.org,Esc,\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\ \x1b[2J\n",
        encoding="utf-8",
    )
    (workdir / "lists" / "hostile.toml").write_text(
        f'title = "[red]{EVIL_LINK}"\n', encoding="utf-8"
    )
    assert mailer(workdir, "init").returncode == 0
    return workdir


@pytest.mark.parametrize("force_color", [False, True], ids=["pipe", "terminal"])
def test_subscriber_data_is_printed_literally(hostile: Path, force_color: bool) -> None:
    """Names, attributes and titles are shown as typed: no markup, no hyperlink, no escape."""
    env = clean_env(**({"FORCE_COLOR": "1"} if force_color else {}))
    for args in (["subscribers", "show", "mark@example.org"], ["lists", "show"]):
        result = mailer(hostile, *args, env=env)
        assert result.returncode == 0, result.stderr
        assert OSC8 not in result.stdout
        assert EVIL_LINK in result.stdout.replace("\n", "")
    shown = mailer(hostile, "subscribers", "show", "mark@example.org", env=env).stdout
    assert "[/bold]" in shown
    escaped = mailer(hostile, "subscribers", "show", "esc@example.org", env=env)
    assert escaped.returncode == 0, escaped.stderr
    assert OSC8 not in escaped.stdout
    assert "\\x1b]8;;https://evil.example\\x1b\\click" in escaped.stdout
    if not force_color:  # without a terminal rich adds no escape of its own
        assert "\x1b" not in escaped.stdout


def test_an_error_echoing_user_input_prints_no_escape(hostile: Path) -> None:
    """An error line that quotes the user's input shows its control characters as escapes."""
    result = mailer(hostile, "subscribers", "show", "x\x1b[2J@example.org")
    line = one_error(result)
    assert "\x1b" not in result.stderr
    assert "\\x1b[2j" in line.lower()  # the key is case-folded


def _few(workdir: Path, second_name: str) -> None:
    """The list `few` (two members, the second named ``second_name``) and its announcement."""
    (workdir / "lists" / "few.csv").write_text(
        f"email,name\nok@example.org,OK\nbad@example.org,{second_name}\n", encoding="utf-8"
    )
    (workdir / "campaigns" / "few.toml").write_text(
        'name = "few"\nkind = "announcement"\nlists = ["few"]\nsubject = "Hello"\n'
        'body_file = "actualites-car-t.fr.md"\ntimezone = "Europe/Paris"\nsend_at = "now"\n',
        encoding="utf-8",
    )


def _relay_env(smtp_server: SmtpServer) -> dict[str, str]:
    """The environment of a command that sends to the test SMTP server."""
    return clean_env(
        MAILER_SMTP__HOST=smtp_server.host, MAILER_SMTP__PORT=str(smtp_server.port),
        MAILER_SMTP__SECURITY="none", MAILER_WEB__ALLOW_INSECURE_LINKS="true",
        MAILER_SECRET_KEYS=secrets.token_hex(32),
    )  # fmt: skip


async def test_send_report_shows_a_hostile_relay_reply_literally(
    workdir: Path, smtp_server: SmtpServer
) -> None:
    """An SMTP reply is the relay's text: the report and status print it, never run it."""
    _few(workdir, "[/bold]")
    reply = f"550 5.1.1 [/bold] {EVIL_LINK} \x1b[2J gone"
    smtp_server.plan.reply("RCPT", reply, recipient="bad@example.org")
    env = _relay_env(smtp_server)
    assert (await amailer(workdir, "init", env=env))[0] == 0
    code, _, err = await amailer(workdir, "send", "create", "campaigns/few.toml", env=env)
    assert code == 0, err
    code, out, err = await amailer(workdir, "send", "run", "1", env=env)
    assert "sent 1" in out, (out, err)
    await _read_literally(
        workdir, env, [["send", "report", "1"], ["send", "status", "1"], ["send", "list"]]
    )
    code, out, _ = await amailer(workdir, "send", "report", "1", env=env)
    assert "[/bold]" in out
    assert "\\x1b[2J" in out


async def _read_literally(workdir: Path, env: dict[str, str], commands: list[list[str]]) -> None:
    """Each read-only command, plain and with FORCE_COLOR, prints no OSC 8 link and no
    escape that runs; run side by side (they only read the database)."""
    runs = [(args, {**env, **force}) for args in commands for force in ({}, {"FORCE_COLOR": "1"})]
    results = await asyncio.gather(*(amailer(workdir, *a, env=e) for a, e in runs))
    for (args, _), (code, out, err) in zip(runs, results, strict=True):
        assert code == 0, (args, err)
        assert OSC8 not in out
        assert "\x1b[2J" not in out


def test_a_missing_env_file_is_an_error(workdir: Path) -> None:
    """--env-file naming a file that does not exist stops instead of running on defaults."""
    line = one_error(mailer(workdir, "--env-file", "prod.env", "config", "show"))
    assert line == "error: prod.env: no such file (--env-file)"
    assert mailer(workdir, "config", "show").returncode == 0  # the default .env may be absent


def test_export_into_a_missing_folder_is_one_line(workdir: Path) -> None:
    """`lists export -o` into a folder that does not exist names the file, no traceback."""
    assert mailer(workdir, "init").returncode == 0
    line = one_error(mailer(workdir, "lists", "export", "clinicians", "-o", "nowhere/out.csv"))
    assert "nowhere/out.csv" in line
    assert not (workdir / "nowhere").exists()


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MAILER_SMTP__PORT", "notaport", "error: MAILER_SMTP__PORT (in environment): "),
        ("MAILER_WEB__PORT", "notaport", "error: MAILER_WEB__PORT (in environment): "),
        (
            "MAILER_DATABASE__URL",
            "postgresql+asyncpg://u:db-secret@127.0.0.1:notaport/m",
            "error: MAILER_DATABASE__URL (in environment): the port must be a number",
        ),
        (
            "MAILER_WEB__BASE_URL",
            "https://lists.example.org/a b",
            "error: MAILER_WEB__BASE_URL (in environment): must not contain a space",
        ),
    ],
)
def test_a_wrong_port_or_url_is_one_line(
    workdir: Path, variable: str, value: str, expected: str
) -> None:
    """Ports and URLs that cannot parse stop every command with one line naming the setting."""
    result = mailer(workdir, "db", "status", env=clean_env(**{variable: value}))
    assert one_error(result).startswith(expected)
    assert "db-secret" not in result.stderr


def test_a_password_in_the_query_string_is_never_printed(workdir: Path) -> None:
    """`config show` and the connection error mask ?password= like user:password@."""
    env = clean_env(MAILER_DATABASE__URL="postgresql+asyncpg://u@127.0.0.1:1/m?password=db-secret")
    shown = mailer(workdir, "config", "show", env=env)
    assert shown.returncode == 0
    assert "postgresql+asyncpg://u@127.0.0.1:1/m?password=***" in shown.stdout
    failed = mailer(workdir, "db", "status", env=env)
    assert "?password=***" in one_error(failed)
    assert "db-secret" not in shown.stdout + failed.stdout + failed.stderr


@pytest.mark.parametrize("key", ["missing", "garbage"])
@pytest.mark.parametrize("command", [["run"], ["send", "run", "1"]])
def test_a_dkim_key_that_cannot_load_stops_start_up(
    workdir: Path, key: str, command: list[str]
) -> None:
    """A DKIM key file that is missing or not a private key stops sending with one line."""
    assert mailer(workdir, "init").returncode == 0
    created = mailer(workdir, "send", "create", "campaigns/actualites-car-t.toml")
    assert created.returncode == 0, created.stderr
    key_file = workdir / "dkim.pem"
    if key == "garbage":
        key_file.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    env = clean_env(MAILER_SENDER__DKIM_SELECTOR="s1", MAILER_SENDER__DKIM_KEY_FILE=str(key_file))
    line = one_error(mailer(workdir, *command, env=env, timeout=30))
    assert line.startswith("error: MAILER_SENDER__DKIM_KEY_FILE: ")
    assert str(key_file) in line
    status = mailer(workdir, "send", "status", "1")
    assert status.stdout.startswith("send 1: scheduled; sent 0"), status.stdout


@pytest.mark.parametrize("command", [["run"], ["send", "run", "1"]])
def test_real_mail_with_local_http_links_is_refused(workdir: Path, command: list[str]) -> None:
    """With a relay and the default http://127.0.0.1 base URL, nothing is sent; lists still work.

    The relay address is never contacted: the check comes first.
    """
    env = clean_env(MAILER_SMTP__HOST="127.0.0.1", MAILER_SMTP__PORT="9")
    assert mailer(workdir, "init", env=env).returncode == 0
    assert (
        mailer(workdir, "send", "create", "campaigns/actualites-car-t.toml", env=env).returncode
        == 0
    )
    line = one_error(mailer(workdir, *command, env=env, timeout=30))
    assert line.startswith("error: MAILER_WEB__BASE_URL: mail goes out through 127.0.0.1")
    assert "MAILER_WEB__ALLOW_INSECURE_LINKS=true" in line
    assert mailer(workdir, "lists", "show", env=env).returncode == 0


def test_subscribers_add_on_an_existing_subscriber_says_what_it_did_not_change(
    workdir: Path,
) -> None:
    """--locale (or --name, --timezone) that differs from the stored value is reported, exit 1."""
    assert mailer(workdir, "init").returncode == 0
    result = mailer(
        workdir, "subscribers", "add", "dr.benali@example.org", "--list", "researchers",
        "--locale", "en",
    )  # fmt: skip
    assert result.returncode == 1, result
    assert result.stdout.strip() == "dr.benali@example.org subscribed to researchers"
    assert (
        "dr.benali@example.org already existed: --locale en not applied (stored: fr)"
        in result.stderr
    )
    same = mailer(
        workdir, "subscribers", "add", "dr.benali@example.org", "--list", "clinicians",
        "--locale", "fr",
    )  # fmt: skip
    assert same.returncode == 0, same
    assert same.stderr == ""


@pytest.mark.parametrize("bad", ["\u2028", "\x85", "\x1b"])
def test_subscribers_add_applies_the_name_rule_of_the_import(workdir: Path, bad: str) -> None:
    """`subscribers add --name` refuses what the import and the message builder refuse."""
    assert mailer(workdir, "init").returncode == 0
    result = mailer(
        workdir, "subscribers", "add", "new@example.org", "--list", "researchers",
        "--name", f"Evil{bad}Name",
    )  # fmt: skip
    assert one_error(result).startswith("error: --name: the name contains a control character")


async def test_campaign_show_and_status_print_a_hostile_pause_reason_literally(
    workdir: Path, smtp_server: SmtpServer
) -> None:
    """A 5.7.x reply to MAIL pauses the send with the relay's words as its reason: `campaign show`
    and `status` print them as typed (rich markup, OSC-8 links and escapes never run)."""
    _few(workdir, "Bad")
    smtp_server.plan.reply("MAIL", f"550 5.7.1 [/bold] {EVIL_LINK} \x1b[2J policy")
    env = _relay_env(smtp_server)
    assert (await amailer(workdir, "init", env=env))[0] == 0
    code, _, err = await amailer(workdir, "campaign", "create", "campaigns/few.toml", env=env)
    assert code == 0, err
    await amailer(workdir, "send", "run", "1", env=env)
    await _read_literally(
        workdir, env, [["campaign", "show", "few"], ["status"], ["campaign", "list"]]
    )
    _, shown, _ = await amailer(workdir, "campaign", "show", "few", env=env)
    assert "[/bold]" in shown
