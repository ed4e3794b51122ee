"""The members of a containerised cluster, as a bank-node sees them: everything over SQL as
`PostgresMembers` does, but this DC's own member is started, stopped and rejoined by its keeper
(services/container/member_keeper.py), which holds its data directory, asked through ZooKeeper."""

from __future__ import annotations

import time

from services.coordinator.pg_control import PostgresMembers
from services.coordinator.view import ClusterView
from services.dcs import keepers
from services.dcs.store import Dcs

KEEPER_WAIT_S = 120.0  # a keeper that is still bringing its member up when the node asks


class KeeperMembers(PostgresMembers):
    def __init__(self, view: ClusterView, dcs: Dcs) -> None:
        super().__init__(view)
        self.dcs = dcs

    def _ask(self, shard: int, dc: str, op: str, leader_dc: str = "") -> str:
        deadline = time.monotonic() + KEEPER_WAIT_S
        while not keepers.keeper_alive(self.dcs, shard, dc) and time.monotonic() < deadline:
            time.sleep(0.5)
        return keepers.ask(self.dcs, shard, dc, op, leader_dc).how

    def start(self, shard: int, dc: str) -> None:
        self._ask(shard, dc, "start")

    def stop(self, shard: int, dc: str) -> None:
        self._ask(shard, dc, "stop")

    def rejoin(self, shard: int, dc: str, leader_dc: str) -> str:
        return self._ask(shard, dc, "rejoin", leader_dc)
