"""Killing and restarting whole data centers, or single components of one, by recorded PID."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from services.cluster.netns import in_dc
from services.cluster.pg_group import member_instance
from services.cluster.redis_group import redis_role, sentinel_primary, start_redis, start_sentinel
from services.cluster.service_process import start_service
from services.cluster.state import ClusterState, Component, require_state
from services.cluster.topology import NODE_METRICS_PORT
from services.cluster.zookeeper import start_zookeeper, zk_mode
from services.host.processes import LaunchError, pid_alive, terminate, wait_until

Say = Callable[[str], None]


def kill_pid_tree(pid: int) -> list[int]:
    """SIGKILL a process and all its descendants (PostgreSQL's children each have a session)."""
    try:
        victims = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        return []
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    return victims


def kill_component(state: ClusterState, component: Component) -> list[int]:
    pid = _main_pid(state, component)
    if not pid or not pid_alive(pid):
        return []
    return kill_pid_tree(pid)


def _main_pid(state: ClusterState, component: Component) -> int | None:
    """The component's recorded PID; a PostgreSQL member's from its own pid file (it changes
    on restart)."""
    if component.kind == "postgres" and component.shard is not None:
        return member_instance(state, component.shard, component.dc).pid() or component.pid
    return component.pid


def _tree(root: int, children: dict[int, list[int]]) -> list[int]:
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += children.get(pid, [])
    return found


def kill_dc(state: ClusterState, dc: str) -> tuple[list[int], float]:
    """SIGKILL every process of the DC, all at once (a power cut): every victim is found first
    (one pass over the process table), then all are killed in a row, so that no part of the DC
    outlives another by more than a few milliseconds (killed one component after the other,
    the last died some 400 ms after the first). Returns the PIDs and when the first was killed."""
    roots = [_main_pid(state, c) for c in state.components if c.dc == dc]
    children: dict[int, list[int]] = {}
    for process in psutil.process_iter(["pid", "ppid"]):
        children.setdefault(process.info["ppid"], []).append(process.info["pid"])
    victims: list[int] = []
    for root in [pid for pid in roots if pid and pid_alive(pid)]:
        victims += _tree(root, children)
    killed_at = time.time()
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    killed = victims
    for pid in killed:
        with contextlib.suppress(TimeoutError):
            wait_until(lambda p=pid: not pid_alive(p), 10, f"process {pid} to die")  # type: ignore[misc]
    return killed, killed_at


def _running(state: ClusterState, kind: str, dc: str) -> bool:
    """Whether the DC's recorded process of `kind` lives: two faults of one step may both ask for
    it back (kill-dc and kill-redis-primary of the same DC), and a second copy must not start."""
    return any(pid_alive(c.pid or 0) for c in state.find(kind, dc=dc))


def restart_zookeeper(state: ClusterState, dc: str) -> None:
    if _running(state, "zookeeper", dc):
        return
    start_zookeeper(state, dc)
    wait_until(lambda: zk_mode(state.spec.address(dc)) in ("leader", "follower"), 60, f"ZooKeeper of {dc}")


def current_redis_primary(state: ClusterState, exclude_dc: str | None = None) -> str:
    """The primary the Sentinels of the other DCs name, as host (port is the standard one)."""
    for dc in state.spec.dc_names:
        if dc == exclude_dc:
            continue
        primary = sentinel_primary(state.spec.address(dc), password=state.secrets.get("redis_password"))
        if primary:
            return primary.rsplit(":", 1)[0]
    raise LaunchError("no Sentinel names a Redis primary")


def restart_redis(state: ClusterState, dc: str) -> None:
    """An old primary always comes back as a replica of whatever Sentinel names now."""
    if _running(state, "redis", dc):
        return
    primary = current_redis_primary(state, exclude_dc=dc)
    address = state.spec.address(dc)
    start_redis(state, dc, None if primary == address else primary)
    password = state.secrets.get("redis_password")
    wait_until(lambda: redis_role(address, password=password) is not None, 30, f"Redis of {dc}")


def restart_dc(state: ClusterState, dc: str, say: Say) -> None:
    """Starts again every process of the DC that is not running; the bank-node then puts the
    DC's PostgreSQL members back in line (re-point, or pg_rewind a former primary)."""
    spec = state.spec
    by_kind = {c.kind: c for c in state.components if c.dc == dc and c.kind != "postgres"}
    if not pid_alive(by_kind["zookeeper"].pid or 0):
        restart_zookeeper(state, dc)
        say(f"{dc}: zookeeper back")
    if not pid_alive(by_kind["redis"].pid or 0):
        restart_redis(state, dc)
        say(f"{dc}: redis back as a replica")
    if not pid_alive(by_kind["sentinel"].pid or 0):
        start_sentinel(state, dc, current_redis_primary(state, exclude_dc=dc))
        say(f"{dc}: sentinel back")
    for component in [c for c in state.components if c.dc == dc and c.kind == "postgres"]:
        assert component.shard is not None
        instance = member_instance(state, component.shard, dc)
        if instance.pid() is None:
            try:
                pid = instance.start()
            except LaunchError as err:
                # E.g. a pg_rewind that the power cut interrupted: the data directory cannot be
                # trusted. The DC's bank-node, started below, rewinds or re-clones the member.
                say(f"{dc}: {instance.name} did not start ({err}); its bank-node will rebuild it")
                continue
            state.add(Component(**{**component.__dict__, "pid": pid}))
    say(f"{dc}: postgres members started; the node puts them back in line")
    for kind, module in (("node", "services.node"), ("gateway", "services.gateway")):
        component = by_kind[kind]
        if pid_alive(component.pid or 0):
            continue
        config = json.loads((state.home / "run" / f"{component.name}.json").read_text(encoding="utf-8"))
        extra = ["--dc", dc] if kind == "node" else []
        process = start_service(
            module, component.name, config, state.home / "run", state.home / "logs" / f"{component.name}.log",
            in_dc(spec, dc, []), extra_args=extra,
        )  # fmt: skip
        state.add(Component(**{**component.__dict__, "pid": process.pid, "port": process.port}))
        say(f"{dc}: {kind} back (pid {process.pid})")


def restart_node(home: Path, dc: str, say: Say, state: ClusterState | None = None) -> None:
    """Stops a DC's bank-node if it runs and starts it again with the same configuration.

    A caller that holds the cluster's record passes it, so that the new PID lands in that very
    record (a second copy saved later would forget it, and `down` would leave the node running).
    """
    state = state or require_state(home)
    if dc not in state.spec.dc_names:
        raise LaunchError(f"no DC {dc}; the cluster has {', '.join(state.spec.dc_names)}")
    for component in state.find("node", dc=dc):
        if component.pid and pid_alive(component.pid):
            terminate(component.pid)
            say(f"stopped {component.name} (pid {component.pid})")
    name = f"node-{dc}"
    config = json.loads((state.home / "run" / f"{name}.json").read_text(encoding="utf-8"))
    log_file = state.home / "logs" / f"{name}.log"
    node = start_service(
        "services.node", name, config, state.home / "run", log_file, in_dc(state.spec, dc, []),
        extra_args=["--dc", dc],
    )  # fmt: skip
    state.add(
        Component(dc, "node", name, state.spec.address(dc), node.port, node.pid, str(log_file),
                  metrics_port=NODE_METRICS_PORT)
    )  # fmt: skip
    say(f"started {name} (pid {node.pid}) on {state.spec.address(dc)}:{node.port}")
