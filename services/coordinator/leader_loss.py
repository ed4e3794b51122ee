"""How a shard agent learns that its leader is lost before ZooKeeper says so (see liveness.py):
its node refuses connections (a dead process), or it is silent to every other DC's node (cut
off). Either way the leader's znodes are removed and the failover runs at once."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from services.coordinator import liveness

if TYPE_CHECKING:
    from collections.abc import Callable

    from services.coordinator.agent import AgentHost
    from services.dcs.store import Dcs

log = logging.getLogger(__name__)


class LeaderLoss:
    """Part of ShardAgent: its reactions to what the liveness checks find."""

    c: AgentHost
    shard: int
    dc: str
    serving_epoch: int | None
    leader_seen: bool
    leader_gone_at: float | None
    suspecting: bool

    if TYPE_CHECKING:  # ShardAgent's own, which these reactions use

        @property
        def dcs(self) -> Dcs: ...

        def is_retired(self) -> bool: ...

        def elect(self) -> None: ...

        def schedule(self, key: str, task: Callable[[], None], delay_s: float = 0.0) -> None: ...

    def leader_refused(self, endpoint: str) -> None:
        """On the worker: the leader's node refused connections (liveness.py) and still does.
        Its znodes go now, and the failover runs as if its session had expired."""
        if self.is_retired() or self.serving_epoch is not None:
            return
        route, _ = self.dcs.read_route(self.shard)
        if (
            route.leader_dc == self.dc
            or route.endpoint != endpoint
            or liveness.knock(endpoint) != liveness.REFUSED
        ):
            return
        log.warning(
            "event=leader_refuses shard=%s leader=%s endpoint=%s", self.shard, route.leader_dc, endpoint
        )
        self._fail_over_now(route.leader_dc)

    def leader_silent(self, endpoint: str) -> None:
        """On the worker: the leader's node has not answered for a while (liveness.py). Say so,
        and fail over if every other DC's node says so too."""
        if self.is_retired() or self.serving_epoch is not None:
            return
        route, _ = self.dcs.read_route(self.shard)
        if route.leader_dc == self.dc or route.endpoint != endpoint:
            return
        if not self.suspecting:
            log.warning("event=leader_silent shard=%s leader=%s", self.shard, route.leader_dc)
        self.dcs.suspect(self.shard, self.dc, route.leader_dc)
        self.suspecting = True
        self.judge_suspects()

    def leader_answers(self) -> None:
        """On the worker: the leader's node answers again; this DC suspects it no longer."""
        if self.suspecting:
            self.suspecting = False
            self.dcs.unsuspect(self.shard, self.dc)

    def judge_suspects(self) -> None:
        """Fails over when the leader is cut off from every other DC (see liveness.cut_off)."""
        if self.is_retired() or not self.suspecting:
            return
        route, _ = self.dcs.read_route(self.shard)
        if route.leader_dc == self.dc:
            return
        suspecting = self.dcs.suspects(self.shard, route.leader_dc)
        if not liveness.cut_off(route.leader_dc, list(self.c.view.members[self.shard]), suspecting):
            return
        log.warning(
            "event=leader_cut_off shard=%s leader=%s suspected_by=%s", self.shard, route.leader_dc, suspecting
        )
        self._fail_over_now(route.leader_dc)
        self.leader_answers()  # that leader is no more; a new one starts unsuspected

    def _fail_over_now(self, leader_dc: str) -> None:
        """The leader in `leader_dc` is lost: its znodes go, and the failover runs at once."""
        self.leader_gone_at = self.leader_gone_at or time.time()
        self.leader_seen = True
        self.dcs.drop_dead_leader(self.shard, leader_dc)
        self.elect()

    def _on_suspects(self, children: list[str]) -> None:
        if children:
            self.schedule(f"judge-{self.shard}", self.judge_suspects)
