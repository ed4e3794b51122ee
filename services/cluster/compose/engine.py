"""The compose engine's faults and repairs: a DC is its containers (label `bank.dc`), killed with
`docker kill`, started again with `docker start` in the order the launcher starts processes, cut
off with `docker network disconnect` of its namespace's container from the backbone."""

from __future__ import annotations

import time
from collections.abc import Callable

from services.cluster.compose import docker
from services.cluster.state import ClusterState, Component
from services.cluster.zookeeper import zk_mode
from services.host.processes import LaunchError, wait_until

Say = Callable[[str], None]
# The order a DC comes back in, as the launcher starts it: its network, ZooKeeper, Redis and
# Sentinel, the PostgreSQL members (their keepers put them back in line), then the services.
START_ORDER = ["dc", "zookeeper", "redis", "sentinel", "postgres", "node", "gateway"]
MEMBERS_READY_S = 300.0  # a member re-cloned from its leader takes as long as the copy


def backbone(state: ClusterState) -> str:
    return f"{state.compose['project']}_backbone"


def holder(state: ClusterState, dc: str) -> str:
    """The container whose network namespace is the DC's."""
    names = docker.containers(state.compose["project"], **{"bank.dc": dc, "bank.role": "dc"})
    if not names:
        raise LaunchError(f"no container holds {dc}'s network")
    return names[0]


class ComposeEngine:
    name = "compose"

    def alive(self, state: ClusterState, component: Component) -> bool:
        return docker.running([component.container]).get(component.container, False)

    def kill_dc(self, state: ClusterState, dc: str) -> tuple[int, float]:
        victims = docker.containers(state.compose["project"], **{"bank.dc": dc})
        alive = [name for name, up in docker.running(victims).items() if up]
        killed_at = time.time()
        docker.each("kill", alive)
        return len(alive), killed_at

    def restart_dc(self, state: ClusterState, dc: str, say: Say) -> None:
        for role in START_ORDER:
            self._start_role(state, dc, role, say)
        self._wait_serving(state, dc)

    def _start_role(self, state: ClusterState, dc: str, role: str, say: Say) -> None:
        """Starts the DC's stopped containers of one role, together."""
        names = docker.containers(state.compose["project"], **{"bank.dc": dc, "bank.role": role})
        stopped = [name for name, up in docker.running(names).items() if not up]
        docker.each("start", stopped)
        if role == "postgres":
            wait_until(lambda: healthy(names), MEMBERS_READY_S, f"{dc}'s members to be back in line")
        if stopped:
            say(f"{dc}: {role} back ({len(stopped)} container{'s' if len(stopped) > 1 else ''})")

    def _wait_serving(self, state: ClusterState, dc: str) -> None:
        from services.cluster.status import grpc_serving  # status reads every engine through this one

        gateway = next(c for c in state.components if c.kind == "gateway" and c.dc == dc)
        wait_until(lambda: grpc_serving(state, gateway), 60, f"{dc}'s gateway to serve")

    def isolate_dc(self, state: ClusterState, dc: str) -> None:
        docker.docker("network", "disconnect", "-f", backbone(state), holder(state, dc))

    def reconnect_dc(self, state: ClusterState, dc: str) -> None:
        docker.docker(
            "network", "connect", "--ip", state.spec.address(dc), backbone(state), holder(state, dc)
        )

    def kill(self, state: ClusterState, component: Component) -> None:
        docker.docker("kill", component.container)

    def restart(self, state: ClusterState, component: Component, say: Say) -> None:
        if docker.running([component.container]).get(component.container):
            return  # two faults of one step may both ask for it back
        docker.docker("start", component.container)
        if component.kind == "zookeeper":
            address = state.spec.address(component.dc)
            wait_until(lambda: zk_mode(address) in ("leader", "follower"), 60, f"ZooKeeper of {component.dc}")
        say(f"started {component.name} (container {component.container})")

    def pause(self, state: ClusterState, component: Component) -> None:
        docker.docker("pause", component.container)

    def resume(self, state: ClusterState, component: Component) -> None:
        paused = docker.inspect([component.container]).get(component.container, {})
        if paused.get("State", {}).get("Paused"):
            docker.docker("unpause", component.container)


def healthy(names: list[str]) -> bool:
    records = docker.inspect(names)
    return all(
        records.get(n, {}).get("State", {}).get("Health", {}).get("Status") == "healthy" for n in names
    )
