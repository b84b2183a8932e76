"""The renderer: the process's one Jinja environment over a templates folder, and the
compiling of a send from it.

:meth:`Renderer.compile` loads everything a send needs once: per locale the kind's HTML
template, its optional text template and the subject (the campaign's own, else the
template's ``subject`` block), then the campaign body (:mod:`mailer.render.body`). A missing
template, a syntax error or a subject on two lines is a
:class:`~mailer.errors.TemplateError` before any recipient is rendered. Loading the template
files is the only I/O of the render stage, and it happens here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Template, TemplateNotFound, TemplateSyntaxError

from mailer.errors import TemplateError
from mailer.models import Content, SendInfo
from mailer.render.body import body_html_source, body_text, markdown
from mailer.render.compiled_send import CompiledSend, Variant
from mailer.render.finishing import Finisher
from mailer.render.sandbox import environment


class Renderer:
    """The one Jinja environment of the process, over a templates folder."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self.env = environment(templates_dir)
        self._markdown = markdown()

    def locales(self, kind: str) -> list[str]:
        """Locales that have an HTML template for ``kind``."""
        prefix, suffix = f"email/{kind}.", ".html"
        return sorted(
            name[len(prefix) : -len(suffix)]
            for name in self.env.list_templates(extensions=["html"])
            if name.startswith(prefix) and name.count(".") == 2
        )

    def languages(self, content: Content) -> tuple[str, ...]:
        """The languages a send of ``content`` is rendered in: the campaign's, else (neutral
        words) every language its template has."""
        return content.languages or tuple(self.locales(content.template_name))

    def compile(
        self, send: SendInfo, *, extra: Mapping[str, Mapping[str, Any]] | None = None
    ) -> CompiledSend:
        """Load and compile everything a send needs; TemplateError if anything is wrong.

        A campaign written in languages gets one variant per language, each needing its
        template; a neutral one (no languages) one per template's language. ``extra``: more
        context per language (the calendar links of an event)."""
        kind = send.content.template_name
        have = self.locales(kind)
        languages = send.content.languages or tuple(have)
        if not languages:
            raise TemplateError(
                f"no template for {kind!r}: expected {self.templates_dir}/email/{kind}.fr.html "
                "(or another locale)"
            )
        variants: dict[str, Variant] = {}
        for locale in languages:
            if locale not in have:
                raise TemplateError(
                    f"the campaign is written in {locale!r} but there is no "
                    f"{self.templates_dir}/email/{kind}.{locale}.html (templates exist for: "
                    f"{', '.join(have) or 'none'})"
                )
            variants[locale] = self._variant(kind, locale, send.content)
        return CompiledSend(
            send,
            variants=variants,
            finisher=Finisher(),
            extra=extra or {},
        )

    def _variant(self, kind: str, locale: str, content: Content) -> Variant:
        words = content.text(locale)
        subject = words.subject
        html = self._load(f"email/{kind}.{locale}.html")
        text = self._load(f"email/{kind}.{locale}.txt", optional=True)
        body_html, body_text = self._body(words.body, content.body_format, locale)
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
        return Variant(
            html=html, text=text, subject=subject_template, body_html=body_html,
            body_text=body_text, preheader=words.preheader,
        )  # fmt: skip

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

    def _body(self, source: str, body_format: str, locale: str) -> tuple[Template, Template | None]:
        """The body in one language as two templates: HTML (from Markdown, once) and text.
        An HTML body has no text template: its text is derived from the body each recipient
        got (derived from the template source, a loop between table rows would come apart)."""
        what = f"the campaign's body ({locale})"
        html = self._from_string(
            body_html_source(source, body_format, self._markdown), what, html=True
        )
        if body_format == "html":
            return html, None
        return html, self._from_string(body_text(source, body_format, self._markdown), what)
