"""The exceptions mailer raises; this module imports nothing from the package.

Classified by what the caller should do about them::

    MailerError
    ├── ConfigError (ValueError)          a setting is wrong: fix .env / the environment
    ├── StorageError                      the database misbehaved
    │   └── StorageUnavailable (ConnectionError)   it cannot be reached or written
    ├── NotFoundError (LookupError)       an unknown list, subscriber, campaign...
    ├── ListImportError (ValueError)      a list file cannot be read at all (file, reason)
    ├── AddressError (ValueError)         an e-mail address is invalid (reason)
    ├── TemplateError (ValueError)        a template cannot render (template, line, cause)
    ├── MessageError (ValueError)         a header value or address cannot go on the wire
    ├── AccountError (ValueError)         a staff password breaks the rules (reason)
    ├── transport.TransportFatal (ConnectionError)  login, TLS or relay set-up refused: pause
    ├── StateError (ValueError)           an illegal transition (``mailer.lifecycle`` refuses the
    │   │                                 move; subscribing a suppressed address)
    │   └── SendingLocked                 another process sends from this SQLite file
    └── StaleEdit                         a campaign changed since it was read (by, at): reload
"""

from __future__ import annotations

from datetime import datetime


class MailerError(Exception):
    """Base class of every error mailer raises on purpose."""


class ConfigError(MailerError, ValueError):
    """A setting is missing or wrong; the message names the variable and what is expected."""


class StorageError(MailerError):
    """The database refused an operation."""


class StorageUnavailable(StorageError, ConnectionError):
    """The database cannot be reached, opened or written."""


class NotFoundError(MailerError, LookupError):
    """Something named by the user does not exist."""


class ListImportError(MailerError, ValueError):
    """A list file cannot be imported at all; nothing was changed."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class AddressError(MailerError, ValueError):
    """An e-mail address is not acceptable."""


class TemplateError(MailerError, ValueError):
    """A template is missing, does not compile, or fails for a recipient."""


class MessageError(MailerError, ValueError):
    """A message cannot be built: a header value with CR/LF or control characters, a bad address."""


class AccountError(MailerError, ValueError):
    """A staff password is refused; ``reason`` names the rule for the console's own words.

    ``reason`` is one of ``too_short``, ``contains_email``, ``contains_name``, ``too_common``;
    the message is English, for the command line.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class StateError(MailerError, ValueError):
    """The requested change is not allowed from the current state."""


class SendingLocked(StateError):
    """Another mailer process sends from this SQLite file (one sender per file)."""


EVENT_MOVED_MEANWHILE = "the event was changed meanwhile; look at it again"


class StaleEdit(MailerError):
    """A campaign was changed by someone else since this version was read: the save, submit
    or approval that expected the older version changed nothing (``by`` and ``at`` say whose
    change won, ``at`` in UTC)."""

    def __init__(self, by: str | None, at: datetime) -> None:
        super().__init__(
            f"changed by {by or 'someone'} at {at:%Y-%m-%d %H:%M} UTC; reload to see their change"
        )
        self.by = by
        self.at = at
