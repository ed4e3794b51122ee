"""Which shard a request belongs to (by slot), and the handlers of the shards this node serves."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.account.handler import AccountHandler
from services.common.errors import CrossShard, NotLeader, SlotMoved
from services.common.identifiers import (
    NUM_SLOTS,
    parse_account_number,
    parse_hold_id,
    parse_transfer_id,
    slot_of_customer,
)
from services.common.validation import validate_customer_id
from services.ledger.handler import LedgerHandler
from services.rpc.status import ROUTED_EPOCH
from services.storage.ledger_store import LedgerStore

SlotRange = tuple[int, int, int]  # first slot, last slot, shard
RELEARN_EVERY_S = 0.2  # at most this often a miss reads the slot map from its truth again


@dataclass
class ShardHandlers:
    shard: int
    store: LedgerStore
    accounts: AccountHandler
    ledger: LedgerHandler


def slot_map(slot_ranges: list[SlotRange]) -> list[int]:
    """slot -> shard, from ranges covering every slot."""
    shard_by_slot = [-1] * NUM_SLOTS
    for first, last, shard in slot_ranges:
        for slot in range(first, last + 1):
            shard_by_slot[slot] = shard
    assert -1 not in shard_by_slot, "every slot must belong to a shard"
    return shard_by_slot


class ShardDirectory:
    """Maps slots to shards and hands out the handlers of the shards served here."""

    def __init__(self, slot_ranges: list[SlotRange], local: dict[int, ShardHandlers]) -> None:
        self._shard_by_slot = slot_map(slot_ranges)
        self.local = dict(local)
        self.epochs: dict[int, int] = {}
        # Set while the node's ZooKeeper session is suspended or lost: it leads nothing then.
        self.fenced = False
        # Reads the slot map from its truth (and calls `follow`); set by the node.
        self.relearn: Callable[[], object] | None = None
        self._relearnt_at = 0.0
        self._changing = threading.Lock()

    def shard_of_slot(self, slot: int) -> int:
        return self._shard_by_slot[slot]

    def _shard_for(self, slot: int) -> int:
        """The slot's shard; when the map names a shard not led here, the map is read again
        first (rate-limited): a gateway that learnt of a move before this node routes the slot's
        requests here, and they must not be refused until this node hears of it too."""
        shard = self._shard_by_slot[slot]
        if shard in self.local or self.relearn is None:
            return shard
        now = time.monotonic()
        if now - self._relearnt_at >= RELEARN_EVERY_S:
            self._relearnt_at = now
            self.relearn()
        return self._shard_by_slot[slot]

    def follow(self, slot_ranges: list[SlotRange]) -> None:
        """Adopts a newer slot map (a slot moved): replaced whole, readers need no lock. The
        shard's own database has the last word on every write (services.storage.slots)."""
        self._shard_by_slot = slot_map(slot_ranges)

    def slots_of(self, shard: int) -> list[int]:
        return [slot for slot, owner in enumerate(self._shard_by_slot) if owner == shard]

    def serve(self, handlers: ShardHandlers, epoch: int) -> None:
        with self._changing:  # shards' agents serve and unserve from threads of their own
            self.epochs[handlers.shard] = epoch
            self.local = {**self.local, handlers.shard: handlers}  # replaced whole: readers need no lock

    def unserve(self, shard: int) -> ShardHandlers | None:
        with self._changing:
            handlers = self.local.get(shard)
            self.local = {s: h for s, h in self.local.items() if s != shard}
            self.epochs.pop(shard, None)
            return handlers

    def served(self, shard: int, what: str) -> ShardHandlers:
        if self.fenced:
            raise NotLeader(f"{what}: this node has lost its coordination session and leads nothing now")
        handlers = self.local.get(shard)
        if handlers is None:
            routed_to = self._served_at_epoch(ROUTED_EPOCH.get())
            if routed_to is not None:
                # Sent here as shard `routed_to`'s (its epoch) while its slot is shard `shard`'s
                # now: the sender's slot map is behind, not its route. Saying so lets a gateway
                # re-split a batch by slot at once instead of retrying the same shard.
                raise SlotMoved(f"{what} belongs to shard {shard} now, not to shard {routed_to}")
            raise NotLeader(f"{what} belongs to shard {shard}, which this node does not lead")
        routed, current = ROUTED_EPOCH.get(), self.epochs.get(shard)
        if routed is not None and current is not None and routed != current:
            routed_to = self._served_at_epoch(routed)
            if routed_to is not None and routed_to != shard:  # led here too: the map is behind
                raise SlotMoved(f"{what} belongs to shard {shard} now, not to shard {routed_to}")
            raise NotLeader(
                f"{what}: routed with epoch {routed} of shard {shard}, which is at epoch {current}"
            )
        return handlers

    def _served_at_epoch(self, epoch: int | None) -> int | None:
        """A shard served here at `epoch`, if any (epochs of different shards may coincide)."""
        if epoch is None:
            return None
        return next((s for s, e in self.epochs.items() if e == epoch and s in self.local), None)

    def for_account(self, number: str, field: str = "account_number") -> ShardHandlers:
        shard = self._shard_for(parse_account_number(number, field))
        return self.served(shard, f"{field} {number}")

    def for_customer(self, customer_id: str) -> ShardHandlers:
        validate_customer_id(customer_id)
        return self.served(self._shard_for(slot_of_customer(customer_id)), f"customer {customer_id}")

    def for_transfer_id(self, transfer_id: str) -> ShardHandlers:
        return self.served(self._shard_for(parse_transfer_id(transfer_id)), f"transfer {transfer_id}")

    def for_hold_id(self, hold_id: str) -> ShardHandlers:
        return self.served(self._shard_for(parse_hold_id(hold_id)), f"hold {hold_id}")

    def for_pair(
        self, source: str, target: str, source_field: str, target_field: str
    ) -> tuple[ShardHandlers, int]:
        """The handlers of the source's shard (led here) and the target's shard number."""
        handlers = self.for_account(source, source_field)
        return handlers, self.shard_of_slot(parse_account_number(target, target_field))

    def for_same_shard_pair(
        self, source: str, target: str, source_field: str, target_field: str
    ) -> ShardHandlers:
        """As `for_pair`, for movements that must stay within one shard (holds)."""
        handlers, target_shard = self.for_pair(source, target, source_field, target_field)
        if target_shard != handlers.shard:
            raise CrossShard(
                f"{target_field}: account {target} is on shard {target_shard}, {source_field} on shard"
                f" {handlers.shard}; holds are only between accounts of one shard"
            )
        return handlers
