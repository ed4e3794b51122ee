"""The routing table: which shard owns each slot, and which node leads each shard at which epoch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from services.common.identifiers import NUM_SLOTS


@dataclass(frozen=True)
class ShardRoute:
    shard: int
    leader_dc: str
    epoch: int  # fencing token: grows with every change of leader
    endpoint: str  # host:port of the leader's bank-node


@dataclass(frozen=True)
class RoutingTable:
    """A consistent picture of the routing; `version` grows with every change in ZooKeeper."""

    version: int
    slot_ranges: list[tuple[int, int, int]]  # first slot, last slot, shard
    routes: dict[int, ShardRoute] = field(default_factory=dict)

    def __post_init__(self) -> None:
        covered = sum(last - first + 1 for first, last, _ in self.slot_ranges)
        assert covered == NUM_SLOTS or not self.slot_ranges, f"slot ranges cover {covered} of {NUM_SLOTS}"

    def shard_of_slot(self, slot: int) -> int:
        for first, last, shard in self.slot_ranges:
            if first <= slot <= last:
                return shard
        raise KeyError(f"slot {slot} belongs to no shard")

    def route(self, shard: int) -> ShardRoute | None:
        return self.routes.get(shard)

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "slot_ranges": [list(r) for r in self.slot_ranges],
                "routes": {str(s): asdict(r) for s, r in self.routes.items()},
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> RoutingTable:
        data: dict[str, Any] = json.loads(text)
        return cls(
            version=int(data["version"]),
            slot_ranges=[(int(a), int(b), int(c)) for a, b, c in data["slot_ranges"]],
            routes={int(s): ShardRoute(**r) for s, r in data["routes"].items()},
        )
