"""Postponing an event re-plans its reminders (issue 13): after an update, every reminder
offset still ahead of the new start gets a send for the new date, those already sent for the
old date included (a new send key per SEQUENCE), and the update mail says what changed.

Through the real commands (``campaign create``, ``event update``, ``campaign show``) on a real
SQLite file; a reminder that "went out" is marked done in the database, as a daemon would."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.test_cli import mailer, workdir

__all__ = ["workdir"]  # the fixture, used by name

PARIS = ZoneInfo("Europe/Paris")


def event_file(folder: Path, start: datetime, place: str = "Hôpital Pitié-Salpêtrière") -> Path:
    path = folder / "campaigns" / "journee.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(
        'name = "journee"\nkind = "event"\nlists = ["researchers"]\n'
        '[content.fr]\nbody = "Venez."\n[content.en]\nbody = "Do come."\n'
        f'[event]\ntitle = "Journée de recherche"\nstart = {start:%Y-%m-%dT%H:%M:%S}\n'
        f'place = "{place}"\nreminders = ["7d", "1d"]\n',
        encoding="utf-8",
    )
    return path


def sends(folder: Path) -> dict[str, tuple[str, datetime]]:
    with sqlite3.connect(folder / "data" / "mailer.sqlite3") as db:
        rows = db.execute("SELECT key, status, due_at FROM sends").fetchall()
    return {
        key: (status, datetime.fromisoformat(due).replace(tzinfo=UTC)) for key, status, due in rows
    }


def mark_sent(folder: Path, key: str) -> None:
    """As a daemon would have it once the send went out (the ledger is not needed here)."""
    with sqlite3.connect(folder / "data" / "mailer.sqlite3") as db:
        db.execute("UPDATE sends SET status = 'done' WHERE key = ?", (key,))


def test_postponing_after_the_d7_reminder_plans_a_new_d7(workdir: Path) -> None:
    assert mailer(workdir, "init").returncode == 0
    start = (datetime.now(PARIS) + timedelta(days=10)).replace(
        hour=9, minute=0, second=0, microsecond=0, tzinfo=None
    )
    created = mailer(workdir, "campaign", "create", str(event_file(workdir, start)))
    assert created.returncode == 0, created.stderr
    before = sends(workdir)
    assert set(before) == {"invitation", "reminder:P7D", "reminder:P1D"}
    mark_sent(workdir, "reminder:P7D")  # the D-7 went out three days from now... already

    later = start + timedelta(days=14)
    moved = mailer(
        workdir, "event", "update", "journee", str(event_file(workdir, later, "Imagine"))
    )
    assert moved.returncode == 0, moved.stderr
    after = sends(workdir)
    # the D-7 already sent for the old date stays as it was; a new one for the new date
    assert after["reminder:P7D"] == ("done", before["reminder:P7D"][1])
    status, due = after["reminder:P7D@1"]
    expected = (later - timedelta(days=7)).replace(tzinfo=PARIS).astimezone(UTC)
    assert (status, due) == ("scheduled", expected)
    # the D-1 still to come moved with the event, under its own key
    assert after["reminder:P1D"] == ("scheduled", (later - timedelta(days=1)).replace(
        tzinfo=PARIS).astimezone(UTC))  # fmt: skip
    assert "reminder:P7D@1" in moved.stdout

    # moving it again re-plans the new D-7 (still scheduled): no third key
    again = start + timedelta(days=21)
    assert (
        mailer(workdir, "event", "update", "journee", str(event_file(workdir, again))).returncode
        == 0
    )
    final = sends(workdir)
    assert "reminder:P7D@2" not in final
    assert final["reminder:P7D@1"][1] == (again - timedelta(days=7)).replace(
        tzinfo=PARIS).astimezone(UTC)  # fmt: skip


def test_an_earlier_date_drops_the_reminders_whose_time_has_passed(workdir: Path) -> None:
    assert mailer(workdir, "init").returncode == 0
    start = (datetime.now(PARIS) + timedelta(days=20)).replace(
        hour=9, minute=0, second=0, microsecond=0, tzinfo=None
    )
    assert mailer(workdir, "campaign", "create", str(event_file(workdir, start))).returncode == 0
    sooner = (datetime.now(PARIS) + timedelta(days=3)).replace(
        hour=9, minute=0, second=0, microsecond=0, tzinfo=None
    )
    moved = mailer(workdir, "event", "update", "journee", str(event_file(workdir, sooner)))
    assert moved.returncode == 0, moved.stderr
    after = sends(workdir)
    assert after["reminder:P7D"][0] == "cancelled"
    assert after["reminder:P1D"][0] == "scheduled"
    assert "cancelled: reminder:P7D" in moved.stdout


def set_status(folder: Path, key: str, status: str, reason: str | None = None) -> None:
    with sqlite3.connect(folder / "data" / "mailer.sqlite3") as db:
        db.execute("UPDATE sends SET status = ?, reason = ? WHERE key = ?", (status, reason, key))


def test_a_paused_reminder_is_replaced_and_a_cancelled_one_stays_cancelled(workdir: Path) -> None:
    """A reminder paused for the old date (the relay refused, say) would otherwise go out
    later with the old date beside the new one: it is cancelled and replaced. One that staff
    cancelled on purpose is not brought back by the move."""
    assert mailer(workdir, "init").returncode == 0
    start = (datetime.now(PARIS) + timedelta(days=10)).replace(
        hour=9, minute=0, second=0, microsecond=0, tzinfo=None
    )
    assert mailer(workdir, "campaign", "create", str(event_file(workdir, start))).returncode == 0
    set_status(workdir, "reminder:P7D", "paused", "the relay refused")
    set_status(workdir, "reminder:P1D", "cancelled", "cancelled by staff")
    later = start + timedelta(days=14)
    moved = mailer(workdir, "event", "update", "journee", str(event_file(workdir, later)))
    assert moved.returncode == 0, moved.stderr
    after = sends(workdir)
    assert after["reminder:P7D"][0] == "cancelled"
    assert after["reminder:P7D@1"][0] == "scheduled"
    assert after["reminder:P1D"][0] == "cancelled"
    assert "reminder:P1D@1" not in after


def test_a_reminder_that_cannot_be_planned_leaves_the_event_as_it_was(workdir: Path) -> None:
    """The new date's D-1 falls in the spring-forward gap: refused before anything is
    written (the sequence does not grow, nothing moves)."""
    assert mailer(workdir, "init").returncode == 0
    year = datetime.now(PARIS).year + 1
    start = datetime(year, 3, 1, 2, 30)
    assert mailer(workdir, "campaign", "create", str(event_file(workdir, start))).returncode == 0
    before = sends(workdir)
    sunday = next(d for d in range(31, 24, -1) if datetime(year, 3, d).weekday() == 6)
    gap = datetime(year, 3, sunday, 2, 30) + timedelta(days=1)  # its D-1: 02:30 that Sunday
    moved = mailer(workdir, "event", "update", "journee", str(event_file(workdir, gap)))
    assert moved.returncode == 2, moved.stdout
    assert "does not exist" in moved.stderr
    assert sends(workdir) == before
    with sqlite3.connect(workdir / "data" / "mailer.sqlite3") as db:
        assert db.execute("SELECT sequence FROM events").fetchone() == (0,)
