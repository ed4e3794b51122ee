"""The bank's one ZooKeeper wrapper: the session, and what the bank reads, writes, locks and
watches there (the routing truth, leadership, membership, failover and switchover records).

The coordinator, the routing client and the launcher all go through it, as Patroni's nodes go
through one DCS class; the moves' journal keeps its own znodes (paths here) on `client`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import asdict
from types import TracebackType
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.recipe.lock import Lock
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from kazoo.security import make_digest_acl

from services.common.routes import RoutingTable, ShardRoute
from services.dcs import paths

SessionListener = Callable[[str], Any]  # KazooState.CONNECTED / SUSPENDED / LOST
DataListener = Callable[[bytes | None], None]
ChildrenListener = Callable[[list[str]], None]
CONNECTED, SUSPENDED, LOST = KazooState.CONNECTED, KazooState.SUSPENDED, KazooState.LOST
KEPT_FAILOVERS = 20
READ_TRIES = 5  # a routing table read again while its nodes keep changing under the read
# How long a TCP connect to one server of the ensemble may take. Kazoo gives it the whole session
# timeout: a server cut off by the network (its packets dropped) then held a reconnecting node
# for 2 s while the other two had elected a new leader in half a second (seen: a DC isolated
# with ZooKeeper's leader and every shard's leader in it took 5.2 s to fail over, 2 s of it in
# one connect). Same-city servers complete a connect in milliseconds, busy or not (the kernel
# answers it); after this long the next server is tried. 0.5 s still cost the survivors of such a
# DC half a second each time they came to the cut-off server in their list.
CONNECT_TIMEOUT_S = 0.25


# Between two rounds of connects to every server: a session whose server dropped it while the
# ensemble elects a leader (a server without one closes its clients' connections) tries again
# every 50-250 ms, not after 0.1, 0.2, 0.4, 0.8 s (the election takes about half a second here,
# and the doubling made the survivors of a cut DC that held ZooKeeper's leader reconnect up to
# 0.8 s after it was over).
RECONNECT = {"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 0.25}


class QuickConnectHandler(SequentialThreadingHandler):
    """Kazoo's threading handler, with TCP connects cut short at CONNECT_TIMEOUT_S."""

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        timeout = kwargs.get("timeout")
        kwargs["timeout"] = CONNECT_TIMEOUT_S if timeout is None else min(float(timeout), CONNECT_TIMEOUT_S)
        return super().create_connection(*args, **kwargs)


def local_first(hosts: str, address: str) -> str:
    """The ensemble's connection string with the server at `address` first."""
    servers = hosts.split(",")
    return ",".join(sorted(servers, key=lambda server: not server.startswith(f"{address}:")))


def digest_auth(auth: str) -> dict[str, Any]:
    """KazooClient arguments for a `user:password` digest: it authenticates, and every znode it
    creates can be read and written by that user only."""
    if not auth:
        return {}
    user, password = auth.split(":", 1)
    return {"auth_data": [("digest", auth)], "default_acl": [make_digest_acl(user, password, all=True)]}


def parse_slot_ranges(raw: bytes) -> list[tuple[int, int, int]]:
    """The slot map's znode as (first, last, shard) ranges."""
    return [(int(r["first"]), int(r["last"]), int(r["shard"])) for r in json.loads(raw)["ranges"]]


class Dcs:
    def __init__(self, client: KazooClient) -> None:
        self.client = client

    @classmethod
    def session(
        cls, hosts: str, session_s: float, local: str = "", auth: str = "", lock_tries: int | None = None
    ) -> Dcs:
        """A session not started yet (add listeners first); with `local` (an address), that
        server is tried first and kept: losing another DC then costs this session nothing.
        `lock_tries` bounds the retries of the lock recipe's own commands (kazoo's command_retry)."""
        retry = (
            {}
            if lock_tries is None
            else {"command_retry": {"max_tries": lock_tries, "delay": 0.1, "max_delay": 0.5}}
        )
        return cls(
            KazooClient(
                hosts=local_first(hosts, local) if local else hosts,
                randomize_hosts=not local,
                timeout=session_s,
                handler=QuickConnectHandler(),
                connection_retry=RECONNECT,
                **retry,
                **digest_auth(auth),
            )
        )

    @classmethod
    def connect(
        cls, hosts: str, timeout_s: float = 10.0, session_s: float = 4.0, local: str = "", auth: str = ""
    ) -> Dcs:
        """A started session."""
        dcs = cls.session(hosts, session_s, local=local, auth=auth)
        dcs.start(timeout_s)
        return dcs

    def start(self, timeout_s: float) -> None:
        self.client.start(timeout=timeout_s)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a session that is already gone
            self.client.stop()
            self.client.close()

    def __enter__(self) -> Dcs:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return bool(self.client.connected)

    def on_session(self, listener: SessionListener) -> None:
        """`listener` runs on kazoo's thread at every change of the session's state."""
        self.client.add_listener(listener)

    def _owned(self, stat: Any) -> bool:
        return bool(stat.ephemeralOwner == self.client.client_id[0])

    # The routing truth: the slot map and each shard's route.

    def write_initial(self, slot_ranges: list[tuple[int, int, int]], routes: list[ShardRoute]) -> None:
        """Creates the slot map and the shards' routes; leaves existing ones alone (up is idempotent)."""
        self.client.ensure_path(paths.SHARDS)
        if not self.client.exists(paths.SLOTS):
            ranges = [{"first": a, "last": b, "shard": s} for a, b, s in slot_ranges]
            self.client.create(paths.SLOTS, json.dumps({"ranges": ranges}).encode())
        for route in routes:
            if not self.client.exists(paths.route(route.shard)):
                self.client.create(paths.route(route.shard), json.dumps(asdict(route)).encode())

    def read_table(self, timeout_s: float | None = None) -> RoutingTable:
        """The whole table; its version is the newest ZooKeeper transaction id among its nodes.

        The nodes are read one after the other, so the table is read again while any of them
        changed meanwhile (every node's mzxid read a second time): a table read across two
        failovers once held the second shard's new route and the first's old one, with the
        version of the newer, and no later read of the same nodes could replace it (a newer
        version is needed), which left a gateway routing that shard to its old leader for good.

        With `timeout_s`, every read gives up after that long (a client whose server is cut off
        would otherwise wait for its reconnection): the caller keeps what it had.
        """
        table, seen = self._read_nodes(timeout_s)
        for _ in range(READ_TRIES):
            again = self._mzxids(list(seen), timeout_s)
            if again == seen:
                break
            table, seen = self._read_nodes(timeout_s)
        return table

    def _read_nodes(self, timeout_s: float | None) -> tuple[RoutingTable, dict[str, int]]:
        """The table from one pass over its nodes, and each node's mzxid as read."""
        try:
            raw, stat = self._get(paths.SLOTS, timeout_s)
        except NoNodeError:
            return RoutingTable(version=0, slot_ranges=[]), {}
        seen = {paths.SLOTS: stat.mzxid}
        ranges = parse_slot_ranges(raw)
        routes: dict[int, ShardRoute] = {}
        children = (
            self.client.get_children(paths.SHARDS)
            if timeout_s is None
            else self.client.get_children_async(paths.SHARDS).get(timeout=timeout_s)
        )
        for child in children:
            data, stat = self._get(paths.route(int(child)), timeout_s)
            routes[int(child)] = parse_route(data)
            seen[paths.route(int(child))] = stat.mzxid
        return RoutingTable(version=max(seen.values()), slot_ranges=ranges, routes=routes), seen

    def _mzxids(self, nodes: list[str], timeout_s: float | None) -> dict[str, int]:
        found = {}
        for node in nodes:
            with contextlib.suppress(NoNodeError):
                found[node] = self._get(node, timeout_s)[1].mzxid
        return found

    def _get(self, path: str, timeout_s: float | None) -> tuple[bytes, Any]:
        if timeout_s is None:
            return self.client.get(path)
        return self.client.get_async(path).get(timeout=timeout_s)

    def read_route(self, shard: int) -> tuple[ShardRoute, int]:
        """The shard's route and its znode's version (for `set_route`)."""
        data, stat = self.client.get(paths.route(shard))
        return parse_route(data), stat.version

    def set_route(self, route: ShardRoute, version: int) -> None:
        """Compare-and-set: raises BadVersionError when the route changed since it was read."""
        self.client.set(paths.route(route.shard), json.dumps(asdict(route)).encode(), version=version)

    def delete_route(self, shard: int) -> None:
        with contextlib.suppress(NoNodeError):
            self.client.delete(paths.route(shard))

    def read_slots(self) -> tuple[list[tuple[int, int, int]], int]:
        """The slot map's ranges (first, last, shard) and its znode's version (for `set_slots`)."""
        raw, stat = self.client.get(paths.SLOTS)
        return parse_slot_ranges(raw), stat.version

    def set_slots(self, ranges: list[tuple[int, int, int]], version: int) -> None:
        """Compare-and-set of the slot map: raises BadVersionError when it changed since it was read."""
        data = {"ranges": [{"first": a, "last": b, "shard": s} for a, b, s in ranges]}
        self.client.set(paths.SLOTS, json.dumps(data).encode(), version=version)

    # Shards added and retired while the bank runs.

    def add_shard(self, route: ShardRoute, members: dict[str, Any]) -> None:
        """Registers a shard added while the bank runs: its members (read by every node), then its
        route (read by gateways and relays). Each is written once; running it again changes nothing."""
        self.client.ensure_path(paths.ADDED_SHARDS)
        if not self.client.exists(paths.added(route.shard)):
            self.client.create(paths.added(route.shard), json.dumps(members).encode())
        if not self.client.exists(paths.route(route.shard)):
            self.client.create(paths.route(route.shard), json.dumps(asdict(route)).encode())

    def added_members(self, shard: int) -> dict[str, dict[str, Any]]:
        raw, _ = self.client.get(paths.added(shard))
        return dict(json.loads(raw))

    def retire(self, shard: int) -> None:
        with contextlib.suppress(NodeExistsError):
            self.client.create(paths.retired(shard), b"{}", makepath=True)

    def is_retired(self, shard: int) -> bool:
        return bool(self.client.exists(paths.retired(shard)))

    # Leadership and membership: ephemeral znodes, gone with their session.

    def leader_exists(self, shard: int) -> bool:
        return bool(self.client.exists(paths.leader(shard)))

    def take_leader(self, shard: int, dc: str, epoch: int) -> bool:
        """Holds the shard's leader znode for this session; False when another session holds it."""
        value = json.dumps({"dc": dc, "epoch": epoch}).encode()
        try:
            self.client.create(paths.leader(shard), value, ephemeral=True)
            return True
        except NodeExistsError:
            _data, stat = self.client.get(paths.leader(shard))
            if not self._owned(stat):
                return False
            self.client.set(paths.leader(shard), value)
            return True

    def release_leader(self, shard: int) -> bool:
        """Deletes the leader znode if this session holds it; True when it did."""
        try:
            _data, stat = self.client.get(paths.leader(shard))
            if self._owned(stat):
                self.client.delete(paths.leader(shard), version=stat.version)
                return True
        except (NoNodeError, BadVersionError):
            pass  # gone already, or changed hands meanwhile
        return False

    def register_member(self, shard: int, dc: str) -> None:
        with contextlib.suppress(NodeExistsError):
            self.client.create(paths.member(shard, dc), b"", ephemeral=True, makepath=True)

    def unregister_member(self, shard: int, dc: str) -> None:
        with contextlib.suppress(NoNodeError):
            self.client.delete(paths.member(shard, dc))

    def drop_dead_leader(self, shard: int, dc: str) -> None:
        """Removes the member znode of `dc`'s node and the leader znode if it names `dc`, whoever's
        session holds them: that node's process is known gone (see coordinator/liveness.py), and
        waiting for its session to expire would only delay the failover."""
        with contextlib.suppress(NoNodeError):
            self.client.delete(paths.member(shard, dc))
        try:
            raw, stat = self.client.get(paths.leader(shard))
            if json.loads(raw).get("dc") == dc:
                self.client.delete(paths.leader(shard), version=stat.version)
        except (NoNodeError, BadVersionError):
            pass

    def suspect(self, shard: int, dc: str, leader_dc: str) -> None:
        """`dc`'s node has had no answer from the leader's node in `leader_dc` for a while."""
        path = f"{paths.suspects(shard)}/{dc}"
        try:
            self.client.create(path, leader_dc.encode(), ephemeral=True, makepath=True)
        except NodeExistsError:
            self.client.set(path, leader_dc.encode())

    def unsuspect(self, shard: int, dc: str) -> None:
        with contextlib.suppress(NoNodeError):
            self.client.delete(f"{paths.suspects(shard)}/{dc}")

    def suspects(self, shard: int, leader_dc: str) -> list[str]:
        """The DCs whose nodes suspect the leader in `leader_dc` now."""
        found = []
        with contextlib.suppress(NoNodeError):
            for dc in self.client.get_children(paths.suspects(shard)):
                with contextlib.suppress(NoNodeError):
                    raw, _ = self.client.get(f"{paths.suspects(shard)}/{dc}")
                    if raw.decode() == leader_dc:
                        found.append(dc)
        return sorted(found)

    def member_alive(self, shard: int, dc: str) -> bool:
        return bool(self.client.exists(paths.member(shard, dc)))

    def live_members(self, shard: int) -> list[str]:
        with contextlib.suppress(NoNodeError):
            return sorted(self.client.get_children(paths.members(shard)))
        return []

    def failover_lock(self, shard: int, dc: str) -> Lock:
        return self.client.Lock(paths.failover_lock(shard), dc)

    # What an unfinished failover chose, and planned switchovers.

    def chosen_before(self, shard: int, epoch: int) -> str | None:
        """The DC an earlier, unfinished failover from this route promoted (or was about to)."""
        try:
            raw, _ = self.client.get(paths.chosen(shard))
        except NoNodeError:
            return None
        choice = json.loads(raw)
        return str(choice["dc"]) if int(choice["epoch"]) == epoch else None

    def write_choice(self, shard: int, epoch: int, dc: str) -> None:
        value = json.dumps({"epoch": epoch, "dc": dc}).encode()
        try:
            self.client.create(paths.chosen(shard), value, makepath=True)
        except NodeExistsError:
            self.client.set(paths.chosen(shard), value)

    def clear_choice(self, shard: int) -> None:
        with contextlib.suppress(NoNodeError):
            self.client.delete(paths.chosen(shard))

    def request_switchover(self, shard: int, target_dc: str) -> bool:
        """False when a switchover of the shard is already under way."""
        try:
            self.client.create(paths.switchover(shard), json.dumps({"to": target_dc}).encode(), makepath=True)
        except NodeExistsError:
            return False
        return True

    def switchover_target(self, shard: int) -> str | None:
        try:
            raw, _ = self.client.get(paths.switchover(shard))
        except NoNodeError:
            return None
        return str(json.loads(raw).get("to"))

    def clear_switchover(self, shard: int) -> None:
        with contextlib.suppress(NoNodeError):
            self.client.delete(paths.switchover(shard))

    # Failovers' phases, the newest KEPT_FAILOVERS of each shard.

    def record_failover(self, record: dict[str, Any]) -> None:
        shard, epoch = int(record["shard"]), int(record["epoch"])
        with contextlib.suppress(NodeExistsError):
            path = f"{paths.FAILOVERS}/{shard}-{epoch:010d}"
            self.client.create(path, json.dumps(record).encode(), makepath=True)
        mine = sorted(c for c in self.client.get_children(paths.FAILOVERS) if c.startswith(f"{shard}-"))
        for old in mine[:-KEPT_FAILOVERS]:
            with contextlib.suppress(NoNodeError):
                self.client.delete(f"{paths.FAILOVERS}/{old}")

    def failovers(self) -> list[dict[str, Any]]:
        """Every kept failover's record (shard, by, from, to, epoch, since, ends of each phase)."""
        records = []
        with contextlib.suppress(NoNodeError):
            for child in sorted(self.client.get_children(paths.FAILOVERS)):
                with contextlib.suppress(NoNodeError):
                    raw, _ = self.client.get(f"{paths.FAILOVERS}/{child}")
                    records.append(json.loads(raw))
        return records

    # Watches: each listener runs on kazoo's thread, at once and at every change.

    def ensure_paths(self, *znodes: str) -> None:
        for znode in znodes:
            self.client.ensure_path(znode)

    def watch_data(self, znode: str, listener: DataListener) -> None:
        DataWatch(self.client, znode, lambda data, _stat: listener(data))

    def watch_children(self, znode: str, listener: ChildrenListener) -> None:
        ChildrenWatch(self.client, znode, listener)


def parse_route(data: bytes) -> ShardRoute:
    raw = json.loads(data)
    return ShardRoute(int(raw["shard"]), str(raw["leader_dc"]), int(raw["epoch"]), str(raw["endpoint"]))
