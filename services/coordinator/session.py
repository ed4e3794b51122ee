"""The ZooKeeper side of a bank-node: one session, and a shard agent (coordinator/agent.py) per
shard that has a member in this DC. A suspended session is treated as lost: the node stops
serving first and asks later. Each agent's actions run on its own worker (coordinator/
worker.py), one at a time, so an agent never races itself, and shards fail over side by side
(on one worker for all, a DC leading three shards took 1.7, 2.4 and 3.1 s to lose, one failover
after the other); the node's own tasks (the session, shards added or retired) have a worker of
their own. The znodes are listed in dcs/paths.py.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import KazooException

from services.coordinator import liveness, route_mirror
from services.coordinator.agent import STANDBY_CHECK_S, Serve, ShardAgent, Unserve
from services.coordinator.keeper_members import KeeperMembers
from services.coordinator.members import Members
from services.coordinator.pg_control import PostgresMembers
from services.coordinator.view import ClusterView, Member
from services.coordinator.worker import Worker
from services.dcs import paths, store
from services.dcs.store import Dcs
from services.rpc import metrics

log = logging.getLogger(__name__)

MIRROR_EVERY_S = 2.0


class NodeCoordinator:
    def __init__(
        self,
        view: ClusterView,
        serve: Serve,
        unserve: Unserve,
        fence: Callable[[bool], None],
        dcs: Dcs | None = None,
        members: Members | None = None,
    ) -> None:
        """`dcs` and `members` default to the real ZooKeeper session and PostgreSQL members;
        unit tests pass fakes."""
        self.view = view
        self.serve: Serve = serve
        self.unserve: Unserve = unserve
        self.fence = fence
        self.dcs: Dcs = dcs or Dcs.session(
            view.zk_hosts,
            view.session_timeout_s,
            local=view.node_endpoints[view.dc].rsplit(":", 1)[0],
            auth=view.zk_auth,
            lock_tries=3,
        )
        self.members: Members = members or (
            KeeperMembers(view, self.dcs) if view.member_keepers else PostgresMembers(view)
        )
        self.worker = Worker()
        self.agents = {
            shard: ShardAgent(self, shard) for shard in view.members if view.dc in view.members[shard]
        }
        self._stopping = threading.Event()
        self._mirror = threading.Thread(target=self._mirror_routes, name="route-mirror", daemon=True)
        self._checker = threading.Thread(target=self._check_standbys, name="standby-check", daemon=True)
        self._knocker = threading.Thread(target=self._check_leaders, name="leader-check", daemon=True)
        self._refusals = liveness.Refusals()
        self._silences = liveness.Silences()

    def start(self) -> None:
        self.dcs.on_session(self._on_state)
        self.dcs.start(timeout_s=15)
        self.dcs.ensure_paths(paths.LEADERS, paths.LOCKS, *[paths.members(s) for s in self.agents])
        self.worker.start()
        for agent in self.agents.values():
            agent.worker.start()
            agent.watch()
        self.schedule("session", self._on_connected)
        self.dcs.ensure_paths(paths.ADDED_SHARDS, paths.RETIRED_SHARDS)
        self.dcs.watch_children(paths.ADDED_SHARDS, self._on_added_shards)
        self.dcs.watch_children(paths.RETIRED_SHARDS, self._on_retired_shards)
        self._mirror.start()
        self._checker.start()
        self._knocker.start()

    def stop(self) -> None:
        self._stopping.set()
        self.worker.stop()
        for agent in self.agents.values():
            agent.worker.stop()
        self.dcs.close()

    def run_due(self) -> int:
        """Runs every task due now, the node's and every agent's, on the calling thread (for
        tests, with the workers not started); returns how many ran."""
        ran, total = 1, 0
        while ran:
            ran = self.worker.run_due() + sum(a.worker.run_due() for a in list(self.agents.values()))
            total += ran
        return total

    def schedule(self, key: str, task: Callable[[], None], delay_s: float = 0.0) -> None:
        self.worker.schedule(key, task, delay_s)

    def publish_routes(self) -> None:
        route_mirror.publish_soon(self.dcs, self.view)

    def record_failover(self, record: dict[str, Any]) -> None:
        """Kept in ZooKeeper for `status` and the drill, on a thread of its own (the worker
        goes on: the new leader's node may be this one)."""
        threading.Thread(target=self.dcs.record_failover, args=(record,), daemon=True).start()

    def _mirror_routes(self) -> None:
        """Keeps Redis's copy of the routes as new as ZooKeeper's: a publication lost while Redis
        itself was failing over is made again here (on its own thread: Redis may be slow)."""
        while not self._stopping.wait(MIRROR_EVERY_S):
            if not self.dcs.connected:
                continue
            try:
                route_mirror.publish_routes(self.dcs, self.view, only_if_behind=True)
            except KazooException as err:
                log.warning("event=route_mirror_failed error=%r", str(err))

    def _check_standbys(self) -> None:
        """Route changes and reconnections put members in line; this catches what no event
        announces: a standby whose WAL receiver stopped streaming and stays so. The looking is
        done here, off the worker (a probe of an unreachable leader takes seconds, and the
        worker also runs failovers); only a repair goes to the worker."""
        while not self._stopping.wait(STANDBY_CHECK_S):
            for shard, agent in self.agents.items():
                if not self.dcs.connected:
                    break
                try:
                    leader_dc = agent.standby_needs_repair()
                except Exception as err:  # ZooKeeper between servers, say: the next round looks again
                    log.warning("event=standby_check_failed shard=%s error=%r", shard, str(err))
                    continue
                if leader_dc is not None:
                    agent.schedule(f"repair-{shard}", functools.partial(agent.repair_standby, leader_dc))

    def _check_leaders(self) -> None:
        """Knocks on every other DC's leading node, once a round each (see liveness.py): a
        refusal in a row too many, or a silence long enough, goes to the shard's worker."""
        while not self._stopping.wait(liveness.KNOCK_EVERY_S):
            knocked: dict[str, str] = {}
            for agent in list(self.agents.values()):
                self._check_leader(agent, knocked)

    def _check_leader(self, agent: ShardAgent, knocked: dict[str, str]) -> None:
        route = agent.route
        if route is None or route.leader_dc == self.view.dc or agent.retired or not self.dcs.connected:
            return
        if route.endpoint not in knocked:
            knocked[route.endpoint] = liveness.knock(route.endpoint)
        outcome = knocked[route.endpoint]
        if outcome == liveness.ALIVE:
            agent.leader_alive_at = time.time()
            if agent.suspecting:
                agent.schedule(f"answers-{agent.shard}", agent.leader_answers)
        if self._refusals.observe(agent.shard, route.endpoint, outcome):
            agent.schedule(f"refused-{agent.shard}", functools.partial(agent.leader_refused, route.endpoint))
        if self._silences.observe(agent.shard, route.endpoint, outcome, time.monotonic()):
            agent.schedule(f"silent-{agent.shard}", functools.partial(agent.leader_silent, route.endpoint))

    def _on_state(self, state: str) -> None:
        """Runs on kazoo's thread: decide at once, never block."""
        metrics.set_zk_state(state)
        if state in (store.SUSPENDED, store.LOST):
            log.warning("event=zk_session_%s action=stop_serving", state.lower())
            self.fence(True)
            if state == store.LOST:
                for agent in self.agents.values():
                    agent.lost_session()
        elif state == store.CONNECTED:
            self.schedule("session", self._on_connected)

    def _on_added_shards(self, children: list[str]) -> None:
        """Runs on kazoo's thread: shards added while the bank runs are taken up on the worker."""
        for child in children:
            if child.isdigit() and int(child) not in self.agents:
                self.schedule(f"add-shard-{child}", functools.partial(self._take_up, int(child)))

    def _on_retired_shards(self, children: list[str]) -> None:
        for child in children:
            if child.isdigit() and int(child) in self.agents:
                self.schedule(f"retire-{child}", functools.partial(self._retire, int(child)))

    def _retire(self, shard: int) -> None:
        """A removed shard (its slots all moved away): its agent stops acting at once, and lets
        go of the shard on its own worker (after whatever task it is running)."""
        agent = self.agents.get(shard)
        if agent is None:
            return
        agent.retired = True
        self.agents = {s: a for s, a in self.agents.items() if s != shard}
        agent.schedule("retire", agent.retire)

    def _take_up(self, shard: int) -> None:
        """Learns an added shard's members and starts its agent, as if it had been there at start."""
        if shard in self.agents or self.dcs.is_retired(shard):
            return
        members = {dc: Member(**m) for dc, m in self.dcs.added_members(shard).items()}
        if self.view.dc not in members:
            return
        # The view's member table is shared with the node (it serves from it): extended in place.
        self.view.members[shard] = members
        self.dcs.ensure_paths(paths.members(shard))
        agent = ShardAgent(self, shard)
        self.agents = {**self.agents, shard: agent}
        if self.worker.running:
            agent.worker.start()
        agent.watch()
        agent.schedule("connected", agent.on_connected)
        log.info("event=shard_taken_up shard=%s", shard)

    def _on_connected(self) -> None:
        """After (re)connecting: each agent registers its member again and takes the lead only
        where the session still holds it, on its own worker."""
        self.fence(False)
        for agent in self.agents.values():
            agent.schedule("connected", agent.on_connected)
