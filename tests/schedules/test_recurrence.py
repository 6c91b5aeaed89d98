"""Recurrence rules: rates in elapsed time, cron in the rule's zone, DST, bounds, bad rules."""

from __future__ import annotations

import datetime as dt
import itertools
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from schedules.recurrence import CRON, RATE, Rule, describe, next_after, occurrences, validate

PARIS = ZoneInfo("Europe/Paris")
UTC = dt.UTC


def paris(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=PARIS)


def local(times: list[dt.datetime]) -> list[str]:
    return [t.astimezone(PARIS).strftime("%m-%d %H:%M %Z") for t in times]


def cron(expression: str, start: dt.datetime, **kw: object) -> Rule:
    return Rule(kind=CRON, cron=expression, time_zone="Europe/Paris", starts_at=start, **kw)


def test_a_rate_counts_elapsed_time_from_its_start():
    start = dt.datetime(2026, 1, 1, 9, 0, tzinfo=UTC)
    rule = Rule(kind=RATE, every=5, unit="minutes", starts_at=start)
    assert list(occurrences(rule, start - dt.timedelta(seconds=1), limit=3)) == [
        start,
        start + dt.timedelta(minutes=5),
        start + dt.timedelta(minutes=10),
    ]
    # After an occurrence, the next one; between two, the next one too.
    assert next_after(rule, start) == start + dt.timedelta(minutes=5)
    assert next_after(rule, start + dt.timedelta(minutes=7)) == start + dt.timedelta(minutes=10)


def test_a_rate_keeps_its_interval_across_a_dst_change():
    start = paris(2026, 3, 29, 1, 0)  # one hour before the spring jump in Paris
    rule = Rule(kind=RATE, every=30, unit="minutes", starts_at=start, time_zone="Europe/Paris")
    times = list(occurrences(rule, start - dt.timedelta(seconds=1), limit=4))
    assert [b - a for a, b in itertools.pairwise(times)] == [dt.timedelta(minutes=30)] * 3
    assert local(times) == [
        "03-29 01:00 CET",
        "03-29 01:30 CET",
        "03-29 03:00 CEST",
        "03-29 03:30 CEST",
    ]


def test_a_daily_cron_in_paris_runs_once_on_the_spring_forward_day():
    """02:30 does not exist on 29 March 2026 in Paris: it runs once, right after the jump."""
    rule = cron("30 2 * * *", paris(2026, 3, 27, 12, 0))
    times = list(occurrences(rule, rule.starts_at, limit=4))
    assert local(times) == [
        "03-28 02:30 CET",
        "03-29 03:00 CEST",
        "03-30 02:30 CEST",
        "03-31 02:30 CEST",
    ]


def test_a_daily_cron_in_paris_runs_once_on_the_fall_back_day():
    """02:30 happens twice on 25 October 2026 in Paris: it runs once, at the first pass."""
    rule = cron("30 2 * * *", paris(2026, 10, 24, 12, 0))
    times = list(occurrences(rule, rule.starts_at, limit=3))
    assert local(times) == ["10-25 02:30 CEST", "10-26 02:30 CET", "10-27 02:30 CET"]
    assert times[1] - times[0] == dt.timedelta(hours=25)


def test_an_hourly_cron_runs_once_per_real_hour_through_both_changes():
    spring = list(
        occurrences(
            cron("0 * * * *", paris(2026, 3, 29, 0, 30)), paris(2026, 3, 29, 0, 30), limit=3
        )
    )
    assert local(spring) == ["03-29 01:00 CET", "03-29 03:00 CEST", "03-29 04:00 CEST"]
    autumn = list(
        occurrences(
            cron("0 * * * *", paris(2026, 10, 25, 0, 30)), paris(2026, 10, 25, 0, 30), limit=4
        )
    )
    assert local(autumn) == [
        "10-25 01:00 CEST",
        "10-25 02:00 CEST",
        "10-25 02:00 CET",
        "10-25 03:00 CET",
    ]
    assert all(b - a == dt.timedelta(hours=1) for a, b in itertools.pairwise(autumn))


def test_occurrences_are_utc_and_within_the_bounds():
    start = paris(2026, 6, 1, 0, 0)
    rule = cron("0 9 * * *", start, ends_at=paris(2026, 6, 3, 9, 0))
    times = list(occurrences(rule, start))
    assert [t.tzinfo for t in times] == [UTC] * 3
    assert local(times) == ["06-01 09:00 CEST", "06-02 09:00 CEST", "06-03 09:00 CEST"]
    capped = Rule(kind=RATE, every=1, unit="hours", starts_at=start, max_runs=5)
    assert len(list(occurrences(capped, start, runs_so_far=3))) == 2
    assert next_after(capped, start, runs_so_far=5) is None


def test_descriptions_read_as_words():
    start = paris(2026, 6, 1, 0, 0)
    assert describe(Rule(kind=RATE, every=5, unit="minutes", starts_at=start)) == "Every 5 minutes"
    assert describe(Rule(kind=RATE, every=1, unit="hours", starts_at=start)) == "Every hour"
    assert describe(cron("0 9 * * 1", start, max_runs=3)) == (
        "At 09:00 on Monday (Europe/Paris), at most 3 runs"
    )


def errors(rule: Rule) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        validate(rule)
    return caught.value.message_dict


START = dt.datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rule", "field", "text"),
    [
        (Rule(kind=CRON, cron="61 * * * *", starts_at=START), "cron", "Bad minute"),
        (Rule(kind=CRON, cron="* * * *", starts_at=START), "cron", "must have 5 fields"),
        (Rule(kind=CRON, cron="0 0 30 2 *", starts_at=START), "cron", "Bad day-of-month"),
        (
            Rule(kind=CRON, cron="0 9 * * *", starts_at=START, time_zone="Mars/Olympus"),
            "time_zone",
            "'Mars/Olympus' is not a known time zone",
        ),
        (Rule(kind=RATE, every=0, unit="minutes", starts_at=START), "rate_every", "1 or more"),
        (
            Rule(kind=RATE, every=5, unit="fortnights", starts_at=START),
            "rate_unit",
            "must be one of",
        ),
        (
            Rule(kind=RATE, every=5, unit="minutes", starts_at=START, ends_at=START),
            "ends_at",
            "must be after starts_at",
        ),
        (
            Rule(kind=RATE, every=5, unit="minutes", starts_at=START, max_runs=0),
            "max_runs",
            "1 or more",
        ),
        (Rule(kind="weekly", starts_at=START), "schedule_type", "must be 'rate' or 'cron'"),
        (
            Rule(
                kind=CRON,
                cron="0 9 1 1 *",  # 1 January at 09:00: none from 09:01 to 3 January
                starts_at=START + dt.timedelta(minutes=1),
                ends_at=START + dt.timedelta(days=2),
            ),
            "ends_at",
            "no occurrence between start and end",
        ),
    ],
)
def test_bad_rules_name_the_field_and_the_rule(rule, field, text):
    assert text in errors(rule)[field][0]


def test_a_rate_faster_than_the_minimum_is_refused(settings):
    settings.SCHEDULES_MIN_RATE_SECONDS = 10
    rule = Rule(kind=RATE, every=5, unit="seconds", starts_at=START)
    assert (
        "faster than the minimum of 10 s (SCHEDULES_MIN_RATE_SECONDS)"
        in errors(rule)["rate_every"][0]
    )
    settings.SCHEDULES_MIN_RATE_SECONDS = 1
    validate(rule)
