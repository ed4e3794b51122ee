"""`bankctl drill`: the seed's data-center cut drill, under load, scored "two automatic, two zero".

1. Load: the chaos workload (transfers among hot and cold accounts on every shard, from several
   threads, through the client library with its standard 5 s deadline), every call and every
   operation counted; a warm-up first.
2. Cut: kill every process of the DC, or isolate it (its link down); the first acknowledged
   write of each shard it led is timed (RTO), and each failover's phases are read back.
3. Hold the cut for `--for` seconds from its start, then heal it (restart the DC, or link up).
4. Recovery, with no command given: every member back and streaming, `ANY 1` satisfiable,
   Redis and ZooKeeper whole; with `--switch-back`, the leaders moved back where they were.
5. A little more load, then the checks: every unanswered transfer asked again under its id,
   the books and every transfer of the run checked (Jepsen-style, services/chaos/checker.py).

Scores: auto_switch (every shard led again and writable), auto_recovery (step 4 within
RECOVERY_LIMIT_S), zero_loss (nothing acknowledged lost, nothing applied twice, books
reconcile), zero_interruption (no operation given up by the client library).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from bankclient import BankClient
from bankclient.calls import CallCounter
from services.chaos import checker, faults, run
from services.chaos.workload import History, Workload
from services.cluster import status
from services.cluster.state import ClusterState
from services.cluster.switchover import switchover
from services.coordinator import phases
from services.host.processes import LaunchError

Say = Callable[[str], None]
CUTS = {"kill": "kill-dc", "isolate": "isolate-dc"}
DEADLINE_S = 5.0  # the client library's standard deadline
WARMUP_S = 5.0
AFTER_S = 5.0  # load after recovery, before the checks
RECOVERY_LIMIT_S = 180.0
GIVEN_UP = ("info", "invoke")  # an operation the client library gave up on (Jepsen's `info`)


def drill(
    state: ClusterState, cut: str, dc: str, hold_s: float, switch_back: bool, say: Say, threads: int = 8,
    route: str = "gateway",
) -> dict[str, Any]:  # fmt: skip
    """`route`: how the workload's client reaches the shards (through the gateways, or "direct")."""
    if cut not in CUTS:
        raise ValueError(f"--cut must be one of {sorted(CUTS)}, not {cut!r}")
    if dc not in state.spec.dc_names:
        raise LaunchError(f"no DC {dc!r}; the cluster has {', '.join(state.spec.dc_names)}")
    is_whole, why = whole(state, None)
    if not is_whole:
        raise LaunchError(f"the cluster is not whole before the drill: {why}")
    leaders_before = faults.leaders(state)
    run_dir = state.home / "drills" / f"{cut}-{dc}-{time.strftime('%Y%m%d-%H%M%S')}"
    history = History(run_dir / "history.jsonl")
    calls = CallCounter()
    seed = int(time.time()) % 100_000
    with BankClient.from_home(state.home, deadline_s=DEADLINE_S, interceptors=[calls], route=route) as client:
        hot, cold = run.open_accounts(state, client, seed, history)
        workload = Workload([(client, False, route == "direct")], hot, cold, history, seed, threads=threads,
                            deadline_s=DEADLINE_S, max_s=hold_s + RECOVERY_LIMIT_S + 300)  # fmt: skip
        say(
            f"drill: {threads} threads of transfers on {len(hot) + len(cold)} accounts, routed by"
            f" {'the client itself' if route == 'direct' else 'the gateways'};"
            f" the cut in {WARMUP_S:.0f} s"
        )
        workload.start()
        try:
            time.sleep(WARMUP_S)  # the cut strikes a bank under load
            entry = faults.inject(state, CUTS[cut], {"dc": dc}, say)
            time.sleep(max(0.0, entry["at"] + hold_s - time.time()))
            healed_at = time.time()
            run.heal(state, say)
            recovered_s = _recover(state, healed_at, leaders_before if switch_back else None, say)
            time.sleep(AFTER_S)
        finally:
            workload.stop()
            run.heal(state, say)
        given_up = sum(1 for op in history.ops.values() if op.outcome in GIVEN_UP)
        run._resolve_unknown(client, history, say)
    final = checker.verify(state, history, final=True)
    history.close()
    result = score(entry, history, final, given_up, calls.figures(), recovered_s, failover_records(state))
    result.update(cut=cut, dc=dc, hold_s=hold_s, switch_back=switch_back, history=str(history.path))
    (run_dir / "drill.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


def _recover(state: ClusterState, healed_at: float, leaders: dict[int, str] | None, say: Say) -> float | None:
    """Seconds from the heal until the cluster is whole again (None: not within the limit)."""
    deadline = healed_at + RECOVERY_LIMIT_S
    if not _until_whole(state, None, deadline, say):
        return None
    if leaders is not None:
        _switch_back(state, leaders, say)
        # The leader each switchover moved away from comes back as a standby (a rewind).
        if not _until_whole(state, leaders, deadline, say):
            return None
    recovered = round(time.time() - healed_at, 2)
    say(f"drill: whole again {recovered} s after the heal")
    return recovered


def _until_whole(state: ClusterState, leaders: dict[int, str] | None, deadline: float, say: Say) -> bool:
    why = ""
    while time.time() < deadline:
        is_whole, why = whole(state, leaders)
        if is_whole:
            return True
        time.sleep(0.5)
    say(f"drill: not whole {RECOVERY_LIMIT_S:.0f} s after the heal: {why}")
    return False


def _switch_back(state: ClusterState, leaders: dict[int, str], say: Say) -> None:
    for shard, dc in sorted(faults.leaders(state).items()):
        if shard in leaders and leaders[shard] != dc:
            switchover(state, shard, leaders[shard], say)


def whole(state: ClusterState, leaders: dict[int, str] | None) -> tuple[bool, str]:
    """Every component healthy; every shard's standbys streaming (so `ANY 1` holds even with one
    lost); the Redis primary with every replica; the leaders as given, if given."""
    seen = status.collect(state)
    down = [c["name"] for c in seen["components"] if not c["healthy"]]
    if down:
        return False, f"down: {', '.join(down)}"
    lagging = [
        f"{b['name']} {b['state']}"
        for s in seen["shards"]
        for b in s["standbys"]
        if b["state"] != "streaming"
    ]
    if lagging:
        return False, f"standbys not streaming: {', '.join(lagging)}"
    redis_primaries = [c for c in seen["components"] if c["kind"] == "redis" and c["role"] == "primary"]
    replicas = len(state.spec.dc_names) - 1
    if len(redis_primaries) != 1 or redis_primaries[0].get("connected_replicas", 0) < replicas:
        return False, "Redis: not one primary with every replica"
    if leaders is not None:
        now = {int(s["shard"]): s["primary_dc"] for s in seen["shards"]}
        moved = {s: d for s, d in leaders.items() if now.get(s) != d}
        if moved:
            return False, f"leaders not back: {moved}"
    return True, ""


def score(
    entry: dict[str, Any], history: History, final: dict[str, Any], given_up: int, calls: dict[str, Any],
    recovered_s: float | None, failovers: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """The scorecard from the cut's record, the run's history and final check, and the
    failovers ZooKeeper kept."""
    anomalies = final["anomalies"]
    lost = sum(len(a["transfer_ids"]) for a in anomalies if a["kind"] == "lost")
    doubled = sum(len(a["transfer_ids"]) for a in anomalies if a["kind"] == "applied-twice")
    rto_s = {str(s): v for s, v in entry["shards"].items()}
    scores = {
        "auto_switch": bool(rto_s) and all(v is not None for v in rto_s.values()),
        "auto_recovery": recovered_s is not None,
        "zero_loss": lost == 0 and doubled == 0 and not anomalies and bool(final["reconciled"]),
        "zero_interruption": given_up == 0,
    }
    counts = history.counts()
    return {
        "rto_s": rto_s,
        "phases_ms": phases.of_fault(entry, failovers),
        "failed_operations": given_up,
        "failed_calls": calls["failed"],
        "calls": calls["calls"],
        "calls_failed_by_code": calls["failed_by_code"],
        "operations": len(history.ops),
        "acked": counts["ok"],
        "lost": lost,
        "duplicates": doubled,
        "anomalies": anomalies,
        "reconciled": bool(final["reconciled"]),
        "recovered_s": recovered_s,
        "scores": scores,
        "ok": all(scores.values()),
    }


def failover_records(state: ClusterState) -> list[dict[str, Any]]:
    from services.cluster.zookeeper import zk_client

    try:
        with zk_client(state, timeout_s=5) as dcs:
            return dcs.failovers()
    except Exception:  # ZooKeeper unreachable: the scorecard says so by having no phases
        return []


def render(result: dict[str, Any]) -> str:
    mark = {True: "PASS", False: "FAIL"}
    lines = [f"drill: {result['cut']} {result['dc']} for {result['hold_s']:g} s"]
    for shard, rto_s in result["rto_s"].items():
        phases_ms = result["phases_ms"].get(shard)
        detail = f"; {status.phase_line(phases_ms)}" if phases_ms else ""
        lines.append(f"  shard {shard}: RTO {'-' if rto_s is None else f'{rto_s:.2f} s'}{detail}")
    lines += [
        f"  operations {result['operations']:,}, failed {result['failed_operations']};"
        f" calls {result['calls']:,},"
        f" failed {result['failed_calls']} {result['calls_failed_by_code'] or ''}",
        f"  acknowledged {result['acked']:,}, lost {result['lost']}, applied twice {result['duplicates']},"
        f" books {'reconcile' if result['reconciled'] else 'DO NOT reconcile'}",
        f"  whole again {result['recovered_s']} s after the heal",
    ]
    lines += [f"  {name:<18} {mark[passed]}" for name, passed in result["scores"].items()]
    lines.append(f"drill {'passed' if result['ok'] else 'FAILED'}")
    return "\n".join(lines)
