"""Send and campaign moves from the command line: what ``mailer.lifecycle`` refuses is one
``error:`` line that names the send, the status it is in and what the move needs (exit 2, no
traceback); what it allows prints what was done."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests import cli_support
from tests.cli_support import Ran

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_WEB__PORT"] = "0"
    env["COLUMNS"] = "200"
    return env


def mailer(cwd: Path, *args: str) -> Ran:
    """`mailer ARGS...` in this process (tests/cli_support.py): the moves are not about it."""
    return cli_support.mailer(cwd, *args, env=clean_env())


def one_error(result: Ran) -> str:
    """The single `error:` line of a refused command (exit 2, and no traceback)."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def created(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh checkout's layout, initialised, with send 1 created (scheduled, due now); the
    tests work on copies of it (its SQLite file included)."""
    folder = tmp_path_factory.mktemp("created")
    for name in ("lists", "templates", "campaigns"):
        shutil.copytree(ROOT / name, folder / name)
    assert mailer(folder, "init").returncode == 0
    assert mailer(folder, "send", "create", "campaigns/actualites-car-t.toml").returncode == 0
    return folder


def _project(created: Path, folder: Path) -> Path:
    """A copy of the created project: send 1 scheduled, due now."""
    shutil.copytree(created, folder, dirs_exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def finished(created: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose send 1 ran to the end (done), into the capture Maildir."""
    project = _project(created, tmp_path_factory.mktemp("moves"))
    ran = mailer(project, "send", "run", "1")
    assert ran.stdout.startswith("send 1: done;"), ran
    return project


def test_pausing_a_finished_send_says_it_is_done_and_what_pause_needs(finished: Path) -> None:
    """`send pause` of a done send: the lifecycle's refusal, in one line."""
    assert one_error(mailer(finished, "send", "pause", "1")) == (
        "error: send 1 is done: it cannot pause (to paused); pause goes from running, "
        "scheduled only"
    )


def test_cancelling_an_ended_send_names_the_statuses_cancel_goes_from(finished: Path) -> None:
    """`send cancel` of a done send is refused the same way, and the send stays done."""
    assert one_error(mailer(finished, "send", "cancel", "1")) == (
        "error: send 1 is done: it cannot cancel (to cancelled); cancel goes from paused, "
        "running, scheduled only"
    )
    assert mailer(finished, "send", "status", "1").stdout.startswith("send 1: done;")


def test_moving_an_unknown_send_says_there_is_no_such_send(finished: Path) -> None:
    """An id that names no send is one line too."""
    assert one_error(mailer(finished, "send", "pause", "99")) == "error: no send 99"


def test_campaign_moves_follow_what_staff_asked_last(finished: Path) -> None:
    """Campaign moves carry no condition (the lifecycle's table): cancelling then resuming a
    finished campaign changes no send and exits 0, as before the table."""
    cancelled = mailer(finished, "campaign", "cancel", "actualites-car-t")
    assert (cancelled.returncode, cancelled.stdout) == (
        0, "campaign actualites-car-t cancelled (0 send(s))\n"
    )  # fmt: skip
    resumed = mailer(finished, "campaign", "resume", "actualites-car-t")
    assert (resumed.returncode, resumed.stdout) == (
        0, "campaign actualites-car-t resumed (0 send(s))\n"
    )  # fmt: skip
    assert mailer(finished, "send", "status", "1").stdout.startswith("send 1: done;")


def test_a_scheduled_send_pauses_once_then_cancels(created: Path, tmp_path: Path) -> None:
    """The moves the table allows go through; pausing a paused send is refused."""
    project = _project(created, tmp_path)
    paused = mailer(project, "send", "pause", "1")
    assert (paused.returncode, paused.stdout) == (0, "send 1 paused\n")
    assert one_error(mailer(project, "send", "pause", "1")) == (
        "error: send 1 is paused: it cannot pause (to paused); pause goes from running, "
        "scheduled only"
    )
    cancelled = mailer(project, "send", "cancel", "1")
    assert (cancelled.returncode, cancelled.stdout) == (0, "send 1 cancelled\n")
    assert mailer(project, "send", "status", "1").stdout.startswith("send 1: cancelled;")
