"""The slot map arithmetic of moves: reassigning a range, and the rebalance plan."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.identifiers import NUM_SLOTS
from services.moves.plan import owned, plan_rebalance, reassign, shares

THREE = [(0, 340, 0), (341, 681, 1), (682, 1023, 2)]


def test_reassign_splits_a_range_and_merges_neighbours() -> None:
    assert reassign(THREE, 0, 31, 1) == [(0, 31, 1), (32, 340, 0), (341, 681, 1), (682, 1023, 2)]
    assert reassign(THREE, 300, 340, 1) == [(0, 299, 0), (300, 681, 1), (682, 1023, 2)]
    assert reassign(reassign(THREE, 0, 31, 1), 0, 31, 0) == THREE


def test_shares_are_equal_within_one_slot() -> None:
    assert shares([0, 1, 2]) == {0: 341, 1: 341, 2: 342}  # as `up` splits them
    assert shares([0, 1, 2, 3]) == dict.fromkeys(range(4), 256)


def test_a_balanced_map_needs_no_move() -> None:
    assert plan_rebalance(THREE, [0, 1, 2], 32) == []


def test_adding_a_fourth_shard_moves_batches_until_every_share_is_equal() -> None:
    plan = plan_rebalance(THREE, [0, 1, 2, 3], 32)
    assert all(step.size <= 32 and step.target == 3 for step in plan)
    ranges = THREE
    for step in plan:
        assert all(
            s == step.source
            for a, b, s in ranges
            for slot in range(step.first, step.last + 1)
            if a <= slot <= b
        )
        ranges = reassign(ranges, step.first, step.last, step.target)
    assert owned(ranges, [0, 1, 2, 3]) == dict.fromkeys(range(4), 256)


def test_emptying_a_shard_gives_its_slots_to_the_others() -> None:
    ranges = THREE
    for step in plan_rebalance(ranges, [0, 2], 64):  # shard 1 retired: not among the shards
        assert step.target in (0, 2)
        ranges = reassign(ranges, step.first, step.last, step.target)
    assert owned(ranges, [0, 2]) == {0: 512, 2: 512}  # and shard 1 owns nothing


def test_a_batch_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="batch"):
        plan_rebalance(THREE, [0, 1], 0)


CUTS = st.lists(st.integers(1, NUM_SLOTS - 1), max_size=12, unique=True)


@settings(max_examples=60, deadline=None)
@given(CUTS, st.integers(1, 6), st.integers(1, 200))
def test_any_map_converges_to_equal_shares(cuts: list[int], count: int, batch: int) -> None:
    bounds = [0, *sorted(cuts), NUM_SLOTS]
    ranges = [(a, b - 1, i % count) for i, (a, b) in enumerate(itertools.pairwise(bounds))]
    ranges = reassign(ranges, 0, 0, ranges[0][2])  # neighbours of one shard merged
    shards = list(range(count))
    for step in plan_rebalance(ranges, shards, batch):
        assert 1 <= step.size <= batch
        ranges = reassign(ranges, step.first, step.last, step.target)
    assert owned(ranges, shards) == shares(shards)
