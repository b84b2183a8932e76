"""The schema of the settings: :class:`Settings` and its sections, each field with its
default, its bounds and the sentence ``.env.example`` shows for it.

One model per section (``database``, ``smtp``, ``sender``, ``web``, ``console``,
``scheduler``, ``delivery``, ``paths``, ``log``, ``bounces``, ``api``, ``webhooks``),
validated field by field here; the rules for a single value live in
:mod:`mailer.settings.values`. ``Settings`` is a pydantic-settings model, so building it
reads the environment: only this package may build it from the process
(:func:`~mailer.settings.load_settings`, the edge), and tests build it with keywords.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mailer.settings.api import ApiSettings, WebhookSettings
from mailer.settings.bounces import BounceSettings
from mailer.settings.section import Section
from mailer.settings.values import (
    base_url,
    database_url,
    email_addresses,
    split_commas,
    zone_name,
)
from mailer.settings.values import render_workers as workers_value

ENV_PREFIX = "MAILER_"
NESTED_DELIMITER = "__"


class DatabaseSettings(Section):
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
        return None if value is None else database_url(value)


class SMTPSettings(Section):
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


class SenderSettings(Section):
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


class WebSettings(Section):
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
        return split_commas(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{entry!r} is not an IP address or network (such as 10.0.0.1 or "
                    "10.0.0.0/8); '*' is refused: it would let any client forge its address"
                ) from None
        return value


# RFC 9110's token characters: what a header field name may be made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
MIB = 1024 * 1024


class ConsoleSettings(Section):
    enabled: bool = Field(
        default=True,
        description="Serve the staff console (/admin/) on the web port, or on its own listener.",
    )
    host: str | None = Field(
        default=None,
        description=(
            "With MAILER_CONSOLE__PORT: the address of the console's own listener (for an "
            "internal-only console); empty: 127.0.0.1."
        ),
    )
    port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description=(
            "Port of the console's own listener (0: any free); the web port then serves no "
            "/admin/. Empty: the console is on the web port."
        ),
    )
    session_idle: float = Field(
        default=8 * 3600.0,
        gt=0,
        description="Seconds without a request after which a staff session ends.",
    )
    session_max: float = Field(
        default=7 * 86400.0,
        gt=0,
        description="Seconds after sign-in at which a staff session ends, however active.",
    )
    trusted_header: str = Field(
        default="",
        description=(
            "Header naming the signed-in staff member's address, set by a reverse proxy "
            "(X-Remote-User for Shibboleth or oauth2-proxy); honoured only from "
            "MAILER_WEB__TRUSTED_PROXIES and only for existing users. Empty: none."
        ),
    )
    login_attempts: int = Field(
        default=5,
        ge=1,
        description="Failed sign-ins per account in 15 minutes before it is refused for a while.",
    )
    login_attempts_per_ip: int = Field(
        default=20,
        ge=1,
        description="Failed sign-ins per client address in 15 minutes before it is refused.",
    )
    cache_counts: bool = Field(
        default=True,
        description=(
            "Show the costly counts of large lists and sends (progress, members by status, "
            "audiences) from a reading a few seconds old, made once for everyone looking, "
            "instead of counting at every look; false: count at every look."
        ),
    )
    upload_max_bytes: int = Field(
        default=50 * MIB,
        ge=1024,
        description="Largest list file (CSV) the console accepts for an import, in bytes.",
    )
    test_recipients: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated addresses (a seed list: a@example.org,b@example.org) a test "
            "send may go to besides the staff member's own; no other. Empty: one's own only."
        ),
    )
    require_approval: bool = Field(
        default=True,
        description=(
            "A campaign made in the console is scheduled only once a sender approved it "
            "(its content and audience frozen); false: a sender may schedule a draft "
            "directly, recorded as approved by them."
        ),
    )
    allow_self_approval: bool = Field(
        default=False,
        description=(
            "Whoever saved a version of a campaign since its last approval, or submitted it, "
            "may approve it; false: another person must."
        ),
    )

    @field_validator("test_recipients", mode="before")
    @classmethod
    def _recipients(cls, value: Any) -> Any:
        value = split_commas(value)
        return email_addresses(value) if isinstance(value, list) else value

    @field_validator("host", "trusted_header")
    @classmethod
    def _stripped(cls, value: str | None) -> str | None:
        return value.strip() if isinstance(value, str) else value

    @field_validator("trusted_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if value and not _HEADER_NAME.fullmatch(value):
            raise ValueError(f"expected a header name such as X-Remote-User, got {value!r}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> ConsoleSettings:
        if self.host and self.port is None:
            raise ValueError(
                "MAILER_CONSOLE__HOST needs MAILER_CONSOLE__PORT (the console's own listener); "
                "leave both empty to serve the console on the web port"
            )
        if self.session_idle > self.session_max:
            raise ValueError(
                "MAILER_CONSOLE__SESSION_IDLE must not exceed MAILER_CONSOLE__SESSION_MAX "
                f"({self.session_idle:g} s > {self.session_max:g} s)"
            )
        return self


class SchedulerSettings(Section):
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


class DeliverySettings(Section):
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
    render_workers: Annotated[int | Literal["auto"], BeforeValidator(workers_value)] = Field(
        default="auto",
        description=(
            "Processes that run the pre-flight and build the messages of a send of 1,000 or "
            "more, on the other cores; auto: one per core but one (at least 1, at most 16); "
            "0: everything in the sending process."
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


class PathSettings(Section):
    data_dir: Path = Field(
        default=Path("data"), description="Folder for the SQLite file, captured mail, keys."
    )
    templates_dir: Path = Field(default=Path("templates"), description="Jinja templates.")
    lists_dir: Path = Field(
        default=Path("lists"), description="Subscriber list files (*.csv) for `lists sync`."
    )


class LogSettings(Section):
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
    console: ConsoleSettings = ConsoleSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    delivery: DeliverySettings = DeliverySettings()
    paths: PathSettings = PathSettings()
    log: LogSettings = LogSettings()
    bounces: BounceSettings = BounceSettings()
    api: ApiSettings = ApiSettings()
    webhooks: WebhookSettings = WebhookSettings()
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
        return split_commas(value)

    @property
    def database_url(self) -> str:
        """The effective database URL (SQLite under the data folder by default)."""
        if self.database.url:
            return self.database.url
        return f"sqlite+aiosqlite:///{(self.paths.data_dir / 'mailer.sqlite3').resolve()}"
