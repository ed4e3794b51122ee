"""Moves a range of slots from one shard to another while the bank serves.

1. Lock and journal. One move at a time; the journal in ZooKeeper says where it is.
2. Copy. The target marks the slots INCOMING (it refuses their writes) and receives every row
   of them from one snapshot of the source, while the source goes on writing them.
3. Catch up, verify, book ahead. The rows changed since the copy are copied again, and both
   sides compared in full per slot (accounts, the sum of their balances, a digest of the
   postings); the migration lines of the slots' postings so far are booked on both sides, not
   counted yet (services/storage/migration_lines.py).
4. Freeze. The source marks the slots FROZEN: their writes are refused (retry-able) from now
   on, and the writes already past their check finish first (see services/storage/slots).
5. Final pass and verify. The last changes are copied; per slot, both sides must agree on the
   accounts, the sum of their balances and the number of postings (postings are only ever
   added, and those before were compared in step 3). Else: roll back.
6. Hand over. The journal records it first. The source books the lines still missing, counts
   them and marks the slots GONE (naming the target); the target does the same and marks them
   OWNED, each in one statement. From here on the move is only ever finished, never rolled
   back: the target may already have written.
7. Flip. The slot map in ZooKeeper names the target (compare-and-set on its version).
   Gateways learn it at the source's first refusal, or from the Redis mirror.
8. After a grace period the source's copies of the rows are removed.

Steps 4 to 7 are the freeze: the work in them is kept small (one connection per side, few
round trips, the heavy lines booked before it). A move cut before step 6 is rolled back (the
source owns the slots again, the target's copy and uncounted lines are removed); one cut after
is finished. `resume` does either from the journal; each step can run again without harm. The
freeze is bounded: past `max_freeze_s` before the hand-over, the move is rolled back. A mover
that stops half way (killed, or cut off from a shard it needs) leaves the move to the bank's
nodes, which resume it once the movers' lock is free (services/moves/keeper.py).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import psycopg
from kazoo.client import KazooClient

from services.moves import journal as j
from services.moves import priority, slot_map
from services.moves.checks import (
    FreezeClock,
    MoveFailed,
    MoveLeft,
    overlap,
    require_not_owned,
    slots_epoch,
    verify,
)
from services.storage import migration_lines as ml
from services.storage import slot_copy, slots
from services.storage.slot_copy import Mark, SlotRange

log = logging.getLogger(__name__)
Say = Callable[[str], None]
Conn = psycopg.Connection[Any]


# The points of a move, in order, that `SlotMover.at` hears of.
POINTS = ("copy", "catch_up", "freeze", "hand_over", "flip")


class SlotMover:
    def __init__(
        self, zk: KazooClient, conninfo_of: Callable[[int], str], say: Say = lambda line: None,
        max_freeze_s: float = 2.0, grace_s: float = 5.0, name: str = "", lock_wait_s: float = 30.0,
    ) -> None:  # fmt: skip
        self.zk = zk
        self.name = name or f"mover pid {os.getpid()}"
        self.lock_wait_s = lock_wait_s
        self.conninfo_of = conninfo_of
        self.say = say
        self.max_freeze_s = max_freeze_s
        self.grace_s = grace_s
        self.journal = j.Journal(zk)
        # Called as the move reaches each point of POINTS (chaos strikes a fault there).
        self.at: Callable[[str], None] = lambda point: None

    def move(self, first: int, last: int, target: int, clean: bool = True) -> dict[str, Any]:
        """Moves slots `first`..`last` (all on one shard) to `target`; returns the journal record.
        With `clean` False the source's rows stay until `clean_moved` (a batch of moves waits
        out their grace periods together); the move is flipped, and its slots are the target's."""
        self.journal.lock(self.name, self.lock_wait_s)
        try:
            for leftover in self.journal.unfinished():
                if leftover["state"] != j.FLIPPED or overlap(leftover["slots"], (first, last)):
                    self._resume(leftover)
            source = slot_map.owner(self.zk, first, last)
            if source == target:
                raise ValueError(f"slots {first}-{last} already belong to shard {target}")
            record = self.journal.start(first, last, source, target)
            try:
                return self._run(record, clean)
            except (MoveFailed, j.MoveTakenOver):
                raise
            except Exception as err:  # a shard lost in the middle of a step it cannot undo now
                raise MoveLeft(
                    f"move {record['id']} stopped {record['state']} ({type(err).__name__}: {err});"
                    " the bank's nodes finish or roll it back once its shards answer (see bankctl status)"
                ) from err
        finally:
            self.journal.unlock()

    def clean_moved(self) -> list[dict[str, Any]]:
        """Removes the source's rows of every flipped move once its grace period has passed."""
        self.journal.lock("mover cleaning")
        try:
            return [self._resume(r) for r in self.journal.unfinished() if r["state"] == j.FLIPPED]
        finally:
            self.journal.unlock()

    def resume(self, due: Callable[[dict[str, Any]], bool] = lambda record: True) -> list[dict[str, Any]]:
        """Finishes or rolls back every move its mover left half way (those `due` takes)."""
        self.journal.lock(f"{self.name} resuming", self.lock_wait_s)
        try:
            return [self._resume(record) for record in self.journal.unfinished() if due(record)]
        finally:
            self.journal.unlock()

    def _run(self, record: dict[str, Any], clean: bool = True) -> dict[str, Any]:
        slot_range = SlotRange(*record["slots"])
        source, target = record["from"], record["to"]
        self.say(
            f"move {record['id']}: slots {slot_range.first}-{slot_range.last}, shard {source} -> {target}"
        )
        try:
            self.at("copy")
            copied, mark = self._copy(slot_range, source, target)
            self.at("catch_up")
            more, mark, ahead = self._pass(slot_range, source, target, mark, catch_up=True)
            self._book_ahead(record, ahead)
            copied += more
            self.journal.update(record, copied_rows=copied)
        except Exception as err:
            self._roll_back(record, slot_range, f"{type(err).__name__}: {err}")
            raise MoveFailed(f"move {record['id']} rolled back: {err}") from err
        clock = FreezeClock()
        # One connection to each side for the whole freeze (connecting costs more than the work),
        # served first, and this process too: the clients' writes of the slots wait for it.
        with (
            self._connect(source, priority.CRITICAL) as src,
            self._connect(target, priority.CRITICAL) as dst,
            priority.this_process(priority.CRITICAL),
            priority.groups_first((src, dst), priority.CRITICAL),
        ):
            epoch = slots_epoch(src, slot_range)
            slot_copy.prepare_incoming(dst)
            clock.start()
            try:
                touched, more = self._freeze_and_verify(record, slot_range, src, dst, mark, epoch, clock)
            except Exception as err:
                self._roll_back(record, slot_range, f"{type(err).__name__}: {err}")
                raise MoveFailed(f"move {record['id']} rolled back: {err}") from err
            # Only the transfers the final pass touched can differ from what was booked ahead.
            booked_ahead = {key: ahead[key] for key in touched if key in ahead}
            self._hand_over(record, slot_range, src, dst, touched, booked_ahead, epoch)
            clock.mark("hand_over")
            self.at("flip")
            slot_map.flip(self.zk, slot_range.first, slot_range.last, record["to"], record["id"])
            clock.mark("flip")  # the writes of the slots go to the target from here on
            freeze_ms = round(clock.total_s() * 1000, 1)
        copied += more
        record["migration_lines"] = sum(1 for amount in {**ahead, **touched}.values() if amount)
        self.journal.update(
            record, state=j.FLIPPED, flipped_at=time.time(), copied_rows=copied, freeze_ms=freeze_ms,
            freeze_phases_ms=clock.phases_ms,
        )  # fmt: skip
        self.say(
            f"move {record['id']}: {copied} rows copied, writes of the slots frozen {freeze_ms} ms"
            f" ({', '.join(f'{k} {v:.0f}' for k, v in clock.phases_ms.items())})"
        )
        if clean:
            self._clean(record, slot_range)
        return record

    def _freeze_and_verify(
        self, record: dict[str, Any], slot_range: SlotRange, src: Conn, dst: Conn, mark: Mark, epoch: int,
        clock: FreezeClock,
    ) -> tuple[ml.Sums, int]:  # fmt: skip
        """Steps 4 and 5: the slots frozen on the source, their last changes copied, both sides
        compared; the moved sums of the transfers the last changes touched, and the rows copied."""
        slots.change(src, self._slot_list(slot_range), slots.FROZEN, epoch, None)
        self.journal.update_soon(record, state=j.FROZEN)  # for those who watch: resume rolls back either way
        clock.mark("freeze")
        self.at("freeze")
        touched, copied = self._final_pass(slot_range, src, dst, mark, clock)
        clock.mark("verify")  # both sides compared, the moved sums read, the pass committed
        if clock.total_s() > self.max_freeze_s:
            raise MoveFailed(f"the freeze passed {self.max_freeze_s} s before the hand-over")
        return touched, copied

    def _book_ahead(self, record: dict[str, Any], sums: ml.Sums) -> None:
        """The migration lines of the moved sums of the last catch-up pass, booked on both sides
        and not counted yet: the hand-over books only what the final pass changes."""
        source, target = record["from"], record["to"]
        with (
            self._connect(source, priority.BACKGROUND) as src,
            self._connect(target, priority.BACKGROUND) as dst,
        ):
            ml.book_ahead(src, ml.to_book(sums, 1, {}), ml.tag(target, record["id"]))
            ml.book_ahead(dst, ml.to_book(sums, -1, {}), ml.tag(source, record["id"]))

    def _copy(self, slot_range: SlotRange, source: int, target: int) -> tuple[int, Mark]:
        """Step 2: the copy from one snapshot (step 3, the catch-up passes, follow)."""
        with self._connect(target) as conn, conn.transaction():
            require_not_owned(conn, slot_range, target)
            slots.set_states(conn, self._slot_list(slot_range), slots.INCOMING, 0, None)
            slot_copy.delete_rows(conn, slot_range)  # what an earlier, rolled-back attempt left
        copied, mark, _ = self._pass(slot_range, source, target, None)
        return copied, mark

    def _pass(
        self, slot_range: SlotRange, source: int, target: int, since: Mark | None, catch_up: bool = False
    ) -> tuple[int, Mark, ml.Sums]:
        """A copy pass from one snapshot of the source: the rows sent and the pass's mark. The
        catch-up pass also compares both sides in full (so that the final pass, in the freeze,
        need only count the postings it added) and returns the slots' moved sums. Background
        work: its sessions yield the CPU to the bank's clients."""
        with (
            self._connect(source, priority.BACKGROUND) as src,
            self._connect(target, priority.BACKGROUND) as dst,
        ):
            src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            mark = slot_copy.high_water(src)
            with dst.transaction():
                copied = slot_copy.copy_pass(src, dst, slot_range, since)
                if catch_up:
                    verify(src, dst, slot_range, full=True)
            sums = ml.moved_sums(src, slot_range) if catch_up else {}
            src.execute("COMMIT")
        return copied, mark, sums

    def _final_pass(
        self, slot_range: SlotRange, src: Conn, dst: Conn, mark: Mark, clock: FreezeClock | None = None
    ) -> tuple[ml.Sums, int]:
        """Step 5: nothing writes the slots on the source now; what changed since `mark` is
        copied and the target must match the source. Returns the moved sums of the transfers
        the pass touched (read on the target, equal to the source's) and the rows copied.

        The target commits it without waiting for a standby: the hand-over's commit on the same
        server, which waits, comes after it in the WAL, so a standby that has the hand-over has
        this pass too; and a target that lost this pass in a failover before its hand-over is
        given the slots' rows again when the hand-over is resumed (`_hand_over`)."""
        src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            with dst.transaction():
                dst.execute("SET LOCAL synchronous_commit = local")
                copied = slot_copy.copy_pass(src, dst, slot_range, mark)
                if clock is not None:
                    clock.mark("final_copy")
                verify(src, dst, slot_range, full=False)
                touched = ml.touched_sums(dst, slot_range)
        finally:
            src.execute("COMMIT")
        return touched, copied

    def _hand_over(
        self, record: dict[str, Any], slot_range: SlotRange, src: Conn | None = None, dst: Conn | None = None,
        needed: ml.Sums | None = None, ahead: ml.Sums | None = None, epoch: int | None = None,
    ) -> None:  # fmt: skip
        """Step 6. The journal says it first: from here on the move is only finished (the source
        is frozen and the copy verified, so either half may go first). Each half is one
        statement, done once, that books the lines bringing what was booked `ahead` to the moved
        sums `needed` (both for the same transfers). A resumed move reads the moved sums again
        (the source's slots are frozen or gone, so they are the same) and what each side booked."""
        if record["state"] != j.HANDED_OVER:
            if not self.journal.holds_lock():  # its session lost: the nodes may be rolling it back
                raise j.MoveTakenOver(f"move {record['id']}: the movers' lock was lost before the hand-over")
            self.journal.update(record, state=j.HANDED_OVER)
            self.at("hand_over")
        with ExitStack() as stack:
            resumed = src is None
            src = src or stack.enter_context(self._connect(record["from"]))
            dst = dst or stack.enter_context(self._connect(record["to"]))
            if resumed:
                self._copy_again_unless_taken(slot_range, src, dst)
            epoch = epoch or slots_epoch(src, slot_range)
            if needed is None:
                needed = ml.moved_sums(src, slot_range)
            with ThreadPoolExecutor(1) as pool:
                taken = pool.submit(
                    self._half, record, slot_range, dst, slots.OWNED, epoch + 1, needed, ahead
                )
                self._half(record, slot_range, src, slots.GONE, epoch, needed, ahead)
                taken.result()
        # Not journaled (TARGET_OWNS): resuming from HANDED_OVER does no more than the flip needs.
        record["state"] = j.TARGET_OWNS

    def _copy_again_unless_taken(self, slot_range: SlotRange, src: Conn, dst: Conn) -> None:
        """Before a resumed hand-over: a target that has not taken the slots yet (its primary may
        have failed over since the final pass, which it committed without a standby) gets every
        row of them again from the frozen source, compared in full; one that took them (its
        half is done, and committed with a standby) may have written since and is left alone."""
        states = slots.states(dst)
        if any(states.get(s, ("",))[0] == slots.OWNED for s in self._slot_list(slot_range)):
            return
        src.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            with dst.transaction():
                slot_copy.copy_pass(src, dst, slot_range, None)
                verify(src, dst, slot_range, full=True)
        finally:
            src.execute("COMMIT")

    def _half(
        self, record: dict[str, Any], slot_range: SlotRange, conn: Conn, state: str, epoch: int,
        needed: ml.Sums, ahead: ml.Sums | None,
    ) -> int:  # fmt: skip
        """One side's hand-over: the source lets the slots go (GONE), the target takes them
        (OWNED); its lines completed and counted in the same statement."""
        source_side = state == slots.GONE
        sign, other = (1, record["to"]) if source_side else (-1, record["from"])
        line_tag = ml.tag(other, record["id"])
        already = ml.booked(conn, line_tag) if ahead is None else {k: sign * a for k, a in ahead.items()}
        moved_to = record["to"] if source_side else None
        lines = ml.to_book(needed, sign, already)
        return slots.change(conn, self._slot_list(slot_range), state, epoch, moved_to, lines, line_tag)

    def _flip(self, record: dict[str, Any], slot_range: SlotRange) -> None:
        """Step 7, and the journal says so."""
        slot_map.flip(self.zk, slot_range.first, slot_range.last, record["to"], record["id"])
        self.journal.update(record, state=j.FLIPPED, flipped_at=time.time())

    def _clean(self, record: dict[str, Any], slot_range: SlotRange) -> None:
        """Step 8, after a grace period: readers that still route to the source see the rows.
        Background work, a slot per transaction (the source's clients go first, and its
        standbys replay the deletes a little at a time). Only rows of slots still gone from the
        source go (a later move may have brought one back)."""
        flipped_at = record.get("flipped_at") or time.time()
        time.sleep(max(0.0, min(self.grace_s, flipped_at + self.grace_s - time.time())))
        with self._connect(record["from"], priority.BACKGROUND) as src:
            removed = sum(self._clean_slot(src, slot) for slot in self._slot_list(slot_range))
        self.journal.update(record, state=j.DONE, removed_rows=removed)

    @staticmethod
    def _clean_slot(src: Conn, slot: int) -> int:
        with src.transaction():
            if slots.state_of(src, slot) != slots.GONE:
                return 0
            return slot_copy.delete_rows(src, SlotRange(slot, slot))

    def _roll_back(self, record: dict[str, Any], slot_range: SlotRange, why: str) -> None:
        self.journal.update(record, error=why)  # MoveTakenOver if another process has the move now
        self.say(f"move {record['id']}: rolling back ({why})")
        self._set(record["from"], slot_range, slots.OWNED, None)
        with self._connect(record["from"]) as src:
            ml.unbook(src, ml.tag(record["to"], record["id"]))
        with self._connect(record["to"]) as dst, dst.transaction():
            require_not_owned(dst, slot_range, record["to"])
            slot_copy.delete_rows(dst, slot_range)
            ml.unbook(dst, ml.tag(record["from"], record["id"]))
            slots.drop_states(dst, self._slot_list(slot_range), slots.INCOMING)
        self.journal.update(record, state=j.ROLLED_BACK, error=why)

    def _resume(self, record: dict[str, Any]) -> dict[str, Any]:
        slot_range = SlotRange(*record["slots"])
        cut_early = record["state"] in (j.COPYING, j.FROZEN)
        self.say(
            f"move {record['id']} was left {record['state']}: {'rolling back' if cut_early else 'finishing'}"
        )
        self.journal.update(record, resumed_by=self.name)  # MoveTakenOver if another has it
        if record["state"] != j.FLIPPED:  # it may have died in its freeze (FROZEN is written late)
            self._calm(record)
        if cut_early:
            self._roll_back(record, slot_range, "its mover stopped before the hand-over")
            return record
        if record["state"] == j.HANDED_OVER:
            self._hand_over(record, slot_range)
        if record["state"] == j.TARGET_OWNS:
            self._flip(record, slot_range)
        self._clean(record, slot_range)
        return record

    def _calm(self, record: dict[str, Any]) -> None:
        """Sets back the CPU priority a freeze raised (priority.calm_groups); best effort, as
        priority never changes what a move does: an unreachable shard is left as it is."""
        try:
            with self._connect(record["from"]) as src, self._connect(record["to"]) as dst:
                priority.calm_groups((src, dst))
        except (psycopg.Error, OSError) as err:
            log.warning("event=move_priority_not_reset move=%s error=%r", record["id"], err)

    def _set(self, shard: int, slot_range: SlotRange, state: str, moved_to: int | None) -> None:
        with self._connect(shard) as conn, conn.transaction():
            epoch = slots_epoch(conn, slot_range)
            slots.set_states(conn, self._slot_list(slot_range), state, epoch, moved_to)

    def _connect(self, shard: int, nice: int | None = None) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.conninfo_of(shard), autocommit=True, connect_timeout=3)
        if nice is not None:
            priority.favour(conn, nice)
        return conn

    @staticmethod
    def _slot_list(slot_range: SlotRange) -> list[int]:
        return list(range(slot_range.first, slot_range.last + 1))
