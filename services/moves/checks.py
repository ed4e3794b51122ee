"""What a slot move checks and measures beside its steps: the copy compared with its source,
the shards' claims on the slots, the slots' epoch, and where the freeze's time goes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from services.storage import slot_copy, slots
from services.storage.slot_copy import SlotRange

Conn = psycopg.Connection[Any]


class MoveFailed(Exception):
    """The move was rolled back; the message says why."""


class MoveLeft(Exception):
    """The mover stopped half way; the bank's nodes finish or roll the move back."""


class FreezeClock:
    """Where a move's freeze goes: milliseconds per phase, from the freeze on."""

    def __init__(self) -> None:
        self.started = self.last = 0.0
        self.phases_ms: dict[str, float] = {}

    def start(self) -> None:
        self.started = self.last = time.monotonic()

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.phases_ms[phase] = round((now - self.last) * 1000, 1)
        self.last = now

    def total_s(self) -> float:
        return time.monotonic() - self.started


def require_not_owned(conn: psycopg.Connection[Any], slot_range: SlotRange, shard: int) -> None:
    """A guard before removing a copy: the shard must not hold any of the slots for real."""
    held = [s for s, (state, _, _) in slots.states(conn).items()
            if slot_range.first <= s <= slot_range.last and state in (slots.OWNED, slots.FROZEN)]  # fmt: skip
    if held:
        raise RuntimeError(f"shard {shard} holds slots {held[:10]} already; its rows are not a copy")


def verify(src: Conn, dst: Conn, slot_range: SlotRange, full: bool) -> None:
    """Per slot, both sides must agree (the source's digest read while the target's is)."""
    with ThreadPoolExecutor(1) as pool:
        expected_later = pool.submit(slot_copy.digest, src, slot_range, full)
        found = slot_copy.digest(dst, slot_range, full)
        expected = expected_later.result()
    if expected != found:
        wrong = sorted(s for s in {*expected, *found} if expected.get(s) != found.get(s))
        raise MoveFailed(f"the copy differs from the source in slots {wrong[:10]}")


def overlap(a: list[int] | tuple[int, int], b: list[int] | tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def slots_epoch(conn: psycopg.Connection[Any], slot_range: SlotRange) -> int:
    """The highest epoch among the range's slots on this shard (1 for slots never moved)."""
    found = [e for s, (_, e, _) in slots.states(conn).items() if slot_range.first <= s <= slot_range.last]
    return max(found, default=1)
