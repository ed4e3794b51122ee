"""In every bank-node: the bank's move to the next business date at the cutoff, and each led
shard's cut to the bank's date.

Every turn (a few times a second): when the bank's date has ended by its schedule, move the
bank to the next date by compare-and-set in ZooKeeper (every node tries; one wins, the others
see the new date); then cut each shard this node leads that is behind the bank's date, in its
own database, under a lock bounded in time (storage/business_day.py). A node that takes over a
shard cuts it at its first turn, so a failover during a cut leaves no shard behind. Days the
bank missed while it was down are moved one at a time, one per turn: every date is a day.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from kazoo.exceptions import KazooException

from services.common.calendar import due
from services.dcs import business_day as bank_day
from services.dcs.store import Dcs
from services.rpc import metrics
from services.storage import business_day

log = logging.getLogger(__name__)
TURN_S = 0.25

LedShards = Callable[[], dict[int, str]]  # shard -> conninfo of its primary, for those led here


def date_number(date: dt.date) -> int:
    return date.year * 10_000 + date.month * 100 + date.day


class DayKeeper:
    def __init__(self, dcs: Dcs, led: LedShards, dc: str, turn_s: float = TURN_S) -> None:
        self.dcs, self.led, self.dc, self.turn_s = dcs, led, dc, turn_s
        self.cut_to: dict[int, dt.date] = {}  # what this node last cut each shard to
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="day-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _loop(self) -> None:
        while not self._stopping.wait(self.turn_s):
            try:
                self.turn(time.time())
            except (KazooException, OSError, TimeoutError) as err:  # ZooKeeper or a shard away: next turn
                log.warning("event=day_turn_failed error=%s", err)
            except Exception:  # a database error of one turn must not end the keeper
                log.exception("event=day_turn_failed")

    def turn(self, now: float) -> dt.date | None:
        """One turn; returns the bank's date (None before `up` wrote one)."""
        if not self.dcs.connected:
            return None
        calendar, known = bank_day.read_calendar(self.dcs), bank_day.read_day(self.dcs)
        if calendar is None or known is None:
            return None
        day, version = known
        if due(calendar, day.business_date, now):
            moved = bank_day.advance(self.dcs, day, version, now)
            if moved is not None:
                log.info("event=business_date_moved from=%s to=%s", day.business_date, moved.business_date)
                day = moved
            else:
                day = (bank_day.read_day(self.dcs) or (day, version))[0]
        for shard, conninfo in sorted(self.led().items()):
            self._cut_shard(shard, conninfo, day.business_date)
        return day.business_date

    def _cut_shard(self, shard: int, conninfo: str, date: dt.date) -> None:
        if self.cut_to.get(shard, dt.date.min) >= date:
            return
        cut = business_day.cut(conninfo, date)
        self.cut_to[shard] = cut.now
        metrics.BUSINESS_DATE.labels(shard=str(shard)).set(date_number(cut.now))
        if cut.was >= cut.now:
            return  # already there (cut by the node that led it before)
        metrics.DAY_CUT_SECONDS.observe(cut.took_ms / 1000)
        record = bank_day.ShardCut(
            cut.now.isoformat(), time.time(), round(cut.took_ms, 1), cut.attempts, self.dc
        )
        bank_day.record_cut(self.dcs, shard, record)
        log.info("event=shard_day_cut shard=%s from=%s to=%s took_ms=%.1f attempts=%s",
                 shard, cut.was, cut.now, cut.took_ms, cut.attempts)  # fmt: skip
