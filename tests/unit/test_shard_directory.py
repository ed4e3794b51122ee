"""A node whose slot map is older than a gateway's reads it again before refusing a moved slot's
request (the real map lives in ZooKeeper; here a function stands for reading it)."""

from __future__ import annotations

from typing import Any

import pytest

from services.common.errors import NotLeader
from services.common.identifiers import NUM_SLOTS, make_account_number
from services.node.shards import ShardDirectory, ShardHandlers

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
