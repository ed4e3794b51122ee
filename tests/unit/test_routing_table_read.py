"""A routing table is read node by node; a read that two failovers cut through is read again,
so that no table pairs one shard's new route with another's old one under the newer version
(no later read of the same nodes could have replaced it)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from services.common.routes import ShardRoute
from services.dcs import paths
from services.dcs.store import Dcs
from tests.unit.fake_zookeeper import FakeZooKeeper, Stat, Tree


class FailoversDuringTheRead(FakeZooKeeper):
    """Right after the first read of shard 0's route, shards 0 and 1 fail over to dc3."""

    def __init__(self, tree: Tree) -> None:
        super().__init__(tree)
        self.struck = False

    def get(self, path: str) -> tuple[bytes, Stat]:
        found = super().get(path)
        if path == paths.route(0) and not self.struck:
            self.struck = True
            for shard in (0, 1):
                self.set(path=paths.route(shard), value=route(shard, "dc3", 2))
        return found


def route(shard: int, dc: str, epoch: int) -> bytes:
    return json.dumps(asdict(ShardRoute(shard, dc, epoch, f"{dc}:7000"))).encode()


def test_a_table_read_across_two_failovers_is_read_again() -> None:
    client = FailoversDuringTheRead(Tree())
    dcs = Dcs(client)  # type: ignore[arg-type]
    client.ensure_path(paths.SHARDS)
    client.create(paths.SLOTS, json.dumps({"ranges": [{"first": 0, "last": 1023, "shard": 0}]}).encode())
    for shard in (0, 1):
        client.create(paths.route(shard), route(shard, "dc1", 1))
    table = dcs.read_table()
    assert client.struck
    assert {s: (r.leader_dc, r.epoch) for s, r in table.routes.items()} == {0: ("dc3", 2), 1: ("dc3", 2)}
    assert table.version == client.tree.zxid


def test_a_quiet_table_is_read_once_and_checked_once(monkeypatch: Any) -> None:
    client = FakeZooKeeper(Tree())
    client.ensure_path(paths.SHARDS)
    client.create(paths.SLOTS, json.dumps({"ranges": [{"first": 0, "last": 1023, "shard": 0}]}).encode())
    client.create(paths.route(0), route(0, "dc1", 1))
    reads: list[str] = []
    original = client.get
    monkeypatch.setattr(client, "get", lambda path: reads.append(path) or original(path))
    table = Dcs(client).read_table()  # type: ignore[arg-type]
    assert table.routes[0].leader_dc == "dc1" and len(reads) == 4  # slot map and route, twice
