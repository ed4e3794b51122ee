"""What a bank-node knows of the cluster: every shard's members, the nodes, ZooKeeper, Redis."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg


@dataclass(frozen=True)
class Member:
    """One PostgreSQL instance of a shard's group."""

    name: str  # its application_name and replication slot name, e.g. s0_dc2
    dc: str
    host: str
    port: int
    data_dir: str


@dataclass(frozen=True)
class ClusterView:
    dc: str  # the DC of this node
    dcs: list[str]
    shards: int
    members: dict[int, dict[str, Member]]  # shard -> dc -> member
    node_endpoints: dict[str, str]  # dc -> host:port of its bank-node
    zk_hosts: str
    sentinels: list[str]  # host:port of every Sentinel
    pg_password: str
    redis_password: str = ""
    zk_auth: str = ""  # user:password of the bank's znodes (digest ACL)
    session_timeout_s: float = 3.0
    pg_settings: dict[str, str] = field(default_factory=dict)
    pg_hba_lines: list[str] = field(default_factory=list)
    # True where each member's data lives beside a keeper of its own (containers): this node
    # asks that keeper to start, stop or rejoin its DC's member instead of doing it itself.
    member_keepers: bool = False

    def conninfo(self, shard: int, dc: str, application_name: str = "bank-node") -> str:
        member = self.members[shard][dc]
        return psycopg.conninfo.make_conninfo(
            host=member.host, port=member.port, user="bank", password=self.pg_password, dbname="bank",
            application_name=application_name, connect_timeout=2,
        )  # fmt: skip

    def replication_conninfo(self, shard: int, primary_dc: str, standby: str) -> str:
        """What a standby puts in primary_conninfo to follow `primary_dc`'s member."""
        member = self.members[shard][primary_dc]
        return psycopg.conninfo.make_conninfo(
            host=member.host, port=member.port, user="bank", password=self.pg_password,
            application_name=standby, connect_timeout=2,
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["members"] = {
            str(s): {dc: asdict(m) for dc, m in by_dc.items()} for s, by_dc in self.members.items()
        }
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClusterView:
        members = {
            int(s): {dc: Member(**m) for dc, m in by_dc.items()} for s, by_dc in data["members"].items()
        }
        return cls(**{**data, "members": members})
