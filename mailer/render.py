"""Rendering: Jinja templates to subject, HTML and text, per recipient. Pure: no I/O past
loading templates, no clock (``now`` comes in), no SQL.

One sandboxed environment (``StrictUndefined``; autoescape for ``.html`` only). A send is
compiled once (:meth:`Renderer.compile`): templates per locale, the campaign body (Markdown
turned to HTML once, with its Jinja placeholders kept), the subject. Each recipient is then
rendered from those compiled pieces (:meth:`CompiledSend.render`). Any template problem is a
:class:`~mailer.errors.TemplateError` naming the template, the line and the cause.

Limits, since a body is written by staff and may be written in a browser: each recipient
gets :data:`RENDER_BUDGET` seconds and each rendered part :data:`MAX_OUTPUT` characters;
``range()`` stops at :data:`MAX_RANGE`; a macro that calls itself without end, a huge
power or repetition is a TemplateError. The sandbox counts its own steps (every loop
iteration, call, attribute look-up, filter and piece of output) and looks at the clock
every few hundred of them. A render worker process is also stopped from outside (see
:mod:`mailer.workers`), for what the sandbox cannot see.

Template files: ``email/<kind>.<locale>.html`` extends ``email/base.<locale>.html``; an
optional ``email/<kind>.<locale>.txt`` is the text part, otherwise the text is derived from
the HTML. A kind template has a ``subject`` block used when the campaign has no subject.
The locale is the subscriber's, else the list's default, else French.
"""

from __future__ import annotations

import functools
import re
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
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
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from mailer.addresses import first_control
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

RENDER_BUDGET = 2.0  # seconds of rendering per recipient
MAX_OUTPUT = 1 << 20  # characters in one rendered part (subject, body, HTML, text): 1 MiB
MAX_RANGE = 10_000  # items range() gives; jinja's sandbox allows 100,000
_CHECK_EVERY = 256  # sandbox steps between two looks at the clock
# A width or precision of a million or more in a %-format or a str.format field.
_WIDE_PERCENT = re.compile(r"%(\([^)]*\))?[-+ #0]*(\d{7,}|\d*\.\d{7,})")
_WIDE_FIELD = re.compile(r"\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")
_GIVE_UP_AFTER = 3  # recipients over the budget, none rendered: the template is at fault
_TICK = "_mailer_tick"  # the filter every for-loop's iterable goes through


class _Overrun(TemplateError):
    """A limit was passed while rendering (time, size, depth); raised inside Jinja code."""


class _Overtime(_Overrun):
    """The time budget of one recipient was spent."""


class _Budget:
    """Steps and the deadline of one recipient's rendering."""

    __slots__ = ("deadline", "steps")

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.steps = 0


_budget: ContextVar[_Budget | None] = ContextVar("mailer_render_budget", default=None)


def _tick() -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps % _CHECK_EVERY == 0 and time.monotonic() > budget.deadline:
        raise _Overtime(
            f"the template took more than {RENDER_BUDGET:g} s for one recipient "
            "(a loop or a macro that runs too long?)"
        )


def _too_large(what: str) -> _Overrun:
    return _Overrun(f"{what} would produce more than 1 MiB ({MAX_OUTPUT} characters)")


def _ticking(iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        _tick()
        yield item


def _bounded(pieces: Iterable[str]) -> str:
    """The pieces of a template's output joined, stopping past MAX_OUTPUT."""
    out: list[str] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > MAX_OUTPUT:
            raise _Overrun(
                f"the template produced more than 1 MiB for one recipient ({size} characters)"
            )
        out.append(piece)
    return "".join(out)


def _render(template: Template, context: dict[str, Any]) -> str:
    """``template.render(context)`` with its output bounded (render joins it unbounded)."""
    try:
        return _bounded(template.root_render_func(template.new_context(context)))
    except Exception:
        # as Template.render does: the traceback gets the template's own line numbers
        template.environment.handle_exception()


def _safe_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise _Overrun(f"range() gives at most {MAX_RANGE} items, not {len(numbers)}")
    return numbers


def _check_arguments(what: str, args: Iterable[Any]) -> None:
    """Integer arguments (widths, counts) past MAX_OUTPUT are refused before the call."""
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_OUTPUT:
            raise _too_large(f"{what}({arg})")


def _check_format(text: Any, *, percent: bool) -> None:
    if isinstance(text, str) and (_WIDE_PERCENT if percent else _WIDE_FIELD).search(text):
        raise _too_large(f"the format {text[:40]!r}")


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # pass_context / pass_eval_context / pass_environment filters get one more first argument
    skip = 2 if hasattr(func, "jinja_pass_arg") else 1

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        if len(args) > skip or kwargs:  # the filter's own arguments, past the value
            _check_arguments(f"|{name}", [*args[skip:], *kwargs.values()])
        if name == "format" and len(args) >= skip:
            _check_format(args[skip - 1], percent=True)
        result = func(*args, **kwargs)
        if isinstance(result, str) and len(result) > MAX_OUTPUT:
            raise _too_large(f"|{name}")
        return result

    return wrapper


class _LoopTicks(Extension):
    """Every ``{% for x in ITERABLE %}`` becomes ``{% for x in (ITERABLE)|_mailer_tick %}``,
    so that loops that produce nothing and call nothing still count their steps."""

    def filter_stream(self, stream: TokenStream) -> Iterator[Token]:
        state = "out"  # out -> target (after "for") -> iterable (after "in")
        depth = 0
        after_block_begin = False
        for token in stream:
            if state == "target" and token.test("name:in"):
                yield token
                yield Token(token.lineno, "lparen", "(")
                state, depth = "iterable", 0
                continue
            if state == "iterable":
                if token.type in ("lparen", "lbracket", "lbrace"):
                    depth += 1
                elif token.type in ("rparen", "rbracket", "rbrace"):
                    depth -= 1
                elif depth == 0 and (
                    token.test("name:if") or token.test("name:recursive")
                    or token.type == "block_end"
                ):  # fmt: skip
                    yield Token(token.lineno, "rparen", ")")
                    yield Token(token.lineno, "pipe", "|")
                    yield Token(token.lineno, "name", _TICK)
                    state = "out"
            elif token.test("name:for") and state == "out" and after_block_begin:
                state = "target"
            after_block_begin = token.type == "block_begin"
            yield token


class _Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, counting its steps and refusing sizes past the limits."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | list | tuple):
            _check_arguments(getattr(__obj, "__name__", "a method"), [*args, *kwargs.values()])
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        if attribute in ("format", "format_map"):
            _check_format(obj, percent=False)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _tick()
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > 4096:
                raise _Overrun(f"{left} ** {right} is too large a number")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                repeated = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if repeated and len(seq) * times > MAX_OUTPUT:
                    raise _too_large(f"repeating {len(seq)} items {times} times")
        elif operator == "%" and isinstance(left, str):
            _check_format(left, percent=True)
            _check_arguments("%", right if isinstance(right, tuple) else [right])
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, str | list | tuple) and len(result) > MAX_OUTPUT:
            raise _too_large(f"the {operator!r} operation")
        return result


class _FolderLoader(FileSystemLoader):
    """A FileSystemLoader that reads nothing outside its folder, links resolved."""

    def __init__(self, folder: Path) -> None:
        super().__init__(str(folder))
        self._root = folder.resolve()

    def get_source(self, environment: Any, template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        if not Path(filename).resolve().is_relative_to(self._root):
            raise TemplateError(
                f"template {template} is outside the templates folder {self._root} (a link?); "
                "keep the templates there"
            )
        return source, filename, uptodate


@dataclass(frozen=True, slots=True)
class _Variant:
    html: Template
    text: Template | None
    subject: Template


class Renderer:
    """The one Jinja environment of the process, over a templates folder."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.env = _Sandbox(
            loader=_FolderLoader(templates_dir),
            extensions=[_LoopTicks],
            undefined=StrictUndefined,
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            auto_reload=False,  # dispatch makes a new Renderer when the template files change
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters.update(date=_date, time=_time, datetime=_datetime)
        self.env.filters = {
            name: _bounded_filter(name, func) for name, func in self.env.filters.items()
        }
        self.env.filters[_TICK] = _ticking
        self.env.globals["range"] = _safe_range
        self.env.globals.pop("lipsum", None)  # up to 100,000 paragraphs of filler text
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
        self._overruns = 0  # recipients whose rendering passed the time budget
        self._rendered = 0  # and those rendered
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
        if self._overruns >= _GIVE_UP_AFTER and not self._rendered:
            raise TemplateError(
                f"{where}: the template took more than {RENDER_BUDGET:g} s for each of the "
                f"first {self._overruns} recipients: it is not tried for the others"
            )
        budget = _budget.set(_Budget(RENDER_BUDGET))
        try:
            body_text = _render(self._body_text, context)
            body_html = Markup(_render(self._body_html, context))  # noqa: S704 - autoescaped template
            subject = _one_line(_render_subject(variant.subject, context))
            context["subject"] = subject
            html = _render(variant.html, {**context, "body": body_html})
            text = (
                _render(variant.text, {**context, "body": body_text})
                if variant.text is not None
                else None
            )
        except _Overrun as exc:
            self._overruns += isinstance(exc, _Overtime)
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
            _budget.reset(budget)
        self._rendered += 1
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
        return _bounded(template.blocks["subject"](template.new_context(context)))
    return _render(template, context)


def _one_line(subject: str) -> str:
    subject = subject.strip()
    if "\n" in subject or "\r" in subject:
        raise TemplateError(f"the subject has a line break: {subject[:60]!r}")
    bad = first_control(subject)
    if bad is not None:
        raise TemplateError(f"the subject has a control character ({bad}): {subject[:60]!r}")
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
