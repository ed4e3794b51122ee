"""What the coordinator needs of a shard's PostgreSQL members, as an interface it owns: the
real cluster's (`pg_control.PostgresMembers`) and the unit tests' fakes both fit it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class MemberState:
    dc: str
    in_recovery: bool
    receive_lsn: int  # for a standby: how far it has received; for a primary: its current LSN
    upstream_host: str  # the host a standby streams from ('' if none)
    streaming: bool = False  # a standby whose WAL receiver streams (not starting, not waiting)
    conninfo_host: str = ""  # the host its primary_conninfo names ('' if none)


class Members(Protocol):
    def probe(self, shard: int, dc: str) -> MemberState | None:
        """The member's role and WAL position, or None when it does not answer."""

    def detach(self, shard: int, dc: str) -> None:
        """Stops a standby streaming from anyone (its old primary can acknowledge nothing more)."""

    def follow(self, shard: int, dc: str, primary_dc: str) -> None:
        """Points a running standby at `primary_dc`'s member."""

    def promote(self, shard: int, dc: str) -> None:
        """Makes a standby primary, with a replication slot for every other member."""

    def ensure_slots(self, shard: int, dc: str) -> None:
        """Every other member's replication slot on this (primary) member."""

    def replayed(self, shard: int, dc: str) -> int:
        """How far a standby has replayed (-1 when it does not answer)."""

    def start(self, shard: int, dc: str) -> None:
        """Starts this node's own member."""

    def stop(self, shard: int, dc: str) -> None:
        """Stops this node's own member cleanly."""

    def rejoin(self, shard: int, dc: str, leader_dc: str) -> str:
        """Rewinds (or re-clones) this node's own member as a standby of the leader's; says how."""
