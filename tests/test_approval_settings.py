"""The console's approval and test-send settings (issue 15): MAILER_CONSOLE__TEST_RECIPIENTS
in its comma form, each address normalised and a bad one named; approval required and no
self-approval by default."""

from __future__ import annotations

import pytest

from mailer.errors import ConfigError
from mailer.settings import load_settings


def test_approval_is_required_and_by_someone_else_by_default() -> None:
    console = load_settings(environ={}, env_file=None).console
    assert (console.require_approval, console.allow_self_approval) == (True, False)
    assert console.test_recipients == []


def test_the_seed_list_is_comma_separated_normalised_and_once_each() -> None:
    """Spaces around the commas, an upper-case domain, a repeat in other case: two addresses."""
    settings = load_settings(
        environ={
            "MAILER_CONSOLE__TEST_RECIPIENTS": " Ada@Example.ORG , seed@lab.example.org,ada@example.org",
            "MAILER_CONSOLE__REQUIRE_APPROVAL": "false",
            "MAILER_CONSOLE__ALLOW_SELF_APPROVAL": "true",
        },
        env_file=None,
    )
    assert settings.console.test_recipients == ["Ada@example.org", "seed@lab.example.org"]
    assert (settings.console.require_approval, settings.console.allow_self_approval) == (
        False, True,
    )  # fmt: skip


@pytest.mark.parametrize("bad", ["not-an-address", "a@b@example.org", "ada@"])
def test_a_bad_seed_address_names_the_variable_and_itself(bad: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(
            environ={"MAILER_CONSOLE__TEST_RECIPIENTS": f"ok@example.org,{bad}"}, env_file=None
        )
    message = str(refused.value)
    assert message.startswith("MAILER_CONSOLE__TEST_RECIPIENTS")
    assert f"{bad!r} is not an e-mail address" in message
    assert "Traceback" not in message
