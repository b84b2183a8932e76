"""The delivery commands as a user runs them: `send run`, `send retry-failed` and their exit
codes, and suppressions that can be lifted (`subscribers suppress`, `unsuppress`, `show`).

A real SQLite file and the real SMTP server of tests/smtpd.py (in this test's event loop):
the commands run in this process, in a worker thread, except `send run` and `send
retry-failed` (signal handlers: the main thread), real processes started with asyncio's
subprocess API (tests/cli_support.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests import cli_support
from tests.cli_support import Ran
from tests.smtpd import SmtpServer

ROOT = Path(__file__).resolve().parent.parent
KEY = "delivery-Zq3xV8pL1mN6bT0rW4yK7cH2sD9fG5jA-eU_iO3aQwE"  # 256 bits, as required

pytestmark = pytest.mark.timeout(120)


def environment(server: SmtpServer | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(COLUMNS="200", MAILER_WEB__PORT="0", MAILER_SECRET_KEYS=KEY)
    if server is not None:
        env.update(
            MAILER_SMTP__HOST=server.host, MAILER_SMTP__PORT=str(server.port),
            MAILER_SMTP__SECURITY="none", MAILER_WEB__BASE_URL="https://news.example.org",
            MAILER_DELIVERY__RETRY_BASE="0.05",
        )  # fmt: skip
    return env


async def mailer(cwd: Path, server: SmtpServer | None, *args: str) -> Ran:
    """In this process, or a real one for `send run`/`retry-failed` (tests/cli_support.py)."""
    return await cli_support.amailer(cwd, *args, env=environment(server))


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout-like folder: the shipped templates, one list of 14 and a campaign to it;
    `mailer lists sync` run there once (each test works on a copy)."""
    folder = tmp_path_factory.mktemp("synced")
    shutil.copytree(ROOT / "templates", folder / "templates")
    (folder / "lists").mkdir()
    rows = "".join(f"person{i}@example.org,Personne {i}\n" for i in range(14))
    (folder / "lists" / "members.csv").write_text("email,name\n" + rows, encoding="utf-8")
    (folder / "campaigns").mkdir()
    (folder / "campaigns" / "news.toml").write_text(
        'name = "news"\nkind = "announcement"\nlists = ["members"]\nsubject = "Nouvelles"\n'
        'body = "Des nouvelles du réseau."\nsend_at = "now"\n',
        encoding="utf-8",
    )
    synced = cli_support.mailer(folder, "lists", "sync", env=environment(None))
    assert synced.returncode == 0, synced.stderr
    assert "members: 14 rows read; 14 added" in synced.stdout, synced.stdout
    return folder


@pytest.fixture
def workdir(synced: Path, tmp_path: Path) -> Path:
    """A copy of the synced folder (its SQLite file included), for one test to change."""
    shutil.copytree(synced, tmp_path, dirs_exist_ok=True)
    return tmp_path


async def test_suppress_unsuppress_and_the_history(workdir: Path) -> None:
    """A suppression can be lifted with a reason; `show` prints who did what, when and why;
    lifting what is not suppressed, or without a reason, is a one-line error."""
    done = await mailer(
        workdir, None, "subscribers", "suppress", "person1@example.org", "--detail", "asked"
    )
    assert done.returncode == 0, done.stderr
    no_reason = await mailer(workdir, None, "subscribers", "unsuppress", "person1@example.org")
    assert no_reason.returncode == 2
    assert "--reason" in no_reason.stderr
    lifted = await mailer(
        workdir, None, "subscribers", "unsuppress", "person1@example.org",
        "--reason", "typed by mistake [bold]",
    )  # fmt: skip
    assert lifted.returncode == 0, lifted.stderr
    assert "person1@example.org: suppression (manual) lifted" in lifted.stdout
    shown = await mailer(workdir, None, "subscribers", "show", "person1@example.org")
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if "suppress" in line]
    assert any("suppressed" in line and "no" in line for line in lines), shown.stdout
    history = [line for line in lines if " by cli:" in line]
    assert len(history) == 2, shown.stdout
    assert "suppress (manual) by cli:" in history[0]
    assert "asked" in history[0]
    assert "unsuppress by cli:" in history[1]
    assert "typed by mistake [bold]" in history[1]
    again = await mailer(
        workdir, None, "subscribers", "unsuppress", "person1@example.org", "--reason", "x"
    )
    assert again.returncode == 2
    assert again.stderr.strip() == "error: person1@example.org is not suppressed; nothing to lift"


async def test_exit_codes_and_retry_after_unsuppress(
    workdir: Path, smtp_server: SmtpServer
) -> None:
    """`send run` exits 1 when some deliveries failed (3 unknown users, suppressed); after
    the relay is fixed and the suppressions lifted, `send retry-failed` mails them, and the
    one suppressed by staff before the send (skipped) too, and exits 0; 2 on an error."""
    staff = await mailer(workdir, None, "subscribers", "suppress", "person9@example.org")
    assert staff.returncode == 0, staff.stderr
    for i in (2, 5, 11):
        smtp_server.plan.reply("RCPT", "550 5.1.1 No such user", recipient=f"person{i}@example.org")
    created = await mailer(workdir, smtp_server, "send", "create", "campaigns/news.toml")
    assert created.returncode == 0, created.stderr
    first = await mailer(workdir, smtp_server, "send", "run", "1")
    assert first.returncode == 1, (first.stdout, first.stderr)
    assert "sent 10" in first.stdout
    assert "failed 3" in first.stdout
    assert "skipped 1" in first.stdout
    smtp_server.plan.clear()
    for i in (2, 5, 9, 11):
        lifted = await mailer(
            workdir, None, "subscribers", "unsuppress", f"person{i}@example.org",
            "--reason", "the relay was wrong",
        )  # fmt: skip
        assert lifted.returncode == 0, lifted.stderr
    retried = await mailer(workdir, smtp_server, "send", "retry-failed", "1")
    assert retried.returncode == 0, (retried.stdout, retried.stderr)
    assert "4 deliveries queued again" in retried.stdout
    assert "sent 14" in retried.stdout
    assert sorted(smtp_server.recipients()) == sorted(
        [f"person{i}@example.org" for i in range(14) if i not in (2, 5, 9, 11)]
        + [f"person{i}@example.org" for i in (2, 5, 9, 11)]
    )
    missing = await mailer(workdir, smtp_server, "send", "run", "99")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: no send 99; `mailer send list` shows them"


async def test_a_send_paused_by_a_broken_relay_exits_2(
    workdir: Path, smtp_server: SmtpServer
) -> None:
    """A relay refusing everyone pauses the send (nobody failed): `send run` exits 2."""
    smtp_server.plan.reply("RCPT", "550 5.1.1 No such user")
    assert (
        await mailer(workdir, smtp_server, "send", "create", "campaigns/news.toml")
    ).returncode == 0
    ran = await mailer(workdir, smtp_server, "send", "run", "1")
    assert ran.returncode == 2, (ran.stdout, ran.stderr)
    assert "paused" in ran.stdout
    assert "check the relay" in ran.stdout
