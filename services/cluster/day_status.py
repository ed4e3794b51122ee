"""`bankctl day`: the bank's business date, its schedule and next cutoff, and where each shard
stands (its own database's date, and its last cut as its leader recorded it); `bankctl day
close`: the bank moved to the next date now (as an operator runs an end of day early), then
waited for until every shard has cut to it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import psycopg

from services.cluster.check import current_primaries
from services.cluster.pg_group import member_instance
from services.cluster.state import ClusterState
from services.cluster.zookeeper import zk_client
from services.common.calendar import cutoff
from services.dcs import business_day as bank_day
from services.host.processes import LaunchError, wait_until
from services.storage.business_day import read_day

Say = Callable[[str], None]
CUTS_WAIT_S = 30.0


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="milliseconds")


def shard_dates(state: ClusterState) -> dict[int, dict[str, Any]]:
    """Each active shard's date as its primary's own database has it."""
    dates: dict[int, dict[str, Any]] = {}
    for shard, dc in current_primaries(state).items():
        conninfo = member_instance(state, shard, dc).conninfo(application_name="bankctl-day")
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                day = read_day(conn)
        except psycopg.Error as err:
            dates[shard] = {
                "shard": shard,
                "primary_dc": dc,
                "business_date": None,
                "error": str(err).strip(),
            }
            continue
        dates[shard] = {"shard": shard, "primary_dc": dc, "business_date": day.business_date.isoformat(),
                        "cut_at": day.cut_at.isoformat(timespec="milliseconds")}  # fmt: skip
    return dates


def day_status(state: ClusterState) -> dict[str, Any]:
    with zk_client(state, timeout_s=5) as dcs:
        calendar, known, cuts = bank_day.read_calendar(dcs), bank_day.read_day(dcs), bank_day.shard_cuts(dcs)
    if calendar is None or known is None:
        raise LaunchError("this cluster keeps no business date (it was started before the bank had days)")
    day, _ = known
    shards = shard_dates(state)
    for shard, row in shards.items():
        last = cuts.get(shard)
        row["last_cut"] = None if last is None else {
            "to": last.business_date, "at": _iso(last.cut_at), "took_ms": last.took_ms,
            "attempts": last.attempts, "by_dc": last.dc,
        }  # fmt: skip
    return {
        "business_date": day.business_date.isoformat(),
        "since": _iso(day.since),
        "next_cutoff": _iso(cutoff(calendar, day.business_date)),
        "time_zone": calendar.time_zone,
        "day_seconds": calendar.day_seconds,
        "shards": [shards[s] for s in sorted(shards)],
    }


def close_now(state: ClusterState, say: Say) -> dict[str, Any]:
    """Moves the bank to the next date (the one it is on ends now), then waits for every shard."""
    with zk_client(state, timeout_s=5) as dcs:
        known = bank_day.read_day(dcs)
        if known is None:
            raise LaunchError("this cluster keeps no business date")
        moved = bank_day.advance(dcs, *known)
    if moved is None:
        raise LaunchError("the business date moved meanwhile (a cutoff, or another close): see `bankctl day`")
    target = moved.business_date.isoformat()
    say(f"day close: the bank moves from {known[0].business_date} to {target}; waiting for every shard's cut")
    started = time.monotonic()
    wait_until(
        lambda: all(row["business_date"] == target for row in shard_dates(state).values()),
        CUTS_WAIT_S, f"every shard to cut to {target}", interval_s=0.2,
    )  # fmt: skip
    say(f"day close: every shard on {target} after {time.monotonic() - started:.2f} s")
    return day_status(state)


def render(status: dict[str, Any]) -> str:
    schedule = (
        f"compressed days of {status['day_seconds']:g} s" if status["day_seconds"] else "midnight"
    ) + f", {status['time_zone']}"
    lines = [
        f"business date {status['business_date']} (since {status['since']}); next cutoff "
        f"{status['next_cutoff']} ({schedule})",
        "",
        f"{'shard':<7}{'primary':<9}{'date':<12}{'last cut':<40}",
    ]
    for row in status["shards"]:
        cut = row.get("last_cut")
        cut_text = f"to {cut['to']} at {cut['at']} in {cut['took_ms']} ms by {cut['by_dc']}" if cut else "-"
        date = row["business_date"] or f"unreadable: {row.get('error', '')}"
        lines.append(f"{row['shard']:<7}{row['primary_dc']:<9}{date:<12}{cut_text}")
    return "\n".join(lines)
