"""Settings: the one place that reads the environment and ``.env``.

Every setting is ``MAILER_<SECTION>__<KEY>`` (or ``MAILER_<KEY>`` at top level). The
``Settings`` object is built once at the edge (the CLI) by :func:`load_settings` and passed
down; no other module reads ``os.environ``. A wrong or unknown variable becomes one
:class:`~mailer.errors.ConfigError` line naming the variable and what is expected.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from mailer.errors import ConfigError

ENV_PREFIX = "MAILER_"
NESTED_DELIMITER = "__"


def zone_name(value: str) -> str:
    """``value`` if it names an IANA time zone; a ValueError saying what is expected if not."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"expected an IANA time zone such as Europe/Paris, got {value!r}"
        ) from None
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str | None = Field(
        default=None,
        repr=False,  # may hold a password; describe() and mask_url() show it masked
        description=(
            "SQLAlchemy URL. Empty: a SQLite file mailer.sqlite3 in the data folder. "
            "PostgreSQL: postgresql+asyncpg://user:password@host:5432/mailer"
        ),
    )
    auto_upgrade: bool = Field(
        default=True, description="Apply pending migrations when the daemon starts."
    )
    busy_timeout_ms: int = Field(
        default=5000, ge=0, description="SQLite only: how long to wait for a lock (ms)."
    )

    @field_validator("url")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            make_url(value)
        except ArgumentError:
            raise ValueError(
                "expected an SQLAlchemy URL such as postgresql+asyncpg://user:password@host/db "
                f"or sqlite+aiosqlite:////srv/mailer/mailer.sqlite3, got {mask_url(value)!r}"
            ) from None
        except ValueError:  # SQLAlchemy's int() of the port
            raise ValueError(f"the port must be a number, got {mask_url(value)!r}") from None
        return value


class SMTPSettings(_Section):
    host: str | None = Field(
        default=None,
        description="SMTP relay host. Empty: mail is captured to a Maildir in the data folder.",
    )
    port: int = Field(default=587, ge=1, le=65535, description="SMTP relay port.")
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls",
        description="starttls (required, not opportunistic), tls (implicit, port 465) or none.",
    )
    username: str | None = Field(default=None, description="AUTH user name; empty: no AUTH.")
    password: SecretStr | None = Field(default=None, description="AUTH password (secret).")
    ca_file: Path | None = Field(
        default=None, description="PEM file of CAs to trust instead of the system store."
    )
    pool_size: int = Field(default=4, ge=1, le=64, description="Long-lived SMTP connections.")
    recycle_after: int = Field(
        default=1000, ge=1, description="Messages sent on one connection before it is renewed."
    )
    connect_timeout: float = Field(
        default=30.0, gt=0, description="Seconds to open a connection and get the greeting."
    )
    timeout: float = Field(
        default=600.0,
        gt=0,
        description=(
            "Seconds to wait for a reply; RFC 5321 asks for 10 minutes after the final dot, "
            "since giving up there is how people get mailed twice."
        ),
    )
    local_hostname: str | None = Field(
        default=None, description="Name sent in EHLO; empty: the machine's name."
    )


class SenderSettings(_Section):
    from_address: str = Field(
        default="news@example.org", description="Address in From: and the envelope."
    )
    from_name: str = Field(default="Mailer", description="Display name in From:.")
    reply_to: str | None = Field(default=None, description="Reply-To: address; empty: none.")
    domain: str = Field(
        default="example.org", description="Domain used in Message-ID and List-Id headers."
    )
    unsubscribe_mailto: str | None = Field(
        default=None,
        description="Address for a mailto: unsubscribe in List-Unsubscribe; empty: https only.",
    )
    dkim_selector: str | None = Field(
        default=None, description="DKIM selector; with a key file, messages are DKIM-signed."
    )
    dkim_key_file: Path | None = Field(
        default=None, description="PEM private key for DKIM (d= is the From address's domain)."
    )

    @model_validator(mode="after")
    def _dkim_pair(self) -> SenderSettings:
        if (self.dkim_selector is None) != (self.dkim_key_file is None):
            raise ValueError(
                "set both MAILER_SENDER__DKIM_SELECTOR and MAILER_SENDER__DKIM_KEY_FILE, or neither"
            )
        return self

    @field_validator("from_address", "reply_to", "from_name", "domain", "unsubscribe_mailto")
    @classmethod
    def _no_control_characters(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must not contain control characters (CR, LF, tab...)")
        return value

    @field_validator("from_address", "reply_to", "unsubscribe_mailto")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        local, sep, domain = value.rpartition("@")
        if not sep or not local or "." not in domain or " " in value:
            raise ValueError(f"expected an e-mail address like news@example.org, got {value!r}")
        return value


class WebSettings(_Section):
    enabled: bool = Field(
        default=True,
        description="Serve the subscriber pages, /healthz and /metrics from `mailer run`.",
    )
    host: str = Field(default="127.0.0.1", description="Address the web server binds to.")
    port: int = Field(
        default=8000, ge=0, le=65535, description="Port the web server binds to (0: any free)."
    )
    base_url: str = Field(
        default="http://127.0.0.1:8000",
        description=(
            "Public base URL used in every link (unsubscribe, preferences); with a relay it "
            "must be https:// on a name recipients can reach."
        ),
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated proxy addresses whose X-Forwarded-For/-Proto headers are trusted "
            "(the client address recorded with a consent); empty: none."
        ),
    )
    confirm_max_age: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Seconds a double opt-in confirmation link stays valid.",
    )
    confirm_interval: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds before a sign-up for the same address and list mails it again.",
    )
    confirm_per_day: int = Field(
        default=3, ge=1, description="Confirmation mails one address may get in 24 hours."
    )
    signups_per_ip: int = Field(
        default=20,
        ge=1,
        description="Sign-ups accepted from one client address per hour (per daemon).",
    )
    allow_insecure_links: bool = Field(
        default=False,
        description=(
            "Labs only: let mail go through a real relay (MAILER_SMTP__HOST) with links on "
            "http:// or on this machine, which recipients cannot use."
        ),
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return base_url(value)

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _split_commas(value)


class SchedulerSettings(_Section):
    timezone: str = Field(
        default="Europe/Paris", description="Default time zone of campaigns (IANA name)."
    )
    sync_interval: float = Field(
        default=5.0, gt=0, description="Seconds between two rebuilds of the jobs from storage."
    )
    misfire_grace: float = Field(
        default=3600.0,
        ge=0,
        description=(
            "Seconds an announcement or event mail missed while the daemon was down may still "
            "go out (a reminder never goes once its event has started)."
        ),
    )
    newsletter_grace: float = Field(
        default=21600.0,
        ge=0,
        description="The same for a newsletter issue: it is still worth sending later that day.",
    )
    concurrent_sends: int = Field(
        default=12,
        ge=1,
        le=64,
        description="Sends run at once (they share the SMTP connections).",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return zone_name(value)


class DeliverySettings(_Section):
    batch_size: int = Field(
        default=500, ge=1, le=10_000, description="Deliveries fetched per batch."
    )
    rate_per_second: float = Field(
        default=0.0, ge=0, description="Global cap in messages per second; 0: no cap."
    )
    rate_per_hour: int = Field(
        default=0, ge=0, description="Global cap in messages per rolling hour; 0: no cap."
    )
    retry_lifetime: float = Field(
        default=172_800.0,
        gt=0,
        description="Seconds a deferred delivery is retried before it is marked failed.",
    )
    retry_base: float = Field(
        default=60.0, gt=0, description="First retry delay in seconds; doubles each attempt."
    )
    record_batch: int = Field(
        default=50,
        ge=1,
        le=1000,
        description=(
            "Results recorded per commit. With the pool size it bounds the duplicates "
            "a crash can cause: at most pool size + record batch."
        ),
    )
    error_threshold: int = Field(
        default=50,
        ge=1,
        description="Consecutive failed or deferred messages that pause a send.",
    )
    render_workers: int = Field(
        default=1,
        ge=0,
        le=16,
        description=(
            "Worker processes that render and build the messages of a large send, so that "
            "it uses another core; 0: everything in the sending process. One per spare core."
        ),
    )
    shutdown_grace: float = Field(
        default=30.0,
        ge=0,
        description="Seconds SIGTERM waits for messages in flight before cutting them off.",
    )
    lease: float = Field(
        default=30.0,
        ge=1,
        description=(
            "Seconds a daemon holds a batch of deliveries (renewed while it works); a daemon "
            "that dies loses its batch to the others after this long (PostgreSQL)."
        ),
    )


class PathSettings(_Section):
    data_dir: Path = Field(
        default=Path("data"), description="Folder for the SQLite file, captured mail, keys."
    )
    templates_dir: Path = Field(default=Path("templates"), description="Jinja templates.")
    lists_dir: Path = Field(
        default=Path("lists"), description="Subscriber list files (*.csv) for `lists sync`."
    )


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of the daemon."
    )
    json_lines: bool = Field(default=False, description="Log JSON lines instead of text.")
    progress_interval: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between the progress lines of a running send (sent of total, "
        "failed, deferred, rate, ETA).",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Settings(BaseSettings):
    """Every setting of mailer; see ``.env.example`` for the variables."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        env_file=None,  # load_settings passes the file explicitly
        extra="ignore",  # unknown variables are caught by load_settings, with a suggestion
        frozen=True,
    )

    database: DatabaseSettings = DatabaseSettings()
    smtp: SMTPSettings = SMTPSettings()
    sender: SenderSettings = SenderSettings()
    web: WebSettings = WebSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    delivery: DeliverySettings = DeliverySettings()
    paths: PathSettings = PathSettings()
    log: LogSettings = LogSettings()
    secret_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated keys that sign links (unsubscribe, preferences), newest first; "
            "keep old keys at the end to rotate without breaking links already sent. "
            "Empty: a key is generated once in the data folder (secret.key)."
        ),
    )

    @field_validator("secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        return _split_commas(value)

    @property
    def database_url(self) -> str:
        """The effective database URL (SQLite under the data folder by default)."""
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.paths.data_dir / 'mailer.sqlite3').resolve()}"


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


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# --- the edge: environment and .env to Settings ------------------------------------------


def setting_fields(
    model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX
) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    """Yield ``(variable name, field path, field info)`` for every leaf setting."""
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            for var, path, leaf in setting_fields(
                annotation, f"{prefix}{name.upper()}{NESTED_DELIMITER}"
            ):
                yield var, (name, *path), leaf
        else:
            yield f"{prefix}{name.upper()}", (name,), info


def known_variables() -> list[str]:
    return [var for var, _, _ in setting_fields()]


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: Path | None = Path(".env"),
    *,
    env_file_required: bool = False,
) -> Settings:
    """Build the settings from ``environ`` (default: the process) and ``env_file``.

    A missing ``env_file`` is fine (defaults and the environment), unless
    ``env_file_required`` (the user named it with ``--env-file``). Raises
    :class:`ConfigError` with one line per wrong variable, naming where it came from.
    """
    environ = os.environ if environ is None else environ
    if env_file_required and env_file is not None and not env_file.is_file():
        what = "is a folder, not a file" if env_file.is_dir() else "no such file"
        raise ConfigError(f"{env_file}: {what} (--env-file)")
    file_values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        try:
            raw = dotenv_values(env_file, encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{env_file}: cannot be read as UTF-8 text ({exc})") from None
        file_values = {k: v for k, v in raw.items() if v is not None}
    known = set(known_variables())
    secret = {var for var, _, info in setting_fields() if "SecretStr" in str(info.annotation)}
    problems: list[str] = []
    for source, mapping in (("environment", environ), (str(env_file), file_values)):
        for key in mapping:
            if key.upper().startswith(ENV_PREFIX) and key.upper() not in known:
                hint = difflib.get_close_matches(key.upper(), known, n=1, cutoff=0.8)
                also = f"; did you mean {hint[0]}?" if hint else "; see .env.example"
                problems.append(f"{key} (in {source}): unknown setting{also}")
    if problems:
        raise ConfigError("\n".join(problems))

    merged = {**file_values, **{k: v for k, v in environ.items() if k.upper() in known}}
    try:
        return _build(merged)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            var = ENV_PREFIX + NESTED_DELIMITER.join(str(p).upper() for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            if var not in known:  # a rule across several variables of a section
                lines.append(f"{var}__*: {message}")
                continue
            where = "environment" if var in environ or env_file is None else str(env_file)
            given = "" if "got" in message else f" (got {error.get('input')!r})"
            if var in secret or var == "MAILER_DATABASE__URL":
                given = ""  # never echo a secret
            lines.append(f"{var} (in {where}): {message}{given}")
        raise ConfigError("\n".join(lines)) from None


def _build(variables: Mapping[str, str]) -> Settings:
    """Build Settings from exactly ``variables``, ignoring the process environment."""
    nested: dict[str, Any] = {}
    for var, path, _ in setting_fields():
        if var in variables:
            value: Any = variables[var]
            if value == "" and len(path) > 1:
                continue  # an empty value means "use the default"
            target = nested
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = value
    return Settings.model_validate(nested)


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
    "scheduler": "Scheduler",
    "delivery": "Delivery",
    "paths": "Paths (relative to the folder mailer runs in)",
    "log": "Logging",
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
