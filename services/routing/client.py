"""The routing table as a gateway or a relay keeps it: in memory, refreshed on every change
announced through the local DC's Redis or pushed by ZooKeeper's watches (the truth: a failover
reaches this process even while Redis, which also announces it, is failing over itself), and
read from ZooKeeper when Redis is unreachable or a route turns out stale."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from kazoo.exceptions import KazooException
from kazoo.handlers.threading import KazooTimeoutError

from services.common.errors import Unavailable
from services.common.routes import RoutingTable, ShardRoute
from services.dcs import paths
from services.dcs.store import Dcs
from services.routing import redis_mirror
from services.rpc.metrics import ROUTING_VERSION

log = logging.getLogger(__name__)
LISTEN_TICK_S = 0.5  # how soon the listener notices it should stop
ZK_READ_TIMEOUT_S = 0.5
TRUTH_EVERY_S = 0.05


class RoutingClient:
    def __init__(
        self, redis_host: str, redis_port: int, zk_hosts: str, refresh_interval_s: float = 5.0,
        redis_password: str | None = None, zk_auth: str = "",
    ) -> None:  # fmt: skip
        self.redis = redis.Redis(
            host=redis_host, port=redis_port, password=redis_password or None, socket_timeout=1.0,
            socket_connect_timeout=1.0,
        )  # fmt: skip
        self.zk_hosts = zk_hosts
        self.zk_auth = zk_auth
        self.local = redis_host
        self.refresh_interval_s = refresh_interval_s
        self._table = RoutingTable(version=0, slot_ranges=[])
        self._links: dict[str, int] = {}
        self._lock = threading.Lock()
        self._zk: Dcs | None = None
        self._stopping = threading.Event()
        self._listener = threading.Thread(target=self._listen, name="routing-listener", daemon=True)
        self._watcher = threading.Thread(target=self._watch_truth, name="routing-watch", daemon=True)
        self._truth_changed = threading.Event()
        self._session_lock = threading.Lock()
        self._truth_read_at = 0.0
        self._watched: set[str] = set()
        self._on_change: list[Callable[[RoutingTable], None]] = []

    def on_change(self, callback: Callable[[RoutingTable], None]) -> None:
        """Calls `callback` with every newer table adopted from now on (and the current one)."""
        self._on_change.append(callback)
        if self._table.slot_ranges:
            callback(self._table)

    @property
    def table(self) -> RoutingTable:
        return self._table

    def start(self) -> None:
        self.refresh()
        self._listener.start()
        self._watcher.start()

    def stop(self) -> None:
        self._stopping.set()
        self._truth_changed.set()
        self._listener.join(timeout=3)
        self._watcher.join(timeout=3)
        self.redis.close()
        if self._zk is not None:
            self._zk.close()

    def route(self, shard: int) -> ShardRoute:
        route = self._table.route(shard)
        if route is None:
            self.refresh(from_truth=True)
            route = self._table.route(shard)
        if route is None:
            raise Unavailable(f"no route for shard {shard} yet; retry")
        return route

    def link_delay_s(self, source_dc: str, target_dc: str) -> float:
        """The delay chaos put on the hop between two DCs (0 within a DC or without chaos)."""
        if source_dc == target_dc or not self._links:
            return 0.0
        return self._links.get(f"{source_dc}|{target_dc}", 0) / 1000.0

    def links(self) -> dict[str, int]:
        """The link delays chaos set, "dcA|dcB" -> ms, as last read from Redis."""
        return dict(self._links)

    def shard_of_slot(self, slot: int) -> int:
        if not self._table.slot_ranges:
            self.refresh(from_truth=True)
        if not self._table.slot_ranges:
            raise Unavailable("the routing table is not loaded yet; retry")
        return self._table.shard_of_slot(slot)

    def refresh(self, from_truth: bool = False) -> RoutingTable:
        """Reads Redis (or ZooKeeper when asked, or when Redis fails) and keeps the newer table.
        Many requests held through a failover each ask for the truth at every retry: ZooKeeper is
        read at most every TRUTH_EVERY_S for all of them (its watches push changes anyway)."""
        if from_truth and self._table.slot_ranges and time.monotonic() - self._truth_read_at < TRUTH_EVERY_S:
            return self._table
        table: RoutingTable | None = None
        if not from_truth:
            try:
                table = redis_mirror.read(self.redis)
                self._links = redis_mirror.read_links(self.redis)
            except redis.RedisError as err:
                log.warning("event=routing_redis_unreachable error=%r", str(err))
        if table is None:
            table = self._read_zookeeper()
        if table is not None:
            self._adopt(table)
        return self._table

    def _adopt(self, table: RoutingTable) -> None:
        with self._lock:
            if table.version <= self._table.version:
                return
            log.info("event=routing_updated version=%s previous=%s", table.version, self._table.version)
            self._table = table
            ROUTING_VERSION.set(table.version)
        for callback in self._on_change:
            callback(table)

    def _session(self) -> Dcs:
        with self._session_lock:
            if self._zk is None:
                # Short sessions: a client whose server is cut off moves to another one quickly.
                self._zk = Dcs.connect(
                    self.zk_hosts, timeout_s=5, session_s=2.0, local=self.local, auth=self.zk_auth
                )
            return self._zk

    def _watch_truth(self) -> None:
        """Sets ZooKeeper's watches on the slot map and every route, then reads the table again
        each time one fires (on this thread: a watch's own thread must not block)."""
        while not self._stopping.is_set():
            try:
                self._watch(self._session())
                break
            except (KazooException, TimeoutError, KazooTimeoutError) as err:
                log.warning("event=routing_watch_failed error=%r", str(err))
                self._stopping.wait(1.0)
        while not self._stopping.is_set():
            if self._truth_changed.wait(LISTEN_TICK_S) and not self._stopping.is_set():
                self._truth_changed.clear()
                table = self._read_zookeeper()  # never skipped: the change is newer than any read
                if table is not None:
                    self._adopt(table)

    def _watch(self, dcs: Dcs) -> None:
        dcs.watch_data(paths.SLOTS, lambda data: self._truth_changed.set())
        dcs.watch_children(paths.SHARDS, lambda children: self._watch_routes(dcs, children))

    def _watch_routes(self, dcs: Dcs, children: list[str]) -> None:
        for child in children:
            if child not in self._watched:
                self._watched.add(child)
                dcs.watch_data(f"{paths.SHARDS}/{child}", lambda data: self._truth_changed.set())
        self._truth_changed.set()

    def _read_zookeeper(self) -> RoutingTable | None:
        self._truth_read_at = time.monotonic()
        try:
            return self._session().read_table(timeout_s=ZK_READ_TIMEOUT_S)
        except (KazooException, TimeoutError, KazooTimeoutError) as err:
            log.warning("event=routing_zookeeper_unreachable error=%r", str(err))
            return None

    def _listen(self) -> None:
        """Follows the change channel; also refreshes every `refresh_interval_s` as a backstop."""
        while not self._stopping.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(redis_mirror.CHANNEL)
                self.refresh()  # a change may have come while we were not subscribed
                last_refresh = time.monotonic()
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=LISTEN_TICK_S)
                    stale = time.monotonic() - last_refresh >= self.refresh_interval_s
                    if stale or (message is not None and message.get("type") == "message"):
                        self.refresh()
                        last_refresh = time.monotonic()
                pubsub.close()
            except (redis.RedisError, OSError, ValueError) as err:
                if self._stopping.is_set():
                    return
                log.warning("event=routing_subscription_lost error=%r", str(err))
                self.refresh(from_truth=True)
                self._stopping.wait(1.0)
