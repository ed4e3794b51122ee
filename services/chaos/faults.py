"""`bankctl chaos`: faults in Jepsen's vocabulary, each recorded with when it struck and how
long each affected shard took to accept a write again; `heal` undoes every active fault."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bankclient import BankClient
from services.chaos import rto
from services.cluster import status
from services.cluster.dc_lifecycle import current_redis_primary
from services.cluster.engine import PROCESSES, engine_of
from services.cluster.netns import in_dc
from services.cluster.state import ClusterState, Component
from services.cluster.topology import NETNS
from services.cluster.zookeeper import zk_mode
from services.host.processes import LaunchError

Say = Callable[[str], None]
# When a fault that takes a while to set up (finding a DC's every process) really struck,
# handed from _strike to the record (the recovery time runs from it).
STRUCK_AT = "struck_at"


def admin_client(state: ClusterState) -> BankClient:
    """A client of the gateways with the admin credential: chaos acts as an operator."""
    return BankClient.from_home(state.home, role="admin", deadline_s=10)


def leaders(state: ClusterState) -> dict[int, str]:
    """shard -> leading DC, as a gateway's AdminService reads it from ZooKeeper."""
    with admin_client(state) as admin:
        return {leader.shard: leader.leader_dc for leader in admin.get_topology().leaders}


def _require_dc(state: ClusterState, dc: str) -> None:
    if dc not in state.spec.dc_names:
        raise LaunchError(f"no DC {dc!r}; the cluster has {', '.join(state.spec.dc_names)}")


def _record(
    state: ClusterState, fault: str, target: str, at: float, shards: list[int], undo: dict[str, Any]
) -> dict[str, Any]:
    entry = {"id": uuid.uuid4().hex[:8], "fault": fault, "target": target, "at": at, "active": bool(undo),
             "undo": undo, "shards": {str(s): None for s in shards}}  # fmt: skip
    state.faults.append(entry)
    state.save()
    return entry


def _measure(state: ClusterState, entry: dict[str, Any], say: Say) -> dict[str, Any]:
    shards = [int(s) for s in entry["shards"]]
    measured = rto.measure(state, shards, entry["at"])
    entry["shards"] = {str(s): v for s, v in measured.items()}
    entry["rto_s"] = max((v for v in measured.values() if v is not None), default=None)
    state.save()
    for shard, value in measured.items():
        say(
            f"  shard {shard}: "
            + (f"first write {value:.2f} s after the fault" if value is not None else "NO WRITE within 60 s")
        )
    stuck = [shard for shard, value in measured.items() if value is None]
    if stuck:  # what an operator looks at first: who leads, and which standby streams
        for line in [status.SHARD_HEADER, *status.shard_lines(state, stuck)]:
            say("  " + line)
    return entry


def inject(state: ClusterState, fault: str, args: dict[str, Any], say: Say) -> dict[str, Any]:
    """Runs one fault (not heal/restart) and measures recovery; returns its record."""
    rto.ensure_probes(state)
    led = leaders(state)
    at = time.time()
    target, shards, undo = _strike(state, fault, args, led, say)
    at = undo.pop(STRUCK_AT, at)
    say(
        f"{time.strftime('%H:%M:%S', time.localtime(at))} {fault} {target}: done;"
        " measuring the first write per shard"
    )
    entry = _record(state, fault, target, at, shards, undo)
    resumer = (
        _resume_after(state, args["dc"], float(args["seconds"]), at, say) if fault == "pause-node" else None
    )
    measured = _measure(state, entry, say)
    if resumer is not None:
        resumer.join()  # the node runs again before the command ends, whatever happened
        entry["active"] = False
        entry["healed_at"] = time.time()
        state.save()
    return measured


def strike(state: ClusterState, fault: str, args: dict[str, Any], say: Say) -> dict[str, Any]:
    """Runs one fault and records it, active until `heal`, without waiting for any recovery."""
    at = time.time()
    target, shards, undo = _strike(state, fault, args, leaders(state), say)
    return _record(state, fault, target, undo.pop(STRUCK_AT, at), shards, undo)


def _strike(
    state: ClusterState, fault: str, args: dict[str, Any], led: dict[int, str], say: Say
) -> tuple[str, list[int], dict[str, Any]]:
    spec = state.spec
    every = list(range(spec.shards))
    if fault in ("kill-dc", "isolate-dc", "kill-node", "pause-node"):
        dc = args["dc"]
        _require_dc(state, dc)
        affected = [s for s, d in led.items() if d == dc] or every
        engine = engine_of(state)
        if fault == "kill-dc":
            killed, killed_at = engine.kill_dc(state, dc)
            what = "processes" if engine.name == PROCESSES else "containers"
            say(f"kill-dc {dc}: SIGKILL to {killed} {what}")
            return dc, affected, {"restart_dc": dc, STRUCK_AT: killed_at}
        if fault == "isolate-dc":
            engine.isolate_dc(state, dc)
            say(f"isolate-dc {dc}: its link to the other DCs and to clients is down")
            return dc, affected, {"link_up": dc}
        node = _component(state, "node", dc)
        if fault == "kill-node":
            engine.kill(state, node)
            say(f"kill-node {dc}: SIGKILL to the bank-node ({_where(node)})")
            return dc, affected, {"restart_node": dc}
        engine.pause(state, node)
        say(f"pause-node {dc}: SIGSTOP to the bank-node ({_where(node)}) for {args['seconds']} s")
        return dc, affected, {"resume_node": dc}
    if fault == "partition":
        first, second = args["dc"], args["other"]
        for dc in (first, second):
            _require_dc(state, dc)
        if spec.net != NETNS or state.engine != PROCESSES:
            raise LaunchError("partition needs the launcher's --net netns (one namespace per DC)")
        for here, there in ((first, second), (second, first)):
            for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
                subprocess.run(
                    in_dc(spec, here, ["iptables", "-A", chain, flag, spec.address(there), "-j", "DROP"]),
                    check=True,
                )
        say(f"partition {first} <-> {second}: traffic between them dropped both ways")
        return f"{first},{second}", every, {"unpartition": [first, second]}
    if fault == "kill-zk-leader":
        dc = next(d for d in spec.dc_names if zk_mode(spec.address(d)) == "leader")
        zk = _component(state, "zookeeper", dc)
        engine_of(state).kill(state, zk)
        say(f"kill-zk-leader: SIGKILL to ZooKeeper of {dc} ({_where(zk)})")
        return dc, every, {"restart_zookeeper": dc}
    if fault == "kill-redis-primary":
        host = current_redis_primary(state)
        dc = next(d for d in spec.dc_names if spec.address(d) == host)
        primary = _component(state, "redis", dc)
        engine_of(state).kill(state, primary)
        say(f"kill-redis-primary: SIGKILL to Redis of {dc} ({_where(primary)})")
        return dc, every, {"restart_redis": dc}
    if fault == "slow-link":
        first, second, delay_ms = args["dc"], args["other"], int(args["delay_ms"])
        _set_link_delay(state, first, second, delay_ms)
        say(
            f"slow-link {first} <-> {second}: +{delay_ms} ms on every gRPC hop between them"
            " (added in the application: this kernel has no netem)"
        )
        return f"{first},{second}", every, {"unslow": [first, second]}
    raise LaunchError(f"unknown fault {fault!r}")


def _component(state: ClusterState, kind: str, dc: str) -> Component:
    return next(c for c in state.components if c.kind == kind and c.dc == dc)


def _where(component: Component) -> str:
    return f"container {component.container}" if component.container else f"pid {component.pid}"


def _resume_after(state: ClusterState, dc: str, seconds: float, at: float, say: Say) -> threading.Thread:
    node = _component(state, "node", dc)

    def resume() -> None:
        time.sleep(max(0.0, at + seconds - time.time()))
        engine_of(state).resume(state, node)
        say(f"pause-node {dc}: SIGCONT after {seconds} s")

    thread = threading.Thread(target=resume, daemon=False)
    thread.start()
    return thread


def _set_link_delay(state: ClusterState, first: str, second: str, delay_ms: int | None) -> None:
    """Through a gateway's AdminService, with the admin credential (the fault hook of the contract)."""
    with admin_client(state) as admin:
        admin.set_link_delay(first, second, delay_ms or 0)


def heal(state: ClusterState, say: Say) -> list[dict[str, Any]]:
    """Undoes every fault still active, in the order they were made."""
    healed = []
    failed: list[str] = []
    for entry in state.faults:
        if not entry.get("active"):
            continue
        try:
            _undo(state, entry["undo"], say)
        except Exception as err:  # one undo failing must not leave the others undone
            failed.append(f"{entry['fault']} {entry['target']}: {err}")
            say(f"heal: {entry['fault']} {entry['target']} NOT undone: {err}")
            continue
        entry["active"] = False
        entry["healed_at"] = time.time()
        healed.append(entry)
        state.save()
    if failed:
        raise LaunchError("heal left faults active (run `bankctl chaos heal` again): " + "; ".join(failed))
    if not healed:
        say("heal: no active fault")
    return healed


def _undo(state: ClusterState, undo: dict[str, Any], say: Say) -> None:
    engine = engine_of(state)
    if "restart_dc" in undo:
        engine.restart_dc(state, undo["restart_dc"], say)
    if "link_up" in undo:
        engine.reconnect_dc(state, undo["link_up"])
        say(f"heal: link of {undo['link_up']} up")
    if "resume_node" in undo:
        _resume(state, undo["resume_node"], say)
    if "restart_node" in undo:
        engine.restart(state, _component(state, "node", undo["restart_node"]), say)
    if "unpartition" in undo:
        first, second = undo["unpartition"]
        for here, there in ((first, second), (second, first)):
            for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
                rule = ["iptables", "-D", chain, flag, state.spec.address(there), "-j", "DROP"]
                subprocess.run(in_dc(state.spec, here, rule), check=False)
        say(f"heal: partition {first} <-> {second} removed")
    if "restart_zookeeper" in undo:
        engine.restart(state, _component(state, "zookeeper", undo["restart_zookeeper"]), say)
        say(f"heal: ZooKeeper of {undo['restart_zookeeper']} back")
    if "restart_redis" in undo:
        engine.restart(state, _component(state, "redis", undo["restart_redis"]), say)
        say(f"heal: Redis of {undo['restart_redis']} back as a replica")
    if "unslow" in undo:
        _set_link_delay(state, undo["unslow"][0], undo["unslow"][1], None)
        say("heal: link delay removed")


def _resume(state: ClusterState, paused: str | int, say: Say) -> None:
    """`paused` is the DC (records of now) or the PID (records written before engines)."""
    if isinstance(paused, int):
        node = next((c for c in state.components if c.kind == "node" and c.pid == paused), None)
    else:
        node = _component(state, "node", paused)
    if node is not None:
        engine_of(state).resume(state, node)
        say(f"heal: SIGCONT to {node.name}")


def restart(state: ClusterState, dc: str, say: Say) -> None:
    """`restart-dc`: brings a killed DC back and closes its kill-dc fault."""
    _require_dc(state, dc)
    engine_of(state).restart_dc(state, dc, say)
    for entry in state.faults:
        if entry.get("active") and entry["undo"].get("restart_dc") == dc:
            entry["active"] = False
            entry["healed_at"] = time.time()
    state.save()
