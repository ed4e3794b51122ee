"""The bank-node of a DC: the ledger's services over gRPC for the shards it leads, their schema
migrations, and the hold sweeper."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import REGISTRY

from bank.v1 import account_pb2, account_pb2_grpc, ledger_pb2, ledger_pb2_grpc, shard_pb2, shard_pb2_grpc
from services.account.handler import AccountHandler
from services.account.servicer import AccountServicer
from services.common.errors import BankError, Unavailable
from services.common.identifiers import NUM_SLOTS
from services.coordinator.session import NodeCoordinator
from services.coordinator.view import ClusterView
from services.day.keeper import DayKeeper
from services.ledger.cross_shard import CreditCheck
from services.ledger.handler import LedgerHandler
from services.ledger.servicer import LedgerServicer
from services.moves.journal import read_all as read_moves
from services.moves.keeper import MoveKeeper
from services.node.metrics import NodeCollector
from services.node.peers import ShardPeers
from services.node.relay import OutboxRelay
from services.node.shard_servicer import ShardServicer
from services.node.shards import ShardDirectory, ShardHandlers, SlotRange
from services.node.target_check import TargetChecker
from services.routing.client import RoutingClient
from services.rpc.auth import ADMIN, CLIENT, PEER, AuthInterceptor, RateLimiter, TokenStore
from services.rpc.metrics import serve_metrics, zero_node_series
from services.rpc.server import Registration, RunningServer, start_server
from services.rpc.tls import read
from services.storage import slots as slot_fence
from services.storage.group_commit import enable_group_commit
from services.storage.ledger_store import LedgerStore
from services.storage.migrate import apply_migrations

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeConfig:
    # shard -> libpq conninfo of its primary, for every shard this node leads
    shards: dict[int, str]
    slot_ranges: list[SlotRange] = field(default_factory=lambda: [(0, NUM_SLOTS - 1, 0)])
    listen: str = "127.0.0.1:0"
    pool_max: int = 16
    sweep_interval_s: float = 1.0
    # Where routes are read (the DC's Redis, ZooKeeper): needed to relay cross-shard credits.
    redis_address: str = ""
    zk_hosts: str = ""
    # In a cluster: what the node knows of it; its coordinator then decides what it leads.
    cluster: dict[str, Any] | None = None
    # In a cluster: the token this node presents to its peers, and the digests it accepts
    # (only the `peer` role: gateways and other bank-nodes). A lone node (the tour) has neither.
    peer_token: str = ""
    tokens_file: str = ""
    tls: dict[str, str] | None = None  # {"cert", "key", "ca"}: serve TLS, verify peers with the CA
    metrics_listen: str = ""  # host:port of the Prometheus endpoint; none for a lone node
    # Group commit: concurrent writes of a shard share one transaction (see storage/group_commit).
    group_commit: bool = True
    group_max_batch: int = 64
    group_wait_ms: float = 2.0

    @classmethod
    def single(
        cls, shard_id: int, conninfo: str, listen: str = "127.0.0.1:0", sweep_interval_s: float = 1.0
    ) -> NodeConfig:
        """A node owning every slot through one shard (the one-shard tour and tests)."""
        return cls(
            shards={shard_id: conninfo},
            slot_ranges=[(0, NUM_SLOTS - 1, shard_id)],
            listen=listen,
            sweep_interval_s=sweep_interval_s,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "shards": {str(k): v for k, v in self.shards.items()},
            "slot_ranges": [list(r) for r in self.slot_ranges],
            "listen": self.listen,
            "pool_max": self.pool_max,
            "sweep_interval_s": self.sweep_interval_s,
            "redis_address": self.redis_address,
            "zk_hosts": self.zk_hosts,
            "cluster": self.cluster,
            "peer_token": self.peer_token,
            "tokens_file": self.tokens_file,
            "tls": self.tls,
            "metrics_listen": self.metrics_listen,
            "group_commit": self.group_commit,
            "group_max_batch": self.group_max_batch,
            "group_wait_ms": self.group_wait_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NodeConfig:
        return cls(
            shards={int(k): str(v) for k, v in data["shards"].items()},
            slot_ranges=[(int(a), int(b), int(c)) for a, b, c in data["slot_ranges"]],
            listen=str(data["listen"]),
            pool_max=int(data.get("pool_max", 16)),
            sweep_interval_s=float(data.get("sweep_interval_s", 1.0)),
            redis_address=str(data.get("redis_address", "")),
            zk_hosts=str(data.get("zk_hosts", "")),
            cluster=data.get("cluster"),
            peer_token=str(data.get("peer_token", "")),
            tokens_file=str(data.get("tokens_file", "")),
            tls=data.get("tls"),
            metrics_listen=str(data.get("metrics_listen", "")),
            group_commit=bool(data.get("group_commit", True)),
            group_max_batch=int(data.get("group_max_batch", 64)),
            group_wait_ms=float(data.get("group_wait_ms", 2.0)),
        )


class BankNode:
    """Serves AccountService and LedgerService for the shards it leads."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.routing: RoutingClient | None = None
        self.relay: OutboxRelay | None = None
        self.target_checker: TargetChecker | None = None
        local = {
            shard: self._handlers(shard, self._store(conninfo)) for shard, conninfo in config.shards.items()
        }
        self.shards = ShardDirectory(config.slot_ranges, local)
        if config.cluster is not None and not (config.peer_token and config.tokens_file):
            raise ValueError("a node of a cluster needs peer_token and tokens_file: it serves peers only")
        if config.redis_address and config.zk_hosts:
            host, port = config.redis_address.rsplit(":", 1)
            cluster = config.cluster or {}
            self.routing = RoutingClient(
                host, int(port), config.zk_hosts, redis_password=cluster.get("redis_password") or None,
                zk_auth=cluster.get("zk_auth", ""),
            )  # fmt: skip
            self.peers = ShardPeers(
                self.routing, dc=cluster.get("dc", ""), token=config.peer_token,
                root_certificates=read((config.tls or {}).get("ca")),
            )  # fmt: skip
            self.relay = OutboxRelay(self.shards, self.peers)
            self.target_checker = TargetChecker(self.shards, self.peers)
        self.view = ClusterView.from_json(config.cluster) if config.cluster else None
        self.coordinator = (
            NodeCoordinator(self.view, serve=self._serve, unserve=self._unserve, fence=self._fence)
            if self.view is not None
            else None
        )
        self.keeper: MoveKeeper | None = None  # made once the coordinator's session is up
        self.day_keeper: DayKeeper | None = None  # likewise
        self._server: RunningServer | None = None
        self._ledger = LedgerServicer(self.shards, on_outbox=self._wake_relay)
        self._stopping = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_holds, name="hold-sweeper", daemon=True)

    def _handlers(self, shard: int, store: LedgerStore) -> ShardHandlers:
        return ShardHandlers(shard, store, AccountHandler(store), LedgerHandler(store, self._check_targets))

    def _check_targets(self, target_shard: int, credits: list[CreditCheck]) -> list[BankError | None]:
        """Asks the target's shard before a cross-shard debit (a lone node has no other shard)."""
        if self.target_checker is None:
            raise Unavailable(f"to_account: shard {target_shard} is not reachable from a lone node")
        return self.target_checker(target_shard, credits)

    def _store(self, conninfo: str) -> LedgerStore:
        store = LedgerStore(conninfo, max_size=self.config.pool_max)
        if self.config.group_commit:
            enable_group_commit(store, self.config.group_max_batch, self.config.group_wait_ms / 1000)
        return store

    def _interceptors(self) -> list[grpc.ServerInterceptor]:
        if not self.config.tokens_file:
            return []
        # Clients that route themselves call the public services here as at a gateway (with
        # their rate limits); the shard-to-shard ShardService stays for peers.
        public = {CLIENT, ADMIN, PEER}
        roles = {
            "bank.v1.AccountService": public,
            "bank.v1.LedgerService": public,
            "bank.v1.ShardService": {PEER},
        }
        store = TokenStore(path=Path(self.config.tokens_file))
        return [AuthInterceptor(store, roles, RateLimiter())]

    @property
    def port(self) -> int:
        assert self._server is not None, "the node is not started"
        return self._server.port

    def start(self) -> int:
        for shard, handlers in self.shards.local.items():
            applied = apply_migrations(self.config.shards[shard], shard)
            self._record_slots(self.config.shards[shard], shard)
            handlers.store.open()
            log.info("event=shard_open shard=%s migrations_applied=%s", shard, ",".join(applied) or "none")
        self._server = start_server(
            self.config.listen,
            [
                Registration(
                    account_pb2.DESCRIPTOR.services_by_name["AccountService"].full_name,
                    account_pb2_grpc.add_AccountServiceServicer_to_server,
                    AccountServicer(self.shards),
                ),
                Registration(
                    ledger_pb2.DESCRIPTOR.services_by_name["LedgerService"].full_name,
                    ledger_pb2_grpc.add_LedgerServiceServicer_to_server,
                    self._ledger,
                ),
                Registration(
                    shard_pb2.DESCRIPTOR.services_by_name["ShardService"].full_name,
                    shard_pb2_grpc.add_ShardServiceServicer_to_server,
                    ShardServicer(self.shards),
                ),
            ],
            interceptors=self._interceptors(),
            tls=self.config.tls,
            # A handler thread per call in flight: single transfers wait in theirs for their set
            # (with 32, directly routed clients got at most 32 transfers into a set: 559/s).
            max_workers=256,
        )
        if self.config.metrics_listen:
            host, port = self.config.metrics_listen.rsplit(":", 1)
            known = sorted({s for _, _, s in self.config.slot_ranges})
            coordinator = self.coordinator
            moves = (lambda: read_moves(coordinator.dcs.client)) if coordinator is not None else None
            REGISTRY.register(NodeCollector(self.shards, known, moves))
            zero_node_series(known)
            serve_metrics(host, int(port))
        if self.routing is not None and self.relay is not None:
            self.routing.start()
            self.routing.on_change(lambda table: self.shards.follow(table.slot_ranges))
            routing = self.routing
            self.shards.relearn = lambda: routing.refresh(from_truth=True)
            self.relay.start()
        self._sweeper.start()
        if self.coordinator is not None and self.view is not None:
            self.coordinator.start()
            zk = self.coordinator.dcs.client
            self.keeper = MoveKeeper(zk, self._primary_conninfo, f"node {self.view.dc}")
            self.keeper.start()
            self.day_keeper = DayKeeper(self.coordinator.dcs, self._led_conninfos, self.view.dc)
            self.day_keeper.start()
        log.info("event=node_ready shards=%s port=%s", sorted(self.shards.local), self._server.port)
        return self._server.port

    def _record_slots(self, conninfo: str, shard: int) -> None:
        """A shard that never recorded its slots takes those the slot map gives it now."""
        if slot_fence.bootstrap(conninfo, self.shards.slots_of(shard)):
            log.info("event=slots_recorded shard=%s slots=%s", shard, len(self.shards.slots_of(shard)))

    def _serve(self, shard: int, epoch: int) -> None:
        """Called by the coordinator once this DC's member of `shard` is its primary."""
        assert self.view is not None
        if shard in self.shards.local:
            self.shards.epochs[shard] = epoch
            return
        conninfo = self.view.conninfo(shard, self.view.dc, f"node-{self.view.dc}")
        apply_migrations(conninfo, shard)
        self._record_slots(conninfo, shard)
        store = self._store(conninfo)
        store.open(wait_s=10)
        self.shards.serve(self._handlers(shard, store), epoch)
        log.info("event=serving shard=%s epoch=%s", shard, epoch)
        self._wake_relay(shard)

    def _unserve(self, shard: int) -> None:
        handlers = self.shards.unserve(shard)
        if handlers is not None:
            log.warning("event=stopped_serving shard=%s", shard)
            # A commit stuck waiting for a standby must not hold the coordinator up.
            threading.Thread(target=handlers.store.close, kwargs={"timeout_s": 2}, daemon=True).start()

    def _fence(self, fenced: bool) -> None:
        if fenced != self.shards.fenced:
            log.warning("event=%s", "fenced" if fenced else "unfenced")
        self.shards.fenced = fenced

    def _wake_relay(self, shard: int) -> None:
        if self.relay is not None:
            self.relay.wake(shard)

    def _led_conninfos(self) -> dict[int, str]:
        """The shards this node leads now, and where their primaries are (for their day cuts)."""
        return {shard: handlers.store.conninfo for shard, handlers in list(self.shards.local.items())}

    def _primary_conninfo(self, shard: int) -> str:
        """Where a move resumed by this node reaches `shard`: the member its route names."""
        assert self.view is not None and self.coordinator is not None
        route, _ = self.coordinator.dcs.read_route(shard)
        return self.view.conninfo(shard, route.leader_dc, f"move-keeper-{self.view.dc}")

    def stop(self) -> None:
        self._stopping.set()
        if self.keeper is not None:
            self.keeper.stop()
        if self.day_keeper is not None:
            self.day_keeper.stop()
        if self.coordinator is not None:
            self.coordinator.stop()
        if self._server is not None:
            self._server.stop()
            self._ledger.close()
        if self.relay is not None:
            self.relay.stop()
            self.peers.close()
        if self.routing is not None:
            self.routing.stop()
        if self._sweeper.is_alive():
            self._sweeper.join(timeout=5)
        for handlers in self.shards.local.values():
            handlers.store.close()
        log.info("event=node_stopped")

    def wait(self) -> None:
        assert self._server is not None
        self._server.server.wait_for_termination()

    def _sweep_holds(self) -> None:
        """Releases expired holds in the background; reads already treat them as released."""
        while not self._stopping.wait(self.config.sweep_interval_s):
            for shard, handlers in self.shards.local.items():
                try:
                    released = handlers.ledger.release_expired_holds()
                except BankError as err:
                    log.warning("event=hold_sweep_failed shard=%s error=%r", shard, err.message)
                    continue
                if released:
                    log.info("event=holds_expired shard=%s accounts=%s", shard, released)
