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
