"""`mailer ARGS...` run in the test's own process, for the CLI tests that are not about the
process itself: same arguments, working folder and environment as a subprocess would get, the
streams isolated by click's runner, and the result shaped like ``subprocess.CompletedProcess``
(``returncode``, ``stdout``, ``stderr``), without Python's start-up and imports each time.

:func:`mailer` (sync tests) and :func:`amailer` (async tests, whose SMTP server turns in the
test's loop: the command runs in a worker thread) choose: in this process, unless
:func:`needs_process` says the command must be a real process to behave as a user's would (the
daemon: its signals and start-up; a terminal asked for with FORCE_COLOR, which rich reads when
its consoles are made, at import; in a thread, ``send run`` and ``send retry-failed``, which
install signal handlers: main thread only). :func:`run_mailer` and :func:`arun_mailer` always
run in this process; :func:`process` always starts one. Tests about kill -9, SIGTERM, stdin
or a tty keep their own processes."""

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

from mailer.cli import run_cli, support

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
    with _LOCK:  # the logging state read under the lock: not another command's, mid-run
        handlers, level = root.handlers[:], root.level
        tuned = {name: logging.getLogger(name).level for name in _TUNED_LOGGERS}
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


def needs_process(args: tuple[str, ...], env: Mapping[str, str], *, in_thread: bool) -> bool:
    """Whether `mailer ARGS...` must be a real process to behave as a user's would: a daemon;
    a terminal asked for (FORCE_COLOR, TTY_COMPATIBLE) or the consoles made with colours (the
    tests run on a terminal with ``-s``, or under FORCE_COLOR): rich settles its colours when
    the consoles are made, at import; in a worker thread, what installs signal handlers."""
    if tuple(args[:1]) in DAEMONS or {"FORCE_COLOR", "TTY_COMPATIBLE"} & set(env):
        return True
    if in_thread and tuple(args[:2]) in _MAIN_THREAD_ONLY:
        return True
    return support.out.color_system is not None or support.err.color_system is not None


def mailer(
    cwd: Path, *args: str, env: Mapping[str, str], stdin: str | None = None, timeout: float = 60
) -> Ran:
    """A command in this process unless :func:`needs_process` says it must be a process."""
    if needs_process(args, env, in_thread=False):
        return process(cwd, *args, env=env, stdin=stdin, timeout=timeout)
    return run_mailer(cwd, *args, env=env, stdin=stdin)


async def amailer(cwd: Path, *args: str, env: Mapping[str, str], stdin: str | None = None) -> Ran:
    """:func:`mailer` for async tests: the loop keeps turning (a thread, or asyncio's
    subprocesses)."""
    if not needs_process(args, env, in_thread=True):
        return await arun_mailer(cwd, *args, env=env, stdin=stdin)
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailer", *args, cwd=cwd, env=dict(env),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    data = stdin.encode() if stdin is not None else b""
    async with asyncio.timeout(60):
        out, err = await child.communicate(data)
    assert child.returncode is not None
    return Ran(child.returncode, out.decode(), err.decode())


__all__ = [
    "DAEMONS",
    "Ran",
    "amailer",
    "arun_mailer",
    "mailer",
    "needs_process",
    "process",
    "run_mailer",
]
