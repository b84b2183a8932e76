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
every few hundred of them. A process of the render pool is also stopped from outside (see
:mod:`mailer.dispatch.render_pool`), for what the sandbox cannot see.

Template files: ``email/<kind>.<locale>.html`` extends ``email/base.<locale>.html``; an
optional ``email/<kind>.<locale>.txt`` is the text part, otherwise the text is derived from
the HTML. A kind template has a ``subject`` block used when the campaign has no subject.
The language is the subscriber's, else the list's default, else the campaign's first (for
words stored before languages: French); French content gets French typography.

A package, one noun a module, so that each part can be read alone and the layer contract
names one stage (``mailer.render``) for all of them; import from here, not from the parts:

- :mod:`~mailer.render.renderer`: the environment over a folder, a send compiled from it;
- :mod:`~mailer.render.compiled_send`: a compiled send rendered per recipient, the pre-flight;
- :mod:`~mailer.render.sandbox`: the sandboxed environment, its loader, its loop counting;
- :mod:`~mailer.render.limits`: the budget, the sizes, the checks the sandbox makes;
- :mod:`~mailer.render.body`: the campaign body (Markdown, HTML, text) as an HTML and a text
  template;
- :mod:`~mailer.render.plaintext`: Markdown and HTML turned into real plain text;
- :mod:`~mailer.render.typography`: French typography on text and on HTML's text;
- :mod:`~mailer.render.moments`: an event's times and changes in words, per language and
  reader;
- :mod:`~mailer.render.finishing`: CSS inlined and text derived, once for many recipients;
- :mod:`~mailer.render.dates`: the date filters and the event's dates.
"""

from __future__ import annotations

from mailer.render.compiled_send import (
    CheckReport,
    Choice,
    CompiledSend,
    LanguageTally,
    preflight,
)
from mailer.render.limits import MAX_OUTPUT, MAX_RANGE, RENDER_BUDGET
from mailer.render.renderer import Renderer

__all__ = [
    "MAX_OUTPUT",
    "MAX_RANGE",
    "RENDER_BUDGET",
    "CheckReport",
    "Choice",
    "CompiledSend",
    "LanguageTally",
    "Renderer",
    "preflight",
]
