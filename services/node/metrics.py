"""What a bank-node reports at each scrape: which shards it leads and at which epoch, its
connection pools, and, for the shards it leads, the outbox and the standbys' replication lag."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from services.common.errors import BankError
from services.node.shards import ShardDirectory

log = logging.getLogger(__name__)


Move = dict[str, Any]  # a record of the moves' journal
FREEZE_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class NodeCollector(Collector):
    def __init__(
        self,
        shards: ShardDirectory,
        all_shards: list[int],
        moves: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.shards = shards
        self.all_shards = all_shards
        # The slot moves' journal (in ZooKeeper): every node reports the same figures of it.
        self.moves = moves

    def collect(self) -> Iterator[GaugeMetricFamily]:
        local = dict(self.shards.local)  # replaced whole when it changes: a consistent copy
        leader = GaugeMetricFamily("bank_shard_leader", "1 where this node leads the shard", labels=["shard"])
        epoch = GaugeMetricFamily(
            "bank_shard_epoch", "Epoch (fencing token) of the shards led here", labels=["shard"]
        )
        pool = GaugeMetricFamily(
            "bank_db_pool_connections", "Connections of the shard's pool, by state", labels=["shard", "state"]
        )
        pending = GaugeMetricFamily(
            "bank_outbox_pending", "Cross-shard credits not yet delivered", labels=["shard"]
        )
        age = GaugeMetricFamily(
            "bank_outbox_oldest_age_seconds", "Age of the oldest undelivered credit", labels=["shard"]
        )
        lag_bytes = GaugeMetricFamily(
            "bank_replication_lag_bytes", "WAL not yet replayed by a standby", labels=["shard", "standby"]
        )
        lag_seconds = GaugeMetricFamily(
            "bank_replication_lag_seconds", "Replay lag of a standby", labels=["shard", "standby"]
        )
        owned = GaugeMetricFamily("bank_slots_owned", "Slots the shard writes (led here)", labels=["shard"])
        for shard in self.all_shards:
            leader.add_metric([str(shard)], 1.0 if shard in local and not self.shards.fenced else 0.0)
        for shard, handlers in sorted(local.items()):
            label = str(shard)
            epoch.add_metric([label], float(self.shards.epochs.get(shard, 0)))
            stats = handlers.store.pool.get_stats()
            size, idle = stats.get("pool_size", 0), stats.get("pool_available", 0)
            pool.add_metric([label, "in_use"], float(size - idle))
            pool.add_metric([label, "idle"], float(idle))
            pool.add_metric([label, "max"], float(handlers.store.pool.max_size))
            try:
                figures = handlers.store.read(lambda reader: reader.figures())
            except BankError as err:  # the primary is down: the gauges say nothing rather than lie
                log.info("event=metrics_shard_unreadable shard=%s error=%r", shard, err.message)
                continue
            pending.add_metric([label], float(figures.outbox_pending))
            owned.add_metric([label], float(figures.slots_owned))
            age.add_metric([label], figures.outbox_oldest_age_s)
            for standby, (behind_bytes, behind_s) in sorted(figures.lag_by_standby.items()):
                lag_bytes.add_metric([label, standby], behind_bytes)
                lag_seconds.add_metric([label, standby], behind_s)
        yield from (leader, epoch, pool, pending, age, lag_bytes, lag_seconds, owned)
        yield from self._moves()

    def _moves(self) -> Iterator[Any]:
        """bank_slot_moves_total by outcome and bank_slot_freeze_seconds, from the journal."""
        if self.moves is None:
            return
        try:
            records = self.moves()
        except Exception as err:  # ZooKeeper out of reach: say nothing rather than zero
            log.info("event=metrics_moves_unreadable error=%r", str(err))
            return
        total = CounterMetricFamily("bank_slot_moves", "Slot moves, by outcome", labels=["outcome"])
        for outcome in ("done", "rolled_back"):
            total.add_metric([outcome], float(sum(1 for r in records if r["state"] == outcome)))
        freezes = [
            r["freeze_ms"] / 1000 for r in records if r["state"] == "done" and r.get("freeze_ms") is not None
        ]
        buckets = [(str(b), float(sum(1 for f in freezes if f <= b))) for b in FREEZE_BUCKETS_S]
        freeze = HistogramMetricFamily("bank_slot_freeze_seconds", "Write freeze of each slot move's batch")
        freeze.add_metric([], [*buckets, ("+Inf", float(len(freezes)))], sum_value=sum(freezes))
        yield from (total, freeze)
