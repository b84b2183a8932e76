"""`mailer bounces import|list|show` and `parse`'s delivery, through the real command line (in
this process, on the test's SQLite or PostgreSQL database): a Maildir of DSNs stored once
however often it is imported, what came back listed and shown, the raw message printed while
it is kept, and the delivery a signed return path names."""

from __future__ import annotations

import json
import mailbox
import os
from pathlib import Path

import pytest

from mailer.storage import Store
from mailer.tokens import Signer, return_path
from tests import cli_support
from tests.test_bounce_intake import DOMAIN, delivery_lines, hard, sent, suppressed

pytestmark = pytest.mark.timeout(60)
KEY = "ae1b1f8f00f8cf327487c3124a3add2da317fa5bfe47546d02a9afe22a213a13"  # 32 random bytes, as the setting asks


def env_for(tmp_path: Path, database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(
        COLUMNS="250",
        MAILER_DATABASE__URL=database_url,
        MAILER_PATHS__DATA_DIR=str(tmp_path / "data"),
        MAILER_LOG__LEVEL="WARNING",
        MAILER_SECRET_KEYS=KEY,
        MAILER_BOUNCES__DOMAIN=DOMAIN,
    )
    return env


async def test_import_a_maildir_twice_stores_each_bounce_once(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    """A Maildir of two DSNs: imported, both deliveries bounced and suppressed; imported again,
    both are duplicates and nothing changes."""
    send_id, ids = await sent(store, tmp_path)
    box = mailbox.Maildir(tmp_path / "backlog", create=True)
    for i in (0, 1):
        box.add(hard("news@example.org", f"person{i}@example.org",
                     returned=f"Message-ID: <{ids[i]}@test>\n"))  # fmt: skip
    env = env_for(tmp_path, database_url)
    first = await cli_support.amailer(tmp_path, "bounces", "import", str(tmp_path / "backlog"),
                                      env=env)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "2 file(s): messages 2, new 2, suppressed 2"
    assert [line.status for line in await delivery_lines(store, send_id)] == [
        "bounced", "bounced", "sent",
    ]  # fmt: skip
    assert await suppressed(store, "person1@example.org")
    again = await cli_support.amailer(tmp_path, "bounces", "import", str(tmp_path / "backlog"),
                                      env=env)  # fmt: skip
    assert again.stdout.strip() == "2 file(s): messages 2, duplicates 2"
    assert (await store.bounces.counts(send_id)) == {"hard": 2}


async def test_list_and_show_say_what_came_back(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    """`list` shows one line per recipient with its kind, status and what it did, filtered by
    kind and address; `show` one message's lines and `--raw` its bytes; an unknown id is one
    error line."""
    _, ids = await sent(store, tmp_path)
    raw = hard("news@example.org", "person0@example.org", returned=f"Message-ID: <{ids[0]}@test>\n")
    (tmp_path / "one.eml").write_bytes(raw)
    env = env_for(tmp_path, database_url)
    await cli_support.amailer(tmp_path, "bounces", "import", str(tmp_path / "one.eml"), env=env)
    listed = await cli_support.amailer(tmp_path, "bounces", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if "person0@example.org" in line]
    for word in ("import", "hard", "5.1.1", "suppressed", "550 5.1.1 user unknown"):
        assert word in row
    none = await cli_support.amailer(tmp_path, "bounces", "list", "--kind", "soft", env=env)
    assert "person0" not in none.stdout
    other = await cli_support.amailer(tmp_path, "bounces", "list", "--email", "x@y.org", env=env)
    assert "person0" not in other.stdout
    bounce_id = row.split()[1]
    shown = await cli_support.amailer(tmp_path, "bounces", "show", bounce_id, env=env)
    assert "person0@example.org" in shown.stdout
    printed = await cli_support.amailer(tmp_path, "bounces", "show", bounce_id, "--raw", env=env)
    assert printed.stdout.encode() == raw
    missing = await cli_support.amailer(tmp_path, "bounces", "show", "999999", env=env)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "error: no bounce 999999 (see mailer bounces list)"


async def test_parse_names_the_delivery_of_a_signed_return_path(
    store: Store, tmp_path: Path, database_url: str
) -> None:
    """With MAILER_BOUNCES__DOMAIN, `parse --json` gives the delivery the DSN's return path
    names; a forged one names none. Nothing is recorded."""
    send_id, ids = await sent(store, tmp_path)
    good = return_path(Signer([KEY]), ids[2], DOMAIN)
    forged = return_path(
        Signer(["25b281f408049e3b767191fc1ff27777a40559503edcba5ec723dcc911014a33"]), ids[2], DOMAIN
    )
    for name, to in (("good.eml", good), ("forged.eml", forged)):
        (tmp_path / name).write_bytes(hard(to, "person2@example.org"))
    env = env_for(tmp_path, database_url)
    ran = await cli_support.amailer(
        tmp_path, "bounces", "parse", "--json", str(tmp_path / "good.eml"),
        str(tmp_path / "forged.eml"), env=env,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert [json.loads(line)["delivery"] for line in ran.stdout.splitlines()] == [ids[2], None]
    assert (await store.bounces.counts(send_id)) == {}


async def test_import_of_a_missing_path_is_one_usage_line(
    tmp_path: Path, database_url: str
) -> None:
    ran = await cli_support.amailer(
        tmp_path,
        "bounces",
        "import",
        str(tmp_path / "nowhere"),
        env=env_for(tmp_path, database_url),
    )
    assert ran.returncode == 2
    assert "nowhere: no such file or folder" in ran.stderr
    assert "Traceback" not in ran.stderr


async def test_import_stores_a_backlog_in_batches_as_one_at_a_time(
    store: Store, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An mbox of five messages stored two to a transaction: a copy in the next batch is a
    duplicate, a message that is no bounce is kept and counts for nothing, and the tally is
    the one a message at a time gives."""
    from mailer.cli import bounce_store

    monkeypatch.setattr(bounce_store, "BATCH", 2)
    send_id, ids = await sent(store, tmp_path)
    box = mailbox.mbox(tmp_path / "backlog.mbox", create=True)
    raws = [
        hard("news@example.org", f"person{i}@example.org", returned=f"Message-ID: <{ids[i]}@test>\n",
             head=f"Message-ID: <backlog-{i}@mx.example.net>\n")
        for i in (0, 1, 2)
    ]  # fmt: skip
    for raw in (raws[0], raws[1], raws[0], raws[2], b"Subject: hello\n\nnot a bounce\n"):
        box.add(raw)
    box.close()
    env = env_for(tmp_path, database_url)
    ran = await cli_support.amailer(
        tmp_path, "bounces", "import", str(tmp_path / "backlog.mbox"), env=env
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "1 file(s): messages 5, new 4, duplicates 1, suppressed 3"
    assert [line.status for line in await delivery_lines(store, send_id)] == ["bounced"] * 3
