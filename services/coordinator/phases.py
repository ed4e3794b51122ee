"""A failover's phases, timed where they happen (the node that runs it) and kept in ZooKeeper
for `status`, the drill and the metric `bank_failover_phase_seconds{phase}`.

  detect       the old leader last seen alive -> this node decides it is gone
  lock         -> the shard's failover lock is held
  probe        -> every surviving member's role and WAL position read
  detach       -> every live standby streams from nobody (the old primary can acknowledge nothing)
  promote      -> the chosen standby is primary
  repoint      -> the other standbys follow it
  route        -> the route names it (compare-and-set in ZooKeeper)
  first_write  -> the first write acknowledged to a client (measured by whoever writes: the
                  drill's probes), so the phases add up to the recovery time
"""

from __future__ import annotations

import time
from typing import Any

PHASES = ("detect", "lock", "probe", "detach", "promote", "repoint", "route", "first_write")
NODE_PHASES = PHASES[:-1]
# A failover belongs to a fault when the leader was last seen alive at most a second before it
# and the route changed within this long after it.
MATCH_WINDOW_S = 60.0


class Timeline:
    """Wall-clock ends of each phase of one failover, from `since` (the leader last seen alive)."""

    def __init__(self, shard: int, since: float) -> None:
        self.shard = shard
        self.since = since
        self.ends: dict[str, float] = {}

    def mark(self, phase: str) -> None:
        assert phase in NODE_PHASES, phase
        self.ends[phase] = time.time()

    def durations_s(self) -> dict[str, float]:
        """Each phase's own length; a phase skipped (a resumed failover detaches nothing) is 0."""
        durations, previous = {}, self.since
        for phase in NODE_PHASES:
            end = self.ends.get(phase, previous)
            durations[phase] = max(0.0, end - previous)
            previous = end
        return durations

    def record(self, dc: str, old_leader: str, new_leader: str, epoch: int) -> dict[str, Any]:
        return {
            "shard": self.shard, "by": dc, "from": old_leader, "to": new_leader, "epoch": epoch,
            "since": self.since, "ends": self.ends,
        }  # fmt: skip


def phases_ms(
    record: dict[str, Any], fault_at: float | None, first_write_at: float | None
) -> dict[str, float]:
    """A recorded failover's phases in ms. With the fault's own time, `detect` runs from it (the
    node only knows when it last saw the leader); with the first acknowledged write's time,
    `first_write` runs from the route to it."""
    since = fault_at if fault_at is not None else float(record["since"])
    ends: dict[str, float] = record["ends"]
    result, previous = {}, since
    for phase in NODE_PHASES:
        end = float(ends.get(phase, previous))
        result[phase] = round(max(0.0, end - previous) * 1000, 1)
        previous = end
    if first_write_at is not None:
        result["first_write"] = round(max(0.0, first_write_at - previous) * 1000, 1)
    return result


def of_fault(fault: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """shard -> phases of the first failover of each shard the fault struck (none for a shard
    that needed no failover), `detect` from the fault, `first_write` to its measured recovery."""
    at = float(fault["at"])
    result: dict[str, dict[str, float]] = {}
    for shard, rto_s in fault.get("shards", {}).items():
        after = [r for r in records if str(r["shard"]) == str(shard) and _within(r, at)]
        if after:
            first = min(after, key=lambda r: float(r["ends"]["route"]))
            result[str(shard)] = phases_ms(first, at, at + float(rto_s) if rto_s is not None else None)
    return result


def _within(record: dict[str, Any], at: float) -> bool:
    route_at = float(record["ends"].get("route", 0.0))
    return float(record["since"]) >= at - 1.0 and at <= route_at <= at + MATCH_WINDOW_S
