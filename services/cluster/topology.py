"""The shape of a cluster: data centers, their addresses and ports, shards and where they lead."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from services.common.identifiers import NUM_SLOTS

NETNS, LOOPBACK = "netns", "loopback"
# In containers (docker-compose) each DC is one network namespace that the DC's containers share,
# with one address on a backbone network of the project's own range: the same shape as NETNS.
COMPOSE = "compose"

# Every DC has its own address, so the same port serves the same role in every DC.
ZK_CLIENT_PORT = 2181
ZK_PEER_PORT = 2888
ZK_ELECTION_PORT = 3888
REDIS_PORT = 6379
SENTINEL_PORT = 26379
PG_BASE_PORT = 5432  # shard s listens on PG_BASE_PORT + s
NODE_PORT = 7000
GATEWAY_PORT = 7100
NODE_METRICS_PORT = 9400  # Prometheus /metrics of the DC's bank-node and gateway
GATEWAY_METRICS_PORT = 9401
SENTINEL_MASTER = "bank"
NETNS_PREFIX = "10.213"  # 10.213.<octet>.0/24: only inside the project's own namespaces
COMPOSE_PREFIX = "10.215"  # 10.215.<octet>.0/24: the compose backbone, a network Docker makes for us
COMPOSE_FIRST_HOST = 10  # dc1 is .11, dc2 .12, ...: Docker's gateway on the network takes .1


@dataclass(frozen=True)
class ClusterSpec:
    """What `bankctl up` builds. `name` prefixes namespaces and the bridge so that two clusters
    (a user's and a test's) can coexist; `octet` picks their address range."""

    dcs: int = 3
    shards: int = 3
    net: str = LOOPBACK
    name: str = "bank"
    octet: int = 0
    tls: bool = False  # gateways and bank-nodes serve TLS only, with certificates `up` makes
    group_commit: bool = True  # bank-nodes gather concurrent writes of a shard into one transaction
    # The bank's day (services/common/calendar.py): cut at midnight in this zone, or, with
    # day_seconds, a compressed day of that many seconds (demos and tests).
    time_zone: str = "Asia/Shanghai"
    day_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not 3 <= self.dcs <= 9:
            raise ValueError(f"--dcs must be 3..9 (a majority must survive the loss of a DC), not {self.dcs}")
        if not 1 <= self.shards <= 64:
            raise ValueError(f"--shards must be 1..64, not {self.shards}")
        if self.net not in (NETNS, LOOPBACK, COMPOSE):
            raise ValueError(f"--net must be {NETNS} or {LOOPBACK}, not {self.net}")
        if self.day_seconds < 0:
            raise ValueError(f"--day-seconds must be 0 (real days) or more, not {self.day_seconds}")
        if not 0 <= self.octet <= 250:
            raise ValueError(f"octet must be 0..250, not {self.octet}")
        if not self.name.isalnum() or len(self.name) > 6:
            raise ValueError(f"cluster name must be 1-6 letters or digits, not {self.name!r}")

    @property
    def dc_names(self) -> list[str]:
        return [f"dc{i}" for i in range(1, self.dcs + 1)]

    def dc_index(self, dc: str) -> int:
        return self.dc_names.index(dc) + 1

    def address(self, dc: str) -> str:
        index = self.dc_index(dc)
        if self.net == NETNS:
            return f"{NETNS_PREFIX}.{self.octet}.{index}"
        if self.net == COMPOSE:
            return f"{COMPOSE_PREFIX}.{self.octet}.{COMPOSE_FIRST_HOST + index}"
        return f"127.{self.octet}.{index}.1"

    @property
    def dc_subnet(self) -> str:
        """The network every DC's address is in (PostgreSQL lets its members and nodes in from it)."""
        if self.net == NETNS:
            return f"{NETNS_PREFIX}.{self.octet}.0/24"
        if self.net == COMPOSE:
            return f"{COMPOSE_PREFIX}.{self.octet}.0/24"
        return "127.0.0.0/8"

    @property
    def bridge(self) -> str:
        return f"{self.name}-br"

    @property
    def bridge_address(self) -> str:
        return f"{NETNS_PREFIX}.{self.octet}.254"

    def namespace(self, dc: str) -> str:
        return f"{self.name}-{dc}"

    def host_veth(self, dc: str) -> str:
        return f"{self.name}-{dc}-h"

    def primary_dc(self, shard: int) -> str:
        """Shard primaries go round-robin over the DCs, so that every DC leads some shards."""
        return self.dc_names[shard % self.dcs]

    def node_endpoint(self, dc: str) -> str:
        return f"{self.address(dc)}:{NODE_PORT}"

    def gateway_endpoint(self, dc: str) -> str:
        return f"{self.address(dc)}:{GATEWAY_PORT}"

    def pg_port(self, shard: int) -> int:
        return PG_BASE_PORT + shard

    @staticmethod
    def pg_member(shard: int, dc: str) -> str:
        """The name of shard `shard`'s instance in `dc`: its application_name and slot name."""
        return f"s{shard}_{dc}"

    def pg_members(self, shard: int) -> list[str]:
        return [self.pg_member(shard, dc) for dc in self.dc_names]

    def slot_ranges(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, shard): contiguous, near-equal ranges covering every slot."""
        ranges = []
        for shard in range(self.shards):
            first = shard * NUM_SLOTS // self.shards
            last = (shard + 1) * NUM_SLOTS // self.shards - 1
            ranges.append((first, last, shard))
        return ranges

    def shard_of_slot(self, slot: int) -> int:
        return _shard_of(slot, self.slot_ranges())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterSpec:
        return cls(**data)


def _shard_of(slot: int, ranges: list[tuple[int, int, int]]) -> int:
    for first, last, shard in ranges:
        if first <= slot <= last:
            return shard
    raise ValueError(f"slot {slot} is in no range")
