"""The limits of one recipient's rendering: the time budget, the output size, the counted steps.

A body is written by staff and may be written in a browser, so each recipient gets
:data:`RENDER_BUDGET` seconds and each rendered part :data:`MAX_OUTPUT` characters; ``range()``
stops at :data:`MAX_RANGE`; a huge power or repetition is refused before it is computed. The
sandbox (:mod:`mailer.render.sandbox`) calls :func:`tick` at every step it sees (loop
iteration, call, attribute look-up, filter, piece of output), and :func:`tick` looks at the
clock every :data:`_CHECK_EVERY` of them. A passed limit is an :class:`Overrun`, a
:class:`~mailer.errors.TemplateError` raised inside Jinja code.

This module owns the numbers and the checks; it knows no template, no recipient and no
environment. Its functions run on the hot path of every recipient: keep them plain.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any
from weakref import WeakKeyDictionary

from jinja2 import Template
from jinja2.runtime import Context

from mailer.errors import TemplateError

RENDER_BUDGET = 2.0  # seconds of rendering per recipient
MAX_OUTPUT = 1 << 20  # characters in one rendered part (subject, body, HTML, text): 1 MiB
MAX_RANGE = 10_000  # items range() gives; jinja's sandbox allows 100,000
GIVE_UP_AFTER = 3  # recipients over the budget, none rendered: the template is at fault
_CHECK_EVERY = 256  # sandbox steps between two looks at the clock
# A width or precision of a million or more in a %-format or a str.format field.
_WIDE_PERCENT = re.compile(r"%(\([^)]*\))?[-+ #0]*(\d{7,}|\d*\.\d{7,})")
_WIDE_FIELD = re.compile(r"\{[^{}]*:[^{}]*\d{7,}[^{}]*\}")


class Overrun(TemplateError):
    """A limit was passed while rendering (time, size, depth); raised inside Jinja code."""


class Overtime(Overrun):
    """The time budget of one recipient was spent."""


class Budget:
    """Steps and the deadline of one recipient's rendering."""

    __slots__ = ("deadline", "steps")

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.steps = 0


# The budget of the recipient being rendered; None outside a rendering (nothing counted).
current_budget: ContextVar[Budget | None] = ContextVar("mailer_render_budget", default=None)


def tick() -> None:
    """Count one step; :class:`Overtime` if the recipient's budget is spent."""
    budget = current_budget.get()
    if budget is None:
        return
    budget.steps += 1
    if budget.steps % _CHECK_EVERY == 0 and time.monotonic() > budget.deadline:
        raise Overtime(
            f"the template took more than {RENDER_BUDGET:g} s for one recipient "
            "(a loop or a macro that runs too long?)"
        )


def too_large(what: str) -> Overrun:
    return Overrun(f"{what} would produce more than 1 MiB ({MAX_OUTPUT} characters)")


def ticking(iterable: Iterable[Any]) -> Iterator[Any]:
    """``iterable``, one step counted per item (the filter every for-loop goes through)."""
    for item in iterable:
        tick()
        yield item


def bounded(pieces: Iterable[str]) -> str:
    """The pieces of a template's output joined, stopping past MAX_OUTPUT."""
    out: list[str] = []
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > MAX_OUTPUT:
            raise Overrun(
                f"the template produced more than 1 MiB for one recipient ({size} characters)"
            )
        out.append(piece)
    return "".join(out)


_GLOBALS: WeakKeyDictionary[Template, dict[str, Any]] = WeakKeyDictionary()


def new_context(template: Template, context: dict[str, Any]) -> Context:
    """``template.new_context(context)``, its globals read once per template: Jinja copies
    them from a ChainMap twice for every render, a fifth of a small template's cost."""
    found = _GLOBALS.get(template)
    if found is None:
        found = _GLOBALS[template] = dict(template.globals)
    environment = template.environment
    return environment.context_class(
        environment, {**found, **context}, template.name, template.blocks, globals=found
    )


def render_bounded(template: Template, context: dict[str, Any]) -> str:
    """``template.render(context)`` with its output bounded (render joins it unbounded)."""
    try:
        return bounded(template.root_render_func(new_context(template, context)))
    except Exception:
        # as Template.render does: the traceback gets the template's own line numbers
        template.environment.handle_exception()


def safe_range(*args: int) -> range:
    """``range()`` for templates: at most MAX_RANGE items."""
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise Overrun(f"range() gives at most {MAX_RANGE} items, not {len(numbers)}")
    return numbers


def check_arguments(what: str, args: Iterable[Any]) -> None:
    """Integer arguments (widths, counts) past MAX_OUTPUT are refused before the call."""
    for arg in args:
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_OUTPUT:
            raise too_large(f"{what}({arg})")


def check_format(text: Any, *, percent: bool) -> None:
    """A %-format (``percent``) or a str.format text asking for a huge width is refused."""
    if isinstance(text, str) and (_WIDE_PERCENT if percent else _WIDE_FIELD).search(text):
        raise too_large(f"the format {text[:40]!r}")


def bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """The filter ``func``, counting a step, its arguments and its result checked."""
    # pass_context / pass_eval_context / pass_environment filters get one more first argument
    skip = 2 if hasattr(func, "jinja_pass_arg") else 1

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        tick()
        if len(args) > skip or kwargs:  # the filter's own arguments, past the value
            check_arguments(f"|{name}", [*args[skip:], *kwargs.values()])
        if name == "format" and len(args) >= skip:
            check_format(args[skip - 1], percent=True)
        result = func(*args, **kwargs)
        if isinstance(result, str) and len(result) > MAX_OUTPUT:
            raise too_large(f"|{name}")
        return result

    return wrapper
