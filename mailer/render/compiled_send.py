"""A compiled send: its templates compiled once, rendered per recipient, and the pre-flight
check that renders every recipient without sending.

:class:`CompiledSend` picks the recipient's language (theirs, else the list's default, else
the campaign's first; for words stored before languages, French), fills the context, renders
subject, body, HTML and text within the recipient's budget (:mod:`mailer.render.limits`)
and hands the HTML to its finisher. Every problem is a :class:`~mailer.errors.TemplateError`
naming the template, the line and the cause. Pure: the clock is the send's ``now``; nothing
here loads a template (the renderer did).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, available_timezones

from jinja2 import Template
from jinja2 import TemplateError as JinjaTemplateError
from markupsafe import Markup

from mailer.addresses import first_control
from mailer.errors import TemplateError
from mailer.models import FALLBACK_LOCALE, Links, Recipient, Rendered, SendInfo
from mailer.render.finishing import Finisher
from mailer.render.limits import (
    GIVE_UP_AFTER,
    RENDER_BUDGET,
    Budget,
    Overrun,
    Overtime,
    bounded,
    current_budget,
    new_context,
    render_bounded,
)
from mailer.render.moments import event_context, issue_date, when
from mailer.render.plaintext import html_to_text
from mailer.render.typography import french_text

_ZONES = frozenset(available_timezones())


@dataclass(frozen=True, slots=True)
class Variant:
    """The compiled templates of one language: HTML, the optional text, the subject, and the
    campaign's body (as HTML and as text) and preheader in that language."""

    html: Template
    text: Template | None
    subject: Template
    body_html: Template
    body_text: Template | None  # None: an HTML body, its text derived once rendered
    preheader: str = ""


class Choice(NamedTuple):
    """The language a recipient gets, and why: ``own`` (theirs), ``list`` (their list's
    default: they have none, or one the campaign is not written in), ``first`` (the
    campaign's first language: neither theirs nor the list's is there)."""

    locale: str
    how: str


@dataclass(slots=True)
class LanguageTally:
    """How many recipients get each language, and who falls back (the pre-flight's report)."""

    counts: dict[str, int] = field(default_factory=dict)
    without: int = 0  # had no language of their own
    fallbacks: int = 0  # had one the campaign is not written in
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # email, wanted, got

    def add(self, recipient: Recipient, choice: Choice, *, keep: int = 5) -> None:
        self.counts[choice.locale] = self.counts.get(choice.locale, 0) + 1
        if not recipient.locale:
            self.without += 1
        elif choice.how != "own":
            self.fallbacks += 1
            if len(self.examples) < keep:
                self.examples.append((recipient.email, recipient.locale, choice.locale))

    def summary(self) -> str:
        """One line: ``fr 120, en 30; 5 have no language of their own (...); 2 asked for a
        language the campaign is not written in: a@example.org de -> fr``."""
        parts = [", ".join(f"{k} {v}" for k, v in sorted(self.counts.items())) or "nobody"]
        if self.without:
            parts.append(
                f"{self.without} have no language of their own (their list's given, else the "
                "campaign's first)"
            )
        if self.fallbacks:
            shown = ", ".join(f"{e} {w} -> {g}" for e, w, g in self.examples)
            more = "" if self.fallbacks <= len(self.examples) else ", ..."
            parts.append(f"{self.fallbacks} asked for a language the campaign is not written "
                         f"in: {shown}{more}")  # fmt: skip
        return "; ".join(p for p in parts if p)


class CompiledSend:
    """A send's templates, compiled once; :meth:`render` per recipient."""

    def __init__(
        self,
        send: SendInfo,
        *,
        variants: dict[str, Variant],
        finisher: Finisher,
        extra: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.send = send
        self._variants = variants  # the languages it is written in, the fallback first
        self._neutral = not send.content.texts  # one body for every template's language
        self._finisher = finisher
        self._texts: dict[str, str] = {}  # rendered HTML body -> its text (HTML campaigns)
        self._overruns = 0  # recipients whose rendering passed the time budget
        self._rendered = 0  # and those rendered
        self.zone = ZoneInfo(send.content.timezone)
        self._shared = {
            "list": {"slug": send.list.slug, "title": send.list.title},
            "campaign": {"name": send.content.name, "kind": send.content.kind},
            "sender": {"name": send.sender_name, "address": send.sender_address},
            "action": send.action,
            "timezone": self.zone,
            "issue": {"date": issue_date(send.key, send.now, self.zone)},
        }
        self._by_locale = {
            locale: {
                "event": event_context(send.event, send.now, self.zone, locale),
                "preheader": variant.preheader,
                **(extra or {}).get(locale, {}),
            }
            for locale, variant in variants.items()
        }

    @property
    def languages(self) -> tuple[str, ...]:
        return tuple(self._variants)

    def locale_for(self, recipient: Recipient) -> str:
        return self.choice(recipient).locale

    def choice(self, recipient: Recipient) -> Choice:
        """The recipient's language: theirs, else their list's default, else the campaign's
        first (a neutral campaign: French, else the first template's)."""
        candidates = [(recipient.locale, "own"), (self.send.list.default_locale, "list")]
        if self._neutral:
            candidates.append((FALLBACK_LOCALE, "first"))
        for candidate, how in candidates:
            if not candidate:
                continue
            for option in (candidate, candidate.split("_")[0].lower()):
                if option in self._variants:
                    return Choice(option, how)
        return Choice(next(iter(self._variants)), "first")

    def render(self, recipient: Recipient, links: Links) -> Rendered:
        locale, subject, html, text = self._jinja(recipient, links)
        french = locale.split("_")[0] == "fr"
        html, derived = self._finisher.finish(
            html, recipient, links, need_text=text is None, french=french
        )
        if french:  # the HTML and its derived text had theirs in the finisher
            keep = [v for v in (recipient.name, recipient.email) if v]
            keep += [v for v in recipient.attributes.values() if v and len(v) > 1]
            subject = french_text(subject, keep=keep)
            if text is not None:
                text = self._finisher.french_text(text, recipient, links)
        return Rendered(locale=locale, subject=subject, html=html, text=text or derived or "")

    def check(self, recipient: Recipient, links: Links) -> str:
        """Render the templates for ``recipient`` without the finishing (CSS, derived text):
        what can fail for one recipient, for the pre-flight check. Returns the subject."""
        return self._jinja(recipient, links)[1]

    def _context(self, recipient: Recipient, links: Links, locale: str) -> dict[str, Any]:
        return {
            **self._shared,
            **self._by_locale[locale],
            "locale": locale,
            "event_when": self._when(recipient, locale),
            "subscriber": {
                "email": recipient.email,
                "name": recipient.name,
                "locale": recipient.locale or locale,
                "attributes": dict(recipient.attributes),
            },
            "links": {
                "unsubscribe": links.unsubscribe,
                "preferences": links.preferences,
                "web_version": links.web_version,
                "confirm": links.confirm,
            },
        }

    def _text_of(self, html: str) -> str:
        """The text of a rendered HTML body (an HTML campaign's), kept for the next recipients
        who got the same body."""
        text = self._texts.get(html)
        if text is None:
            text = html_to_text(html).strip()
            if len(self._texts) >= 64:
                self._texts.pop(next(iter(self._texts)))
            self._texts[html] = text
        return text

    def _when(self, recipient: Recipient, locale: str) -> str | None:
        """The event's date and time for this reader: with their own time when their zone
        is another one (an unknown zone is left out)."""
        event = self.send.event
        if event is None:
            return None
        reader = recipient.timezone if recipient.timezone in _ZONES else None
        return when(event.start, event.end, self.zone.key, locale, reader)

    def _jinja(self, recipient: Recipient, links: Links) -> tuple[str, str, str, str | None]:
        locale = self.locale_for(recipient)
        variant = self._variants[locale]
        context = self._context(recipient, links, locale)
        where = f"{self.send.content.template_name}.{locale}"
        if self._overruns >= GIVE_UP_AFTER and not self._rendered:
            raise TemplateError(
                f"{where}: the template took more than {RENDER_BUDGET:g} s for each of the "
                f"first {self._overruns} recipients: it is not tried for the others"
            )
        budget = current_budget.set(Budget(RENDER_BUDGET))
        try:
            body_html = Markup(render_bounded(variant.body_html, context))  # noqa: S704 - autoescaped template
            body_text = (
                render_bounded(variant.body_text, context)
                if variant.body_text is not None
                else self._text_of(str(body_html))
            )
            subject = _one_line(_render_subject(variant.subject, context))
            context["subject"] = subject
            html = render_bounded(variant.html, {**context, "body": body_html})
            text = (
                render_bounded(variant.text, {**context, "body": body_text})
                if variant.text is not None
                else None
            )
        except Overrun as exc:
            self._overruns += isinstance(exc, Overtime)
            raise _template_error(exc, where) from None
        except TemplateError:
            raise
        except RecursionError as exc:
            exc.args = ("the template calls itself too deeply (a macro that calls itself?)",)
            raise _template_error(exc, where) from None
        except MemoryError:
            raise TemplateError(f"{where}: the template needs too much memory") from None
        except (JinjaTemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise _template_error(exc, where) from None
        finally:
            current_budget.reset(budget)
        self._rendered += 1
        return locale, subject, html, text


@dataclass(slots=True)
class CheckReport:
    """The pre-flight check: how many recipients could not be rendered, and why."""

    total: int = 0
    failed: int = 0
    reasons: list[tuple[str, str]] = field(default_factory=list)
    languages: LanguageTally = field(default_factory=LanguageTally)

    @property
    def ok(self) -> bool:
        return self.failed == 0


def preflight(
    compiled: CompiledSend,
    recipients: Iterable[tuple[Recipient, Links]],
    *,
    build: Callable[[Recipient, Rendered], object] | None = None,
    keep: int = 5,
) -> CheckReport:
    """Render (and with ``build``, turn into a message) every recipient without sending."""
    report = CheckReport()
    for recipient, links in recipients:
        report.total += 1
        report.languages.add(recipient, compiled.choice(recipient))
        try:
            if build is None:
                compiled.check(recipient, links)
            else:
                build(recipient, compiled.render(recipient, links))
        except (TemplateError, ValueError) as exc:
            report.failed += 1
            if len(report.reasons) < keep:
                report.reasons.append((recipient.email, str(exc)))
    return report


def _template_error(exc: BaseException, where: str) -> TemplateError:
    """A Jinja error raised while rendering, as a TemplateError naming template and line."""
    location = where
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        name = frame.f_code.co_filename
        if name == "<template>":
            location = f"campaign body or subject:{lineno}"
        elif name.endswith((".html", ".txt")):
            location = f"{Path(name).parent.name}/{Path(name).name}:{lineno}"
    message = getattr(exc, "message", None) or str(exc)
    return TemplateError(f"{location}: {message}")


def _render_subject(template: Template, context: dict[str, Any]) -> str:
    if "subject" in template.blocks:
        return bounded(template.blocks["subject"](new_context(template, context)))
    return render_bounded(template, context)


def _one_line(subject: str) -> str:
    subject = subject.strip()
    if "\n" in subject or "\r" in subject:
        raise TemplateError(f"the subject has a line break: {subject[:60]!r}")
    bad = first_control(subject)
    if bad is not None:
        raise TemplateError(f"the subject has a control character ({bad}): {subject[:60]!r}")
    return subject
