"""The bank's business date in ZooKeeper, the truth every shard follows.

/bank/calendar           the cutoff schedule (services/common/calendar.py), written once by `up`
/bank/day                the bank's business date: {"business_date", "since"}, moved to the next
                         date by compare-and-set (whichever node sees the cutoff first; or
                         `bankctl day close`)
/bank/shard-days/<n>     where shard n's leader last cut it: {"business_date", "cut_at", "took_ms",
                         "attempts", "dc"}
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from services.common.calendar import Calendar, parse_date
from services.dcs import paths
from services.dcs.store import Dcs

CALENDAR = f"{paths.ROOT}/calendar"
DAY = f"{paths.ROOT}/day"
SHARD_DAYS = f"{paths.ROOT}/shard-days"


def shard_day_path(shard: int) -> str:
    return f"{SHARD_DAYS}/{shard}"


@dataclass(frozen=True)
class BankDay:
    business_date: dt.date
    since: float  # when the bank moved to it


@dataclass(frozen=True)
class ShardCut:
    business_date: str
    cut_at: float
    took_ms: float
    attempts: int
    dc: str


def write_initial(dcs: Dcs, calendar: Calendar) -> None:
    """The schedule and the first business date; left alone when there already (up is idempotent)."""
    for path, data in (
        (CALENDAR, calendar.to_json()),
        (DAY, {"business_date": calendar.epoch_date, "since": calendar.epoch_at}),
    ):
        with contextlib.suppress(NodeExistsError):
            dcs.client.create(path, json.dumps(data).encode(), makepath=True)


def read_calendar(dcs: Dcs) -> Calendar | None:
    try:
        raw, _ = dcs.client.get(CALENDAR)
    except NoNodeError:
        return None
    return Calendar.from_json(json.loads(raw))


def read_day(dcs: Dcs) -> tuple[BankDay, int] | None:
    """The bank's date and the znode's version (for the compare-and-set); None before `up` wrote it."""
    try:
        raw, stat = dcs.client.get(DAY)
    except NoNodeError:
        return None
    data = json.loads(raw)
    return BankDay(parse_date(data["business_date"]), float(data["since"])), int(stat.version)


def advance(dcs: Dcs, current: BankDay, version: int, now: float | None = None) -> BankDay | None:
    """Moves the bank from `current` to the next date, unless someone did it first (None)."""
    following = BankDay(current.business_date + dt.timedelta(days=1), now or time.time())
    data = {"business_date": following.business_date.isoformat(), "since": following.since}
    try:
        dcs.client.set(DAY, json.dumps(data).encode(), version=version)
    except BadVersionError:
        return None
    return following


def record_cut(dcs: Dcs, shard: int, cut: ShardCut) -> None:
    raw = json.dumps(asdict(cut)).encode()
    try:
        dcs.client.set(shard_day_path(shard), raw)
    except NoNodeError:
        dcs.client.create(shard_day_path(shard), raw, makepath=True)


def shard_cuts(dcs: Dcs) -> dict[int, ShardCut]:
    try:
        children = dcs.client.get_children(SHARD_DAYS)
    except NoNodeError:
        return {}
    cuts: dict[int, ShardCut] = {}
    for child in children:
        raw: Any
        try:
            raw, _ = dcs.client.get(shard_day_path(int(child)))
        except NoNodeError:
            continue
        cuts[int(child)] = ShardCut(**json.loads(raw))
    return cuts
