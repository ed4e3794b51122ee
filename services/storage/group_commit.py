"""Group commit: units of work submitted concurrently to one shard run in one transaction, with
one COMMIT for all of them. Units that can be booked as a set (transfers: see ledger/booking)
are booked together in a few statements; the others each run inside a savepoint of their own.

A COMMIT is where a shard's write waits: the WAL flush and, with `ANY 1` synchronous
replication, a standby's acknowledgement. Gathering the work of concurrent requests pays that
wait once per batch instead of once per request. Each unit keeps its own result: a refusal (or a
lost deadlock) rolls back to its savepoint and fails that unit alone; the others commit. A unit
that lost a deadlock runs again in a later batch, a bounded number of times.

Bounds: at most `max_batch` units per transaction, and a unit waits at most `max_wait_s` for
others to join before its batch starts. A shard's shared transactions (this worker's and batch
requests', `run_in_turn`) run one at a time: two at once on the same hot accounts wait on each
other's row locks.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import psycopg
from psycopg import errors as pg_errors

from services.common.errors import Aborted, BankError, Unavailable
from services.storage.ledger_store import MAX_ATTEMPTS, RETRIED, LedgerStore
from services.storage.ledger_tx import LedgerTx

log = logging.getLogger(__name__)
T = TypeVar("T")
# Beyond 64 subtransactions, PostgreSQL's per-backend cache of them overflows and every snapshot
# taken meanwhile (on the primary and on hot standbys) must look them up in pg_subtrans: a
# transaction runs at most 64 units alone (a savepoint each); the rest wait for the next one.
MAX_SAVEPOINTS = 64
CONFLICTS = (*RETRIED, pg_errors.LockNotAvailable)  # lost races: the unit runs again


# A set runner books many units' items together: per item (ok, value or error), or None for an
# item it leaves to run alone (its unit's own work, in a savepoint).
SetRunner = Callable[[LedgerTx, list[Any]], list[tuple[bool, Any] | None]]
# A batch request's units are offered to their set runner this many per transaction.
MAX_SET = 1024
TURN_WAIT_S = 30.0  # a shared transaction waits this long for the one before it, then refuses


class Outcome:
    """What a batch request's units need of a Future, without its lock and condition (their
    cost showed in the node's profile, a Future per transfer): one thread settles and reads it."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: Any) -> None:
        self._done, self._value = True, value

    def set_exception(self, error: BaseException) -> None:
        self._done, self._error = True, error

    def exception(self) -> BaseException | None:
        return self._error

    def result(self, timeout: float | None = None) -> Any:
        """Never waits (`timeout` is there for the Future's signature): read once settled."""
        if not self._done:
            raise RuntimeError("the unit has not run yet")
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class Unit:
    work: Callable[[LedgerTx], Any]
    # A Future where another thread waits for the outcome (group commit), else an Outcome.
    future: Future[Any] | Outcome = field(default_factory=Future)
    attempts: int = 0
    offered: bool = False  # to its set runner already: it runs alone from now on


def run_units(store: LedgerStore, units: Sequence[Unit]) -> list[Unit]:
    """Runs the units in one transaction and settles the futures of those that are done; returns
    those to run again in a later one (lost a conflict, or beyond the savepoints one may hold).

    Units whose work names a set runner (`set_runner`, `set_item`) are first booked together by
    it, a few statements for all of them; the rest run alone, a savepoint each."""
    outcomes: list[tuple[Unit, bool, Any]] = []
    again: list[Unit] = []
    try:
        with store.transaction() as conn:
            # Every account any unit will lock, locked first in the one global order: two batches
            # on the same hot accounts then queue behind each other instead of deadlocking. A set
            # runner locks all its accounts in that order itself, in one statement: when every
            # unit goes to the same one, locking them twice would only cost a statement (and WAL).
            runners = {None if u.offered else getattr(u.work, "set_runner", None) for u in units}
            if len(runners) != 1 or None in runners:
                try:
                    with conn.transaction():
                        accounts = (a for unit in units for a in getattr(unit.work, "accounts", ()))
                        LedgerTx(conn).lock_rows(accounts)
                except CONFLICTS:
                    return list(units)  # nothing ran: all again, in a later transaction
            alone = _run_sets(conn, units, outcomes)
            again.extend(alone[MAX_SAVEPOINTS:])
            for unit in alone[:MAX_SAVEPOINTS]:
                unit.attempts += 1
                try:
                    with conn.transaction():  # a savepoint: a failure rolls back this unit only
                        outcomes.append((unit, True, unit.work(LedgerTx(conn))))
                except BankError as refusal:
                    outcomes.append((unit, False, refusal))
                except CONFLICTS as conflict:
                    if unit.attempts >= MAX_ATTEMPTS:
                        outcomes.append(
                            (unit, False, Aborted(f"lost {unit.attempts} conflicts in a row; retry"))
                        )
                    else:
                        log.info("event=group_unit_conflict error=%s", type(conflict).__name__)
                        again.append(unit)
    except BankError as err:  # the connection or the COMMIT failed: no unit's outcome is known
        for unit in units:
            if not unit.future.done():
                unit.future.set_exception(err)
        return []
    except Exception as err:  # a bug must not leave callers waiting forever
        for unit in units:
            if not unit.future.done():
                unit.future.set_exception(err)
        raise
    for unit, ok, value in outcomes:  # only now: nothing is acknowledged before its COMMIT
        if ok:
            unit.future.set_result(value)
        else:
            unit.future.set_exception(value)
    return again


def _run_sets(
    conn: psycopg.Connection[Any], units: Sequence[Unit], outcomes: list[tuple[Unit, bool, Any]]
) -> list[Unit]:
    """Offers the units that have a set runner to it (one savepoint per runner) and returns the
    units left to run alone: those without one, those it left, and all of a set that failed."""
    alone: list[Unit] = []
    sets: dict[SetRunner, list[Unit]] = {}
    for unit in units:
        runner = None if unit.offered else getattr(unit.work, "set_runner", None)
        if runner is None:
            alone.append(unit)
        else:
            sets.setdefault(runner, []).append(unit)
    for runner, members in sets.items():
        for unit in members:
            unit.offered = True
        try:
            with conn.transaction():
                answers = runner(LedgerTx(conn), [cast(Any, unit.work).set_item for unit in members])
        except psycopg.OperationalError:
            raise  # the connection is gone: no unit's outcome is known
        except (*CONFLICTS, psycopg.Error) as err:
            # Rolled back to the savepoint: nothing of the set was written; each runs alone.
            log.warning("event=set_booking_fell_back units=%s error=%s", len(members), type(err).__name__)
            alone.extend(members)
            continue
        for unit, answer in zip(members, answers, strict=True):
            if answer is None:
                alone.append(unit)
            else:
                unit.attempts += 1
                outcomes.append((unit, *answer))
    return alone


def run_in_turn(store: LedgerStore, units: Sequence[Unit]) -> list[Unit]:
    """`run_units`, once the shard's other shared transactions are done (see LedgerStore)."""
    if not store.sets_in_turn.acquire(timeout=TURN_WAIT_S):
        error = Unavailable(f"the shard's writes waited {TURN_WAIT_S:.0f} s for their turn; retry")
        for unit in units:
            unit.future.set_exception(error)
        return []
    try:
        return run_units(store, units)
    finally:
        store.sets_in_turn.release()


def run_all(
    store: LedgerStore, works: Sequence[Callable[[LedgerTx], T]], chunk: int = MAX_SET
) -> list[T | BaseException]:
    """A batch request's units: `chunk` per transaction, in order; each outcome its own (a
    value, or the error that unit alone got). Units that lost a conflict run again, boundedly."""
    units = [Unit(work, Outcome()) for work in works]  # settled and read on this thread only
    for start in range(0, len(units), chunk):
        pending = units[start : start + chunk]
        while pending:
            pending = run_in_turn(store, pending)
    outcomes: list[T | BaseException] = []
    for unit in units:
        error = unit.future.exception()
        outcomes.append(error if error is not None else unit.future.result())
    return outcomes


class GroupCommitter:
    def __init__(
        self, store: LedgerStore, max_batch: int = 64, max_wait_s: float = 0.002, workers: int = 1
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._queue: queue.Queue[Unit | None] = queue.Queue()
        self._threads = [
            threading.Thread(target=self._work, name=f"group-commit-{i}", daemon=True) for i in range(workers)
        ]
        self._stopped = threading.Event()
        self.batches = 0
        self.units = 0
        for thread in self._threads:
            thread.start()

    def submit(self, work: Callable[[LedgerTx], T], timeout_s: float = 30.0) -> T:
        if self._stopped.is_set():
            raise Unavailable("the shard is closing; retry")
        unit = Unit(work)
        self._queue.put(unit)
        result: T = unit.future.result(timeout=timeout_s)
        return result

    def stop(self) -> None:
        self._stopped.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        while True:  # whatever was still queued is answered, never dropped silently
            try:
                unit = self._queue.get_nowait()
            except queue.Empty:
                return
            if unit is not None and not unit.future.done():
                unit.future.set_exception(Unavailable("the shard closed before the request ran; retry"))

    def _gather(self, first: Unit) -> list[Unit]:
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                unit = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if unit is None:  # stop: put the sentinel back for this thread's loop
                self._queue.put(None)
                break
            batch.append(unit)
        return batch

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = self._gather(first)
            self.batches += 1
            self.units += len(batch)
            try:
                for unit in run_in_turn(self.store, batch):
                    self._queue.put(unit)
            except Exception:
                log.exception("event=group_commit_failed units=%s", len(batch))


def enable_group_commit(store: LedgerStore, max_batch: int = 64, max_wait_s: float = 0.002) -> None:
    """From now on the store's `run_grouped` gathers concurrent units of work into shared
    transactions (see the module's docstring)."""
    store.attach_committer(GroupCommitter(store, max_batch=max_batch, max_wait_s=max_wait_s))
