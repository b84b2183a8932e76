"""Settings: the one place that reads the environment and ``.env``.

Every setting is ``MAILER_<SECTION>__<KEY>`` (or ``MAILER_<KEY>`` at top level). The
``Settings`` object is built once at the edge (the CLI) by :func:`load_settings` and passed
down; no other module reads ``os.environ``. A wrong or unknown variable becomes one
:class:`~mailer.errors.ConfigError` line naming the variable and what is expected.

A package, so that the schema can be read apart from the parsing of the environment and the
text shown to people, while "the one place that reads the environment" stays one name for
the layer contract (foundation: it imports only :mod:`mailer.errors` and third-party
libraries). Import from here, not from the parts:

- :mod:`~mailer.settings.schema`: ``Settings`` and its sections, defaults and bounds;
- :mod:`~mailer.settings.values`: single values (time zone, base URL, lists, masked URLs);
- :mod:`~mailer.settings.environment`: the environment and ``.env`` to ``Settings``;
- :mod:`~mailer.settings.links`: the links real mail carries must work;
- :mod:`~mailer.settings.docs`: ``.env.example`` and ``mailer config show``.
"""

from __future__ import annotations

from mailer.settings.docs import PENDING, SECTION_TITLES, describe, example_env
from mailer.settings.environment import known_variables, load_settings, setting_fields
from mailer.settings.links import require_working_links
from mailer.settings.schema import (
    ENV_PREFIX,
    NESTED_DELIMITER,
    ConsoleSettings,
    DatabaseSettings,
    DeliverySettings,
    LogSettings,
    PathSettings,
    SchedulerSettings,
    SenderSettings,
    Settings,
    SMTPSettings,
    WebSettings,
)
from mailer.settings.values import base_url, mask_url, zone_name

__all__ = [
    "ENV_PREFIX",
    "NESTED_DELIMITER",
    "PENDING",
    "SECTION_TITLES",
    "ConsoleSettings",
    "DatabaseSettings",
    "DeliverySettings",
    "LogSettings",
    "PathSettings",
    "SMTPSettings",
    "SchedulerSettings",
    "SenderSettings",
    "Settings",
    "WebSettings",
    "base_url",
    "describe",
    "example_env",
    "known_variables",
    "load_settings",
    "mask_url",
    "require_working_links",
    "setting_fields",
    "zone_name",
]
