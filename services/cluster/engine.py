"""What runs a cluster: one interface, two engines. The launcher's own processes (`processes`:
PIDs it recorded, namespaces it made) or Docker's containers (`compose`: the containers of
deploy/docker-compose.yml). Chaos, the drill, status and `down` speak to a cluster through this
interface only, so every tool works the same on either."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from typing import Protocol

from services.cluster import dc_lifecycle
from services.cluster.state import ClusterState, Component
from services.cluster.topology import NETNS
from services.host.processes import LaunchError, pid_alive

Say = Callable[[str], None]
PROCESSES, COMPOSE_ENGINE = "processes", "compose"


class Engine(Protocol):
    name: str

    def alive(self, state: ClusterState, component: Component) -> bool:
        """Whether the component's process (or container) runs."""

    def kill_dc(self, state: ClusterState, dc: str) -> tuple[int, float]:
        """A power cut of the DC: everything of it killed at once; returns how many processes or
        containers, and when the first was killed."""

    def restart_dc(self, state: ClusterState, dc: str, say: Say) -> None:
        """Everything of the DC that is not running started again, in dependency order."""

    def isolate_dc(self, state: ClusterState, dc: str) -> None:
        """The DC cut off from the other DCs and from clients."""

    def reconnect_dc(self, state: ClusterState, dc: str) -> None:
        """The cut of `isolate_dc` healed."""

    def kill(self, state: ClusterState, component: Component) -> None:
        """SIGKILL to one component."""

    def restart(self, state: ClusterState, component: Component, say: Say) -> None:
        """A killed ZooKeeper server, Redis or bank-node started again."""

    def pause(self, state: ClusterState, component: Component) -> None:
        """SIGSTOP to one component (a process frozen, its sockets open)."""

    def resume(self, state: ClusterState, component: Component) -> None:
        """SIGCONT after `pause`."""


class ProcessEngine:
    """The launcher's processes, by the PIDs it recorded."""

    name = PROCESSES

    def alive(self, state: ClusterState, component: Component) -> bool:
        if component.kind == "postgres" and component.shard is not None:
            return dc_lifecycle.member_instance(state, component.shard, component.dc).pid() is not None
        return component.pid is not None and pid_alive(component.pid)

    def kill_dc(self, state: ClusterState, dc: str) -> tuple[int, float]:
        killed, killed_at = dc_lifecycle.kill_dc(state, dc)
        return len(killed), killed_at

    def restart_dc(self, state: ClusterState, dc: str, say: Say) -> None:
        dc_lifecycle.restart_dc(state, dc, say)

    def isolate_dc(self, state: ClusterState, dc: str) -> None:
        if state.spec.net != NETNS:
            raise LaunchError(
                "isolate-dc needs --net netns (one namespace per DC); loopback DCs share one network"
            )
        subprocess.run(["ip", "link", "set", state.spec.host_veth(dc), "down"], check=True)

    def reconnect_dc(self, state: ClusterState, dc: str) -> None:
        subprocess.run(["ip", "link", "set", state.spec.host_veth(dc), "up"], check=True)

    def kill(self, state: ClusterState, component: Component) -> None:
        dc_lifecycle.kill_component(state, component)

    def restart(self, state: ClusterState, component: Component, say: Say) -> None:
        if component.kind == "zookeeper":
            dc_lifecycle.restart_zookeeper(state, component.dc)
        elif component.kind == "redis":
            dc_lifecycle.restart_redis(state, component.dc)
        elif component.kind == "node":
            dc_lifecycle.restart_node(state.home, component.dc, say, state=state)
        else:
            raise LaunchError(f"{component.name}: no restart for a {component.kind}")

    def pause(self, state: ClusterState, component: Component) -> None:
        assert component.pid is not None
        os.kill(component.pid, signal.SIGSTOP)

    def resume(self, state: ClusterState, component: Component) -> None:
        if component.pid and pid_alive(component.pid):
            os.kill(component.pid, signal.SIGCONT)


def engine_of(state: ClusterState) -> Engine:
    if state.engine == COMPOSE_ENGINE:
        from services.cluster.compose.engine import ComposeEngine

        return ComposeEngine()
    return ProcessEngine()
