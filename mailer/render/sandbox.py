"""The sandbox: the one Jinja environment class of mailer, its loader and its loop counting.

:func:`environment` builds the environment a :class:`~mailer.render.renderer.Renderer`
renders with: Jinja's ``SandboxedEnvironment``, ``StrictUndefined``, autoescape for ``.html``
only, every filter bounded, ``range()`` bounded, ``lipsum`` gone, and every step it sees
counted against the recipient's budget (:mod:`mailer.render.limits`). Templates are read only
from inside the templates folder, links resolved.

This module builds and guards the environment; it compiles and renders nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, select_autoescape
from jinja2.ext import Extension
from jinja2.lexer import Token, TokenStream
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

from mailer.errors import TemplateError
from mailer.render.dates import date_filter, datetime_filter, time_filter
from mailer.render.limits import (
    MAX_OUTPUT,
    Overrun,
    bounded_filter,
    check_arguments,
    check_format,
    safe_range,
    tick,
    ticking,
    too_large,
)

TICK_FILTER = "_mailer_tick"  # the filter every for-loop's iterable goes through


class LoopTicks(Extension):
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
                    yield Token(token.lineno, "name", TICK_FILTER)
                    state = "out"
            elif token.test("name:for") and state == "out" and after_block_begin:
                state = "target"
            after_block_begin = token.type == "block_begin"
            yield token


class Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, counting its steps and refusing sizes past the limits."""

    intercepted_binops = frozenset(["*", "**", "%", "+"])

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        tick()
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, str | list | tuple):
            check_arguments(getattr(__obj, "__name__", "a method"), [*args, *kwargs.values()])
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        tick()
        if attribute in ("format", "format_map"):
            check_format(obj, percent=False)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        tick()
        if operator == "**" and isinstance(left, int) and isinstance(right, int):
            if right > 0 and abs(left) > 1 and abs(left).bit_length() * right > 4096:
                raise Overrun(f"{left} ** {right} is too large a number")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                repeated = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if repeated and len(seq) * times > MAX_OUTPUT:
                    raise too_large(f"repeating {len(seq)} items {times} times")
        elif operator == "%" and isinstance(left, str):
            check_format(left, percent=True)
            check_arguments("%", right if isinstance(right, tuple) else [right])
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, str | list | tuple) and len(result) > MAX_OUTPUT:
            raise too_large(f"the {operator!r} operation")
        return result


class FolderLoader(FileSystemLoader):
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


def environment(templates_dir: Path) -> Sandbox:
    """The sandboxed environment over ``templates_dir``, its filters and globals bounded."""
    env = Sandbox(
        loader=FolderLoader(templates_dir),
        extensions=[LoopTicks],
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        auto_reload=False,  # dispatch makes a new Renderer when the template files change
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(date=date_filter, time=time_filter, datetime=datetime_filter)
    env.filters = {name: bounded_filter(name, func) for name, func in env.filters.items()}
    env.filters[TICK_FILTER] = ticking
    env.globals["range"] = safe_range
    env.globals.pop("lipsum", None)  # up to 100,000 paragraphs of filler text
    return env
