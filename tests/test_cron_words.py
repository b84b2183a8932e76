"""A newsletter's cron expression in French and English words, and its next dates
(``schedule.describe_cron``, ``schedule.next_issues``): what the newsletter form shows as it
is typed. Weekday numbers are the crontab's (1 Monday, 0 and 7 Sunday)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailer.schedule import ScheduleError, describe_cron, newsletter_issues, next_issues

PARIS = ZoneInfo("Europe/Paris")
AFTER = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # a Wednesday

CASES = [
    ("0 9 1 * *", "le 1er de chaque mois à 9\u00a0h\u00a000", "on the 1st of every month at 09:00"),
    ("0 9 * * 1", "chaque lundi à 9\u00a0h\u00a000", "every Monday at 09:00"),
    ("0 9 * * mon", "chaque lundi à 9\u00a0h\u00a000", "every Monday at 09:00"),
    ("0 9 * * 0", "chaque dimanche à 9\u00a0h\u00a000", "every Sunday at 09:00"),
    ("0 9 * * 7", "chaque dimanche à 9\u00a0h\u00a000", "every Sunday at 09:00"),
    ("0 9 * * 1-5", "du lundi au vendredi à 9\u00a0h\u00a000", "Monday to Friday at 09:00"),
    ("30 8 * * 1,4", "chaque lundi et jeudi à 8\u00a0h\u00a030", "every Monday and Thursday at 08:30"),
    ("0 0 * * sat,sun", "chaque samedi et dimanche à 0\u00a0h\u00a000", "every Saturday and Sunday at 00:00"),
    ("0 9 * * *", "chaque jour à 9\u00a0h\u00a000", "every day at 09:00"),
    ("0 9,14 * * *", "chaque jour à 9\u00a0h\u00a000 et 14\u00a0h\u00a000", "every day at 09:00 and 14:00"),
    ("0 9 1,15 * *", "le 1er et le 15 de chaque mois à 9\u00a0h\u00a000", "on the 1st and the 15th of every month at 09:00"),
    ("0 9 1-7 * *", "du 1er au 7 de chaque mois à 9\u00a0h\u00a000", "from the 1st to the 7th of every month at 09:00"),
    ("0 9 last * *", "le dernier jour de chaque mois à 9\u00a0h\u00a000", "on the last day of every month at 09:00"),
    ("0 9 22 * *", "le 22 de chaque mois à 9\u00a0h\u00a000", "on the 22nd of every month at 09:00"),
    ("0 9 11 * *", "le 11 de chaque mois à 9\u00a0h\u00a000", "on the 11th of every month at 09:00"),
    ("0 9 25 12 *", "chaque année le 25 décembre à 9\u00a0h\u00a000", "every year on 25 December at 09:00"),
    ("0 9 * 1,7 *", "chaque jour en janvier et juillet à 9\u00a0h\u00a000", "every day in January and July at 09:00"),
    ("0 9 * 3-6 1", "chaque lundi de mars à juin à 9\u00a0h\u00a000", "every Monday from March to June at 09:00"),
    ("0 9 1 1,7 *", "le 1er du mois, en janvier et juillet, à 9\u00a0h\u00a000", "on the 1st of January and July at 09:00"),
    ("0 9 1-7 * 1", "du 1er au 7 de chaque mois à 9\u00a0h\u00a000, si c’est un lundi",
     "from the 1st to the 7th of every month at 09:00, if it is a Monday"),
    ("*/15 * * * *", "chaque jour, toutes les 15 minutes", "every day, every 15 minutes"),
    ("* * * * *", "chaque jour, toutes les minutes", "every day, every minute"),
    ("*/15 9-17 * * 1-5", "du lundi au vendredi, toutes les 15 minutes de 9\u00a0h\u00a000 à 17\u00a0h\u00a045",
     "Monday to Friday, every 15 minutes from 09:00 to 17:45"),
    ("0 9-17 * * *", "chaque jour, toutes les heures de 9\u00a0h\u00a000 à 17\u00a0h\u00a000",
     "every day, every hour from 09:00 to 17:00"),
    ("0 */6 * * *", "chaque jour à 0\u00a0h\u00a000, 6\u00a0h\u00a000, 12\u00a0h\u00a000 et 18\u00a0h\u00a000",
     "every day at 00:00, 06:00, 12:00 and 18:00"),
    ("0 */2 * * *", "chaque jour, toutes les 2 heures de 0\u00a0h\u00a000 à 22\u00a0h\u00a000",
     "every day, every 2 hours from 00:00 to 22:00"),
    ("5,10,20,40,50 9,12,18 * * *", "chaque jour aux minutes 5, 10, 20, 40 et 50 des heures 9, 12 et 18",
     "every day at minutes 5, 10, 20, 40 and 50 of the hours 9, 12 and 18"),
]  # fmt: skip


@pytest.mark.parametrize(("cron", "fr", "en"), CASES, ids=[c[0] for c in CASES])
def test_cron_in_words(cron: str, fr: str, en: str) -> None:
    """Each expression reads as a person would say it, in French typography and in English."""
    assert (describe_cron(cron, "fr"), describe_cron(cron, "en")) == (fr, en)


def test_numbered_weekdays_are_the_crontabs() -> None:
    """``1`` is Monday (APScheduler 3 alone would read Tuesday), ``0`` and ``7`` Sunday,
    ``1-5`` the working week, ``*/2`` Sunday, Tuesday, Thursday and Saturday."""
    for cron, weekdays in [
        ("0 9 * * 1", {0}), ("0 9 * * 0", {6}), ("0 9 * * 7", {6}),
        ("0 9 * * 1-5", {0, 1, 2, 3, 4}), ("0 9 * * */2", {6, 1, 3, 5}),
        ("0 9 * * mon-fri", {0, 1, 2, 3, 4}), ("0 9 * * fri-sun", {4, 5, 6}),
        ("0 9 * * 5-7", {4, 5, 6}),
    ]:  # fmt: skip
        dates = next_issues(cron, PARIS, AFTER, count=8)
        assert {d.weekday() for d in dates} == weekdays, cron


def test_next_issues_are_local_times_one_per_day() -> None:
    dates = next_issues("0 9 1 * *", PARIS, AFTER)
    assert [d.isoformat() for d in dates] == [
        "2026-12-01T09:00:00+01:00", "2027-01-01T09:00:00+01:00", "2027-02-01T09:00:00+01:00",
        "2027-03-01T09:00:00+01:00", "2027-04-01T09:00:00+02:00",
    ]  # fmt: skip
    assert [p.due for p in newsletter_issues("0 9 1 * *", PARIS, after=AFTER, until=None,
            count=5)] == [d.astimezone(UTC) for d in dates]  # fmt: skip


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 9 * *", "Wrong number of fields; got 4, expected 5"),
        ("0 9 L * *", 'Unrecognized expression "L" for field "day"'),
        (
            "61 9 * * *",
            "Error validating expression '61': the last value (61) is higher than the maximum value (59)",
        ),
        (
            "0 9 * * 8",
            "Error validating expression '8': the last value (8) is higher than the maximum value (6)",
        ),
        ("0 9 * * monday", 'Invalid weekday name "monday"'),
        ("0 9 * * 5-1", "The minimum value in a range must not be higher than the maximum"),
    ],
)
def test_an_invalid_expression_is_refused_with_the_same_words(cron: str, message: str) -> None:
    """describe_cron, next_issues and newsletter_issues refuse it alike: the field, and the
    five fields expected."""
    expected = f"cron {cron!r}: {message} (expected 5 fields: minute hour day month weekday)"
    for call in (
        lambda: describe_cron(cron, "fr"),
        lambda: next_issues(cron, PARIS, AFTER),
        lambda: newsletter_issues(cron, PARIS, after=AFTER, until=None, count=1),
    ):
        with pytest.raises(ScheduleError) as caught:
            call()
        assert str(caught.value) == expected


def _part(low: int, high: int, names: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    forms = [
        st.just("*"),
        st.integers(1, high - low).map(lambda n: f"*/{n}"),
        number.map(str),
        st.tuples(number, number).map(lambda p: f"{min(p)}-{max(p)}"),
        st.tuples(number, number, st.integers(1, 5)).map(
            lambda p: f"{min(p[:2])}-{max(p[:2])}/{p[2]}"
        ),
    ]
    if names:
        forms.append(st.sampled_from(names))
    return st.lists(st.one_of(forms), min_size=1, max_size=3).map(",".join)


CRONS = st.tuples(
    _part(0, 59), _part(0, 23),
    st.one_of(_part(1, 28), st.just("last"), st.just("1,last")),
    _part(1, 12, ("jan", "mar", "dec")), _part(0, 7, ("mon", "sun", "mon-fri")),
).map(" ".join)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(CRONS)
def test_every_valid_expression_gets_words(cron: str) -> None:
    """For any expression APScheduler accepts, describe_cron says something in both languages
    (never raises); what it refuses, describe_cron refuses with the same error."""
    refused = None
    try:
        newsletter_issues(cron, PARIS, after=AFTER, until=None, count=0)
    except ScheduleError as exc:
        refused = str(exc)
    if refused is not None:
        with pytest.raises(ScheduleError) as caught:
            describe_cron(cron, "en")
        assert str(caught.value) == refused
        return
    for lang in ("fr", "en"):
        words = describe_cron(cron, lang)
        assert words
        assert "{" not in words
        assert "None" not in words


@settings(max_examples=100, deadline=None)
@given(st.sets(st.integers(0, 6), min_size=1), st.integers(0, 23), st.integers(0, 59))
def test_the_weekdays_said_are_the_days_it_runs(days: set[int], hour: int, minute: int) -> None:
    """Crontab weekdays picked at random: the dates planned fall on exactly the weekdays the
    words name (Monday=0 here; crontab's 0 is Sunday)."""
    cron = f"{minute} {hour} * * {','.join(str(d) for d in sorted(days))}"
    dates = next_issues(cron, PARIS, AFTER, count=14)
    english = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
    ran = {english[d.weekday()] for d in dates}
    words = describe_cron(cron, "en")
    named = {day for day in english if day in words}
    if " to " in words:  # "Monday to Thursday": the days between too
        first, last = (
            english.index(d) for d in sorted(named, key=english.index)[:: len(named) - 1]
        )
        named = set(english[first : last + 1])
    assert ran == named or (len(days) == 7 and named == set() and "every day" in words)
