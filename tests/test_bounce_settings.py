"""The ``MAILER_BOUNCES__*`` settings: read, checked one line per mistake, secrets masked."""

from __future__ import annotations

import pytest

from mailer.errors import ConfigError
from mailer.settings import describe, load_settings


def test_bounce_variables_are_read_with_their_defaults() -> None:
    bounces = load_settings(environ={}, env_file=None).bounces
    assert (bounces.hard_limit, bounces.soft_limit, bounces.stale_days) == (1, 3, 30)
    assert bounces.listen_at is None
    assert bounces.imap.host is None
    settings = load_settings(
        environ={
            "MAILER_BOUNCES__LISTEN": "[::1]:2526",
            "MAILER_BOUNCES__IMAP__HOST": "imap.example.org",
            "MAILER_BOUNCES__IMAP__USER": "bounces",
            "MAILER_BOUNCES__IMAP__PASSWORD": "imap-pass",
            "MAILER_BOUNCES__IMAP__SECURITY": "starttls",
            "MAILER_BOUNCES__WEBHOOKS__SES_TOPICS": (
                "arn:aws:sns:eu-west-3:123456789012:bounces, arn:aws:sns:eu-west-1:123456789012:b2"
            ),
            "MAILER_BOUNCES__WEBHOOKS__MAILGUN_SIGNING_KEY": "mg-key",
        },
        env_file=None,
    )
    assert settings.bounces.listen_at == ("::1", 2526)
    assert settings.bounces.imap.effective_port == 143
    assert len(settings.bounces.webhooks.ses_topics) == 2
    shown = "\n".join(f"{k}={v}" for k, v in describe(settings)) + repr(settings)
    assert "imap-pass" not in shown
    assert "mg-key" not in shown


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MAILER_BOUNCES__LISTEN", "127.0.0.1:99999", "expected HOST:PORT"),
        ("MAILER_BOUNCES__LISTEN", "2526", "expected HOST:PORT"),
        ("MAILER_BOUNCES__LISTEN", "[zz::1]:25", "expected HOST:PORT"),
        ("MAILER_BOUNCES__HARD_LIMIT", "0", "greater than or equal to 1"),
        ("MAILER_BOUNCES__POLICY_PAUSE_RATE", "2", "less than or equal to 1"),
        ("MAILER_BOUNCES__IMAP__SECURITY", "ssl", "tls"),
        ("MAILER_BOUNCES__WEBHOOKS__SES_TOPICS", "bounces", "SNS topic ARN"),
    ],
)
def test_a_wrong_bounce_value_is_one_line_naming_the_variable(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: value}, env_file=None)
    message = str(caught.value)
    assert "\n" not in message
    assert variable in message
    assert expected in message


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"MAILER_BOUNCES__IMAP__HOST": "imap.example.org"}, "needs MAILER_BOUNCES__IMAP__USER"),
        ({"MAILER_BOUNCES__WEBHOOKS__POSTMARK_USER": "pm"}, "go together"),
    ],
)
def test_bounce_settings_that_need_each_other_are_refused(
    environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings(environ=environ, env_file=None)
