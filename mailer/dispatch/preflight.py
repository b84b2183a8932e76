"""The pre-flight's checks, as values: what each recipient's message would be, sent to nobody.

:func:`check_batch` checks recipients with a send's composers (their language, their own
header values, the templates on their data; the first ones composed whole: links, MIME,
signature) and returns one :class:`Checked` per recipient, never an exception. It runs in a
thread of the sending process or in a render pool process (:mod:`~.render_pool`), whichever
the feed chose; :class:`Preflight` adds the results up in the sending process and says when
the failures belong to the campaign rather than to their recipients.

It must not touch the database or the network (the render pool's processes import it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from mailer.compose import Composer
from mailer.errors import MessageError
from mailer.models import DeliveryResult, DeliveryStatus, Due, Recipient
from mailer.render import Choice, LanguageTally

PREFLIGHT_BUILT = 20  # recipients the pre-flight composes whole (the others: rendered)


@dataclass(frozen=True, slots=True)
class Checked:
    """What the pre-flight found for one recipient (small: it comes back from a process)."""

    choice: Choice  # the language they get
    whole: bool = False  # composed whole (rendered, links made, MIME built, signed)
    failure: str | None = None  # why their message cannot be built, in words
    own: bool = False  # the failure is their own data's (a header value), not the campaign's


def describe(exc: BaseException) -> str:
    """A template's failure in words, for the delivery's reason."""
    if isinstance(exc, RecursionError):
        return "the template calls itself without end (maximum recursion depth)"
    return str(exc) or type(exc).__name__


def check_one(composer: Composer, recipient: Recipient, *, whole: bool, date: datetime) -> Checked:
    """One recipient: their header values, then composed whole or only rendered and checked."""
    choice = composer.compiled.choice(recipient)
    try:
        composer.check_recipient(recipient)
    except MessageError as exc:
        return Checked(choice, failure=describe(exc), own=True)
    try:
        if whole:
            composer.compose(recipient, date=date)
        else:
            composer.check_one(recipient)
    except Exception as exc:  # any failure of a template is its own
        # (a RecursionError of a body that calls itself, say): never the daemon's
        return Checked(choice, whole=whole, failure=describe(exc))
    return Checked(choice, whole=whole)


def check_batch(
    composers: dict[int, Composer],
    items: Iterable[tuple[int, Recipient]],
    *,
    date: datetime,
    whole: int = 0,
) -> list[Checked]:
    """Each (list id, recipient) checked, the first ``whole`` that pass their header check
    composed whole."""
    out: list[Checked] = []
    built = 0
    for list_id, recipient in items:
        checked = check_one(composers[list_id], recipient, whole=built < whole, date=date)
        built += checked.whole
        out.append(checked)
    return out


@dataclass(slots=True)
class Preflight:
    """What the pre-flight found so far, batch after batch (in the sending process)."""

    total: int = 0  # recipients to send (skipped ones aside)
    built: int = 0  # of them composed whole
    built_failed: int = 0  # of those, failed
    campaign_failed: int = 0  # failures of a template (not of a recipient's header values)
    failures: list[DeliveryResult] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # the first three, for the pause reason
    languages: LanguageTally = field(default_factory=LanguageTally)

    @property
    def whole_left(self) -> int:
        """How many more recipients are to be composed whole."""
        return max(0, PREFLIGHT_BUILT - self.built)

    def add(self, dues: list[Due], checked: list[Checked]) -> None:
        """The results of ``dues`` (none skipped), in the same order."""
        for due, found in zip(dues, checked, strict=True):
            self.total += 1
            self.languages.add(due.recipient, found.choice)
            self.built += found.whole
            if found.failure is None:
                continue
            self.failures.append(
                DeliveryResult(
                    due.id, DeliveryStatus.FAILED, reason=f"not built: {found.failure}"[:1000]
                )
            )
            if found.own:
                continue
            self.built_failed += found.whole
            self.campaign_failed += 1
            if len(self.reasons) < 3:
                self.reasons.append(f"{due.recipient.email}: {found.failure}")

    def campaign_fails(self) -> str | None:
        """The reason to pause when the failures belong to the campaign: more than half of
        the recipients checked, or of those composed whole."""
        failed = self.campaign_failed
        checked = self.total - (len(self.failures) - failed)  # recipient data set aside
        if failed and (2 * failed > checked or 2 * self.built_failed > self.built):
            return (
                f"pre-flight check: {failed} of {checked} recipients cannot be "
                "rendered or built; " + "; ".join(self.reasons)
            )
        return None
