"""Rendering: Jinja templates to subject, HTML and text, per recipient. Pure: no I/O past
loading templates, no clock (``now`` comes in), no SQL.

One sandboxed environment (``StrictUndefined``; autoescape for ``.html`` only). A send is
compiled once (:meth:`Renderer.compile`): templates per locale, the campaign body (Markdown
turned to HTML once, with its Jinja placeholders kept), the subject. Each recipient is then
rendered from those compiled pieces (:meth:`CompiledSend.render`). Any template problem is a
:class:`~mailer.errors.TemplateError` naming the template, the line and the cause.

Template files: ``email/<kind>.<locale>.html`` extends ``email/base.<locale>.html``; an
optional ``email/<kind>.<locale>.txt`` is the text part, otherwise the text is derived from
the HTML. A kind template has a ``subject`` block used when the campaign has no subject.
The locale is the subscriber's, else the list's default, else French.
"""

from __future__ import annotations

import re
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import css_inline
from babel.dates import format_date, format_datetime, format_time
from inscriptis import get_text
from inscriptis.model.config import ParserConfig
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    pass_context,
    select_autoescape,
)
from jinja2 import TemplateError as JinjaTemplateError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from mailer.errors import TemplateError
from mailer.models import (
    FALLBACK_LOCALE,
    Content,
    EventInfo,
    Links,
    Recipient,
    Rendered,
    SendInfo,
)

_PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_CACHE_SIZE = 64
_PRIVATE = "\ue000"  # marks recipient values while HTML is finished once for many recipients


@dataclass(frozen=True, slots=True)
class _Variant:
    html: Template
    text: Template | None
    subject: Template


class Renderer:
    """The one Jinja environment of the process, over a templates folder."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(templates_dir)),
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            auto_reload=False,  # dispatch makes a new Renderer when the template files change
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters.update(date=_date, time=_time, datetime=_datetime)
        self._markdown = MarkdownIt("commonmark", {"html": False})
        self._inliner = css_inline.CSSInliner(
            load_remote_stylesheets=False, keep_at_rules=True, keep_style_tags=False
        )
        self._text_config = ParserConfig(display_links=True)

    def locales(self, kind: str) -> list[str]:
        """Locales that have an HTML template for ``kind``."""
        prefix, suffix = f"email/{kind}.", ".html"
        return sorted(
            name[len(prefix) : -len(suffix)]
            for name in self.env.list_templates(extensions=["html"])
            if name.startswith(prefix) and name.count(".") == 2
        )

    def compile(self, send: SendInfo) -> CompiledSend:
        """Load and compile everything a send needs; TemplateError if anything is wrong."""
        kind = send.content.template_name
        variants: dict[str, _Variant] = {}
        for locale in self.locales(kind):
            variants[locale] = self._variant(kind, locale, send.content.subject)
        if not variants:
            raise TemplateError(
                f"no template for {kind!r}: expected {self.templates_dir}/email/{kind}.fr.html "
                "(or another locale)"
            )
        body_html, body_text = self._body(send.content)
        return CompiledSend(self, send, variants, body_html, body_text)

    def _variant(self, kind: str, locale: str, subject: str) -> _Variant:
        html = self._load(f"email/{kind}.{locale}.html")
        text = self._load(f"email/{kind}.{locale}.txt", optional=True)
        if subject:
            if "\n" in subject or "\r" in subject:
                raise TemplateError(
                    "the campaign's subject contains a line break: keep it on one line"
                )
            subject_template = self._from_string(subject, "the campaign's subject")
        else:
            if "subject" not in html.blocks:
                raise TemplateError(
                    f"email/{kind}.{locale}.html has no {{% block subject %}} and the campaign "
                    "has no subject: add one or the other"
                )
            subject_template = html
        return _Variant(html=html, text=text, subject=subject_template)

    def _load(self, name: str, *, optional: bool = False) -> Any:
        try:
            return self.env.get_template(name)
        except TemplateNotFound as exc:
            if optional and exc.name == name:
                return None
            raise TemplateError(f"template {exc.name} not found in {self.templates_dir}") from None
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"{exc.filename or exc.name or name}:{exc.lineno}: syntax error: {exc.message}"
            ) from None

    def _from_string(self, source: str, what: str, *, html: bool = False) -> Template:
        if html:
            source = "{% autoescape true %}" + source + "{% endautoescape %}"
        try:
            return self.env.from_string(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"{what}:{exc.lineno}: syntax error: {exc.message}") from None

    def _body(self, content: Content) -> tuple[Template, Template]:
        """The body as two templates: HTML (from Markdown, once) and text."""
        source = content.body
        if content.body_format == "markdown":
            kept: list[str] = []

            def _keep(match: re.Match[str]) -> str:
                kept.append(match.group(0))
                return f"mailerkeep{len(kept) - 1}x"

            html = self._markdown.render(_PLACEHOLDER.sub(_keep, source))
            html = re.sub(r"mailerkeep(\d+)x", lambda m: kept[int(m.group(1))], html)
        elif content.body_format == "html":
            html = source
        elif content.body_format == "text":
            html = "".join(f"<p>{escape(p)}</p>\n" for p in source.split("\n\n") if p.strip())
        else:
            raise TemplateError(
                f"body format {content.body_format!r}: expected markdown, html or text"
            )
        return (
            self._from_string(html, "the campaign's body", html=True),
            self._from_string(source, "the campaign's body"),
        )


class CompiledSend:
    """A send's templates, compiled once; :meth:`render` per recipient."""

    def __init__(
        self,
        renderer: Renderer,
        send: SendInfo,
        variants: dict[str, _Variant],
        body_html: Template,
        body_text: Template,
    ) -> None:
        self._renderer = renderer
        self.send = send
        self._variants = variants
        self._body_html = body_html
        self._body_text = body_text
        self._cache: OrderedDict[str, tuple[str, str | None]] = OrderedDict()
        self.zone = ZoneInfo(send.content.timezone)
        self._shared = {
            "list": {"slug": send.list.slug, "title": send.list.title},
            "campaign": {"name": send.content.name, "kind": send.content.kind},
            "sender": {"name": send.sender_name, "address": send.sender_address},
            "action": send.action,
            "event": _event_context(send.event, send.now, self.zone),
            "timezone": self.zone,
        }

    def locale_for(self, recipient: Recipient) -> str:
        for candidate in (recipient.locale, self.send.list.default_locale, FALLBACK_LOCALE):
            if not candidate:
                continue
            for option in (candidate, candidate.split("_")[0].lower()):
                if option in self._variants:
                    return option
        return next(iter(self._variants))

    def render(self, recipient: Recipient, links: Links) -> Rendered:
        locale, subject, html, text = self._jinja(recipient, links)
        html, derived = self._finish(html, recipient, links, need_text=text is None)
        return Rendered(locale=locale, subject=subject, html=html, text=text or derived or "")

    def check(self, recipient: Recipient, links: Links) -> str:
        """Render the templates for ``recipient`` without the finishing (CSS, derived text):
        what can fail for one recipient, for the pre-flight check. Returns the subject."""
        return self._jinja(recipient, links)[1]

    def _jinja(self, recipient: Recipient, links: Links) -> tuple[str, str, str, str | None]:
        locale = self.locale_for(recipient)
        variant = self._variants[locale]
        context: dict[str, Any] = {
            **self._shared,
            "locale": locale,
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
        where = f"{self.send.content.template_name}.{locale}"
        try:
            body_text = self._body_text.render(context)
            body_html = Markup(self._body_html.render(context))  # noqa: S704 - autoescaped template
            subject = _one_line(_render_subject(variant.subject, context))
            context["subject"] = subject
            html = variant.html.render({**context, "body": body_html})
            text = (
                variant.text.render({**context, "body": body_text})
                if variant.text is not None
                else None
            )
        except TemplateError:
            raise
        except (JinjaTemplateError, TypeError, ValueError, ArithmeticError) as exc:
            raise _template_error(exc, where) from None
        return locale, subject, html, text

    def _finish(
        self, html: str, recipient: Recipient, links: Links, *, need_text: bool
    ) -> tuple[str, str | None]:
        """Inline the CSS and, when asked, derive the text part from the HTML.

        Both cost hundreds of microseconds, and the HTML of most recipients differs only by
        their own values (links, address, full name). Those are swapped for markers, the
        marked HTML is finished once (or found in a small cache), and the values put back.
        Only values that cannot be mistaken for HTML syntax are marked: links, the address
        (it has an @), a name with a space in it; anything else stays and is part of the key.
        """
        values = [
            v
            for v in (
                links.unsubscribe,
                links.preferences,
                links.web_version,
                links.confirm,
                recipient.email,
            )
            if v
        ]
        if " " in recipient.name.strip():
            values.append(recipient.name)
        if _PRIVATE in html or any(_PRIVATE in v for v in values):
            inlined = self._renderer._inliner.inline(html)
            text = _tidy(get_text(inlined, self._renderer._text_config)) if need_text else None
            return inlined, text
        marked = html
        for i, value in enumerate(values):
            marked = marked.replace(str(escape(value)), f"{_PRIVATE}{chr(0xE001 + i)}")
        cached = self._cache.get(marked)
        if cached is None or (need_text and cached[1] is None):
            inlined = self._renderer._inliner.inline(marked)
            derived = _tidy(get_text(inlined, self._renderer._text_config)) if need_text else None
            cached = (inlined, derived)
            self._cache[marked] = cached
            if len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(marked)
        html_out, text_out = cached
        for i, value in enumerate(values):
            marker = f"{_PRIVATE}{chr(0xE001 + i)}"
            html_out = html_out.replace(marker, str(escape(value)))
            if text_out is not None:
                text_out = text_out.replace(marker, value)
        return html_out, text_out


@dataclass(slots=True)
class CheckReport:
    """The pre-flight check: how many recipients could not be rendered, and why."""

    total: int = 0
    failed: int = 0
    reasons: list[tuple[str, str]] = field(default_factory=list)

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


# --- helpers ------------------------------------------------------------------------------


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
        return "".join(template.blocks["subject"](template.new_context(context)))
    return template.render(context)


def _one_line(subject: str) -> str:
    subject = subject.strip()
    if "\n" in subject or "\r" in subject:
        raise TemplateError(f"the subject has a line break: {subject[:60]!r}")
    return subject


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.splitlines()]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip("\n") + "\n"


def _event_context(event: EventInfo | None, now: datetime, zone: ZoneInfo) -> dict[str, Any] | None:
    if event is None:
        return None
    start = event.start.astimezone(zone)
    days_left = (start.date() - now.astimezone(zone).date()).days
    return {
        "title": event.title,
        "start": start,
        "end": event.end.astimezone(zone) if event.end else None,
        "place": event.place,
        "link": event.link,
        "description": event.description,
        "days_left": max(days_left, 0),
        "status": event.status,
        "sequence": event.sequence,
    }


def _zone(context: Context) -> ZoneInfo:
    zone = context.get("timezone")
    return zone if isinstance(zone, ZoneInfo) else ZoneInfo("Europe/Paris")


@pass_context
def _date(context: Context, value: datetime, fmt: str = "long") -> str:
    return format_date(value.astimezone(_zone(context)), fmt, locale=context.get("locale", "fr"))


@pass_context
def _time(context: Context, value: datetime, fmt: str = "short") -> str:
    return format_time(value, fmt, tzinfo=_zone(context), locale=context.get("locale", "fr"))


@pass_context
def _datetime(context: Context, value: datetime, fmt: str = "long") -> str:
    return format_datetime(value, fmt, tzinfo=_zone(context), locale=context.get("locale", "fr"))
