"""Settings: defaults, environment and .env, clear errors, secrets masked, .env.example in sync."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mailer.errors import ConfigError
from mailer.settings import (
    Settings,
    describe,
    example_env,
    known_variables,
    load_settings,
    mask_url,
    require_working_links,
    setting_fields,
)

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_run_on_sqlite_in_the_data_folder() -> None:
    """With nothing set, the database is a SQLite file in ./data and mail is captured."""
    settings = load_settings(environ={}, env_file=None)
    assert settings.database_url == f"sqlite+aiosqlite:///{Path('data').resolve()}/mailer.sqlite3"
    assert settings.smtp.host is None
    assert settings.scheduler.timezone == "Europe/Paris"


def test_nested_variables_and_lists_are_read() -> None:
    """MAILER_SECTION__KEY fills the nested section; comma lists are split."""
    settings = load_settings(
        environ={
            "MAILER_SMTP__HOST": "relay.example.org",
            "MAILER_SMTP__PORT": "465",
            "MAILER_SMTP__SECURITY": "tls",
            "MAILER_SECRET_KEYS": "new-key, old-key",
            "MAILER_WEB__TRUSTED_PROXIES": "10.0.0.1,10.0.0.2",
            "MAILER_WEB__BASE_URL": "https://lists.example.org/",
            "MAILER_LOG__LEVEL": "debug",
        },
        env_file=None,
    )
    assert (settings.smtp.host, settings.smtp.port, settings.smtp.security) == (
        "relay.example.org",
        465,
        "tls",
    )
    assert [k.get_secret_value() for k in settings.secret_keys] == ["new-key", "old-key"]
    assert settings.web.trusted_proxies == ["10.0.0.1", "10.0.0.2"]
    assert settings.web.base_url == "https://lists.example.org"
    assert settings.log.level == "DEBUG"


def test_environment_overrides_the_env_file(tmp_path: Path) -> None:
    """A value in .env applies unless the environment sets the same variable."""
    env_file = tmp_path / ".env"
    env_file.write_text("MAILER_SMTP__PORT=2525\nMAILER_SENDER__FROM_NAME='Réseau CRI'\n")
    settings = load_settings(environ={"MAILER_SMTP__PORT": "587"}, env_file=env_file)
    assert settings.smtp.port == 587
    assert settings.sender.from_name == "Réseau CRI"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MAILER_SMTP__PORT", "abc", "valid integer"),
        ("MAILER_SMTP__PORT", "70000", "less than or equal to 65535"),
        ("MAILER_SMTP__SECURITY", "ssl", "'starttls', 'tls' or 'none'"),
        ("MAILER_SCHEDULER__TIMEZONE", "Paris", "IANA time zone such as Europe/Paris"),
        ("MAILER_SENDER__FROM_ADDRESS", "news at example.org", "e-mail address"),
        ("MAILER_SENDER__FROM_NAME", "Evil\r\nBcc: x@y.z", "control characters"),
        ("MAILER_WEB__BASE_URL", "lists.example.org", "http:// or https:// URL"),
        ("MAILER_DATABASE__AUTO_UPGRADE", "perhaps", "valid boolean"),
        ("MAILER_BOUNCES__DOMAIN", "b+x@bounces.example.org", "domain name like bounces."),
        ("MAILER_BOUNCES__DOMAIN", "localhost", "domain name like bounces."),
    ],
)
def test_a_wrong_value_is_one_line_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    """Each user mistake becomes one line: the variable, where it came from, what is expected."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: value}, env_file=None)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{variable} (in environment): ")
    assert expected in message


def test_an_unknown_variable_is_refused_with_a_suggestion(tmp_path: Path) -> None:
    """A misspelt MAILER_ variable stops start-up instead of being silently ignored."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILER_SMTP__HOTS": "relay"}, env_file=None)
    assert str(caught.value) == (
        "MAILER_SMTP__HOTS (in environment): unknown setting; did you mean MAILER_SMTP__HOST?"
    )
    env_file = tmp_path / ".env"
    env_file.write_text("MAILER_TIMEZONE=Europe/Paris\n")
    with pytest.raises(ConfigError, match=r"MAILER_TIMEZONE \(in .*\.env\): unknown setting"):
        load_settings(environ={}, env_file=env_file)


def test_unrelated_variables_are_ignored() -> None:
    """Only the MAILER_ prefix is ours; PATH, HOME and friends are not questioned."""
    settings = load_settings(environ={"PATH": "/bin", "MAILERX": "1"}, env_file=None)
    assert settings.smtp.port == 587


def test_secrets_are_masked_everywhere() -> None:
    """Passwords and keys never show in repr, in `config show`, or in the database URL."""
    settings = load_settings(
        environ={
            "MAILER_SMTP__PASSWORD": "hunter2",
            "MAILER_SECRET_KEYS": "k-one,k-two",
            "MAILER_DATABASE__URL": "postgresql+asyncpg://mailer:pg-pass@db.example.org/mailer",
        },
        env_file=None,
    )
    shown = "\n".join(f"{k}={v}" for k, v in describe(settings)) + repr(settings)
    for secret in ("hunter2", "k-one", "k-two", "pg-pass"):
        assert secret not in shown
    assert "MAILER_SMTP__PASSWORD=**********" in shown
    assert "postgresql+asyncpg://mailer:***@db.example.org/mailer" in shown
    assert settings.smtp.password is not None
    assert settings.smtp.password.get_secret_value() == "hunter2"


def _example_entries() -> dict[str, str]:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    entries: dict[str, str] = {}
    previous = ""
    for line in text.splitlines():
        match = re.match(r"^#?(MAILER_[A-Z_]+)=(.*)$", line)
        if match:
            assert previous.startswith("# "), f"{match[1]} has no comment"
            assert len(previous) > 4, f"{match[1]} has an empty comment"
            entries[match[1]] = match[2]
        previous = line
    return entries


def test_env_example_lists_every_setting_with_its_default() -> None:
    """.env.example and Settings cannot drift: same variables, same defaults."""
    entries = _example_entries()
    assert sorted(entries) == sorted(known_variables())
    defaults = dict(describe(Settings.model_validate({})))
    assert entries == defaults


def test_env_example_is_what_config_example_prints() -> None:
    """The shipped file is regenerated with `mailer config example > .env.example`."""
    assert (ROOT / ".env.example").read_text(encoding="utf-8") == example_env()


def test_every_setting_is_documented() -> None:
    """A setting without a description would leave a blank comment in .env.example."""
    undocumented = [var for var, _, info in setting_fields() if not info.description]
    assert undocumented == []


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://mailer:pg-pass@db.example.org/mailer",
            "postgresql+asyncpg://mailer:***@db.example.org/mailer",
        ),
        (
            "postgresql+asyncpg://mailer@db.example.org/mailer?password=pg-pass&ssl=require",
            "postgresql+asyncpg://mailer@db.example.org/mailer?password=***&ssl=require",
        ),
        (
            "postgresql+asyncpg://mailer:pg@pass@db.example.org/m?sslpassword=pg-pass",
            "postgresql+asyncpg://mailer:***@db.example.org/m?sslpassword=***",
        ),
        ("postgresql://:pg-pass@db/m?PWD=pg-pass", "postgresql://:***@db/m?PWD=***"),
        ("postgresql+asyncpg://u:a?b=pg-pass@h/db", "postgresql+asyncpg://u:***@h/db"),
        ("postgresql+asyncpg://u:pg/pass?x=1@h:5432/db", "postgresql+asyncpg://u:***@h:5432/db"),
        ("postgresql://h/db?password=pg@pass", "postgresql://h/db?password=***"),
        ("postgresql://u:pg@pass@[::1]:5/d", "postgresql://u:***@[::1]:5/d"),
        ("not a url pg-pass@db.example.org", "***@db.example.org"),
        ("sqlite+aiosqlite:////srv/mailer.sqlite3", "sqlite+aiosqlite:////srv/mailer.sqlite3"),
    ],
)
def test_mask_url_hides_passwords_in_userinfo_and_query(url: str, shown: str) -> None:
    """A database password is masked wherever the URL carries it: user:password@ or ?password=."""
    assert mask_url(url) == shown


def test_config_show_masks_a_password_in_the_query() -> None:
    """`config show` prints the database URL with a query-string password masked."""
    settings = load_settings(
        environ={"MAILER_DATABASE__URL": "postgresql+asyncpg://u@db/m?password=pg-pass"},
        env_file=None,
    )
    shown = dict(describe(settings))["MAILER_DATABASE__URL"]
    assert shown == "postgresql+asyncpg://u@db/m?password=***"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://u:pg-pass@db:notaport/m",
        "postgresql+asyncpg://u@db:notaport/m?password=pg-pass",
        "no scheme pg-pass",
    ],
)
def test_a_database_url_that_cannot_parse_is_one_line_without_the_password(url: str) -> None:
    """A broken database URL is refused at load, naming the variable, the password masked."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILER_DATABASE__URL": url}, env_file=None)
    message = str(caught.value)
    assert message.startswith("MAILER_DATABASE__URL (in environment): ")
    assert "\n" not in message
    assert "pg-pass" not in message


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://lists.example.org/a b", "a space"),
        ("https:///unsubscribe", "no host"),
        ("https://lists.example.org/?x=1", "no query"),
        ("https://lists.example.org/#top", "no fragment"),
        ("https://user:pw@lists.example.org", "no user name or password"),
        ("https://lists.example.org:99999", "port"),
        ("https://lists.example.org:notaport", "port"),
        ("ftp://lists.example.org", "http:// or https:// URL"),
        ("https://lists\x00.example.org", "control character"),
    ],
)
def test_a_base_url_that_cannot_make_links_is_refused_at_load(url: str, expected: str) -> None:
    """Every link is built on the base URL: one that cannot work is refused with the setting."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"MAILER_WEB__BASE_URL": url}, env_file=None)
    message = str(caught.value)
    assert message.startswith("MAILER_WEB__BASE_URL (in environment): ")
    assert expected in message
    assert "\n" not in message


def test_a_base_url_with_a_path_is_kept_without_the_trailing_slash() -> None:
    """Behind a proxy the pages may live under a path; links are built under it."""
    settings = load_settings(
        environ={"MAILER_WEB__BASE_URL": "https://example.org/mailer/"}, env_file=None
    )
    assert settings.web.base_url == "https://example.org/mailer"


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"MAILER_SMTP__HOST": "relay.example.org"}, "https://"),
        (
            {
                "MAILER_SMTP__HOST": "relay.example.org",
                "MAILER_WEB__BASE_URL": "http://lists.example.org",
            },
            "https://",
        ),
        (
            {"MAILER_SMTP__HOST": "127.0.0.1", "MAILER_WEB__BASE_URL": "https://localhost:8443"},
            "loopback",
        ),
        (
            {"MAILER_SMTP__HOST": "relay", "MAILER_WEB__BASE_URL": "https://127.0.0.2"},
            "loopback",
        ),
        ({"MAILER_SMTP__HOST": "relay", "MAILER_WEB__BASE_URL": "https://[::1]"}, "loopback"),
        ({"MAILER_SMTP__HOST": "relay", "MAILER_WEB__BASE_URL": "https://0.0.0.0"}, "loopback"),
        (
            {"MAILER_SMTP__HOST": "relay", "MAILER_WEB__BASE_URL": "https://app.localhost"},
            "loopback",
        ),
    ],
)
def test_real_mail_needs_links_that_work(environ: dict[str, str], problem: str) -> None:
    """With a real relay, links must be https on a public name; the error says what to set."""
    settings = load_settings(environ=environ, env_file=None)  # loads: lists need no links
    with pytest.raises(ConfigError) as caught:
        require_working_links(settings)
    message = str(caught.value)
    assert message.startswith("MAILER_WEB__BASE_URL: ")
    assert problem in message
    assert "MAILER_WEB__ALLOW_INSECURE_LINKS=true" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "environ",
    [
        {},  # mail is captured to the Maildir: nobody outside clicks these links
        {"MAILER_SMTP__HOST": "relay.example.org", "MAILER_WEB__BASE_URL": "https://l.example"},
        {"MAILER_SMTP__HOST": "127.0.0.1", "MAILER_WEB__ALLOW_INSECURE_LINKS": "true"},
    ],
)
def test_links_are_accepted_when_they_can_work_or_for_a_lab(environ: dict[str, str]) -> None:
    """Capture mode, a public https base URL, or the explicit lab switch pass the check."""
    require_working_links(load_settings(environ=environ, env_file=None))


def test_a_missing_env_file_given_explicitly_is_an_error(tmp_path: Path) -> None:
    """--env-file naming a file that does not exist stops, instead of running on defaults."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, env_file=tmp_path / "prod.env", env_file_required=True)
    assert str(caught.value) == f"{tmp_path / 'prod.env'}: no such file (--env-file)"
    assert load_settings(environ={}, env_file=tmp_path / ".env").smtp.host is None


def test_the_console_is_on_the_web_port_by_default() -> None:
    """With nothing set the console is on, on the web port, with the issue's limits."""
    console = load_settings(environ={}, env_file=None).console
    assert (console.enabled, console.host, console.port) == (True, None, None)
    assert (console.session_idle, console.session_max) == (8 * 3600, 7 * 86400)
    assert (console.login_attempts, console.login_attempts_per_ip) == (5, 20)
    assert console.trusted_header == ""
    assert console.upload_max_bytes == 50 * 1024 * 1024


def test_console_variables_are_read() -> None:
    """MAILER_CONSOLE__* fill the console section; an empty value keeps the default."""
    console = load_settings(
        environ={
            "MAILER_CONSOLE__ENABLED": "false",
            "MAILER_CONSOLE__HOST": "10.1.2.3",
            "MAILER_CONSOLE__PORT": "8081",
            "MAILER_CONSOLE__SESSION_IDLE": "600",
            "MAILER_CONSOLE__SESSION_MAX": "3600",
            "MAILER_CONSOLE__TRUSTED_HEADER": " X-Remote-User ",
            "MAILER_CONSOLE__LOGIN_ATTEMPTS": "3",
            "MAILER_CONSOLE__LOGIN_ATTEMPTS_PER_IP": "9",
            "MAILER_CONSOLE__UPLOAD_MAX_BYTES": "1048576",
        },
        env_file=None,
    ).console
    assert (console.enabled, console.host, console.port) == (False, "10.1.2.3", 8081)
    assert (console.session_idle, console.session_max) == (600, 3600)
    assert console.trusted_header == "X-Remote-User"
    assert (console.login_attempts, console.login_attempts_per_ip) == (3, 9)
    assert console.upload_max_bytes == 1024 * 1024
    assert load_settings(environ={"MAILER_CONSOLE__PORT": ""}, env_file=None).console.port is None


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MAILER_CONSOLE__PORT", "70000", "less than or equal to 65535"),
        ("MAILER_CONSOLE__SESSION_IDLE", "0", "greater than 0"),
        ("MAILER_CONSOLE__LOGIN_ATTEMPTS", "0", "greater than or equal to 1"),
        ("MAILER_CONSOLE__UPLOAD_MAX_BYTES", "lots", "valid integer"),
        ("MAILER_CONSOLE__TRUSTED_HEADER", "X Remote User", "header name such as X-Remote-User"),
        ("MAILER_CONSOLE__TRUSTED_HEADER", "X-User:\r\nX-Evil", "header name"),
    ],
)
def test_a_wrong_console_value_is_one_line_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    """A console setting that cannot work is refused at load, naming the variable."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: value}, env_file=None)
    message = str(caught.value)
    assert message.startswith(f"{variable} (in environment): ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"MAILER_CONSOLE__HOST": "10.1.2.3"}, "MAILER_CONSOLE__HOST needs MAILER_CONSOLE__PORT"),
        (
            {"MAILER_CONSOLE__SESSION_IDLE": "7200", "MAILER_CONSOLE__SESSION_MAX": "3600"},
            "MAILER_CONSOLE__SESSION_IDLE must not exceed MAILER_CONSOLE__SESSION_MAX (7200 s",
        ),
    ],
)
def test_console_settings_that_contradict_each_other_are_refused(
    environ: dict[str, str], expected: str
) -> None:
    """A listener address without a port, or an idle timeout past the absolute one, stops."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=environ, env_file=None)
    message = str(caught.value)
    assert message.startswith("MAILER_CONSOLE__*: ")
    assert expected in message
    assert load_settings(environ={"MAILER_CONSOLE__PORT": "0"}, env_file=None).console.port == 0
