"""Single values of the settings: what a time zone, a base URL, a database URL, a comma
list, a list of e-mail addresses and a number of render processes must be, and a database URL
shown with its passwords hidden.

Plain functions on strings, used by the validators of :mod:`mailer.settings.schema` and by
what shows the settings; they know no section and no variable. A wrong value is a
ValueError saying what is expected, which the edge turns into one line naming the variable.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email


def zone_name(value: str) -> str:
    """``value`` if it names an IANA time zone; a ValueError saying what is expected if not."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file
        raise ValueError(
            f"expected an IANA time zone such as Europe/Paris, got {value!r}"
        ) from None
    return value


# The grammar SQLAlchemy's ``make_url`` parses (``sqlalchemy.engine.url._parse_url``), written
# here so that settings, a foundation module, need not import the database layer to say a URL
# is wrong; tests/test_settings_url.py checks both accept and refuse the same texts.
_DATABASE_URL = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
        (?:(?:\[(?P<ipv6host>[^/\?]+)\]|(?P<ipv4host>[^/:\?]+))?(?::(?P<port>[^/\?]*))?)?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)


def database_url(value: str) -> str:
    """``value`` if it reads as an SQLAlchemy URL (``dialect+driver://user:password@host:port/db``
    or ``sqlite+aiosqlite:////path``); a ValueError saying what is expected if not."""
    found = _DATABASE_URL.match(value)
    if found is None:
        raise ValueError(
            "expected an SQLAlchemy URL such as postgresql+asyncpg://user:password@host/db "
            f"or sqlite+aiosqlite:////srv/mailer/mailer.sqlite3, got {mask_url(value)!r}"
        )
    port = found["port"]
    if port is not None:  # an empty port (host:) is refused too, as SQLAlchemy does
        try:
            int(port)
        except ValueError:
            raise ValueError(f"the port must be a number, got {mask_url(value)!r}") from None
    return value


def base_url(value: str) -> str:
    """``value`` without its trailing slash if every link can be built on it (``https://host``
    or ``https://host/path``); a ValueError saying what is wrong if not."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"must not contain a control character, got {value!r}")
    if " " in value:
        raise ValueError(f"must not contain a space, got {value!r}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not value.lower().startswith(parts.scheme + "://"):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    if "@" in parts.netloc:
        raise ValueError(f"must have no user name or password, got {value!r}")
    if not parts.hostname:
        raise ValueError(f"has no host (expected https://lists.example.org), got {value!r}")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or parts.netloc.endswith(":"):
        raise ValueError(f"the port must be a number from 1 to 65535, got {value!r}")
    if "?" in value:
        raise ValueError(f"must have no query (?...): each link adds its own, got {value!r}")
    if "#" in value:
        raise ValueError(f"must have no fragment (#...), got {value!r}")
    return value.rstrip("/")


def split_commas(value: Any) -> Any:
    """A comma-separated text as its stripped, non-empty parts; anything else as it is."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


MAX_RENDER_WORKERS = 16


def render_workers(value: Any) -> int | str:
    """``auto`` or a whole number of render processes from 0 to :data:`MAX_RENDER_WORKERS`."""
    if isinstance(value, str):
        value = value.strip().lower()
        if value == "auto":
            return "auto"
        if value.isdigit():
            value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_RENDER_WORKERS:
        return int(value)
    raise ValueError(
        "must be auto (one render process per core but one, at least 1) or a whole number "
        f"from 0 (render in the sending process) to {MAX_RENDER_WORKERS}"
    )


def email_addresses(entries: list[Any]) -> list[str]:
    """Each address validated and normalised as ``mailer.addresses.normalize`` does (the
    same library and rule; settings sit below ``addresses`` in the layers), once each
    (compared case-insensitively); a bad one is named, with the reason."""
    found: dict[str, str] = {}
    for entry in entries:
        try:
            email = validate_email(str(entry).strip(), check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"{entry!r} is not an e-mail address: {exc}") from None
        found.setdefault(email.casefold(), email)
    return list(found.values())


# Query parameters that hold a secret: password=, sslpassword=, PWD=, token=, secret=...
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|cred", re.IGNORECASE)


_HOST_AFTER = re.compile(r"[\w.\-\[\]:%]*(?=[/?]|$)")
_CREDENTIALS = re.compile(r"[^:/@?]*(?::.*)?", re.DOTALL)


def mask_url(url: str) -> str:
    """Hide the passwords of a database URL for logs and messages: ``user:***@host`` and
    ``?password=***`` (any parameter named like a secret). A text that is not a URL has
    everything before its ``@`` hidden, or all of it without one."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        if "@" not in url:
            return "***"
        scheme, rest = "", url
    # The credentials end at an @ followed by a host (then /, ? or the end) and preceded by
    # a user name (no : / @ ?) and an optional :password, which may hold @, /, ? or =
    # when it is not percent-encoded: the last such @ counts.
    at = -1
    if sep:
        for found in reversed([i for i, c in enumerate(rest) if c == "@"]):
            if _HOST_AFTER.match(rest, found + 1) and _CREDENTIALS.fullmatch(rest[:found]):
                at = found
                break
    else:
        at = rest.rfind("@")
    credentials, host = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    if at < 0:
        shown = ""
    elif ":" in credentials:
        shown = credentials.split(":", 1)[0] + ":***@"
    elif sep:
        shown = credentials + "@"  # a user name alone
    else:
        shown = "***@"
    path, question_mark, query = host.partition("?")
    if question_mark:
        params = []
        for param in query.split("&"):
            name, equals, _ = param.partition("=")
            params.append(f"{name}=***" if equals and _SECRET_PARAM.search(name) else param)
        path += "?" + "&".join(params)
    return f"{scheme}{sep}{shown}{path}"
