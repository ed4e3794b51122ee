"""The ZooKeeper side of a bank-node: one session, and an agent per shard that has a member in
this DC. A suspended session is treated as lost: the node stops serving first and asks later.

Znodes (all ephemeral but the route):
  /bank/shards/<n>          the route: leader DC, epoch, endpoint (persistent, the truth)
  /bank/leaders/<n>         held by the node that serves shard n
  /bank/members/<n>/<dc>    held by every live node with a member of shard n
  /bank/locks/failover-<n>  the lock under which one survivor runs a failover
Every action runs on one worker thread, so agents never race each other inside a node.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from kazoo.exceptions import KazooException, NoNodeError

from services.coordinator import failover, pg_control
from services.coordinator.view import ClusterView, Member
from services.dcs import paths, store
from services.dcs.store import Dcs
from services.host.postgres import PostgresInstance
from services.rpc import metrics

log = logging.getLogger(__name__)

Serve = Callable[[int, int], None]  # shard, epoch
Unserve = Callable[[int], None]
RETRY_S = 0.5
STARTUP_GRACE_S = 30.0
MIRROR_EVERY_S = 2.0
# Every standby's node checks this often that it streams from its shard's leader, and repairs
# it once it has not for STANDBY_GRACE_S (a reconnect takes well under a second; a catch-up
# streams).
STANDBY_CHECK_S = 5.0
STANDBY_GRACE_S = 15.0
MAX_REJOINS = 3  # rewinds in a row while the lead keeps moving; the standby check does the rest


class NodeCoordinator:
    def __init__(
        self, view: ClusterView, serve: Serve, unserve: Unserve, fence: Callable[[bool], None]
    ) -> None:
        self.view = view
        self.serve = serve
        self.unserve = unserve
        self.fence = fence
        self.dcs = Dcs.session(
            view.zk_hosts,
            view.session_timeout_s,
            local=view.node_endpoints[view.dc].rsplit(":", 1)[0],
            auth=view.zk_auth,
            lock_tries=3,
        )
        self.agents = {
            shard: ShardAgent(self, shard) for shard in view.members if view.dc in view.members[shard]
        }
        self._tasks: list[tuple[float, int, str, Callable[[], None]]] = []  # a heap by due time
        self._order = itertools.count()
        self._pending: set[str] = set()
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._work, name="coordinator", daemon=True)
        self._mirror = threading.Thread(target=self._mirror_routes, name="route-mirror", daemon=True)
        self._checker = threading.Thread(target=self._check_standbys, name="standby-check", daemon=True)

    def start(self) -> None:
        self.dcs.on_session(self._on_state)
        self.dcs.start(timeout_s=15)
        self.dcs.ensure_paths(paths.LEADERS, paths.LOCKS, *[paths.members(s) for s in self.agents])
        self._worker.start()
        for agent in self.agents.values():
            agent.watch()
        self.schedule("session", self._on_connected)
        self.dcs.ensure_paths(paths.ADDED_SHARDS, paths.RETIRED_SHARDS)
        self.dcs.watch_children(paths.ADDED_SHARDS, self._on_added_shards)
        self.dcs.watch_children(paths.RETIRED_SHARDS, self._on_retired_shards)
        self._mirror.start()
        self._checker.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._lock:
            self._lock.notify_all()
        self._worker.join(timeout=5)
        self.dcs.close()

    def schedule(self, key: str, task: Callable[[], None], delay_s: float = 0.0) -> None:
        """Queues `task` unless the same key is already waiting (watches fire in bursts)."""
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
            heapq.heappush(self._tasks, (time.monotonic() + delay_s, next(self._order), key, task))
            self._lock.notify()

    def _work(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                while not self._stopping.is_set():
                    now = time.monotonic()
                    if self._tasks and self._tasks[0][0] <= now:
                        _, _, key, task = heapq.heappop(self._tasks)
                        self._pending.discard(key)
                        break
                    self._lock.wait(timeout=(self._tasks[0][0] - now) if self._tasks else 1.0)
                else:
                    return
            try:
                task()
            except Exception:  # a failed step is retried by the next watch or schedule
                log.exception("event=coordinator_task_failed task=%s", key)
                self.schedule(key, task, delay_s=RETRY_S)

    def _mirror_routes(self) -> None:
        """Keeps Redis's copy of the routes as new as ZooKeeper's: a publication lost while Redis
        itself was failing over is made again here (on its own thread: Redis may be slow)."""
        while not self._stopping.wait(MIRROR_EVERY_S):
            if not self.dcs.connected:
                continue
            try:
                failover.publish_routes(self.dcs, self.view, only_if_behind=True)
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
                    self.schedule(f"repair-{shard}", functools.partial(agent.repair_standby, leader_dc))

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
        """A removed shard (its slots all moved away): stop serving it and acting for it."""
        agent = self.agents.get(shard)
        if agent is None:
            return
        agent.retired = True
        self.agents = {s: a for s, a in self.agents.items() if s != shard}
        if agent.serving_epoch is not None:
            agent.serving_epoch = None
            self.unserve(shard)
        agent._release_leader_znode()
        self.dcs.unregister_member(shard, self.view.dc)
        log.warning("event=shard_retired shard=%s", shard)

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
        agent.watch()
        agent.register()
        agent.reconcile()
        log.info("event=shard_taken_up shard=%s", shard)

    def _on_connected(self) -> None:
        """After (re)connecting: membership again, leadership only where the session still holds it."""
        for agent in self.agents.values():
            agent.register()
        self.fence(False)
        for agent in self.agents.values():
            agent.reconcile()


class ShardAgent:
    def __init__(self, coordinator: NodeCoordinator, shard: int) -> None:
        self.c = coordinator
        self.shard = shard
        self.dc = coordinator.view.dc
        self.serving_epoch: int | None = None
        # A leader that never showed up is not a leader that died: while the cluster starts,
        # the leading node may simply not be up yet.
        self.leader_seen = False
        self.started = time.monotonic()
        self.not_streaming_since: float | None = None  # read and set by the standby check
        self.acted_at = 0.0  # when this node last re-pointed, rewound or re-cloned the member
        self.retired = False  # the shard was removed: its watches may still fire, nothing acts

    @property
    def dcs(self) -> Dcs:
        return self.c.dcs

    def is_retired(self) -> bool:
        """Removed (this node knows it, or ZooKeeper says so before its watch fired here): no
        failover, no leading; the shard's slots all live elsewhere."""
        return self.retired or self.dcs.is_retired(self.shard)

    def watch(self) -> None:
        self.dcs.watch_data(paths.route(self.shard), self._on_route)
        self.dcs.watch_data(paths.leader(self.shard), self._on_leader)
        self.dcs.watch_children(paths.members(self.shard), self._on_members)
        self.dcs.watch_data(paths.switchover(self.shard), self._on_switchover)

    def _on_switchover(self, data: bytes | None) -> None:
        if data is not None:
            self.c.schedule(f"switchover-{self.shard}", self.switch_over)

    def switch_over(self) -> None:
        """Hands the shard to the DC a switchover request names, if this node leads it."""
        if self.retired:
            return
        target = self.dcs.switchover_target(self.shard)
        if target is None or self.serving_epoch is None or target == self.dc:
            return  # not ours to move (the leader's node answers it), or already there
        log.info("event=switchover_start shard=%s to=%s", self.shard, target)
        self.serving_epoch = None
        self.c.unserve(self.shard)  # drain: gateways hold the shard's requests meanwhile
        local = instance(self.c.view, self.shard, self.dc)
        try:
            failover.switch_over(self.dcs, self.c.view, self.shard, target, stop_local=local.stop)
        except Exception:
            log.exception("event=switchover_failed shard=%s to=%s", self.shard, target)
            local.start()
            self.dcs.clear_switchover(self.shard)
            self.reconcile()  # lead again: nothing moved
            return
        self.dcs.release_leader(self.shard)
        self.dcs.clear_switchover(self.shard)
        self._follow(target, None)

    def _on_route(self, data: bytes | None) -> None:
        self.c.schedule(f"reconcile-{self.shard}", self.reconcile)

    def _on_leader(self, data: bytes | None) -> None:
        if data is not None:
            self.leader_seen = True
        else:
            self.c.schedule(f"elect-{self.shard}", self.elect)

    def _on_members(self, children: list[str]) -> None:
        self.c.schedule(f"elect-{self.shard}", self.elect)

    def lost_session(self) -> None:
        """The session is gone and with it our ephemeral znodes: whatever we led is not ours."""
        if self.serving_epoch is not None:
            self.serving_epoch = None
            self.c.unserve(self.shard)

    def register(self) -> None:
        """Announces this DC's member as live (only if its PostgreSQL answers)."""
        if self.retired:
            return
        if pg_control.probe(self.c.view, self.shard, self.dc) is None:
            log.warning("event=member_not_answering shard=%s", self.shard)
            self.c.schedule(f"register-{self.shard}", self.register, delay_s=1.0)
            return
        self.dcs.register_member(self.shard, self.dc)

    def reconcile(self) -> None:
        """Puts this DC's part of the shard in line with the route."""
        if self.is_retired():
            return
        route, _ = self.dcs.read_route(self.shard)
        local = pg_control.probe(self.c.view, self.shard, self.dc)
        if route.leader_dc == self.dc:
            if local is not None and not local.in_recovery:
                self._lead(route.epoch)
            return
        if self.serving_epoch is not None:
            log.warning(
                "event=leadership_moved shard=%s to=%s epoch=%s", self.shard, route.leader_dc, route.epoch
            )
            self.serving_epoch = None
            self.c.unserve(self.shard)
        self._release_leader_znode()
        self._follow(route.leader_dc, local)

    def _release_leader_znode(self) -> None:
        """The route names another DC: a leader znode this session still holds would keep that DC
        from ever leading (seen when a restarted node took the lead again just as a failover
        moved the shard away: the new leader waited for the znode forever)."""
        if self.dcs.release_leader(self.shard):
            log.warning("event=leader_znode_released shard=%s", self.shard)

    def _lead(self, epoch: int) -> None:
        if self.serving_epoch == epoch:
            return
        if not self.dcs.take_leader(self.shard, self.dc, epoch):
            # An earlier session (ours before a restart, or the old leader) still holds it.
            self.c.schedule(f"reconcile-{self.shard}", self.reconcile, delay_s=RETRY_S)
            return
        self.serving_epoch = epoch
        self.c.serve(self.shard, epoch)
        log.info("event=leading shard=%s epoch=%s", self.shard, epoch)

    def _follow(self, leader_dc: str, local: pg_control.MemberState | None) -> None:
        """Makes this DC's member a standby of the leader's, if it is not one already."""
        view = self.c.view
        leader_host = view.members[self.shard][leader_dc].host
        if local is not None and local.in_recovery and local.upstream_host == leader_host:
            return  # already in line: nothing to ask the (possibly unreachable) leader
        if not self.dcs.member_alive(self.shard, leader_dc):
            return  # the leader's node is gone: a failover comes, and its route change brings us back
        leader = pg_control.probe(view, self.shard, leader_dc)
        if leader is None or leader.in_recovery:
            return  # the leader's member is not ready; its route change will bring us back
        if local is not None and local.in_recovery:
            self._repoint(leader_dc)
            return
        self._rejoin(leader_dc)

    def _repoint(self, leader_dc: str) -> None:
        pg_control.follow(self.c.view, self.shard, self.dc, leader_dc)
        self.acted_at = time.monotonic()
        log.info("event=standby_repointed shard=%s to=%s", self.shard, leader_dc)

    def _rejoin(self, leader_dc: str) -> str:
        """Rewinds (or re-clones) this DC's member from the leader's; returns how.

        That takes seconds, and the route may move meanwhile (seen: the leader's node died
        during a rewind from it). A member rewound from a leader that lost the lead holds WAL
        its successor never had (the rewind's own CHECKPOINT, at least): re-pointed, it would
        never stream. So it is rewound again, from whoever leads once it is done."""
        view = self.c.view
        name = view.members[self.shard][self.dc].name
        for _ in range(MAX_REJOINS):
            how = instance(view, self.shard, self.dc).rejoin_as_standby(
                instance(view, self.shard, leader_dc), name
            )
            log.info("event=member_rejoined shard=%s how=%s leader=%s", self.shard, how, leader_dc)
            route, _ = self.dcs.read_route(self.shard)
            if route.leader_dc in (leader_dc, self.dc):
                break
            successor = pg_control.probe(view, self.shard, route.leader_dc)
            if successor is None or successor.in_recovery:
                break  # its failover is not done: the standby check brings us in line later
            log.warning(
                "event=leader_moved_during_rejoin shard=%s from=%s to=%s",
                self.shard,
                leader_dc,
                route.leader_dc,
            )
            leader_dc = route.leader_dc
        self.acted_at = time.monotonic()
        self.register()
        return how

    def standby_needs_repair(self) -> str | None:
        """The leader's DC when this DC's standby has not streamed from it for STANDBY_GRACE_S
        while the leader's member answers as primary, and nothing was done to it meanwhile."""
        if self.retired:
            return None
        route, _ = self.dcs.read_route(self.shard)
        if route.leader_dc == self.dc or self.serving_epoch is not None:
            self.not_streaming_since = None
            return None
        view = self.c.view
        local = pg_control.probe(view, self.shard, self.dc)
        if self._in_line(local, route.leader_dc):
            self.not_streaming_since = None
            return None
        now = time.monotonic()
        if self.not_streaming_since is None:
            self.not_streaming_since = now
        if now - max(self.not_streaming_since, self.acted_at) < STANDBY_GRACE_S:
            return None
        if not self.dcs.member_alive(self.shard, route.leader_dc):
            return None  # the leader's node is gone: its failover brings a new route, and us with it
        leader = pg_control.probe(view, self.shard, route.leader_dc)
        if leader is None or leader.in_recovery:
            return None
        return route.leader_dc

    def _in_line(self, local: pg_control.MemberState | None, leader_dc: str) -> bool:
        leader_host = self.c.view.members[self.shard][leader_dc].host
        return (
            local is not None and local.in_recovery and local.streaming and local.upstream_host == leader_host
        )

    def repair_standby(self, leader_dc: str) -> None:
        """On the worker: re-points this DC's standby when it follows another host, else rewinds
        (or re-clones) it: a timeline it cannot follow, WAL the leader does not have. With
        `ANY 1`, a shard whose one streaming standby is lost stops committing: a silent second
        standby must not wait for that to be noticed."""
        if self.retired:
            return
        route, _ = self.dcs.read_route(self.shard)
        since = self.not_streaming_since
        if (
            route.leader_dc != leader_dc
            or since is None
            or time.monotonic() - self.acted_at < STANDBY_GRACE_S
        ):
            return  # the route moved, or the standby streams again, or the node just acted on it
        view = self.c.view
        local = pg_control.probe(view, self.shard, self.dc)
        if self._in_line(local, leader_dc):
            return
        log.warning(
            "event=standby_not_streaming shard=%s for_s=%.0f leader=%s follows=%r in_recovery=%s",
            self.shard, time.monotonic() - since, leader_dc,
            local.conninfo_host if local else None, local.in_recovery if local else None,
        )  # fmt: skip
        self.not_streaming_since = None  # the repair gets its own grace period
        leader_host = view.members[self.shard][leader_dc].host
        if local is not None and local.in_recovery and local.conninfo_host != leader_host:
            self._repoint(leader_dc)
            metrics.STANDBY_REPAIRS.labels(shard=str(self.shard), how="repointed").inc()
            return
        how = self._rejoin(leader_dc)
        metrics.STANDBY_REPAIRS.labels(shard=str(self.shard), how=how).inc()

    def elect(self) -> None:
        """When the leader's znode and its node are gone, run the failover under the lock."""
        if self.is_retired():
            return
        if self.dcs.leader_exists(self.shard):
            return
        route, _ = self.dcs.read_route(self.shard)
        if route.leader_dc == self.dc:
            self.reconcile()
            return
        if self.dcs.member_alive(self.shard, route.leader_dc):
            return  # its node lives and will take (or retake) the lead
        if not self.leader_seen and time.monotonic() - self.started < STARTUP_GRACE_S:
            self.c.schedule(f"elect-{self.shard}", self.elect, delay_s=1.0)
            return
        lock = self.dcs.failover_lock(self.shard, self.dc)
        if not lock.acquire(timeout=10):
            self.c.schedule(f"elect-{self.shard}", self.elect, delay_s=RETRY_S)
            return
        try:
            route_now, _ = self.dcs.read_route(self.shard)
            leaderless = not self.dcs.leader_exists(self.shard)
            moved = route_now.epoch != route.epoch or not leaderless
            if not moved:
                started = time.monotonic()
                new_route = failover.fail_over(self.dcs, self.c.view, self.shard)
                label = str(self.shard)
                metrics.FAILOVERS.labels(shard=label, outcome="done" if new_route else "not_possible").inc()
                if new_route is not None:
                    metrics.FAILOVER_SECONDS.labels(shard=label).observe(time.monotonic() - started)
                if new_route is None:
                    self.c.schedule(f"elect-{self.shard}", self.elect, delay_s=1.0)
                elif new_route.leader_dc == self.dc:
                    self._lead(new_route.epoch)  # no need to wait for our own route watch
        except NoNodeError:
            self.c.schedule(f"elect-{self.shard}", self.elect, delay_s=RETRY_S)
        finally:
            lock.release()


def instance(view: ClusterView, shard: int, dc: str) -> PostgresInstance:
    member = view.members[shard][dc]
    group = ", ".join(m.name for m in view.members[shard].values())
    return PostgresInstance(
        name=member.name,
        data_dir=Path(member.data_dir),
        host=member.host,
        port=member.port,
        password=view.pg_password,
        settings={
            **view.pg_settings,
            # As on every member (see pg_group): a node never counts itself.
            "synchronous_standby_names": f"'ANY 1 ({group})'",
        },
        hba_lines=list(view.pg_hba_lines),
    )
