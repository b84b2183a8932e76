"""The settings as people read them: ``.env.example`` (:func:`example_env`) and the
effective values of ``mailer config show`` (:func:`describe`), secrets and passwords masked.

Text only, from the schema's fields and descriptions; nothing here reads the environment.
"""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from mailer.settings.environment import setting_fields
from mailer.settings.schema import Settings
from mailer.settings.values import mask_url


def describe(settings: Settings) -> list[tuple[str, str]]:
    """The effective settings as ``(variable, shown value)``, secrets and passwords masked."""
    rows: list[tuple[str, str]] = []
    for var, path, _ in setting_fields():
        value: Any = settings
        for part in path:
            value = getattr(value, part)
        rows.append((var, _show(var, value)))
    return rows


SECTION_TITLES = {
    "database": "Database",
    "smtp": "SMTP relay",
    "sender": "Sender identity",
    "web": "Web pages (unsubscribe, subscribe, health)",
    "console": "Staff console (/admin/)",
    "scheduler": "Scheduler",
    "delivery": "Delivery",
    "paths": "Paths (relative to the folder mailer runs in)",
    "log": "Logging",
    "bounces": "Bounces",
    "api": "REST API (/api/v1/)",
    "webhooks": "Outgoing webhooks",
    "secret_keys": "Secrets",
}


# Settings validated at start-up but not read by any part yet (prefix match on the
# variable); .env.example says so, and the entry goes when a part reads them.
PENDING: dict[str, str] = {}


def example_env() -> str:
    """The text of ``.env.example``: every variable, commented out, with its default."""
    lines = [
        "# mailer settings. Copy to .env and uncomment what you change; the environment",
        "# overrides .env. Every variable is MAILER_<SECTION>__<KEY>; `mailer config show`",
        "# prints the effective values (secrets masked).",
    ]
    section = None
    for var, path, info in setting_fields():
        if path[0] != section:
            section = path[0]
            lines += ["", f"# --- {SECTION_TITLES[section]} ---"]
        default = info.get_default(call_default_factory=True)
        pending = next((part for prefix, part in PENDING.items() if var.startswith(prefix)), None)
        note = f" (validated now; takes effect with {pending})" if pending else ""
        lines += [f"# {info.description}{note}", f"#{var}={_show(var, default)}"]
    return "\n".join(lines) + "\n"


def _show(var: str, value: Any) -> str:
    if isinstance(value, SecretStr):
        return "**********"
    if isinstance(value, list):
        return ",".join(_show(var, v) for v in value)
    if value is None:
        return ""
    if var == "MAILER_DATABASE__URL":
        return mask_url(str(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
