"""The one boundary where aiosmtplib's exceptions become ours: a failed connection becomes
:class:`Unreachable` (it may pass) or :class:`~.contract.TransportFatal` (the relay cannot
be used: TLS, login, configuration), and a failed transaction becomes a
:class:`~.contract.Result` (through the reply table of ``replies``) or ``TransportFatal``.

Nothing above the transport sees an aiosmtplib exception. The messages name the settings to
check; they must never hold a password, nor a recipient address but where it is the point.
"""

from __future__ import annotations

import ssl

import aiosmtplib

from mailer.message import Built
from mailer.transport.contract import Outcome, Result, TransportFatal
from mailer.transport.replies import classify_reply


class Unreachable(Exception):
    """A connection could not be opened, for a reason that may pass."""

    def __init__(self, reason: str, code: int | None = None, *, throttled: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.throttled = throttled


def tls_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind ``exc``, if any (aiosmtplib wraps some in SMTPConnectError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def connect_error(
    stage: str, exc: Exception, *, where: str, username: str | None
) -> TransportFatal | Unreachable:
    """What a failure to connect, greet, STARTTLS, log in or EHLO at ``stage`` means."""
    tls = tls_error(exc)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or tls.reason or str(tls)
        return TransportFatal(
            f"TLS with the relay {where} failed: {reason}; check MAILER_SMTP__SECURITY "
            f"(starttls on 587, tls on 465) and MAILER_SMTP__CA_FILE (the CA that signed "
            f"the relay's certificate) and that the host name matches the certificate"
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        reply = f"{exc.code} {exc.message}".strip()
        if 400 <= exc.code < 500:
            throttled = classify_reply(exc.code, exc.message).throttled
            return Unreachable(f"{stage}: {reply}", exc.code, throttled=throttled)
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            return TransportFatal(
                f"the relay {where} refused the login of {username!r}: "
                f"{reply}; check MAILER_SMTP__USERNAME and MAILER_SMTP__PASSWORD"
            )
        if exc.code < 0:
            return TransportFatal(
                f"{where} does not answer like an SMTP server ({exc.message}); "
                f"check MAILER_SMTP__HOST, MAILER_SMTP__PORT and MAILER_SMTP__SECURITY"
            )
        return TransportFatal(
            f"the relay {where} refused the session at {stage}: {reply}; check that "
            f"this machine may send through it"
        )
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected):
        return Unreachable(f"connection dropped at {stage}")
    if isinstance(exc, TimeoutError):
        return Unreachable(str(exc) or f"timed out at {stage}")
    if isinstance(exc, OSError):  # refused, unreachable, reset
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        return Unreachable(str(cause) or f"{type(cause).__name__} at {stage}")
    if isinstance(exc, aiosmtplib.SMTPException) and stage == "STARTTLS":
        return TransportFatal(
            f"the relay {where} does not offer STARTTLS, which MAILER_SMTP__SECURITY="
            f"starttls requires; use tls for an implicit-TLS port (465), or find what "
            f"strips STARTTLS between here and the relay"
        )
    if isinstance(exc, aiosmtplib.SMTPException) and stage == "AUTH":
        return TransportFatal(
            f"cannot log in to the relay {where}: {exc.message}; check "
            f"MAILER_SMTP__SECURITY and whether this relay wants a login at all"
        )
    return TransportFatal(f"cannot use the relay {where} ({stage}): {exc}")


def transaction_failure(stage: str, exc: Exception, message: Built, *, where: str) -> Result:
    """The result of a transaction that raised at ``stage`` (MAIL, RCPT or DATA)."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        refused = exc.recipients[0]
        return classify_reply(refused.code, refused.message, stage="RCPT")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code < 0:
            return Result(Outcome.DEFERRED, None, f"unreadable reply to {stage}: {exc}")
        if exc.code == 530:
            raise TransportFatal(
                f"the relay {where} requires authentication ({exc.code} "
                f"{exc.message}); set MAILER_SMTP__USERNAME and MAILER_SMTP__PASSWORD"
            ) from exc
        return classify_reply(exc.code, exc.message, stage=stage)
    maybe_sent = " (the relay may have accepted the message)" if stage == "DATA" else ""
    if isinstance(exc, TimeoutError):  # aiosmtplib's read timeouts, or our wall clock
        return Result(
            Outcome.DEFERRED, None, f"timed out waiting for the reply to {stage}{maybe_sent}"
        )
    if isinstance(exc, OSError | aiosmtplib.SMTPServerDisconnected):
        return Result(Outcome.DEFERRED, None, f"connection dropped after {stage}{maybe_sent}")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return Result(Outcome.FAILED, None, f"{exc.message} (for {message.recipient})")
    if isinstance(exc, ValueError):  # an address aiosmtplib will not put on the wire
        return Result(Outcome.FAILED, None, f"cannot be sent: {exc}")
    return Result(Outcome.DEFERRED, None, f"{stage}: {type(exc).__name__}: {exc}")
