"""The bank's cutoff schedule: when business date D ends. Real days end at midnight in the bank's
time zone (Asia/Shanghai by default, as the seed's bank); compressed days (demos and tests) last
`day_seconds` each from the moment the cluster started. Pure functions, no clock of their own."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo

DEFAULT_TIME_ZONE = "Asia/Shanghai"


@dataclass(frozen=True)
class Calendar:
    time_zone: str = DEFAULT_TIME_ZONE
    day_seconds: float = 0.0  # 0: real days, cut at midnight in `time_zone`
    epoch_date: str = ""  # the business date the bank started on (YYYY-MM-DD)
    epoch_at: float = 0.0  # when it started (seconds since 1970)

    def __post_init__(self) -> None:
        ZoneInfo(self.time_zone)  # raises on an unknown zone
        if self.day_seconds < 0:
            raise ValueError(f"day_seconds must be 0 (real days) or more, not {self.day_seconds}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calendar:
        return cls(**data)


def starting(time_zone: str, day_seconds: float, now: float) -> Calendar:
    """A new bank's calendar: its first business date is the calendar date in its time zone."""
    today = dt.datetime.fromtimestamp(now, ZoneInfo(time_zone)).date()
    return Calendar(time_zone, day_seconds, today.isoformat(), now)


def parse_date(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def cutoff(calendar: Calendar, business_date: dt.date) -> float:
    """When `business_date` ends (seconds since 1970)."""
    if calendar.day_seconds > 0:
        days = (business_date - parse_date(calendar.epoch_date)).days + 1
        return calendar.epoch_at + days * calendar.day_seconds
    next_day = business_date + dt.timedelta(days=1)
    midnight = dt.datetime.combine(next_day, dt.time(0), ZoneInfo(calendar.time_zone))
    return midnight.timestamp()


def due(calendar: Calendar, business_date: dt.date, now: float) -> bool:
    """Whether `business_date` has ended by `now`: the bank moves to the next date."""
    return now >= cutoff(calendar, business_date)
