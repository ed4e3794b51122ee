"""A node whose slot map is older than a gateway's reads it again before refusing a moved slot's
request (the real map lives in ZooKeeper; here a function stands for reading it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from services.common.errors import NotLeader, SlotMoved
from services.common.identifiers import NUM_SLOTS, make_account_number
from services.node.shards import ShardDirectory, ShardHandlers
from services.rpc.status import ROUTED_EPOCH

HALF = NUM_SLOTS // 2
BEFORE = [(0, HALF - 1, 0), (HALF, NUM_SLOTS - 1, 1)]
AFTER = [(0, 31, 1), (32, HALF - 1, 0), (HALF, NUM_SLOTS - 1, 1)]  # slots 0-31 moved to shard 1


def handlers(shard: int) -> ShardHandlers:
    fake: Any = object()
    return ShardHandlers(shard, fake, fake, fake)


def test_a_moved_slot_is_served_once_the_map_is_read_again() -> None:
    directory = ShardDirectory(BEFORE, {1: handlers(1)})  # this node leads shard 1 only
    reads: list[int] = []
    directory.relearn = lambda: (reads.append(1), directory.follow(AFTER))
    assert directory.for_account(make_account_number(5, 17)).shard == 1
    assert reads == [1]


def test_a_slot_that_is_not_here_is_refused_and_the_map_read_at_most_every_200_ms() -> None:
    directory = ShardDirectory(BEFORE, {1: handlers(1)})
    reads: list[int] = []
    directory.relearn = lambda: reads.append(1)  # the map has not changed: the slot is shard 0's
    for _ in range(5):
        with pytest.raises(NotLeader, match="belongs to shard 0"):
            directory.for_account(make_account_number(100, 19))
    assert reads == [1]


@contextmanager
def routed_with(epoch: int) -> Iterator[None]:
    """As a request that came with `epoch` in its metadata."""
    token = ROUTED_EPOCH.set(epoch)
    try:
        yield
    finally:
        ROUTED_EPOCH.reset(token)


def test_a_request_routed_to_the_slots_old_shard_is_told_the_slot_moved() -> None:
    """The sender's slot map is behind (it sent shard 1's epoch for a slot now shard 0's): a
    gateway re-splits its batch by slot on SLOT_MOVED, and would retry shard 1 on NOT_LEADER."""
    directory = ShardDirectory(AFTER, {1: handlers(1)})  # leads shard 1; slot 100 is shard 0's
    directory.epochs[1] = 7
    with routed_with(7), pytest.raises(SlotMoved, match="belongs to shard 0 now, not to shard 1"):
        directory.for_account(make_account_number(100, 19))
    with routed_with(3), pytest.raises(NotLeader) as refused:  # no shard led here: a stale route
        directory.for_account(make_account_number(100, 19))
    assert not isinstance(refused.value, SlotMoved)


def test_a_slot_moved_between_two_shards_led_here_is_told_the_slot_moved() -> None:
    """This node leads both: the request came with the old shard's epoch (7), and the slot's
    shard now is at another epoch (9). Seen in a full run: NOT_LEADER here made a gateway send a
    coalesced batch to the old shard again and again until its deadline."""
    directory = ShardDirectory(AFTER, {0: handlers(0), 1: handlers(1)})
    directory.epochs.update({0: 9, 1: 7})
    with routed_with(7), pytest.raises(SlotMoved, match="belongs to shard 0 now, not to shard 1"):
        directory.for_account(make_account_number(100, 19))
