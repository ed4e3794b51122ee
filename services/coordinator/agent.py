"""A shard's agent in a bank-node: it leads the shard when the route names this DC, keeps this
DC's member a standby of the leader's otherwise, runs the failover (under the shard's lock) when
the leader's node is gone, and hands the shard over when a switchover names another DC.
Its actions run on its node's one worker (see coordinator/session.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from kazoo.exceptions import NoNodeError

from services.common.routes import ShardRoute
from services.coordinator import failover
from services.coordinator.leader_loss import LeaderLoss
from services.coordinator.members import Members, MemberState
from services.coordinator.phases import Timeline
from services.coordinator.view import ClusterView
from services.coordinator.worker import Worker
from services.dcs import paths
from services.dcs.store import Dcs, parse_route
from services.rpc import metrics

log = logging.getLogger(__name__)

Serve = Callable[[int, int], None]  # shard, epoch
Unserve = Callable[[int], None]
RETRY_S = 0.5
STARTUP_GRACE_S = 30.0
# Every standby's node checks this often that it streams from its shard's leader, and repairs
# it once it has not for STANDBY_GRACE_S (a reconnect takes well under a second; a catch-up
# streams).
STANDBY_CHECK_S = 5.0
STANDBY_GRACE_S = 15.0
MAX_REJOINS = 3  # rewinds in a row while the lead keeps moving; the standby check does the rest


class AgentHost(Protocol):
    """What an agent needs of the node's coordinator (session.NodeCoordinator)."""

    view: ClusterView
    dcs: Dcs
    members: Members
    serve: Serve
    unserve: Unserve

    def publish_routes(self) -> None: ...

    def record_failover(self, record: dict[str, Any]) -> None: ...


class ShardAgent(LeaderLoss):
    def __init__(self, coordinator: AgentHost, shard: int) -> None:
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
        self.worker = Worker(f"shard-{shard}")
        # Wall-clock times for the failover's detect phase: the leader last known alive (its
        # node answered the liveness check), and its leader znode seen gone.
        self.leader_alive_at: float | None = None
        self.leader_gone_at: float | None = None
        self.route: ShardRoute | None = None  # as the route's watch last delivered it
        self.suspecting = False  # this DC's node has said in ZooKeeper it gets no answer from the leader

    @property
    def dcs(self) -> Dcs:
        return self.c.dcs

    def schedule(self, key: str, task: Callable[[], None], delay_s: float = 0.0) -> None:
        """On this agent's own worker: its actions never run two at a time."""
        self.worker.schedule(key, task, delay_s)

    def on_connected(self) -> None:
        """After the session (re)connected: membership again, leadership where it still holds."""
        self.register()
        self.reconcile()

    def retire(self) -> None:
        """The shard was removed: stop serving it, let go of its znodes, stop this worker."""
        if self.serving_epoch is not None:
            self.serving_epoch = None
            self.c.unserve(self.shard)
        self.release_leader_znode()
        self.dcs.unregister_member(self.shard, self.dc)
        log.warning("event=shard_retired shard=%s", self.shard)
        self.worker.stop()

    def is_retired(self) -> bool:
        """Removed (this node knows it, or ZooKeeper says so before its watch fired here): no
        failover, no leading; the shard's slots all live elsewhere."""
        return self.retired or self.dcs.is_retired(self.shard)

    def watch(self) -> None:
        self.dcs.watch_data(paths.route(self.shard), self._on_route)
        self.dcs.watch_data(paths.leader(self.shard), self._on_leader)
        self.dcs.watch_children(paths.members(self.shard), self._on_members)
        self.dcs.watch_data(paths.switchover(self.shard), self._on_switchover)
        self.dcs.ensure_paths(paths.suspects(self.shard))
        self.dcs.watch_children(paths.suspects(self.shard), self._on_suspects)

    def _on_switchover(self, data: bytes | None) -> None:
        if data is not None:
            self.schedule(f"switchover-{self.shard}", self.switch_over)

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
        try:
            failover.switch_over(self.dcs, self.c.members, self.c.view, self.shard, target)
        except Exception:
            log.exception("event=switchover_failed shard=%s to=%s", self.shard, target)
            self.c.members.start(self.shard, self.dc)
            self.dcs.clear_switchover(self.shard)
            self.reconcile()  # lead again: nothing moved
            return
        self.c.publish_routes()
        self.dcs.release_leader(self.shard)
        self.dcs.clear_switchover(self.shard)
        self._follow(target, None)

    def _on_route(self, data: bytes | None) -> None:
        self.route = parse_route(data) if data else None
        self.schedule(f"reconcile-{self.shard}", self.reconcile)

    def _on_leader(self, data: bytes | None) -> None:
        if data is not None:
            self.leader_seen = True
            self.leader_gone_at = None
        else:
            self.leader_gone_at = self.leader_gone_at or time.time()
            self.schedule(f"elect-{self.shard}", self.elect)

    def _on_members(self, children: list[str]) -> None:
        self.schedule(f"elect-{self.shard}", self.elect)

    def lost_session(self) -> None:
        """The session is gone and with it our ephemeral znodes: whatever we led is not ours."""
        if self.serving_epoch is not None:
            self.serving_epoch = None
            self.c.unserve(self.shard)

    def register(self) -> None:
        """Announces this DC's member as live (only if its PostgreSQL answers)."""
        if self.retired:
            return
        if self.c.members.probe(self.shard, self.dc) is None:
            log.warning("event=member_not_answering shard=%s", self.shard)
            self.schedule(f"register-{self.shard}", self.register, delay_s=1.0)
            return
        self.dcs.register_member(self.shard, self.dc)

    def reconcile(self) -> None:
        """Puts this DC's part of the shard in line with the route."""
        if self.is_retired():
            return
        route, _ = self.dcs.read_route(self.shard)
        local = self.c.members.probe(self.shard, self.dc)
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
        self.release_leader_znode()
        self._follow(route.leader_dc, local)

    def release_leader_znode(self) -> None:
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
            self.schedule(f"reconcile-{self.shard}", self.reconcile, delay_s=RETRY_S)
            return
        self.serving_epoch = epoch
        self.c.serve(self.shard, epoch)
        log.info("event=leading shard=%s epoch=%s", self.shard, epoch)

    def _follow(self, leader_dc: str, local: MemberState | None) -> None:
        """Makes this DC's member a standby of the leader's, if it is not one already."""
        view = self.c.view
        leader_host = view.members[self.shard][leader_dc].host
        if local is not None and local.in_recovery and local.upstream_host == leader_host:
            return  # already in line: nothing to ask the (possibly unreachable) leader
        if not self.dcs.member_alive(self.shard, leader_dc):
            return  # the leader's node is gone: a failover comes, and its route change brings us back
        leader = self.c.members.probe(self.shard, leader_dc)
        if leader is None or leader.in_recovery:
            return  # the leader's member is not ready; its route change will bring us back
        if local is not None and local.in_recovery:
            self._repoint(leader_dc)
            return
        self._rejoin(leader_dc)

    def _repoint(self, leader_dc: str) -> None:
        self.c.members.follow(self.shard, self.dc, leader_dc)
        self.acted_at = time.monotonic()
        log.info("event=standby_repointed shard=%s to=%s", self.shard, leader_dc)

    def _rejoin(self, leader_dc: str) -> str:
        """Rewinds (or re-clones) this DC's member from the leader's; returns how.

        That takes seconds, and the route may move meanwhile (seen: the leader's node died
        during a rewind from it). A member rewound from a leader that lost the lead holds WAL
        its successor never had (the rewind's own CHECKPOINT, at least): re-pointed, it would
        never stream. So it is rewound again, from whoever leads once it is done."""
        for _ in range(MAX_REJOINS):
            how = self.c.members.rejoin(self.shard, self.dc, leader_dc)
            log.info("event=member_rejoined shard=%s how=%s leader=%s", self.shard, how, leader_dc)
            route, _ = self.dcs.read_route(self.shard)
            if route.leader_dc in (leader_dc, self.dc):
                break
            successor = self.c.members.probe(self.shard, route.leader_dc)
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
        local = self.c.members.probe(self.shard, self.dc)
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
        leader = self.c.members.probe(self.shard, route.leader_dc)
        if leader is None or leader.in_recovery:
            return None
        return route.leader_dc

    def _in_line(self, local: MemberState | None, leader_dc: str) -> bool:
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
        local = self.c.members.probe(self.shard, self.dc)
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
            self.schedule(f"elect-{self.shard}", self.elect, delay_s=1.0)
            return
        timeline = Timeline(self.shard, self._leader_last_alive())
        timeline.mark("detect")
        lock = self.dcs.failover_lock(self.shard, self.dc)
        if not lock.acquire(timeout=10):
            self.schedule(f"elect-{self.shard}", self.elect, delay_s=RETRY_S)
            return
        timeline.mark("lock")
        try:
            self._fail_over_unless_moved(route, timeline)
        except NoNodeError:
            self.schedule(f"elect-{self.shard}", self.elect, delay_s=RETRY_S)
        finally:
            lock.release()

    def _leader_last_alive(self) -> float:
        """When the leader was last known alive: its node's last answer to the liveness check
        when there was one since its znode went, else the moment the znode was seen gone."""
        now = time.time()
        gone_at = self.leader_gone_at or now
        alive_at = self.leader_alive_at
        return alive_at if alive_at is not None and alive_at <= gone_at else gone_at

    def _fail_over_unless_moved(self, route: ShardRoute, timeline: Timeline) -> None:
        """Under the lock: another survivor may have failed the shard over meanwhile."""
        route_now, _ = self.dcs.read_route(self.shard)
        if route_now.epoch != route.epoch or self.dcs.leader_exists(self.shard):
            return
        started = time.monotonic()
        new_route = failover.fail_over(self.dcs, self.c.members, self.c.view, self.shard, timeline.mark)
        label = str(self.shard)
        metrics.FAILOVERS.labels(shard=label, outcome="done" if new_route else "not_possible").inc()
        if new_route is None:
            self.schedule(f"elect-{self.shard}", self.elect, delay_s=1.0)
            return
        metrics.FAILOVER_SECONDS.labels(shard=label).observe(time.monotonic() - started)
        for phase, seconds in timeline.durations_s().items():
            metrics.FAILOVER_PHASE_SECONDS.labels(phase=phase).observe(seconds)
        self.c.publish_routes()
        record = timeline.record(self.dc, route.leader_dc, new_route.leader_dc, new_route.epoch)
        self.c.record_failover(record)
        log.info("event=failover_phases shard=%s %s", self.shard,
                 " ".join(f"{p}_ms={s * 1000:.0f}" for p, s in timeline.durations_s().items()))  # fmt: skip
        if new_route.leader_dc == self.dc:
            self._lead(new_route.epoch)  # no need to wait for our own route watch
