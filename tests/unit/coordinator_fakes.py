"""In-memory stand-ins for ZooKeeper (as the coordinator sees it through `Dcs`) and for a
shard's PostgreSQL members (`Members`), for unit tests of the shard agent and the failover.

Both write what they are asked to do into one shared `log`, so a test can check the order of
steps across the two (every standby detached before the promotion, the choice written first).
The real-service tests of the same behaviour are tests/chaos/test_failover.py."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import BadVersionError, NoNodeError

from services.common.routes import ShardRoute
from services.coordinator.members import MemberState
from services.coordinator.view import ClusterView, Member

DCS = ["dc1", "dc2", "dc3"]


def view_of(dc: str, shards: int = 1) -> ClusterView:
    members = {
        s: {d: Member(f"s{s}_{d}", d, host_of(d), 5432 + s, f"/data/s{s}_{d}") for d in DCS}
        for s in range(shards)
    }
    return ClusterView(
        dc=dc, dcs=list(DCS), shards=shards, members=members,
        node_endpoints={d: f"{host_of(d)}:7000" for d in DCS}, zk_hosts="", sentinels=[], pg_password="",
    )  # fmt: skip


def host_of(dc: str) -> str:
    return f"10.0.0.{DCS.index(dc) + 1}"


class Ensemble:
    """What ZooKeeper holds, shared by every node's session."""

    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log
        self.routes: dict[int, tuple[ShardRoute, int]] = {}
        self.leaders: dict[int, tuple[int, bytes]] = {}  # shard -> (session, value)
        self.members: dict[int, dict[str, int]] = {}  # shard -> dc -> session
        self.chosen: dict[int, tuple[int, str]] = {}
        self.switchovers: dict[int, str] = {}
        self.retired: set[int] = set()
        self.locks: dict[int, int] = {}  # shard -> session holding its failover lock
        self.failovers: list[dict[str, Any]] = []
        self.suspects: dict[int, dict[str, tuple[int, str]]] = {}  # shard -> dc -> (session, leader dc)

    def route(self, shard: int, leader_dc: str, epoch: int) -> None:
        version = self.routes[shard][1] + 1 if shard in self.routes else 0
        self.routes[shard] = (ShardRoute(shard, leader_dc, epoch, f"{host_of(leader_dc)}:7000"), version)

    def expire(self, session: int) -> None:
        """The session's ephemeral znodes go, as when ZooKeeper expires it."""
        self.suspects = {
            s: {d: v for d, v in by.items() if v[0] != session} for s, by in self.suspects.items()
        }
        self.leaders = {s: held for s, held in self.leaders.items() if held[0] != session}
        self.members = {s: {d: o for d, o in by.items() if o != session} for s, by in self.members.items()}
        self.locks = {s: o for s, o in self.locks.items() if o != session}


class FakeLock:
    def __init__(self, ensemble: Ensemble, shard: int, session: int) -> None:
        self.ensemble, self.shard, self.session = ensemble, shard, session

    def acquire(self, timeout: float | None = None) -> bool:
        holder = self.ensemble.locks.setdefault(self.shard, self.session)
        return holder == self.session

    def release(self) -> bool:
        if self.ensemble.locks.get(self.shard) == self.session:
            del self.ensemble.locks[self.shard]
        return True


class FakeDcs:
    """One node's session of the `Ensemble`, with the methods of services.dcs.store.Dcs that
    the coordinator uses."""

    def __init__(self, ensemble: Ensemble, session: int) -> None:
        self.ensemble = ensemble
        self.session = session
        self.connected = True
        self.watches: list[tuple[str, Callable[..., None]]] = []
        self.listeners: list[Callable[[str], Any]] = []

    def read_route(self, shard: int) -> tuple[ShardRoute, int]:
        if shard not in self.ensemble.routes:
            raise NoNodeError()
        return self.ensemble.routes[shard]

    def set_route(self, route: ShardRoute, version: int) -> None:
        if self.ensemble.routes[route.shard][1] != version:
            raise BadVersionError()
        self.ensemble.routes[route.shard] = (route, version + 1)
        self.ensemble.log.append(("route", route.shard, route.leader_dc, route.epoch))

    def live_members(self, shard: int) -> list[str]:
        return sorted(self.ensemble.members.get(shard, {}))

    def member_alive(self, shard: int, dc: str) -> bool:
        return dc in self.ensemble.members.get(shard, {})

    def register_member(self, shard: int, dc: str) -> None:
        self.ensemble.members.setdefault(shard, {}).setdefault(dc, self.session)

    def unregister_member(self, shard: int, dc: str) -> None:
        self.ensemble.members.get(shard, {}).pop(dc, None)

    def drop_dead_leader(self, shard: int, dc: str) -> None:
        self.ensemble.members.get(shard, {}).pop(dc, None)
        held = self.ensemble.leaders.get(shard)
        if held is not None and held[1].decode().startswith(f"{dc}:"):
            del self.ensemble.leaders[shard]

    def leader_exists(self, shard: int) -> bool:
        return shard in self.ensemble.leaders

    def take_leader(self, shard: int, dc: str, epoch: int) -> bool:
        held = self.ensemble.leaders.get(shard)
        if held is not None and held[0] != self.session:
            return False
        self.ensemble.leaders[shard] = (self.session, f"{dc}:{epoch}".encode())
        return True

    def release_leader(self, shard: int) -> bool:
        held = self.ensemble.leaders.get(shard)
        if held is None or held[0] != self.session:
            return False
        del self.ensemble.leaders[shard]
        return True

    def is_retired(self, shard: int) -> bool:
        return shard in self.ensemble.retired

    def failover_lock(self, shard: int, dc: str) -> FakeLock:
        return FakeLock(self.ensemble, shard, self.session)

    def chosen_before(self, shard: int, epoch: int) -> str | None:
        choice = self.ensemble.chosen.get(shard)
        return choice[1] if choice is not None and choice[0] == epoch else None

    def write_choice(self, shard: int, epoch: int, dc: str) -> None:
        self.ensemble.chosen[shard] = (epoch, dc)
        self.ensemble.log.append(("choice", shard, dc))

    def clear_choice(self, shard: int) -> None:
        self.ensemble.chosen.pop(shard, None)

    def switchover_target(self, shard: int) -> str | None:
        return self.ensemble.switchovers.get(shard)

    def clear_switchover(self, shard: int) -> None:
        self.ensemble.switchovers.pop(shard, None)

    def suspect(self, shard: int, dc: str, leader_dc: str) -> None:
        self.ensemble.suspects.setdefault(shard, {})[dc] = (self.session, leader_dc)

    def unsuspect(self, shard: int, dc: str) -> None:
        self.ensemble.suspects.get(shard, {}).pop(dc, None)

    def suspects(self, shard: int, leader_dc: str) -> list[str]:
        return sorted(
            dc for dc, (_, leader) in self.ensemble.suspects.get(shard, {}).items() if leader == leader_dc
        )

    def record_failover(self, record: dict[str, Any]) -> None:
        self.ensemble.failovers.append(record)

    def ensure_paths(self, *znodes: str) -> None:
        pass

    def watch_data(self, znode: str, listener: Callable[[bytes | None], None]) -> None:
        self.watches.append((znode, listener))

    def watch_children(self, znode: str, listener: Callable[[list[str]], None]) -> None:
        self.watches.append((znode, listener))

    def on_session(self, listener: Callable[[str], Any]) -> None:
        self.listeners.append(listener)


@dataclasses.dataclass
class FakeMember:
    in_recovery: bool
    lsn: int
    upstream_dc: str = ""
    alive: bool = True


class FakeMembers:
    """Every shard's members in every DC; what each is asked to do goes into the shared log."""

    def __init__(self, log: list[tuple[Any, ...]]) -> None:
        self.log = log
        self.members: dict[tuple[int, str], FakeMember] = {}

    def put(
        self, shard: int, dc: str, in_recovery: bool, lsn: int, upstream_dc: str = "", alive: bool = True
    ) -> None:
        self.members[shard, dc] = FakeMember(in_recovery, lsn, upstream_dc, alive)

    def probe(self, shard: int, dc: str) -> MemberState | None:
        member = self.members.get((shard, dc))
        if member is None or not member.alive:
            return None
        upstream = host_of(member.upstream_dc) if member.upstream_dc else ""
        streaming = member.in_recovery and bool(member.upstream_dc)
        return MemberState(dc, member.in_recovery, member.lsn, upstream, streaming, upstream)

    def detach(self, shard: int, dc: str) -> None:
        self.log.append(("detach", shard, dc))
        self.members[shard, dc].upstream_dc = ""

    def follow(self, shard: int, dc: str, primary_dc: str) -> None:
        self.log.append(("follow", shard, dc, primary_dc))
        self.members[shard, dc].upstream_dc = primary_dc

    def promote(self, shard: int, dc: str) -> None:
        self.log.append(("promote", shard, dc))
        member = self.members[shard, dc]
        member.in_recovery, member.upstream_dc = False, ""

    def ensure_slots(self, shard: int, dc: str) -> None:
        self.log.append(("slots", shard, dc))

    def replayed(self, shard: int, dc: str) -> int:
        member = self.members.get((shard, dc))
        return member.lsn if member is not None and member.alive else -1

    def start(self, shard: int, dc: str) -> None:
        self.log.append(("start", shard, dc))
        self.members[shard, dc].alive = True

    def stop(self, shard: int, dc: str) -> None:
        self.log.append(("stop", shard, dc))
        self.members[shard, dc].alive = False

    def rejoin(self, shard: int, dc: str, leader_dc: str) -> str:
        self.log.append(("rejoin", shard, dc, leader_dc))
        member = self.members[shard, dc]
        member.in_recovery, member.upstream_dc, member.alive = True, leader_dc, True
        return "rewound"
