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
"""

from mailer.cli.root import cli, main, run_cli

__all__ = ["cli", "main", "run_cli"]
