"""Which slots to move so that every shard owns an equal share (within one slot): a plan of
batches, each a contiguous range of one shard's slots, computed on the slot map alone."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.identifiers import NUM_SLOTS

SlotRanges = list[tuple[int, int, int]]  # first, last, shard


@dataclass(frozen=True)
class Batch:
    first: int
    last: int
    source: int
    target: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def shares(shards: list[int]) -> dict[int, int]:
    """The slots each shard should own: equal within one slot, split as `up` splits them (so the
    map a cluster starts with is balanced already)."""
    n = len(shards)
    return {shard: (i + 1) * NUM_SLOTS // n - i * NUM_SLOTS // n for i, shard in enumerate(sorted(shards))}


def owned(ranges: SlotRanges, shards: list[int]) -> dict[int, int]:
    counts = dict.fromkeys(shards, 0)
    for first, last, shard in ranges:
        counts[shard] = counts.get(shard, 0) + last - first + 1
    return counts


def plan_rebalance(ranges: SlotRanges, shards: list[int], batch: int) -> list[Batch]:
    """Batches of at most `batch` slots, from the shard furthest above its share to the one
    furthest below, taken from the end of the giver's last range, until every shard owns its
    share. Bounded: each batch moves at least one slot towards the shares."""
    if batch < 1:
        raise ValueError(f"--batch must be at least 1, not {batch}")
    # A shard left out of `shards` (being retired) is to own nothing.
    every = sorted({*shards, *(s for _, _, s in ranges)})
    want = {**dict.fromkeys(every, 0), **shares(shards)}
    current = sorted(ranges)
    plan: list[Batch] = []
    for _ in range(NUM_SLOTS):
        have = owned(current, every)
        giver = max(every, key=lambda s: (have[s] - want[s], -s))
        taker = min(shards, key=lambda s: (have[s] - want[s], s))
        surplus, need = have[giver] - want[giver], want[taker] - have[taker]
        if surplus <= 0 or need <= 0:
            return plan
        first, last, _ = max(r for r in current if r[2] == giver)
        size = min(batch, surplus, need, last - first + 1)
        step = Batch(last - size + 1, last, giver, taker)
        plan.append(step)
        current = reassign(current, step.first, step.last, taker)
    raise AssertionError("rebalance did not converge")


def reassign(ranges: SlotRanges, first: int, last: int, shard: int) -> SlotRanges:
    """The slot map with `first`..`last` given to `shard`: ranges split where needed, and
    neighbours of one shard merged, in slot order."""
    owner = [0] * (max(b for _, b, _ in ranges) + 1)
    for a, b, s in ranges:
        owner[a : b + 1] = [s] * (b - a + 1)
    owner[first : last + 1] = [shard] * (last - first + 1)
    merged: SlotRanges = []
    for slot, s in enumerate(owner):
        if merged and merged[-1][2] == s and merged[-1][1] == slot - 1:
            merged[-1] = (merged[-1][0], slot, s)
        else:
            merged.append((slot, slot, s))
    return merged
