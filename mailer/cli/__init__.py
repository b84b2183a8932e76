"""The ``mailer`` command line, one module per command group.

``root`` holds the group that builds the settings, the daemon and set-up commands and
:func:`run_cli` (errors become one line each and an exit status); ``lists``,
``subscribers``, ``preview``, ``sends``, ``campaigns``, ``events``, ``status``, ``users``
(the console's staff accounts) and ``bounces`` (reading bounce files) hold the other
commands; ``support`` what they share
(consoles, escaping of data, the store).

Entry-point layer: the only code that prints to the terminal or turns an error into an
exit status. It decides no state change itself: moves are named here and judged by
:mod:`mailer.lifecycle`, rows are written by :mod:`mailer.storage`.

Importing this package costs nothing: the render pool's processes, started from the
``mailer`` script, run that script again to set it up as their main module (multiprocessing
does so for a script), and would otherwise import every command and its libraries, about a
second and several MiB each before their first recipient.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailer.cli.root import cli, run_cli


def main() -> None:
    """The ``mailer`` command."""
    from mailer.cli.root import main as root_main

    root_main()


def __getattr__(name: str) -> Any:
    if name in ("cli", "run_cli"):
        from mailer.cli import root

        return getattr(root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["cli", "main", "run_cli"]
