"""`bankctl chaos`: faults in Jepsen's vocabulary, each recorded with when it struck and how
long each affected shard took to accept a write again; `heal` undoes every active fault."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from bankclient import BankClient
from services.chaos import rto
from services.cluster import status
from services.cluster.dc_lifecycle import (
    current_redis_primary,
    kill_component,
    kill_dc,
    restart_dc,
    restart_redis,
    restart_zookeeper,
)
from services.cluster.launcher import restart_node
from services.cluster.netns import in_dc
from services.cluster.state import ClusterState
from services.cluster.topology import NETNS
from services.cluster.zookeeper import zk_mode
from services.host.processes import LaunchError, pid_alive

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
        if fault == "kill-dc":
            killed, killed_at = kill_dc(state, dc)
            say(f"kill-dc {dc}: SIGKILL to {len(killed)} processes")
            return dc, affected, {"restart_dc": dc, STRUCK_AT: killed_at}
        if fault == "isolate-dc":
            if spec.net != NETNS:
                raise LaunchError(
                    "isolate-dc needs --net netns (one namespace per DC); loopback DCs share one network"
                )
            subprocess.run(["ip", "link", "set", spec.host_veth(dc), "down"], check=True)
            say(f"isolate-dc {dc}: its link to the other DCs and to clients is down")
            return dc, affected, {"link_up": dc}
        node = next(c for c in state.components if c.kind == "node" and c.dc == dc)
        if fault == "kill-node":
            kill_component(state, node)
            say(f"kill-node {dc}: SIGKILL to the bank-node (pid {node.pid})")
            return dc, affected, {"restart_node": dc}
        assert node.pid is not None
        os.kill(node.pid, signal.SIGSTOP)
        say(f"pause-node {dc}: SIGSTOP to the bank-node (pid {node.pid}) for {args['seconds']} s")
        return dc, affected, {"resume_node": node.pid}
    if fault == "partition":
        first, second = args["dc"], args["other"]
        for dc in (first, second):
            _require_dc(state, dc)
        if spec.net != NETNS:
            raise LaunchError("partition needs --net netns (one namespace per DC)")
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
        zk = next(c for c in state.components if c.kind == "zookeeper" and c.dc == dc)
        kill_component(state, zk)
        say(f"kill-zk-leader: SIGKILL to ZooKeeper of {dc} (pid {zk.pid})")
        return dc, every, {"restart_zookeeper": dc}
    if fault == "kill-redis-primary":
        host = current_redis_primary(state)
        dc = next(d for d in spec.dc_names if spec.address(d) == host)
        primary = next(c for c in state.components if c.kind == "redis" and c.dc == dc)
        kill_component(state, primary)
        say(f"kill-redis-primary: SIGKILL to Redis of {dc} (pid {primary.pid})")
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


def _resume_after(state: ClusterState, dc: str, seconds: float, at: float, say: Say) -> threading.Thread:
    node = next(c for c in state.components if c.kind == "node" and c.dc == dc)

    def resume() -> None:
        time.sleep(max(0.0, at + seconds - time.time()))
        if node.pid and pid_alive(node.pid):
            os.kill(node.pid, signal.SIGCONT)
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
    if "restart_dc" in undo:
        restart_dc(state, undo["restart_dc"], say)
    if "link_up" in undo:
        subprocess.run(["ip", "link", "set", state.spec.host_veth(undo["link_up"]), "up"], check=True)
        say(f"heal: link of {undo['link_up']} up")
    if "resume_node" in undo and pid_alive(undo["resume_node"]):
        os.kill(undo["resume_node"], signal.SIGCONT)
        say(f"heal: SIGCONT to pid {undo['resume_node']}")
    if "restart_node" in undo:
        restart_node(state.home, undo["restart_node"], say, state=state)
    if "unpartition" in undo:
        first, second = undo["unpartition"]
        for here, there in ((first, second), (second, first)):
            for chain, flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
                rule = ["iptables", "-D", chain, flag, state.spec.address(there), "-j", "DROP"]
                subprocess.run(in_dc(state.spec, here, rule), check=False)
        say(f"heal: partition {first} <-> {second} removed")
    if "restart_zookeeper" in undo:
        restart_zookeeper(state, undo["restart_zookeeper"])
        say(f"heal: ZooKeeper of {undo['restart_zookeeper']} back")
    if "restart_redis" in undo:
        restart_redis(state, undo["restart_redis"])
        say(f"heal: Redis of {undo['restart_redis']} back as a replica")
    if "unslow" in undo:
        _set_link_delay(state, undo["unslow"][0], undo["unslow"][1], None)
        say("heal: link delay removed")


def restart(state: ClusterState, dc: str, say: Say) -> None:
    """`restart-dc`: brings a killed DC back and closes its kill-dc fault."""
    _require_dc(state, dc)
    restart_dc(state, dc, say)
    for entry in state.faults:
        if entry.get("active") and entry["undo"].get("restart_dc") == dc:
            entry["active"] = False
            entry["healed_at"] = time.time()
    state.save()
