"""The ``bounces`` section of the settings (``MAILER_BOUNCES__*``): where bounces come back,
how they are read in (the listener, an IMAP mailbox, relay webhooks) and what they count for."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from mailer.settings.section import Section
from mailer.settings.values import split_commas


class ImapSettings(Section):
    """``MAILER_BOUNCES__IMAP__*``: a mailbox the bounces are delivered to, polled."""

    host: str | None = Field(
        default=None, description="IMAP server to read bounces from. Empty: no mailbox is read."
    )
    port: int | None = Field(
        default=None, ge=1, le=65535,
        description="IMAP port. Empty: 993 with tls, 143 otherwise.",
    )  # fmt: skip
    security: Literal["tls", "starttls", "none"] = Field(
        default="tls",
        description="tls (implicit, port 993), starttls (required) or none (loopback only).",
    )
    user: str | None = Field(default=None, description="IMAP login.")
    password: SecretStr | None = Field(default=None, description="IMAP password (secret).")
    folder: str = Field(default="INBOX", description="Folder the bounces arrive in.")
    done_folder: str = Field(
        default="mailer-processed",
        description="Folder a message is moved to once stored (created when missing).",
    )
    poll: float = Field(
        default=60.0, gt=0, le=86400,
        description="Seconds between two looks at the folder when the server offers no IDLE.",
    )  # fmt: skip
    idle: bool = Field(
        default=True, description="Wait with IDLE when the server offers it (new mail at once)."
    )

    @field_validator("host", "user")
    @classmethod
    def _stripped(cls, value: str | None) -> str | None:
        value = value.strip() if isinstance(value, str) else value
        return value or None

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "tls" else 143)

    @model_validator(mode="after")
    def _coherent(self) -> ImapSettings:
        if self.host and (self.user is None or self.password is None):
            raise ValueError(
                "MAILER_BOUNCES__IMAP__HOST needs MAILER_BOUNCES__IMAP__USER and "
                "MAILER_BOUNCES__IMAP__PASSWORD"
            )
        return self


class HookSettings(Section):
    """``MAILER_BOUNCES__WEBHOOKS__*``: the relays whose bounce webhooks are accepted under
    ``/hooks/bounces/<provider>``; a provider without its secret is refused (404)."""

    ses_topics: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Comma-separated Amazon SNS topic ARNs whose signed notifications of SES bounces "
            "and complaints are accepted (/hooks/bounces/ses). Empty: SES off."
        ),
    )
    mailgun_signing_key: SecretStr | None = Field(
        default=None,
        description="Mailgun's webhook signing key (/hooks/bounces/mailgun; secret).",
    )
    postmark_user: str | None = Field(
        default=None,
        description="User of the basic auth Postmark calls /hooks/bounces/postmark with.",
    )
    postmark_password: SecretStr | None = Field(
        default=None, description="Password of that basic auth (secret)."
    )
    sendgrid_public_key: str | None = Field(
        default=None,
        description=(
            "SendGrid's signed event webhook verification key, base64 as SendGrid shows it "
            "(/hooks/bounces/sendgrid)."
        ),
    )

    @field_validator("ses_topics", mode="before")
    @classmethod
    def _topics(cls, value: Any) -> Any:
        value = split_commas(value)
        if isinstance(value, list):
            for topic in value:
                if not _TOPIC.fullmatch(str(topic)):
                    raise ValueError(
                        f"expected an SNS topic ARN like arn:aws:sns:eu-west-3:123456789012:"
                        f"bounces, got {topic!r}"
                    )
        return value

    @model_validator(mode="after")
    def _coherent(self) -> HookSettings:
        if (self.postmark_user is None) != (self.postmark_password is None):
            raise ValueError(
                "MAILER_BOUNCES__WEBHOOKS__POSTMARK_USER and "
                "MAILER_BOUNCES__WEBHOOKS__POSTMARK_PASSWORD go together"
            )
        return self


class BounceSettings(Section):
    domain: str | None = Field(
        default=None,
        description=(
            "Domain of the bounce return paths: each message's envelope sender is "
            "b+<signed delivery token>@DOMAIN (VERP), whose mail your MTA routes back to the "
            "mailer. Empty: the From address is the envelope sender."
        ),
    )
    listen: str | None = Field(
        default=None,
        description=(
            "HOST:PORT of the daemon's inbound SMTP listener for bounces (127.0.0.1:2526), "
            "which your MTA relays the bounce domain to. Empty: no listener."
        ),
    )
    max_size: int = Field(
        default=2_000_000, ge=10_000, le=100_000_000,
        description="Largest bounce message accepted, in bytes (larger: refused, 552).",
    )  # fmt: skip
    rate: int = Field(
        default=600, ge=1,
        description="Bounce messages accepted per minute from one client address (then 421).",
    )  # fmt: skip
    hard_limit: int = Field(
        default=1, ge=1, le=100,
        description="Hard bounces (dead address) that suppress the address.",
    )  # fmt: skip
    soft_limit: int = Field(
        default=3, ge=1, le=100,
        description=(
            "Soft bounces (temporary), on different days within STALE_DAYS, that suppress "
            "the address."
        ),
    )  # fmt: skip
    stale_days: int = Field(
        default=30, ge=1, le=3650,
        description="Days after which a soft bounce no longer counts against an address.",
    )  # fmt: skip
    keep_days: int = Field(
        default=90, ge=1, le=3650,
        description="Days a bounce's raw message is kept (its event is kept longer).",
    )  # fmt: skip
    policy_pause_rate: float = Field(
        default=0.02, gt=0, le=1,
        description=(
            "Share of a send's sent messages refused for policy (5.7.x: blocks, reputation, "
            "DMARC) that pauses the send and alerts the operator."
        ),
    )  # fmt: skip
    policy_pause_min: int = Field(
        default=10, ge=1,
        description="Policy bounces a send needs at least before that share pauses it.",
    )  # fmt: skip
    imap: ImapSettings = ImapSettings()
    webhooks: HookSettings = HookSettings()

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.strip().rstrip(".").lower()
        labels = name.split(".")
        if (
            len(name) > 253 or len(labels) < 2
            or not all(_LABEL.fullmatch(label) for label in labels)
        ):  # fmt: skip
            raise ValueError(f"expected a domain name like bounces.example.org, got {value!r}")
        return name

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        listen_address(value)
        return value.strip()

    @property
    def listen_at(self) -> tuple[str, int] | None:
        """The listener's host and port, or None."""
        return listen_address(self.listen) if self.listen else None


def listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:2526`` for IPv6) as a host and a port; ValueError if not."""
    found = _HOST_PORT.fullmatch(value.strip())
    port = int(found["port"]) if found else 0
    if found is None or not 1 <= port <= 65535:
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:2526, got {value!r}")
    host = found["v6"] or found["host"]
    if found["v6"]:
        ipaddress.IPv6Address(host)
    return host, port


_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_HOST_PORT = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+)):(?P<port>\d{1,5})"
)
_TOPIC = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}")
