"""The ledger's SQL on one shard's PostgreSQL: every statement the bank runs, behind two classes.

`LedgerStore` owns the connection pool and runs units of work as transactions (retrying the
ones that lose a deadlock); `LedgerTx` is one open transaction with the statements a handler
composes. Accounts are always locked in account-number order, then holds, so that concurrent
movements over the same accounts serialize without deadlocking.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from services.common.errors import Aborted, Unavailable
from services.common.model import Account, Hold, Posting, Transfer

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_ATTEMPTS = 6  # per unit of work that loses a deadlock or a serialization conflict
# Lost races, run again from the start. A UniqueViolation is a request id booked concurrently by
# another transaction (see ledger/booking): the next attempt finds that one's answer.
RETRIED = (pg_errors.DeadlockDetected, pg_errors.SerializationFailure, pg_errors.UniqueViolation)

ACCOUNT_COLUMNS = (
    "account_number, customer_id, currency, status, balance, held, overdraft_limit, version, slot, opened_at"
)
TRANSFER_COLUMNS = (
    "transfer_id, request_id, kind, from_account, to_account, amount, currency, status,"
    " reference, failure_reason, hold_id, created_at"
)
HOLD_COLUMNS = (
    "hold_id, account_number, to_account, amount, captured_amount, currency, status, expires_at, transfer_id"
)
# A hold past its expiry reads as EXPIRED even before the sweeper has released it.
HOLD_VIEW = (
    "hold_id, account_number, to_account, amount, captured_amount, currency,"
    " CASE WHEN status = 'ACTIVE' AND expires_at <= now() THEN 'EXPIRED' ELSE status END"
    " AS status, expires_at, transfer_id"
)

SQL_CLAIM_REQUEST = """
INSERT INTO requests (request_id, operation, fingerprint, result)
VALUES (%s, %s, %s, '{}'::jsonb)
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id
"""
SQL_PRIOR_REQUEST = "SELECT operation, fingerprint, result FROM requests WHERE request_id = %s"
SQL_SAVE_RESULT = "UPDATE requests SET result = %s WHERE request_id = %s"
SQL_NEXT_SERIAL = "SELECT nextval('account_serial')"
SQL_INSERT_ACCOUNT = f"""
INSERT INTO accounts (account_number, slot, customer_id, currency, status, overdraft_limit)
VALUES (%s, %s, %s, %s, 'ACTIVE', %s)
RETURNING {ACCOUNT_COLUMNS}
"""
# Lists of account numbers travel as JSON arrays too (see SQL_BOOK).
ANY_OF_JSON = "ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))"
SQL_LOCK_ROWS = f"""
SELECT account_number FROM accounts WHERE account_number = {ANY_OF_JSON} ORDER BY account_number FOR UPDATE
"""
SQL_LOCK_ACCOUNTS = f"""
SELECT {ACCOUNT_COLUMNS} FROM accounts
WHERE account_number = {ANY_OF_JSON}
ORDER BY account_number
FOR UPDATE
"""
SQL_EXPIRE_HOLDS = f"""
UPDATE holds SET status = 'EXPIRED'
WHERE account_number = {ANY_OF_JSON} AND status = 'ACTIVE' AND expires_at <= now()
RETURNING account_number, amount
"""
SQL_RELEASE_HELD = f"""
UPDATE accounts SET held = held - %s, version = version + 1
WHERE account_number = %s
RETURNING {ACCOUNT_COLUMNS}
"""
SQL_UPDATE_MONEY = f"""
UPDATE accounts SET balance = %s, held = %s, version = version + 1
WHERE account_number = %s
RETURNING {ACCOUNT_COLUMNS}
"""
SQL_UPDATE_STATUS = f"""
UPDATE accounts SET status = %s, version = version + 1
WHERE account_number = %s
RETURNING {ACCOUNT_COLUMNS}
"""
SQL_INSERT_TRANSFER = f"""
INSERT INTO transfers (transfer_id, request_id, kind, from_account, to_account, amount,
                       currency, status, reference, failure_reason, hold_id)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
RETURNING {TRANSFER_COLUMNS}
"""
SQL_INSERT_POSTING = """
INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty)
VALUES (%s, %s, %s, %s, %s, %s)
"""
SQL_INSERT_HOLD = f"""
INSERT INTO holds (hold_id, account_number, to_account, amount, currency, status, expires_at)
VALUES (%s, %s, %s, %s, %s, 'ACTIVE', now() + make_interval(secs => %s))
RETURNING {HOLD_COLUMNS}
"""
SQL_FIND_HOLD = f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = %s"
SQL_LOCK_HOLD = f"SELECT {HOLD_COLUMNS} FROM holds WHERE hold_id = %s FOR UPDATE"
SQL_FINISH_HOLD = f"""
UPDATE holds SET status = %s, captured_amount = %s, transfer_id = %s
WHERE hold_id = %s
RETURNING {HOLD_COLUMNS}
"""
SQL_GET_ACCOUNT = """
SELECT account_number, customer_id, currency, status, balance,
       held - COALESCE((SELECT sum(h.amount) FROM holds h
                        WHERE h.account_number = a.account_number
                          AND h.status = 'ACTIVE' AND h.expires_at <= now()), 0)::bigint AS held,
       overdraft_limit, version, slot, opened_at
FROM accounts a WHERE account_number = %s
"""
# The accounts among many numbers that exist (what a cross-shard target check reads).
SQL_GET_ACCOUNTS = SQL_GET_ACCOUNT.replace("account_number = %s", "account_number = ANY(%s)")
# The request ids among many that this shard already answered (their retries need no new check).
SQL_KNOWN_REQUESTS = "SELECT request_id FROM requests WHERE request_id = ANY(%s)"
SQL_GET_TRANSFER = f"SELECT {TRANSFER_COLUMNS} FROM transfers WHERE transfer_id = %s"
SQL_GET_HOLD = f"SELECT {HOLD_VIEW} FROM holds WHERE hold_id = %s"
SQL_LIST_POSTINGS = """
SELECT p.sequence, p.transfer_id, t.kind, p.amount, p.currency, p.balance_after,
       p.counterparty, p.posted_at
FROM postings p JOIN transfers t USING (transfer_id)
WHERE p.account_number = %s AND p.sequence > %s
ORDER BY p.sequence
LIMIT %s
"""
SQL_INSERT_OUTBOX = """
INSERT INTO outbox (transfer_id, target_shard, from_account, to_account, amount, currency, status)
VALUES (%s, %s, %s, %s, %s, %s, 'PENDING')
"""
SQL_DUE_DELIVERIES = """
SELECT transfer_id, target_shard, from_account, to_account, amount, currency, attempts
FROM outbox WHERE status = 'PENDING' AND next_attempt_at <= now()
ORDER BY next_attempt_at LIMIT %s
"""
SQL_LOCK_DELIVERY = """
SELECT transfer_id, target_shard, from_account, to_account, amount, currency, attempts
FROM outbox WHERE transfer_id = %s AND status = 'PENDING' FOR UPDATE
"""
SQL_FINISH_DELIVERY = """
UPDATE outbox SET status = %s, finished_at = now(), last_error = %s, attempts = attempts + 1
WHERE transfer_id = %s
"""
SQL_POSTPONE_DELIVERY = """
UPDATE outbox SET attempts = attempts + 1, last_error = %s,
       next_attempt_at = now() + make_interval(secs => %s)
WHERE transfer_id = %s AND status = 'PENDING'
"""
SQL_KNOWN_TRANSFERS = f"""
SELECT transfer_id, status, failure_reason FROM transfers WHERE transfer_id = {ANY_OF_JSON}
"""
# Delivered credits, many at once: only rows still pending (a refund may have come first).
SQL_FINISH_DELIVERED = f"""
WITH done AS (
    UPDATE outbox SET status = 'DELIVERED', finished_at = now(), last_error = '', attempts = attempts + 1
    WHERE transfer_id = {ANY_OF_JSON} AND status = 'PENDING'
    RETURNING transfer_id
)
UPDATE transfers SET status = 'COMMITTED', failure_reason = ''
WHERE transfer_id = ANY(ARRAY(SELECT transfer_id FROM done))
"""
SQL_SET_TRANSFER_STATUS = f"""
UPDATE transfers SET status = %s, failure_reason = %s WHERE transfer_id = %s
RETURNING {TRANSFER_COLUMNS}
"""
# Set-based booking (`LedgerTx.claim_requests`, `prior_requests`, `book`): a few statements for a
# whole group of transfers instead of about ten per transfer. The rows travel as one JSON array
# per table: psycopg adapts Python lists to PostgreSQL arrays element by element in Python,
# which cost the node half its time on a batch of 1,000; JSON text is cheap (orjson). (jsonb, not json:
# json is parsed again at every `->>`.)
# The transaction's time, and the requests among the given ids already answered (retries).
SQL_PRIOR_REQUESTS = """
SELECT now(), coalesce(jsonb_agg(jsonb_build_array(request_id, operation, fingerprint, result)), '[]')
FROM requests WHERE request_id = ANY(ARRAY(SELECT jsonb_array_elements_text(%s::jsonb)))
"""
# The update names its rows twice: joined with a JSON array alone, the planner expects 100 rows
# from it and scans the whole accounts table (2 ms per statement at 10,000 accounts). A request
# is written once, with its result; a concurrent writer of the same id fails it (UniqueViolation),
# and the retry finds it answered.
SQL_BOOK = """
WITH t AS (
    INSERT INTO transfers (transfer_id, request_id, kind, from_account, to_account, amount,
                           currency, status, reference, failure_reason, hold_id)
    SELECT r->>0, r->>1, r->>2, r->>3, r->>4, (r->>5)::bigint, r->>6, r->>7, r->>8, r->>9, r->>10
    FROM jsonb_array_elements(%(transfers)s::jsonb) AS r
), p AS (
    INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty)
    SELECT r->>0, r->>1, (r->>2)::bigint, r->>3, (r->>4)::bigint, r->>5
    FROM jsonb_array_elements(%(postings)s::jsonb) AS r
), o AS (
    INSERT INTO outbox (transfer_id, target_shard, from_account, to_account, amount, currency, status)
    SELECT r->>0, (r->>1)::int, r->>2, r->>3, (r->>4)::bigint, r->>5, 'PENDING'
    FROM jsonb_array_elements(%(outbox)s::jsonb) AS r
), a AS (
    UPDATE accounts SET balance = (r->>1)::bigint, held = (r->>2)::bigint,
                        version = accounts.version + (r->>3)::bigint
    FROM jsonb_array_elements(%(balances)s::jsonb) AS r
    WHERE accounts.account_number = r->>0
      AND accounts.account_number = ANY(ARRAY(SELECT x->>0 FROM jsonb_array_elements(%(balances)s::jsonb) x))
), q AS (
    INSERT INTO requests (request_id, operation, fingerprint, result)
    SELECT r->>0, r->>1, r->>2, r->3 FROM jsonb_array_elements(%(requests)s::jsonb) AS r
)
SELECT 1
"""
SQL_EXPIRED_HOLD_ACCOUNTS = """
SELECT DISTINCT account_number FROM holds
WHERE status = 'ACTIVE' AND expires_at <= now()
LIMIT %s
"""


def to_json(value: Any) -> str:
    """JSON text of rows and lists for the statements (orjson: the stdlib's encoder was a tenth
    of a node's CPU on batches)."""
    return orjson.dumps(value).decode()


def system_account(purpose: str, currency: str) -> str:
    """The name of a shard's system account, e.g. SYS:CASH:CNY for money entering or leaving."""
    return f"SYS:{purpose}:{currency}"


@dataclass(frozen=True)
class PriorRequest:
    operation: str
    fingerprint: str
    result: dict[str, Any]


@dataclass
class Booking:
    """The rows a group of movements writes, gathered column by column (see `LedgerTx.book`)."""

    transfers: list[Transfer] = field(default_factory=list)
    postings: list[tuple[str, str, int, str, int | None, str]] = field(default_factory=list)
    outbox: list[tuple[str, int, str, str, int, str]] = field(default_factory=list)
    balances: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # number -> balance, held, bump
    # The answered requests: id, operation, fingerprint, result.
    requests: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)

    def post(self, transfer: Transfer, lines: list[tuple[str, int, int | None, str]]) -> None:
        """A transfer and its lines (account, signed amount, balance after, counterparty)."""
        assert sum(amount for _, amount, _, _ in lines) == 0, lines
        self.transfers.append(transfer)
        self.postings.extend(
            (transfer.transfer_id, account, amount, transfer.currency, after, other)
            for account, amount, after, other in lines
        )

    def parameters(self) -> dict[str, str]:
        """The statement's parameters: one JSON array of rows per table."""
        transfers = [
            (t.transfer_id, t.request_id, t.kind, t.from_account, t.to_account, t.amount, t.currency,
             t.status, t.reference, t.failure_reason, t.hold_id)
            for t in self.transfers
        ]  # fmt: skip
        balances = [(n, *figures) for n, figures in sorted(self.balances.items())]
        tables = {
            "transfers": transfers, "postings": self.postings, "outbox": self.outbox,
            "balances": balances, "requests": self.requests,
        }  # fmt: skip
        return {name: to_json(rows) for name, rows in tables.items()}


class LedgerTx:
    """One open transaction on the shard's primary."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def claim_request(self, request_id: str, operation: str, fingerprint: str) -> PriorRequest | None:
        """Reserves a request id for this transaction, or returns what it already holds.

        A concurrent claim of the same id waits here until the first transaction ends.
        """
        if self.conn.execute(SQL_CLAIM_REQUEST, (request_id, operation, fingerprint)).fetchone():
            return None
        row = self.conn.execute(SQL_PRIOR_REQUEST, (request_id,)).fetchone()
        assert row is not None, f"request {request_id} conflicted but is not there"
        return PriorRequest(operation=row[0], fingerprint=row[1], result=row[2])

    def prior_requests(self, request_ids: list[str]) -> tuple[datetime, dict[str, PriorRequest]]:
        """The transaction's time, and what the already-answered ids among `request_ids` hold."""
        row = self.conn.execute(SQL_PRIOR_REQUESTS, (to_json(request_ids),)).fetchone()
        assert row is not None
        return row[0], {r[0]: PriorRequest(operation=r[1], fingerprint=r[2], result=r[3]) for r in row[1]}

    def book(self, booking: Booking) -> None:
        """Writes a group's transfers, postings, outbox rows, new balances and answered requests
        in one statement."""
        self.conn.execute(SQL_BOOK, booking.parameters())

    def save_request_result(self, request_id: str, result: dict[str, Any]) -> None:
        self.conn.execute(SQL_SAVE_RESULT, (Jsonb(result), request_id))

    def next_account_serial(self) -> int:
        row = self.conn.execute(SQL_NEXT_SERIAL).fetchone()
        assert row is not None
        return int(row[0])

    def insert_account(
        self, number: str, slot: int, customer_id: str, currency: str, overdraft_limit: int
    ) -> Account:
        cur = self.conn.cursor(row_factory=class_row(Account))
        account = cur.execute(
            SQL_INSERT_ACCOUNT, (number, slot, customer_id, currency, overdraft_limit)
        ).fetchone()
        assert account is not None
        return account

    def lock_rows(self, numbers: Iterable[str]) -> None:
        """Locks accounts in the one order every transaction uses (a batch, before its units)."""
        self.conn.execute(SQL_LOCK_ROWS, (to_json(sorted(set(numbers))),))

    def lock_accounts(self, numbers: Iterable[str]) -> dict[str, Account]:
        """Locks the named accounts in a fixed order and releases their expired holds."""
        wanted = sorted(set(numbers))
        cur = self.conn.cursor(row_factory=class_row(Account))
        locked = {a.account_number: a for a in cur.execute(SQL_LOCK_ACCOUNTS, (to_json(wanted),))}
        if locked:
            locked.update(self._release_expired_holds(list(locked)))
        return locked

    def _release_expired_holds(self, numbers: list[str]) -> dict[str, Account]:
        released: dict[str, int] = {}
        for number, amount in self.conn.execute(SQL_EXPIRE_HOLDS, (to_json(numbers),)):
            released[number] = released.get(number, 0) + amount
        cur = self.conn.cursor(row_factory=class_row(Account))
        updated: dict[str, Account] = {}
        for number, amount in released.items():
            account = cur.execute(SQL_RELEASE_HELD, (amount, number)).fetchone()
            assert account is not None
            updated[number] = account
        return updated

    def update_money(self, number: str, balance: int, held: int) -> Account:
        cur = self.conn.cursor(row_factory=class_row(Account))
        account = cur.execute(SQL_UPDATE_MONEY, (balance, held, number)).fetchone()
        assert account is not None
        return account

    def update_status(self, number: str, status: str) -> Account:
        cur = self.conn.cursor(row_factory=class_row(Account))
        account = cur.execute(SQL_UPDATE_STATUS, (status, number)).fetchone()
        assert account is not None
        return account

    def insert_transfer(self, transfer: Transfer) -> Transfer:
        """Stores a transfer; its creation time is the database's."""
        cur = self.conn.cursor(row_factory=class_row(Transfer))
        stored = cur.execute(
            SQL_INSERT_TRANSFER,
            (
                transfer.transfer_id,
                transfer.request_id,
                transfer.kind,
                transfer.from_account,
                transfer.to_account,
                transfer.amount,
                transfer.currency,
                transfer.status,
                transfer.reference,
                transfer.failure_reason,
                transfer.hold_id,
            ),
        ).fetchone()
        assert stored is not None
        return stored

    @property
    def outbox(self) -> DeliveryTx:
        return DeliveryTx(self.conn)

    def known_transfers(self, transfer_ids: list[str]) -> dict[str, tuple[str, str]]:
        """The status and failure reason of those of `transfer_ids` this shard has booked."""
        rows = self.conn.execute(SQL_KNOWN_TRANSFERS, (to_json(transfer_ids),))
        return {str(t): (str(status), str(reason)) for t, status, reason in rows}

    def set_transfer_status(self, transfer_id: str, status: str, reason: str = "") -> Transfer:
        cur = self.conn.cursor(row_factory=class_row(Transfer))
        transfer = cur.execute(SQL_SET_TRANSFER_STATUS, (status, reason[:500], transfer_id)).fetchone()
        assert transfer is not None
        return transfer

    def insert_postings(self, transfer: Transfer, lines: list[tuple[str, int, int | None, str]]) -> None:
        """Books the lines (account, signed amount, balance after, counterparty) of a transfer.

        The lines of one transfer must sum to zero: that is what double entry means.
        """
        assert sum(amount for _, amount, _, _ in lines) == 0, lines
        with self.conn.cursor() as cur:
            cur.executemany(
                SQL_INSERT_POSTING,
                [
                    (transfer.transfer_id, account, amount, transfer.currency, after, other)
                    for account, amount, after, other in lines
                ],
            )

    def insert_hold(
        self, hold_id: str, account: str, to_account: str, amount: int, currency: str, timeout_s: int
    ) -> Hold:
        cur = self.conn.cursor(row_factory=class_row(Hold))
        hold = cur.execute(
            SQL_INSERT_HOLD, (hold_id, account, to_account, amount, currency, timeout_s)
        ).fetchone()
        assert hold is not None
        return hold

    def find_hold(self, hold_id: str) -> Hold | None:
        """Reads a hold without locking it (to learn which accounts to lock first)."""
        cur = self.conn.cursor(row_factory=class_row(Hold))
        return cur.execute(SQL_FIND_HOLD, (hold_id,)).fetchone()

    def lock_hold(self, hold_id: str) -> Hold | None:
        cur = self.conn.cursor(row_factory=class_row(Hold))
        return cur.execute(SQL_LOCK_HOLD, (hold_id,)).fetchone()

    def finish_hold(self, hold_id: str, status: str, captured: int, transfer_id: str) -> Hold:
        cur = self.conn.cursor(row_factory=class_row(Hold))
        hold = cur.execute(SQL_FINISH_HOLD, (status, captured, transfer_id, hold_id)).fetchone()
        assert hold is not None
        return hold


@dataclass(frozen=True)
class Delivery:
    """A credit owed to another shard, as the outbox holds it."""

    transfer_id: str
    target_shard: int
    from_account: str
    to_account: str
    amount: int
    currency: str
    attempts: int


class DeliveryTx:
    """The outbox statements, on the transaction of a `LedgerTx`."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def insert(self, transfer: Transfer, target_shard: int) -> None:
        self.conn.execute(
            SQL_INSERT_OUTBOX,
            (
                transfer.transfer_id,
                target_shard,
                transfer.from_account,
                transfer.to_account,
                transfer.amount,
                transfer.currency,
            ),
        )

    def lock(self, transfer_id: str) -> Delivery | None:
        cur = self.conn.cursor(row_factory=class_row(Delivery))
        return cur.execute(SQL_LOCK_DELIVERY, (transfer_id,)).fetchone()

    def finish_delivered(self, transfer_ids: list[str]) -> None:
        self.conn.execute(SQL_FINISH_DELIVERED, (to_json(transfer_ids),))

    def finish(self, transfer_id: str, status: str, error: str = "") -> None:
        self.conn.execute(SQL_FINISH_DELIVERY, (status, error, transfer_id))

    def postpone(self, transfer_id: str, error: str, delay_s: float) -> None:
        self.conn.execute(SQL_POSTPONE_DELIVERY, (error[:500], delay_s, transfer_id))


# What the node's metrics ask the primary at each scrape: the outbox's depth and age, and
# how far behind each standby is (bytes of WAL not yet replayed, and the time that took).
SQL_OUTBOX_FIGURES = """
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM outbox WHERE status = 'PENDING'
"""
SQL_REPLICATION_LAG = """
SELECT application_name, coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::float8,
       coalesce(extract(epoch FROM replay_lag), 0)::float8
FROM pg_stat_replication
"""


@dataclass(frozen=True)
class ShardFigures:
    outbox_pending: int
    outbox_oldest_age_s: float
    lag_by_standby: dict[str, tuple[float, float]]  # application name -> (bytes, seconds)


class LedgerReader:
    """Reads that need no transaction of their own."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    def get_account(self, number: str) -> Account | None:
        cur = self.conn.cursor(row_factory=class_row(Account))
        return cur.execute(SQL_GET_ACCOUNT, (number,)).fetchone()

    def get_accounts(self, numbers: list[str]) -> dict[str, Account]:
        cur = self.conn.cursor(row_factory=class_row(Account))
        return {a.account_number: a for a in cur.execute(SQL_GET_ACCOUNTS, (numbers,)).fetchall()}

    def known_requests(self, request_ids: list[str]) -> set[str]:
        return {row[0] for row in self.conn.execute(SQL_KNOWN_REQUESTS, (request_ids,))}

    def get_transfer(self, transfer_id: str) -> Transfer | None:
        cur = self.conn.cursor(row_factory=class_row(Transfer))
        return cur.execute(SQL_GET_TRANSFER, (transfer_id,)).fetchone()

    def get_hold(self, hold_id: str) -> Hold | None:
        cur = self.conn.cursor(row_factory=class_row(Hold))
        return cur.execute(SQL_GET_HOLD, (hold_id,)).fetchone()

    def list_postings(self, number: str, after_sequence: int, limit: int) -> list[Posting]:
        cur = self.conn.cursor(row_factory=class_row(Posting))
        return cur.execute(SQL_LIST_POSTINGS, (number, after_sequence, limit)).fetchall()

    def due_deliveries(self, limit: int) -> list[Delivery]:
        cur = self.conn.cursor(row_factory=class_row(Delivery))
        return cur.execute(SQL_DUE_DELIVERIES, (limit,)).fetchall()

    def figures(self) -> ShardFigures:
        row = self.conn.execute(SQL_OUTBOX_FIGURES).fetchone()
        pending, age = (int(row[0]), float(row[1])) if row else (0, 0.0)
        lag = {str(n): (float(b), float(s)) for n, b, s in self.conn.execute(SQL_REPLICATION_LAG)}
        return ShardFigures(pending, age, lag)

    def accounts_with_expired_holds(self, limit: int) -> list[str]:
        return [row[0] for row in self.conn.execute(SQL_EXPIRED_HOLD_ACCOUNTS, (limit,))]


class LedgerStore:
    """The connection pool of one shard's primary and the way units of work run on it."""

    def __init__(self, conninfo: str, *, min_size: int = 2, max_size: int = 16) -> None:
        self.pool = ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=5.0,
            open=False,
            name="ledger",
            kwargs={"connect_timeout": 3},
        )
        self._committer: Any = None  # a GroupCommitter once enable_group_commit ran
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

    def enable_group_commit(self, max_batch: int = 64, max_wait_s: float = 0.002, workers: int = 1) -> None:
        """From now on `run_grouped` gathers concurrent units of work into shared transactions."""
        from services.storage.group_commit import GroupCommitter  # it builds on this module

        self._committer = GroupCommitter(self, max_batch=max_batch, max_wait_s=max_wait_s, workers=workers)

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
