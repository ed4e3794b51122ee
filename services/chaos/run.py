"""`bankctl chaos run --seed N --minutes M`: a seeded fault schedule under a bank workload, with
the invariants checked at quiet checkpoints and at the end; a history file and a verdict.

Each step: strike (one or two faults), hold, heal, wait until every shard takes a write again,
let the load run quietly, pause it, check. The run draws no new step once the next one could
not finish within the minutes asked; the final check always runs after every fault is healed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import grpc

from bankclient import BankClient, GatewayUnavailable
from services.chaos import checker, faults, move_step, rto
from services.chaos.schedule import Step, draw, scripted
from services.chaos.workload import CURRENCY, History, Op, Workload, call_transfer
from services.cluster.state import ClusterState
from services.common.identifiers import slot_of_customer
from services.host.processes import LaunchError
from services.moves import journal as j

Say = Callable[[str], None]
HOT_ACCOUNTS, COLD_ACCOUNTS = 8, 48
HOT_BALANCE, COLD_BALANCE = 1_000_000, 100_000
STEP_OVERHEAD_S = 25.0  # heal (a DC restart), recovery and checkpoint, as measured here
RECOVERY_LIMIT_S = 60.0
RESOLVE_ROUNDS = 5
WARMUP_S = 3.0
HEAL_TRIES, HEAL_PAUSE_S = 5, 2.0


def open_accounts(
    state: ClusterState, client: BankClient, seed: int, history: History
) -> tuple[list[str], list[str]]:
    """Hot and cold accounts of this run, an equal share on every shard, each funded by a deposit."""
    spec, tag = state.spec, f"{seed}-{int(time.time())}"
    hot: dict[int, list[str]] = {s: [] for s in range(spec.shards)}
    cold: dict[int, list[str]] = {s: [] for s in range(spec.shards)}
    hot_quota, cold_quota = -(-HOT_ACCOUNTS // spec.shards), -(-COLD_ACCOUNTS // spec.shards)
    for index in range(100_000):
        if all(len(hot[s]) >= hot_quota and len(cold[s]) >= cold_quota for s in hot):
            break
        customer = f"chaos-{tag}-{index}"
        shard = spec.shard_of_slot(slot_of_customer(customer))
        group, balance = (hot, HOT_BALANCE) if len(hot[shard]) < hot_quota else (cold, COLD_BALANCE)
        if len(group[shard]) >= (hot_quota if group is hot else cold_quota):
            continue
        account = client.open_account(customer, CURRENCY).account_number
        client.deposit(account, balance, CURRENCY)
        history.funding[account] = balance
        group[shard].append(account)
    hot_all, cold_all = [a for s in hot for a in hot[s]], [a for s in cold for a in cold[s]]
    history.event("accounts", hot=hot_all, cold=cold_all)
    return hot_all, cold_all


def run(
    state: ClusterState, seed: int, minutes: float, say: Say, threads: int = 8, steps: list[str] | None = None
) -> dict[str, Any]:
    """`steps` (fault texts) replace the seed's drawn schedule: the run ends after the last one."""
    spec = state.spec
    if steps:
        schedule = scripted(seed, steps, spec.dc_names, spec.net)
    else:
        schedule = draw(seed, spec.dc_names, spec.net)
    run_dir = state.home / "chaos-runs" / f"seed{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    history = History(run_dir / "history.jsonl")
    verdict: dict[str, Any] = {"seed": seed, "minutes": minutes, "net": spec.net, "steps": steps or [],
                               "faults": [], "checkpoints": [], "anomalies": [],
                               "history": str(history.path)}  # fmt: skip
    started = time.monotonic()
    end = started + minutes * 60
    rto.ensure_probes(state)
    with (
        BankClient.from_home(state.home, deadline_s=10) as client,
        BankClient.from_home(state.home, deadline_s=10, coalesce_transfers=True) as coalescing,
        BankClient.from_home(state.home, deadline_s=10, route="direct") as direct,
        BankClient.from_home(state.home, deadline_s=10, coalesce_transfers=True, route="direct") as both,
    ):
        hot, cold = open_accounts(state, client, seed, history)
        say(f"seed {seed}: {len(hot)} hot and {len(cold)} cold accounts; load from {threads} threads"
            f" (every other one through a coalescing client; half of them routed by the client)")  # fmt: skip
        clients = [
            (client, False, False),
            (coalescing, True, False),
            (direct, False, True),
            (both, True, True),
        ]
        workload = Workload(clients, hot, cold, history, seed, threads=threads, max_s=minutes * 60 + 60)
        workload.start()
        try:
            time.sleep(WARMUP_S)  # the first fault strikes a bank under load
            for step in schedule:
                if time.monotonic() + step.gap_s + step.hold_s + STEP_OVERHEAD_S > end:
                    break
                verdict["faults"] += _run_step(state, step, history, say, started)
                time.sleep(step.quiet_s)  # load without faults: part of the schedule
                verdict["checkpoints"].append(_checkpoint(state, workload, history, say, started))
                workload.resume()
            else:  # every step of a given schedule was run: nothing is left to wait for
                end = time.monotonic()
            time.sleep(max(0.0, end - time.monotonic()))
        finally:
            workload.stop()
            heal(state, say)
        _resolve_unknown(client, history, say)
    final = checker.verify(state, history, final=True)
    history.close()
    verdict["anomalies"] = _unique(verdict["checkpoints"], final["anomalies"]) + [
        checker.anomaly("unavailable-after-heal", f"shards {r['unrecovered_shards']} took no write within "
                        f"{RECOVERY_LIMIT_S:.0f} s of the heal of step {r['step']}")
        for r in verdict["faults"] if r.get("unrecovered_shards")
    ] + _unsettled_moves(verdict["faults"])  # fmt: skip
    counts = history.counts()
    verdict.update(
        schedule=[s.to_json() for s in schedule[: len(verdict["checkpoints"])]],
        acked_transfers=counts["ok"], refused_transfers=counts["fail"], unresolved_transfers=counts["info"],
        acked_coalesced=sum(1 for o in history.ops.values() if o.outcome == "ok" and o.coalesced),
        acked_direct=sum(1 for o in history.ops.values() if o.outcome == "ok" and o.direct),
        resolved_after_run=sum(1 for o in history.ops.values() if o.resolved),
        final={k: v for k, v in final.items() if k != "anomalies"},
        seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip
    verdict["ok"] = not verdict["anomalies"]
    (run_dir / "verdict.json").write_text(json.dumps(verdict, indent=2), encoding="utf-8")
    verdict["verdict_file"] = str(run_dir / "verdict.json")
    return verdict


def _run_step(
    state: ClusterState, step: Step, history: History, say: Say, started: float
) -> list[dict[str, Any]]:
    records = []
    for number, fault in enumerate(step.faults):
        if number:
            time.sleep(step.gap_s)
        at = round(time.monotonic() - started, 1)
        try:
            outcome = _strike(state, fault.fault, dict(fault.args), say)
        except (LaunchError, OSError, ValueError, grpc.RpcError, GatewayUnavailable) as err:
            # e.g. no ZooKeeper leader to kill right now, or a link delay that the gateways could not
            # set while the step's first fault cuts a DC off (seen: SetLinkDelay past its deadline)
            outcome = {"error": str(err)[:300]}
            say(f"step {step.index}: {fault.describe()} not injected: {err}")
        history.event("nemesis", step=step.index, fault=fault.describe(), **outcome)
        records.append({"step": step.index, "fault": fault.fault, "args": fault.args, "at_s": at, **outcome})
    time.sleep(step.hold_s)  # the fault's duration: part of the schedule
    healed_at = time.time()
    heal(state, say)
    recovered = rto.measure(state, list(range(state.spec.shards)), healed_at, timeout_s=RECOVERY_LIMIT_S)
    worst = max((v for v in recovered.values() if v is not None), default=None)
    history.event("healed", step=step.index, recovered_s=worst)
    for record in records:
        record.update(held_s=step.hold_s, recovered_after_heal_s=worst)
    if any(v is None for v in recovered.values()):
        records[0]["unrecovered_shards"] = [s for s, v in recovered.items() if v is None]
    say(f"step {step.index}: {' + '.join(f.describe() for f in step.faults)}; every shard writable "
        f"{worst} s after the heal")  # fmt: skip
    return records


def _strike(state: ClusterState, fault: str, args: dict[str, Any], say: Say) -> dict[str, Any]:
    """Strikes the fault (a move step runs its move, with its cut, until it is settled)."""
    if fault != "move-slots":
        entry = faults.strike(state, fault, args, say)
        return {"target": entry["target"], "shards": sorted(entry["shards"])}
    moved = move_step.run(state, args, say)
    record = moved["move"]
    return {
        "target": f"slots {moved['slots'][0]}-{moved['slots'][1]} shard {moved['from']} -> {moved['to']}",
        "shards": sorted({moved["from"], moved["to"]}), "move_id": record.get("id"),
        "move_state": record.get("state"), "resumed_by": record.get("resumed_by", ""),
        "freeze_ms": record.get("freeze_ms"), "cut_error": moved["error"][:300],
        "struck": [f"{e['fault']} {e['target']}" for e in moved["struck"]],
    }  # fmt: skip


def _unsettled_moves(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        checker.anomaly(
            "move-unsettled",
            f"move {r.get('move_id')} of step {r['step']} was left {r.get('move_state')}:"
            " no node finished or rolled it back",
        )
        for r in records
        if r["fault"] == "move-slots" and r.get("move_id") and r.get("move_state") not in j.FINISHED
    ]


def heal(state: ClusterState, say: Say, tries: int = HEAL_TRIES) -> None:
    """Heals, again after a pause if an undo failed (a Redis failover may still be under way)."""
    for attempt in range(1, tries + 1):
        try:
            faults.heal(state, say)
            return
        except LaunchError as err:
            if attempt == tries:
                raise
            say(f"heal attempt {attempt} incomplete ({err}); again in {HEAL_PAUSE_S:.0f} s")
            time.sleep(HEAL_PAUSE_S)


def _checkpoint(
    state: ClusterState, workload: Workload, history: History, say: Say, started: float
) -> dict[str, Any]:
    quiet = workload.pause()
    result = checker.verify(state, history, final=False)
    counts = history.counts()
    point = {"at_s": round(time.monotonic() - started, 1), "quiet": quiet, **counts, **result}
    say(f"checkpoint at {point['at_s']} s: {counts['ok']} acknowledged, reconciled={result['reconciled']}, "
        f"{len(result['anomalies'])} anomalies")  # fmt: skip
    history.event("checkpoint", **{k: v for k, v in point.items()})
    return point


def _resolve_unknown(client: BankClient, history: History, say: Say) -> None:
    """Asks every unanswered transfer again under its own request id: the bank says what it did."""
    for _ in range(RESOLVE_ROUNDS):
        unknown = [o for o in history.ops.values() if o.outcome in ("info", "invoke")]
        if not unknown:
            return
        say(f"asking {len(unknown)} unanswered transfers again under their request ids")
        for op in unknown:
            again = Op(op.request_id, op.source, op.target, op.amount)
            call_transfer(client, again, deadline_s=10)
            if again.outcome != "info":
                op.outcome, op.transfer_id, op.status, op.code = (
                    again.outcome,
                    again.transfer_id,
                    again.status,
                    again.code,
                )
                op.resolved = True
                history.event(
                    "resolved", request_id=op.request_id, outcome=op.outcome, transfer_id=op.transfer_id
                )


def _unique(checkpoints: list[dict[str, Any]], final: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every anomaly once, the first checkpoint that saw it named."""
    seen: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
    for point in [*checkpoints, {"at_s": "final", "anomalies": final}]:
        for found in point["anomalies"]:
            key = (found["kind"], tuple(found["transfer_ids"]))
            seen.setdefault(key, {**found, "seen_at": point["at_s"]})
    return list(seen.values())


def render(verdict: dict[str, Any]) -> str:
    lines = [f"seed {verdict['seed']}: {len(verdict['faults'])} faults in {verdict['seconds']} s"]
    for record in verdict["faults"]:
        args = " ".join(f"{k}={v}" for k, v in record["args"].items())
        result = record.get("error") or f"writable {record.get('recovered_after_heal_s')} s after heal"
        lines.append(f"  {record['at_s']:>7} s  step {record['step']}: {record['fault']} {args} -> {result}")
    lines.append(
        f"transfers: {verdict['acked_transfers']} acknowledged, {verdict['refused_transfers']} refused, "
        f"{verdict['resolved_after_run']} unanswered and asked again, "
        f"{verdict['unresolved_transfers']} still unknown"
    )
    lines.append(f"checkpoints: {len(verdict['checkpoints'])}; final: {verdict['final']}")
    for found in verdict["anomalies"]:
        lines.append(f"ANOMALY {found['kind']}: {found['detail']} {found['transfer_ids']}")
    lines.append("verdict: ok, no anomaly" if verdict["ok"] else "verdict: ANOMALIES FOUND")
    lines.append(f"history: {verdict['history']}; verdict: {verdict['verdict_file']}")
    return "\n".join(lines)
