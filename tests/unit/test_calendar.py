"""The cutoff schedule: real days end at midnight in the bank's time zone, compressed ones every
`day_seconds` from the start; the first business date is the start's date in that zone."""

from __future__ import annotations

import datetime as dt

import pytest

from services.common.calendar import Calendar, cutoff, due, parse_date, starting

# 2026-12-08 00:30 in Shanghai is 2026-12-07 16:30 UTC.
START = dt.datetime(2026, 12, 7, 16, 30, tzinfo=dt.UTC).timestamp()


def test_a_new_bank_starts_on_the_date_of_its_time_zone() -> None:
    assert starting("Asia/Shanghai", 0, START).epoch_date == "2026-12-08"
    assert starting("UTC", 0, START).epoch_date == "2026-12-07"


def test_a_real_day_ends_at_midnight_in_the_banks_time_zone() -> None:
    calendar = starting("Asia/Shanghai", 0, START)
    end = cutoff(calendar, parse_date("2026-12-08"))
    assert dt.datetime.fromtimestamp(end, dt.UTC) == dt.datetime(2026, 12, 8, 16, 0, tzinfo=dt.UTC)
    assert not due(calendar, parse_date("2026-12-08"), end - 0.001)
    assert due(calendar, parse_date("2026-12-08"), end)
    assert cutoff(calendar, parse_date("2026-12-09")) - end == 86_400


def test_compressed_days_follow_each_other_from_the_start() -> None:
    calendar = starting("Asia/Shanghai", 5, START)
    first = parse_date(calendar.epoch_date)
    assert cutoff(calendar, first) == START + 5
    assert cutoff(calendar, first + dt.timedelta(days=3)) == START + 20
    assert due(calendar, first, START + 5) and not due(calendar, first, START + 4.9)


def test_a_calendar_refuses_an_unknown_zone_and_a_negative_day() -> None:
    with pytest.raises(Exception, match="Mars"):
        Calendar("Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="day_seconds"):
        Calendar(day_seconds=-1)
    assert Calendar.from_json(starting("UTC", 2, START).to_json()) == starting("UTC", 2, START)
