"""Working links: the check that real mail goes out only with links its recipients can use.

A rule across sections (the relay and the web address), checked by the commands that send,
not when the settings load: ``lists``, ``init`` and ``config`` make no links.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from mailer.errors import ConfigError
from mailer.settings.schema import Settings


def _loopback(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def require_working_links(settings: Settings) -> None:
    """Refuse to send real mail whose links cannot work: :class:`ConfigError` if they cannot.

    With a relay (``MAILER_SMTP__HOST``) the mail reaches real people: its links must be
    ``https://`` (Gmail's one-click unsubscribe needs it) on a host they can reach, not this
    machine. Checked by the commands that send (``mailer run``, ``mailer send run``), not at
    load: ``lists``, ``init`` and ``config`` make no links. Captured mail (no relay) and
    ``MAILER_WEB__ALLOW_INSECURE_LINKS=true`` (labs) pass.
    """
    web = settings.web
    if settings.smtp.host is None or web.allow_insecure_links:
        return
    parts = urlsplit(web.base_url)
    problems = []
    if parts.scheme != "https":
        problems.append("is not https://")
    if _loopback(parts.hostname or ""):
        problems.append("is on this machine (loopback), out of the recipients' reach")
    if problems:
        raise ConfigError(
            f"MAILER_WEB__BASE_URL: mail goes out through {settings.smtp.host} but its links "
            f"use {web.base_url}, which {' and '.join(problems)}; set MAILER_WEB__BASE_URL to "
            "the public https:// address of the pages (in a lab: "
            "MAILER_WEB__ALLOW_INSECURE_LINKS=true)"
        )
