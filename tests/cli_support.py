"""`mailer ARGS...` run in the test's own process, for the CLI tests that are not about the
process itself: same arguments, working folder and environment as a subprocess would get, the
streams isolated by click's runner, and the result shaped like ``subprocess.CompletedProcess``
(``returncode``, ``stdout``, ``stderr``), without Python's start-up and imports each time.

What must stay a real process stays one in the tests: the daemon (``mailer run``: its
signals, its start-up), rich's terminal detection (``FORCE_COLOR`` is read when the consoles
are made, at import), kill -9 and SIGTERM. :func:`run_mailer` runs in the calling thread, so a
sync test may run ``send run`` (it installs signal handlers: main thread only);
:func:`arun_mailer` runs in a worker thread, for async tests whose SMTP server turns in the
test's loop, and refuses the commands that need the main thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from mailer.cli import run_cli

# Loggers whose level the CLI's logging set-up changes (mailer.logs.configure).
_TUNED_LOGGERS = ("aiosmtplib", "apscheduler", "alembic")
_LOCK = threading.Lock()  # one command at a time: the folder and environment are the process's


@dataclass(frozen=True)
class Ran:
    """What a `mailer` command returned and printed."""

    returncode: int
    stdout: str
    stderr: str


def run_mailer(cwd: Path, *args: str, env: Mapping[str, str], stdin: str | None = None) -> Ran:
    """Run `mailer ARGS...` in ``cwd`` with exactly the environment ``env`` (variables not in
    it are unset meanwhile), in this thread; everything is put back afterwards."""
    if tuple(args[:1]) in DAEMONS:
        raise AssertionError("`mailer run`/`web` are daemons: test them as real processes")
    overlay: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    overlay.update(env)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    tuned = {name: logging.getLogger(name).level for name in _TUNED_LOGGERS}
    with _LOCK:
        before = Path.cwd()
        os.chdir(cwd)
        try:
            with CliRunner().isolation(input=stdin, env=overlay) as (out, err, _):
                code = run_cli(list(args))
                sys.stdout.flush()  # what was written to sys.stdout itself (csv), as at exit
                sys.stderr.flush()
                return Ran(code, out.getvalue().decode(), err.getvalue().decode())
        finally:  # the CLI points the root logger at its (now closed) stderr
            os.chdir(before)
            root.handlers[:], root.level = handlers, level
            for name, was in tuned.items():
                logging.getLogger(name).setLevel(was)


_MAIN_THREAD_ONLY = (("send", "run"), ("send", "retry-failed"))


async def arun_mailer(
    cwd: Path, *args: str, env: Mapping[str, str], stdin: str | None = None
) -> Ran:
    """:func:`run_mailer` in a worker thread, so that the test's loop (its SMTP server) keeps
    turning; the commands that install signal handlers are refused (main thread only)."""
    if tuple(args[:2]) in _MAIN_THREAD_ONLY:
        raise AssertionError(f"`mailer {' '.join(args[:2])}` needs the main thread: a process")
    return await asyncio.to_thread(run_mailer, cwd, *args, env=env, stdin=stdin)


DAEMONS = (("run",), ("web",))


def process(
    cwd: Path, *args: str, env: Mapping[str, str], stdin: str | None = None, timeout: float = 60
) -> Ran:
    """`python -m mailer ARGS...` as a real process (the daemon, the terminal, the entry)."""
    done = subprocess.run(
        [sys.executable, "-m", "mailer", *args], cwd=cwd, env=dict(env), capture_output=True,
        text=True, timeout=timeout, input=stdin, check=False,
    )  # fmt: skip
    return Ran(done.returncode, done.stdout, done.stderr)


def mailer(
    cwd: Path, *args: str, env: Mapping[str, str], stdin: str | None = None, timeout: float = 60
) -> Ran:
    """A command in this process, except the daemons (``run``, ``web``): a real process."""
    if tuple(args[:1]) in DAEMONS:
        return process(cwd, *args, env=env, stdin=stdin, timeout=timeout)
    return run_mailer(cwd, *args, env=env, stdin=stdin)


__all__ = ["DAEMONS", "Ran", "arun_mailer", "mailer", "process", "run_mailer"]
