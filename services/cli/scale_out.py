"""The demo's scale-out under load: a shard added while the bank serves, the slots rebalanced
onto it batch by batch, and what the clients saw meanwhile (the report's "Growing the bank").

Run in a thread beside the load; the figures come from its own records (the moves' journal)
and Locust's per-second history, never from a model.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.report import window
from services.cluster.shard_changes import add_shard
from services.cluster.slot_moves import rebalance
from services.cluster.state import require_state

Say = Callable[[str], None]
WINDOW_S = 10  # the throughput during the moves is judged per window of this many seconds
SETTLE_S = 20  # the cluster whole this long before the moves (the rate before them is read then)


class ScaleOut(threading.Thread):
    """At `at_s` into the run, and not before SETTLE_S after `set_ready` (a restart in flight
    records its processes in the cluster's state, as add-shard does; and the rate before the
    moves, their baseline, is read with the cluster whole): add-shard, then rebalance in
    batches of `batch` slots."""

    def __init__(self, home: Path, t0: float, at_s: float, batch: int, say: Say) -> None:
        super().__init__(name="scale-out", daemon=True)
        self.home, self.t0, self.at_s, self.batch, self.say = home, t0, at_s, batch, say
        self.ready = threading.Event()
        self.ready_at = 0.0
        self.record: dict[str, Any] = {"at_s": at_s, "batch": batch, "error": None, "moves": []}

    def set_ready(self) -> None:
        self.ready_at = time.time()
        self.ready.set()

    def run(self) -> None:
        self.ready.wait()
        time.sleep(max(0.0, self.t0 + self.at_s - time.time(), self.ready_at + SETTLE_S - time.time()))
        record = self.record
        record["started_t"] = self._t()
        try:
            added = add_shard(self.home, None, self.say)
            record["shard"], record["added_t"] = added["shard"], self._t()
            moves = rebalance(require_state(self.home), self.batch, self.say)
            record["moves"] = [self._move(m) for m in moves]
        except Exception as err:  # the report shows it; the run's audit still runs
            record["error"] = f"{type(err).__name__}: {err}"
            self.say(f"scale-out failed: {record['error']}")
        record["finished_t"] = self._t()

    def _t(self) -> float:
        return round(time.time() - self.t0, 2)

    def _move(self, move: dict[str, Any]) -> dict[str, Any]:
        return {
            "slots": move["slots"], "from": move["from"], "to": move["to"], "state": move["state"],
            "freeze_ms": move.get("freeze_ms"), "freeze_phases_ms": move.get("freeze_phases_ms", {}),
            "copied_rows": move.get("copied_rows"),
            "started_t": round(move["started_at"] - self.t0, 2),
            "flipped_t": round(move["flipped_at"] - self.t0, 2) if move.get("flipped_at") else None,
        }  # fmt: skip


def figures(record: dict[str, Any], history: dict[str, list[float]], end_s: float) -> dict[str, Any]:
    """The section's figures: freeze per batch, throughput before, during and after, and the
    client errors while the shard was added and the slots moved."""
    start, finish = record.get("started_t"), record.get("finished_t")
    freezes = sorted(m["freeze_ms"] for m in record["moves"] if m["freeze_ms"] is not None)
    out: dict[str, Any] = {**record, "freeze_ms": _spread(freezes)}
    if start is None or finish is None:
        return out
    before = _rate(history, max(start - 20, 0), start)
    windows = _windows(history, start, finish)
    # While slots move: from the first batch's start to the last one's flip (the shard's
    # creation before and the copies' removal after are left out here, counted above).
    starts = [m["started_t"] for m in record["moves"]]
    flips = [m["flipped_t"] for m in record["moves"] if m.get("flipped_t") is not None]
    moving = _windows(history, min(starts), max(flips)) if starts and flips else []
    out["throughput_rps"] = {
        "before": before,
        "during": _rate(history, start, finish),
        "after": _rate(history, finish, end_s) if end_s - finish >= 5 else None,
        "lowest_window": min(windows, default=None),
        "lowest_window_ratio": round(min(windows) / before, 3) if windows and before else None,
        "lowest_moving_window_ratio": round(min(moving) / before, 3) if moving and before else None,
    }
    out["client_errors"] = int(sum(window(history, "fps", start, finish + 5)))
    out["requests"] = int(sum(window(history, "rps", start, finish + 5)))
    return out


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    p99 = statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]
    return {"p50": statistics.median(values), "p99": round(p99, 1), "max": max(values), "count": len(values)}


def _windows(history: dict[str, list[float]], start: float, finish: float) -> list[float]:
    """The rate of every whole window of WINDOW_S seconds from `start` on (one window if shorter)."""
    rates = (_rate(history, t, t + WINDOW_S) for t in _steps(start, finish - WINDOW_S, WINDOW_S))
    return [rate for rate in rates if rate is not None]


def _steps(start: float, stop: float, step: float) -> list[float]:
    return [start + i * step for i in range(int(max(stop - start, 0) // step) + 1)] if stop >= start else []


def _rate(history: dict[str, list[float]], start: float, end: float) -> float | None:
    seconds = window(history, "rps", start, end)
    return round(sum(seconds) / len(seconds), 1) if seconds else None
