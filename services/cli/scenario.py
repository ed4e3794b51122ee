"""`bankctl scenario` and `bankctl demo`: a bounded Locust run, an optional DC failure in the
middle of it, the ledger audited afterwards, and a report of what happened (JSON + HTML)."""

from __future__ import annotations

import csv
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest import report
from services.chaos import drill, faults
from services.cli import scale_out
from services.cli.scale_out import ScaleOut
from services.cluster.check import check, current_primaries, current_shard_of_slot
from services.cluster.pg_group import member_instance
from services.cluster.state import ClusterState
from services.cluster.zookeeper import zk_client
from services.common.identifiers import slot_of_routed_id
from services.coordinator import phases
from services.cost import sampler
from services.cost.model import Assumptions, Measured, per_account_year
from services.storage.audit import find_transfers

Say = Callable[[str], None]
LOCUSTFILE = Path(__file__).resolve().parents[2] / "loadtest" / "locustfile.py"
WARM_UP_S = 5.0


class LeaderSampler(threading.Thread):
    """Which DC leads each shard and how many slots it owns, once a second, from ZooKeeper."""

    def __init__(self, state: ClusterState, t0: float) -> None:
        super().__init__(name="leader-sampler", daemon=True)
        self.state, self.t0 = state, t0
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with zk_client(self.state, timeout_s=10, session_s=4.0) as dcs:
            while not self.stop.wait(1.0):
                try:
                    table = dcs.read_table(timeout_s=0.5)
                except Exception:  # ZooKeeper busy re-electing: this second has no sample
                    continue
                leaders = {str(s): r.leader_dc for s, r in table.routes.items()}
                slots = {str(s): 0 for s in table.routes}
                for first, last, shard in table.slot_ranges:
                    slots[str(shard)] = slots.get(str(shard), 0) + last - first + 1
                sample = {"t": round(time.time() - self.t0, 2), "leaders": leaders, "slots": slots}
                self.samples.append(sample)


def run_scenario(
    state: ClusterState, name: str, duration_s: int, users: int, out: Path, say: Say,
    fault_dc: str | None = None, fault_at_s: float = 0, restart_at_s: float = 0,
    assumptions: Assumptions | None = None, scale_out_at_s: float | None = None, scale_out_batch: int = 32,
    route: str = "gateway",
) -> dict[str, Any]:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    acked_dir = state.home / "acked"
    for old in [*acked_dir.glob("*.log"), *acked_dir.glob("calls-*.json")]:
        old.unlink()  # the audit covers this run's acknowledgements only
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--bank-home", str(state.home), "--headless",
        "-u", str(users), "-r", str(users), "-t", f"{duration_s}s", "--csv", str(out / "locust"),
        "--csv-full-history", "--only-summary", "--exit-code-on-error", "0", "--stop-timeout", "5",
        "--route", route,
    ]  # fmt: skip
    say(
        f"scenario {name}: {users} Locust users for {duration_s} s, routed by "
        f"{'the clients themselves' if route == 'direct' else 'the gateways'} (log: {out / 'locust.log'})"
    )
    t0 = time.time()
    with open(out / "locust.log", "w", encoding="utf-8") as log:
        locust = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    leaders = LeaderSampler(state, t0)
    leaders.start()
    # The scale-out starts once the DC is back: both record processes in the cluster's state.
    growing = ScaleOut(state.home, t0, scale_out_at_s, scale_out_batch, say) if scale_out_at_s else None
    if growing:
        growing.start()
        if not fault_dc:
            growing.set_ready()
    time.sleep(WARM_UP_S)  # the steady window starts after the users have ramped up
    cpu_before, window_start = sampler.cpu_seconds(state), time.time()
    steady_end = t0 + (fault_at_s if fault_dc else duration_s - 2)
    _sleep_until(steady_end)
    cpu_after, window_end = sampler.cpu_seconds(state), time.time()
    entries: list[dict[str, Any]] = []
    undone: list[dict[str, Any]] = []  # when each fault was undone (marked on the plots too)
    if fault_dc:
        entries.append(faults.inject(state, "kill-dc", {"dc": fault_dc}, say))
        _sleep_until(t0 + restart_at_s)
        faults.restart(state, fault_dc, say)
        undone.append({"t": round(time.time() - t0, 2), "label": f"restart-dc {fault_dc}", "undo": True})
        if growing:
            growing.set_ready()
    locust.wait(timeout=duration_s + 120)
    if growing:
        growing.join()  # the audit reads the books once the last move is done
        state = ClusterState.load(state.home) or state  # with the shard it added
    memory, disk = sampler.memory_bytes(state), sampler.disk_bytes(state)
    leaders.stop.set()
    leaders.join(timeout=5)
    say("load finished; checking the books and auditing every acknowledged movement")
    books = check(state, wait_s=60)
    lost, duplicates, acked = audit(state, acked_dir)
    history = report.read_history(out / "locust_stats_history.csv")
    totals = _aggregated(out / "locust_stats.csv")
    calls = report.read_calls(acked_dir)
    served = int(sum(report.window(history, "rps", window_start - t0, window_end - t0)))
    measured = Measured(
        cpu_seconds=sampler.cpu_used(cpu_before, cpu_after), window_s=window_end - window_start,
        transactions=served, memory_bytes=memory, disk_bytes=disk,
        accounts=sum(int(s["accounts"]) for s in books["shards"]),
    )  # fmt: skip
    data = {
        "run_id": out.name,
        "scenario": name,
        "users": users,
        "duration_s": duration_s,
        "throughput_tps": round(acked / duration_s, 1),
        "requests_per_s": round(totals["total"] / duration_s, 1),
        "latency_ms": totals["latency"],
        "requests": {"total": totals["total"], "failed": totals["failed"]},
        # Locust counts operations (each as its caller saw it); calls are each attempt at a gateway.
        "availability": round((totals["total"] - totals["failed"]) / max(totals["total"], 1), 6),
        "calls": calls,
        "availability_per_call": round((calls["calls"] - calls["failed"]) / max(calls["calls"], 1), 6),
        "failovers": [_failover(entry, history, t0) for entry in entries],
        "drill": _scorecard(
            state, entries, totals["failed"], calls, lost, duplicates, bool(books["reconciled"])
        ),
        "acked_transfers": acked,
        "acked_lost": lost,
        "duplicates": duplicates,
        "invariant_ok": bool(books["reconciled"]) and lost == 0 and duplicates == 0,
        "books": books,
        "cost": per_account_year(measured, assumptions or Assumptions()),
        "timeline": {k: v for k, v in history.items() if k != "start"},
        "leaders": leaders.samples,
        "scale_out": scale_out.figures(growing.record, history, duration_s) if growing else None,
        "fault_marks": [
            *({"t": round(e["at"] - t0, 2), "label": f"{e['fault']} {e['target']}"} for e in entries),
            *undone,
        ],
    }
    json_path, html_path = report.write(out, data)
    say(f"report: {html_path} (and {json_path.name})")
    return data


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def _aggregated(path: Path) -> dict[str, Any]:
    row = next(r for r in csv.DictReader(path.read_text().splitlines()) if r["Name"] == "Aggregated")
    return {
        "total": int(row["Request Count"]),
        "failed": int(row["Failure Count"]),
        "latency": {"p50": int(row["50%"]), "p95": int(row["95%"]), "p99": int(row["99%"])},
    }


def _scorecard(
    state: ClusterState, entries: list[dict[str, Any]], failed_operations: int, calls: dict[str, Any],
    lost: int, duplicates: int, reconciled: bool,
) -> dict[str, Any] | None:  # fmt: skip
    """The DC drill's scorecard (services/chaos/drill.py) for the DC killed during the run: the
    whole run's operations count for zero interruption, the cluster at its end for recovery."""
    if not entries:
        return None
    entry = entries[0]
    is_whole, why = drill.whole(state, None)
    rto_s = {str(s): v for s, v in entry["shards"].items()}
    scores = {
        "auto_switch": bool(rto_s) and all(v is not None for v in rto_s.values()),
        "auto_recovery": is_whole,
        "zero_loss": lost == 0 and duplicates == 0 and reconciled,
        "zero_interruption": failed_operations == 0,
    }
    return {
        "cut": "kill", "dc": entry["target"], "rto_s": rto_s,
        "phases_ms": phases.of_fault(entry, drill.failover_records(state)),
        "failed_operations": failed_operations, "failed_calls": calls["failed"], "not_whole": why,
        "scores": scores, "ok": all(scores.values()),
    }  # fmt: skip


def _failover(entry: dict[str, Any], history: dict[str, list[float]], t0: float) -> dict[str, Any]:
    start = entry["at"] - t0
    end = start + (entry.get("rto_s") or 0) + 5
    failed = sum(report.window(history, "fps", start, end))
    return {
        "fault": entry["fault"],
        "dc": entry["target"],
        "shards": [int(s) for s in entry["shards"]],
        "rto_s": entry.get("rto_s"),
        "rto_per_shard_s": entry["shards"],
        "failed_requests": int(failed),
    }


def audit(state: ClusterState, acked_dir: Path) -> tuple[int, int, int]:
    """(lost, applied twice, acknowledged): every acknowledged movement looked up in its shard
    (its id carries the slot of the account it debited, or credited for a deposit)."""
    acked = {t for f in acked_dir.glob("*.log") for t in f.read_text(encoding="ascii").split()}
    found: dict[str, int] = {}
    doubled = 0
    owner = current_shard_of_slot(state)
    for shard, dc in current_primaries(state).items():
        conninfo = member_instance(state, shard, dc).conninfo(application_name="bankctl-audit")
        mine = [t for t in acked if owner[slot_of_routed_id(t)] == shard]
        booked, twice = find_transfers(conninfo, mine)
        found.update(booked)
        doubled += twice + sum(1 for n in booked.values() if n > 1)
        # A cross-shard credit lands on another shard under the same id.
        _, credited_twice = find_transfers(conninfo, [t for t in acked if t not in mine])
        doubled += credited_twice
    return len(acked - set(found)), doubled, len(acked)
