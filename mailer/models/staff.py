"""What storage takes and returns about staff: their roles, accounts, sessions, audit log.

``Role`` is hierarchical (each role may do what the roles below it may): ``role_allows``
is the one comparison, so no caller ranks roles by hand. No I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    """What a staff member may do (stored as text in ``staff_users.role``)."""

    VIEWER = "viewer"  # reads everything but personal data exports
    EDITOR = "editor"  # drafts, previews, test sends to staff
    SENDER = "sender"  # approves, schedules, pauses, resumes, cancels
    ADMIN = "admin"  # users, lists, imports, suppressions, erasure


ROLES: tuple[Role, ...] = (Role.VIEWER, Role.EDITOR, Role.SENDER, Role.ADMIN)  # ascending power


def role_allows(role: Role, needed: Role) -> bool:
    """Whether ``role`` may do what ``needed`` may (hierarchical: its rank is at least)."""
    return ROLES.index(role) >= ROLES.index(needed)


@dataclass(frozen=True, slots=True)
class StaffUser:
    """A console account; ``email`` lower-cased, as stored and compared."""

    id: int
    email: str
    name: str | None
    role: Role
    disabled: bool
    locale: str | None  # "fr" | "en" | None (then the browser's)
    password_hash: str | None  # argon2id PHC string; None: no password (trusted header only)
    totp_secret: str | None  # base32; None: no TOTP
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StaffSession:
    """A signed-in session, found by the hash of its cookie value (never stored raw)."""

    user: StaffUser
    csrf: str
    created_at: datetime
    last_seen_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log: who (``actor``: a staff email, or ``cli:<os user>``) did
    what (``action``: ``user.add``, ``subscriber.suppress``...) to what, when, from where."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    client: str | None
