"""Moves a range of slots from one shard to another while the bank serves.

1. Lock and journal. One move at a time; the journal in ZooKeeper says where it is.
2. Copy. The target marks the slots INCOMING (it refuses their writes) and receives every row
   of them from one snapshot of the source, while the source goes on writing them.
3. Catch up. The rows changed since are copied again (a short pass: the copy's delta).
4. Freeze. The source marks the slots FROZEN: their writes are refused (retry-able) from now
   on, and the writes already past their check finish first (see services/storage/slots).
5. Final pass and verify. The last changes are copied; per slot, both sides must agree on the
   accounts, the sum of their balances and a digest of their postings. Else: roll back.
6. Hand over. The source books the migration lines and marks the slots GONE (naming the
   target); the target books its lines and marks them OWNED. From here on the move is only
   ever finished, never rolled back: the target may already have written.
7. Flip. The slot map in ZooKeeper names the target (compare-and-set on its version).
   Gateways learn it at the source's first refusal, or from the Redis mirror.
8. After a grace period the source's copies of the rows are removed.

A move cut before step 6 is rolled back (the source owns the slots again, the target's copy is
removed); one cut after is finished. `resume` does either from the journal; each step can run
again without harm. The freeze is bounded: past `max_freeze_s` before the hand-over, the move
is rolled back.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import psycopg
from kazoo.client import KazooClient

from services.moves import journal as j
from services.moves.plan import reassign
from services.routing import zk_routes
from services.storage import slot_copy, slots
from services.storage.slot_copy import Mark, SlotRange

log = logging.getLogger(__name__)
Say = Callable[[str], None]


class MoveFailed(Exception):
    """The move was rolled back; the message says why."""


class SlotMover:
    def __init__(
        self, zk: KazooClient, conninfo_of: Callable[[int], str], say: Say = lambda line: None,
        max_freeze_s: float = 2.0, grace_s: float = 5.0,
    ) -> None:  # fmt: skip
        self.zk = zk
        self.conninfo_of = conninfo_of
        self.say = say
        self.max_freeze_s = max_freeze_s
        self.grace_s = grace_s
        self.journal = j.Journal(zk)

    def move(self, first: int, last: int, target: int) -> dict[str, Any]:
        """Moves slots `first`..`last` (all on one shard) to `target`; returns the journal record."""
        self.journal.lock(f"mover pid {os.getpid()}")
        try:
            for leftover in self.journal.unfinished():
                self._resume(leftover)
            source = self._owner(first, last)
            if source == target:
                raise ValueError(f"slots {first}-{last} already belong to shard {target}")
            record = self.journal.start(first, last, source, target)
            return self._run(record)
        finally:
            self.journal.unlock()

    def resume(self) -> list[dict[str, Any]]:
        """Finishes or rolls back every move its mover left half way."""
        self.journal.lock("mover resuming")
        try:
            return [self._resume(record) for record in self.journal.unfinished()]
        finally:
            self.journal.unlock()

    def _run(self, record: dict[str, Any]) -> dict[str, Any]:
        slot_range = SlotRange(*record["slots"])
        source, target = record["from"], record["to"]
        self.say(
            f"move {record['id']}: slots {slot_range.first}-{slot_range.last}, shard {source} -> {target}"
        )
        clock = _Phases()
        try:
            copied, mark = self._copy(slot_range, source, target)
            self.journal.update(record, copied_rows=copied)
            clock.start()
            self._set(source, slot_range, slots.FROZEN, None)
            self.journal.update(record, state=j.FROZEN)
            clock.mark("freeze")
            copied += self._final_pass(slot_range, source, target, mark)
            clock.mark("final_pass")
            if clock.total_s() > self.max_freeze_s:
                raise MoveFailed(f"the freeze passed {self.max_freeze_s} s before the hand-over")
        except Exception as err:
            self._roll_back(record, slot_range, f"{type(err).__name__}: {err}")
            raise MoveFailed(f"move {record['id']} rolled back: {err}") from err
        self._hand_over(record, slot_range)
        clock.mark("hand_over")
        self._flip(record, slot_range)
        clock.mark("flip")
        freeze_ms = round(clock.total_s() * 1000, 1)
        self.journal.update(record, copied_rows=copied, freeze_ms=freeze_ms, freeze_phases_ms=clock.phases_ms)
        self.say(
            f"move {record['id']}: {copied} rows copied, writes of the slots frozen {freeze_ms} ms"
            f" ({', '.join(f'{k} {v:.0f}' for k, v in clock.phases_ms.items())})"
        )
        self._clean(record, slot_range)
        return record

    def _copy(self, slot_range: SlotRange, source: int, target: int) -> tuple[int, Mark]:
        """Steps 2 and 3: the copy from one snapshot, then a pass over what changed meanwhile."""
        with self._connect(target) as conn, conn.transaction():
            _require_not_owned(conn, slot_range, target)
            slots.set_states(conn, self._slot_list(slot_range), slots.INCOMING, 0, None)
            slot_copy.delete_rows(conn, slot_range)  # what an earlier, rolled-back attempt left
        copied, mark = self._pass(slot_range, source, target, None)
        more, mark = self._pass(slot_range, source, target, mark)
        return copied + more, mark

    def _pass(self, slot_range: SlotRange, source: int, target: int, since: Mark | None) -> tuple[int, Mark]:
        with self._connect(source) as src, self._connect(target) as dst:
            src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            mark = slot_copy.high_water(src)
            with dst.transaction():
                copied = slot_copy.copy_pass(src, dst, slot_range, since)
            src.execute("COMMIT")
        return copied, mark

    def _final_pass(self, slot_range: SlotRange, source: int, target: int, mark: Mark) -> int:
        """Step 5: nothing writes the slots on the source now; the target must match it."""
        with self._connect(source) as src, self._connect(target) as dst:
            src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            with dst.transaction():
                copied = slot_copy.copy_pass(src, dst, slot_range, mark)
                expected, found = slot_copy.digest(src, slot_range), slot_copy.digest(dst, slot_range)
                if expected != found:
                    wrong = sorted(s for s in {*expected, *found} if expected.get(s) != found.get(s))
                    raise MoveFailed(f"the copy differs from the source in slots {wrong[:10]}")
            src.execute("COMMIT")
        return copied

    def _hand_over(self, record: dict[str, Any], slot_range: SlotRange) -> None:
        """Step 6, each half done once (a resumed move may find one half done)."""
        source, target = record["from"], record["to"]
        with self._connect(source) as src:
            epoch = _epoch(src, slot_range)
            with src.transaction():
                states = slots.states(src)
                if states.get(slot_range.first, ("",))[0] != slots.GONE:
                    lines = slot_copy.migration_lines(src, slot_range)
                    slot_copy.book_migration(src, lines, 1, f"shard {target}")
                    slots.set_states(src, self._slot_list(slot_range), slots.GONE, epoch, target)
                    record["migration_lines"] = len(lines)
            self.journal.update(record, state=j.HANDED_OVER)
            lines = slot_copy.migration_lines(src, slot_range)
        with self._connect(target) as dst, dst.transaction():
            if slots.states(dst).get(slot_range.first, ("",))[0] != slots.OWNED:
                slot_copy.book_migration(dst, lines, -1, f"shard {source}")
                slots.set_states(dst, self._slot_list(slot_range), slots.OWNED, epoch + 1, None)
        self.journal.update(record, state=j.TARGET_OWNS)

    def _flip(self, record: dict[str, Any], slot_range: SlotRange) -> None:
        """Step 7: the slot map names the target, by compare-and-set (retried on a conflict)."""
        for _ in range(20):
            raw, stat = self.zk.get(zk_routes.SLOTS_PATH)
            ranges = [(int(r["first"]), int(r["last"]), int(r["shard"])) for r in json.loads(raw)["ranges"]]
            updated = reassign(ranges, slot_range.first, slot_range.last, record["to"])
            if updated == ranges:
                break
            try:
                data = {"ranges": [{"first": a, "last": b, "shard": s} for a, b, s in updated]}
                self.zk.set(zk_routes.SLOTS_PATH, json.dumps(data).encode(), version=stat.version)
                break
            except Exception as err:  # BadVersionError: someone else changed the map; read again
                log.warning("event=slot_map_conflict move=%s error=%r", record["id"], err)
        else:
            raise RuntimeError("the slot map kept changing under the move; resume it")
        self.journal.update(record, state=j.FLIPPED)

    def _clean(self, record: dict[str, Any], slot_range: SlotRange) -> None:
        """Step 8, after a grace period: readers that still route to the source see the rows."""
        time.sleep(self.grace_s)
        with self._connect(record["from"]) as src, src.transaction():
            removed = slot_copy.delete_rows(src, slot_range)
        self.journal.update(record, state=j.DONE, removed_rows=removed)

    def _roll_back(self, record: dict[str, Any], slot_range: SlotRange, why: str) -> None:
        self.say(f"move {record['id']}: rolling back ({why})")
        self._set(record["from"], slot_range, slots.OWNED, None)
        with self._connect(record["to"]) as dst, dst.transaction():
            _require_not_owned(dst, slot_range, record["to"])
            slot_copy.delete_rows(dst, slot_range)
            slots.drop_states(dst, self._slot_list(slot_range), slots.INCOMING)
        self.journal.update(record, state=j.ROLLED_BACK, error=why)

    def _resume(self, record: dict[str, Any]) -> dict[str, Any]:
        slot_range = SlotRange(*record["slots"])
        cut_early = record["state"] in (j.COPYING, j.FROZEN)
        self.say(
            f"move {record['id']} was left {record['state']}: {'rolling back' if cut_early else 'finishing'}"
        )
        if cut_early:
            self._roll_back(record, slot_range, "its mover stopped before the hand-over")
            return record
        if record["state"] == j.HANDED_OVER:
            self._hand_over(record, slot_range)
        if record["state"] == j.TARGET_OWNS:
            self._flip(record, slot_range)
        self._clean(record, slot_range)
        return record

    def _owner(self, first: int, last: int) -> int:
        raw, _ = self.zk.get(zk_routes.SLOTS_PATH)
        owners = {
            int(r["shard"])
            for r in json.loads(raw)["ranges"]
            if int(r["first"]) <= last and int(r["last"]) >= first
        }
        if len(owners) != 1:
            raise ValueError(
                f"slots {first}-{last} span shards {sorted(owners)}: move one shard's slots at a time"
            )
        return owners.pop()

    def _set(self, shard: int, slot_range: SlotRange, state: str, moved_to: int | None) -> None:
        with self._connect(shard) as conn, conn.transaction():
            slots.set_states(conn, self._slot_list(slot_range), state, _epoch(conn, slot_range), moved_to)

    def _connect(self, shard: int) -> psycopg.Connection[Any]:
        return psycopg.connect(self.conninfo_of(shard), autocommit=True, connect_timeout=3)

    @staticmethod
    def _slot_list(slot_range: SlotRange) -> list[int]:
        return list(range(slot_range.first, slot_range.last + 1))


class _Phases:
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


def _require_not_owned(conn: psycopg.Connection[Any], slot_range: SlotRange, shard: int) -> None:
    """A guard before removing a copy: the shard must not hold any of the slots for real."""
    held = [s for s, (state, _, _) in slots.states(conn).items()
            if slot_range.first <= s <= slot_range.last and state in (slots.OWNED, slots.FROZEN)]  # fmt: skip
    if held:
        raise RuntimeError(f"shard {shard} holds slots {held[:10]} already; its rows are not a copy")


def _epoch(conn: psycopg.Connection[Any], slot_range: SlotRange) -> int:
    """The highest epoch among the range's slots on this shard (1 for slots never moved)."""
    found = [e for s, (_, e, _) in slots.states(conn).items() if slot_range.first <= s <= slot_range.last]
    return max(found, default=1)
