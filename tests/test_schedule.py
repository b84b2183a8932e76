"""Campaign files and due times: validation, DST in Europe/Paris, reminders, newsletters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailer import campaigns
from mailer.campaigns import CampaignFileError
from mailer.schedule import ScheduleError, newsletter_issues, reminders, resolve

PARIS = ZoneInfo("Europe/Paris")
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)

EVENT = """
name = "journee"
kind = "event"
lists = ["researchers"]
body = "Programme"
[event]
title = "Journée de recherche"
start = 2027-01-15T09:00:00
end = 2027-01-15T17:30:00
place = "Pitié-Salpêtrière"
reminders = ["7d", "1d", "2h"]
"""


def write(tmp_path: Path, text: str, name: str = "campaign.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_spring_gap_is_refused_with_the_nearest_valid_times() -> None:
    """02:30 on 2026-03-29 does not exist in Paris: the error offers 01:59 and 03:00."""
    with pytest.raises(ScheduleError) as caught:
        resolve(datetime(2026, 3, 29, 2, 30), PARIS, what="send_at")
    assert str(caught.value) == (
        "send_at: 2026-03-29 02:30 does not exist in Europe/Paris (the clocks go forward that "
        "night); the nearest valid times are 01:59 and 03:00"
    )


def test_the_autumn_fold_takes_the_first_unless_told_and_says_so() -> None:
    """02:30 on 2026-10-25 happens twice: first (CEST) by default, second on request."""
    first, note = resolve(datetime(2026, 10, 25, 2, 30), PARIS, what="send_at")
    second, _ = resolve(datetime(2026, 10, 25, 2, 30), PARIS, what="send_at", ambiguous="second")
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert second == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert "happens twice" in note
    assert "using the first (02:30 CEST, 00:30 UTC)" in note


def test_winter_and_summer_local_times() -> None:
    """09:00 in Paris is 08:00 UTC in January and 07:00 UTC in June."""
    assert resolve(datetime(2027, 1, 15, 9), PARIS, what="x")[0].hour == 8
    assert resolve(datetime(2027, 6, 15, 9), PARIS, what="x")[0].hour == 7


def test_reminders_keep_the_local_hour_across_a_dst_change() -> None:
    """D-1 of Monday 2026-03-30 09:00 is Sunday 09:00 local, though the clocks moved that night;
    H-2 is two elapsed hours."""
    start = resolve(datetime(2026, 3, 30, 9), PARIS, what="start")[0]
    planned, skipped = reminders(start, ["1d", "2h", "7d"], now=datetime(2026, 3, 1, tzinfo=UTC),
                                 zone=PARIS)  # fmt: skip
    local = {p.key: p.due.astimezone(PARIS) for p in planned}
    assert local["reminder:P1D"] == datetime(2026, 3, 29, 9, 0, tzinfo=PARIS)
    assert local["reminder:P7D"] == datetime(2026, 3, 23, 9, 0, tzinfo=PARIS)
    assert local["reminder:PT2H"] == datetime(2026, 3, 30, 7, 0, tzinfo=PARIS)
    assert skipped == []


def test_past_reminders_are_left_out_and_said() -> None:
    """A campaign created six days before its event gets only the reminders still ahead."""
    start = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    planned, skipped = reminders(
        start, ["7d", "1d"], now=datetime(2027, 1, 9, tzinfo=UTC), zone=PARIS
    )
    assert [p.key for p in planned] == ["reminder:P1D"]
    assert skipped[0].startswith("reminder 7d: its time")


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (datetime(2026, 10, 23, 12, tzinfo=UTC),
         [("2026-10-24", 0), ("2026-10-25", 0), ("2026-10-26", 1), ("2026-10-27", 1)]),
        (datetime(2026, 3, 27, 12, tzinfo=UTC),
         [("2026-03-28", 1), ("2026-03-29", 1), ("2026-03-30", 0), ("2026-03-31", 0)]),
    ],
    ids=["autumn", "spring"],
)  # fmt: skip
def test_a_daily_0230_newsletter_sends_once_per_local_day_across_dst(
    after: datetime, expected: list[tuple[str, int]]
) -> None:
    """APScheduler fires a 02:30 cron twice in the fold and at 03:30 in the gap; we send one
    issue per local date either way (hours are the UTC hour of each issue)."""
    issues = newsletter_issues("30 2 * * *", PARIS, after=after, until=None, count=4)
    assert [(p.key.removeprefix("issue:"), p.due.hour) for p in issues] == expected


def test_a_monthly_newsletter_stops_at_its_end() -> None:
    issues = newsletter_issues(
        "0 9 1 * *", PARIS, after=NOW, until=datetime(2027, 1, 31, tzinfo=UTC), count=5
    )
    assert [p.key for p in issues] == ["issue:2026-12-01", "issue:2027-01-01"]
    assert issues[0].due == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def test_an_event_plan(tmp_path: Path) -> None:
    """The invitation now, then reminders at D-7, D-1 and H-2 before 09:00 Paris time."""
    campaign = campaigns.load(write(tmp_path, EVENT))
    planned, notes = campaigns.plan(campaign, now=NOW, domain="example.org")
    assert [(p.key, p.due) for p in planned] == [
        ("invitation", NOW),
        ("reminder:P7D", datetime(2027, 1, 8, 8, 0, tzinfo=UTC)),
        ("reminder:P1D", datetime(2027, 1, 14, 8, 0, tzinfo=UTC)),
        ("reminder:PT2H", datetime(2027, 1, 15, 6, 0, tzinfo=UTC)),
    ]
    assert notes == []


def test_demo_rehearses_the_event_in_minutes(tmp_path: Path) -> None:
    """--demo: the event starts within 4 minutes and every reminder comes before it."""
    campaign = campaigns.load(write(tmp_path, EVENT.replace("2027", "2024")))
    planned, _ = campaigns.plan(campaign, now=NOW, domain="example.org", demo=True)
    keys = [p.key for p in planned]
    assert keys[0] == "invitation"
    assert all(NOW <= p.due < datetime(2026, 11, 25, 9, 4, tzinfo=UTC) for p in planned)
    assert "reminder:P7D" in keys
    assert "reminder:P1D" in keys


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('name = "journee"', 'name = "Journée!"'), "name: String should match pattern"),
        (('kind = "event"', 'kind = "webinar"'), "kind: Input should be 'announcement'"),
        (('lists = ["researchers"]', "lists = []"), "lists: List should have at least 1 item"),
        (('body = "Programme"', 'body = "x"\nbody_file = "x.md"'), "give body or body_file"),
        (('start = 2027-01-15T09:00:00', 'start = "demain"'), "event.start: Input should be a valid datetime"),
        (('end = 2027-01-15T17:30:00', 'end = 2027-01-15T08:00:00'), "end must be after start"),
        (('title = "Journée de recherche"', 'title = ""'), "event.title: String should have at least 1"),
        (('place = "Pitié-Salpêtrière"', 'plase = "typo"'), "event.plase: Extra inputs are not permitted"),
        (('reminders = ["7d", "1d", "2h"]', 'reminders = ["7 days"]'), "reminder '7 days': expected a number"),
        (('reminders = ["7d", "1d", "2h"]', 'reminders = ["0d"]'), "must be more than zero"),
        (('start = 2027-01-15T09:00:00', 'start = 2026-03-29T02:30:00'), "does not exist in Europe/Paris"),
        (('start = 2027-01-15T09:00:00', 'start = 2020-01-15T09:00:00'), "has passed"),
        (('kind = "event"', 'kind = "event"\ntimezone = "Mars/Olympus"'), "timezone: expected an IANA time zone"),
        (('kind = "event"', 'kind = "event"\nsubject = """a\nb"""'), "subject: the subject must be on one line"),
        (('kind = "event"', 'kind = "announcement"'), "an [event] section only goes with kind"),
    ],
)  # fmt: skip
def test_every_mistake_names_the_file_and_the_field(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    """Each wrong field is reported as file: field: what is expected."""
    old, new = change
    assert old in EVENT
    path = write(tmp_path, EVENT.replace(old, new))

    def load_and_plan() -> None:
        campaigns.plan(campaigns.load(path), now=NOW, domain="example.org")

    with pytest.raises(CampaignFileError) as caught:
        load_and_plan()
    text = str(caught.value)
    assert text.startswith(f"{path}: ")
    assert (
        message.replace("Value error", "the subject must be on one line").split(": ")[-1] in text
        or message in text
    )


def test_newsletter_and_announcement_files(tmp_path: Path) -> None:
    """A newsletter needs its cron; an announcement at a local time is stored in UTC."""
    bad = write(tmp_path, 'name = "n"\nkind = "newsletter"\nlists = ["l"]\n')
    with pytest.raises(CampaignFileError, match=r"needs a \[newsletter\] section"):
        campaigns.load(bad)
    cron = write(
        tmp_path,
        'name = "n"\nkind = "newsletter"\nlists = ["l"]\n[newsletter]\ncron = "0 9 32 * *"\n',
    )
    with pytest.raises(CampaignFileError, match=r"newsletter\.cron '0 9 32 \* \*'"):
        campaigns.plan(campaigns.load(cron), now=NOW, domain="example.org")
    announcement = write(
        tmp_path,
        'name = "a"\nkind = "announcement"\nlists = ["l"]\nsend_at = 2026-12-01T10:00:00\n',
    )
    planned, _ = campaigns.plan(campaigns.load(announcement), now=NOW, domain="example.org")
    assert [(p.key, p.due) for p in planned] == [
        ("announce", datetime(2026, 12, 1, 9, 0, tzinfo=UTC))
    ]


def test_a_file_without_timezone_uses_the_configured_default(tmp_path: Path) -> None:
    """MAILER_SCHEDULER__TIMEZONE is the zone of campaign files that name none."""
    path = write(
        tmp_path,
        'name = "a"\nkind = "announcement"\nlists = ["l"]\nsend_at = 2026-12-01T10:00:00\n',
    )
    montreal = campaigns.load(path, default_zone="America/Montreal")
    planned, _ = campaigns.plan(montreal, now=NOW, domain="example.org")
    assert planned[0].due == datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    assert montreal.content.timezone == "America/Montreal"
