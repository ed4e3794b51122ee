"""A shard's PostgreSQL as the ledger uses it: the connection pool, and units of work run as
transactions (again from the start when they lose a deadlock), alone or shared with concurrent
ones by a committer (see group_commit). The statements are in `sql`, a transaction's
operations in `ledger_tx`, the reads in `ledger_reader`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from services.common.errors import Aborted, Unavailable
from services.storage.ledger_reader import LedgerReader
from services.storage.ledger_tx import LedgerTx

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPTS = 6  # per unit of work that loses a deadlock or a serialization conflict
# Lost races, run again from the start. A UniqueViolation is a request id booked concurrently by
# another transaction (see ledger/booking): the next attempt finds that one's answer.
RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.UniqueViolation)


class Committer(Protocol):
    """What runs the units of work of `run_grouped` (group_commit.GroupCommitter)."""

    def submit(self, work: Callable[[LedgerTx], T]) -> T: ...

    def stop(self) -> None: ...


class LedgerStore:
    """The connection pool of one shard's primary and the way units of work run on it."""

    def __init__(self, conninfo: str, *, min_size: int = 2, max_size: int = 16) -> None:
        self.conninfo = conninfo
        self.pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=5.0,
            open=False,
            name="ledger",
            kwargs={"connect_timeout": 3},
        )
        self._committer: Committer | None = None  # see attach_committer
        # Shared transactions (group commits, batch requests) run one at a time per shard: two
        # at once over the same accounts wait on each other's row locks, and that waiting cost
        # PostgreSQL more than twice the CPU of the same sets booked one after the other
        # (measured: 4 concurrent batches of 1,000, 211 ms of backend CPU each, 96 ms in turn).
        self.sets_in_turn = threading.Lock()

    def open(self, wait_s: float = 10.0) -> None:
        self.pool.open(wait=True, timeout=wait_s)

    def close(self, timeout_s: float = 5.0) -> None:
        if self._committer is not None:
            self._committer.stop()
            self._committer = None
        self.pool.close(timeout=timeout_s)

    def attach_committer(self, committer: Committer) -> None:
        """From now on `run_grouped` hands units of work to `committer` (group_commit's), which
        gathers concurrent ones into shared transactions."""
        self._committer = committer

    def run_grouped(self, work: Callable[[LedgerTx], T]) -> T:
        """Like `run`, but sharing its transaction (and its COMMIT) with concurrent units of
        work when group commit is on; the outcome of each unit is its own."""
        if self._committer is None:
            return self.run(work)
        result: T = self._committer.submit(work)
        return result

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside one transaction, committed on leaving (outages as `Unavailable`)."""
        with self._connection() as conn, conn.transaction():
            yield conn

    def run(self, work: Callable[[LedgerTx], T]) -> T:
        """Runs `work` in one transaction, again from the start if it loses a deadlock.

        Domain errors raised by `work` roll the transaction back: a refused request writes
        nothing. Database outages become `Unavailable`, lost conflicts `Aborted`.
        """
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self._connection() as conn, conn.transaction():
                    return work(LedgerTx(conn))
            except RETRIED as exc:
                log.warning("event=tx_conflict attempt=%s error=%s", attempt, type(exc).__name__)
                time.sleep(random.uniform(0.001, 0.005) * attempt)
        raise Aborted(f"the transaction lost {MAX_ATTEMPTS} conflicts in a row; retry it")

    def read(self, work: Callable[[LedgerReader], T]) -> T:
        with self._connection() as conn:
            return work(LedgerReader(conn))

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except pg_errors.TransactionRollback:
            raise  # a lost conflict: `run` tries the unit of work again
        except PoolTimeout:
            raise Unavailable("the shard's database is not answering; retry") from None
        except psycopg.OperationalError as exc:
            state = exc.sqlstate or "no connection"
            raise Unavailable(f"the shard's database is unavailable ({state})") from None
