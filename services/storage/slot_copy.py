"""Copying a range of slots' rows from one shard's primary to another's, for a slot move.

Everything of a slot goes: its accounts, their postings (the whole statement, in its order),
the transfers those postings belong to or that the slot's accounts debited, its holds, the
answered requests routed by it, its outbox rows, and its serial counter. Rows are streamed with
binary COPY into a temporary table on the target, then merged: rows that change (accounts,
transfers, holds, outbox, counters) are upserted where they differ; postings and requests only
ever arrive, and one already there (same transfer, account and amount) is not copied twice.
A catch-up pass sends only the rows written since the last pass's snapshot (its `Mark`): by
the row's xmin, so a transaction that began before the snapshot and committed after it is
not missed.

A transfer id may have a row on both sides (a cross-shard transfer's debit and its credit);
when they meet, a final status (the credit booked, or refused) wins over PENDING.

The migration lines that keep each shard's transfers summing to zero are in migration_lines.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

ACCOUNTS = (
    "account_number, slot, customer_id, currency, status, balance, held, overdraft_limit, version, opened_at"
)
TRANSFERS = (
    "transfer_id, request_id, kind, from_account, to_account, amount, currency, status, reference,"
    " failure_reason, hold_id, created_at"
)
POSTINGS = (
    "transfer_id, account_number, amount, currency, balance_after, counterparty, posted_at, business_date"
)
HOLDS = (
    "hold_id, account_number, to_account, amount, captured_amount, currency, status, expires_at, transfer_id,"
    " created_at"
)
REQUESTS = "request_id, operation, fingerprint, result, created_at"
OUTBOX = (
    "transfer_id, target_shard, from_account, to_account, amount, currency, status, attempts,"
    " next_attempt_at, last_error, created_at, finished_at"
)


@dataclass(frozen=True)
class SlotRange:
    """Slots `first`..`last`, and the bounds of their keys (account numbers, ids start with the slot)."""

    first: int
    last: int

    @property
    def params(self) -> dict[str, Any]:
        low, high = f"{self.first:04d}", f"{self.last + 1:04d}"
        return {
            "first": self.first, "last": self.last, "acc_low": low, "acc_high": high,
            "t_low": f"T{low}", "t_high": f"T{high}", "h_low": f"H{low}", "h_high": f"H{high}",
        }  # fmt: skip


IN_ACCOUNTS = "account_number >= %(acc_low)s AND account_number < %(acc_high)s"
# A row written since the last pass's snapshot: by a transaction not older than the oldest one
# that snapshot did not see (xid ages compared: both are read against the same current xid).
# Some rows the snapshot saw may come again; merges take them twice without harm.
CHANGED = "(%(since_xid)s IS NULL OR age(xmin) <= age(%(since_xid)s::text::xid))"

# What each table sends: the query on the source, and how the target merges it (from its
# temporary table, incoming_<table>).
SOURCES = {
    "accounts": f"SELECT {ACCOUNTS} FROM accounts WHERE {IN_ACCOUNTS} AND {CHANGED}",
    "postings": f"SELECT {POSTINGS} FROM postings WHERE {IN_ACCOUNTS} AND {CHANGED} ORDER BY sequence",
    "transfers": f"""
SELECT {TRANSFERS} FROM transfers
WHERE transfer_id >= %(t_low)s AND transfer_id < %(t_high)s AND {CHANGED}
UNION
SELECT {TRANSFERS} FROM transfers WHERE transfer_id = ANY(%(posted)s::text[])""",
    "holds": f"SELECT {HOLDS} FROM holds WHERE hold_id >= %(h_low)s AND hold_id < %(h_high)s AND {CHANGED}",
    "requests": f"""
SELECT {REQUESTS} FROM requests
WHERE slot BETWEEN %(first)s AND %(last)s AND {CHANGED}""",
    "outbox": f"""
SELECT {OUTBOX} FROM outbox
WHERE transfer_id >= %(t_low)s AND transfer_id < %(t_high)s AND {CHANGED}""",
    "slot_serials": "SELECT slot, last_serial FROM slot_serials WHERE slot BETWEEN %(first)s AND %(last)s",
}
MERGES = {
    "accounts": f"""
INSERT INTO accounts ({ACCOUNTS}) SELECT {ACCOUNTS} FROM incoming_accounts
ON CONFLICT (account_number) DO UPDATE SET status = EXCLUDED.status, balance = EXCLUDED.balance,
    held = EXCLUDED.held, overdraft_limit = EXCLUDED.overdraft_limit, version = EXCLUDED.version
WHERE (accounts.status, accounts.balance, accounts.held, accounts.overdraft_limit, accounts.version)
    IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.balance, EXCLUDED.held, EXCLUDED.overdraft_limit,
                      EXCLUDED.version)""",
    "postings": f"""
INSERT INTO postings ({POSTINGS}) SELECT {POSTINGS} FROM incoming_postings i
WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.transfer_id = i.transfer_id
                  AND p.account_number = i.account_number AND p.amount = i.amount)
ORDER BY i.ord""",
    "transfers": f"""
INSERT INTO transfers ({TRANSFERS}) SELECT {TRANSFERS} FROM incoming_transfers
ON CONFLICT (transfer_id) DO UPDATE SET status = EXCLUDED.status, failure_reason = EXCLUDED.failure_reason
WHERE transfers.status = 'PENDING' AND EXCLUDED.status <> 'PENDING'""",
    "holds": f"""
INSERT INTO holds ({HOLDS}) SELECT {HOLDS} FROM incoming_holds
ON CONFLICT (hold_id) DO UPDATE SET status = EXCLUDED.status, captured_amount = EXCLUDED.captured_amount,
    transfer_id = EXCLUDED.transfer_id
WHERE (holds.status, holds.captured_amount, holds.transfer_id)
    IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.captured_amount, EXCLUDED.transfer_id)""",
    "requests": f"""
INSERT INTO requests ({REQUESTS}) SELECT {REQUESTS} FROM incoming_requests ON CONFLICT DO NOTHING""",
    "outbox": f"""
INSERT INTO outbox ({OUTBOX}) SELECT {OUTBOX} FROM incoming_outbox
ON CONFLICT (transfer_id) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts,
    next_attempt_at = EXCLUDED.next_attempt_at, last_error = EXCLUDED.last_error,
    finished_at = EXCLUDED.finished_at
WHERE (outbox.status, outbox.attempts, outbox.next_attempt_at, outbox.last_error, outbox.finished_at)
    IS DISTINCT FROM (EXCLUDED.status, EXCLUDED.attempts, EXCLUDED.next_attempt_at, EXCLUDED.last_error,
                      EXCLUDED.finished_at)""",
    "slot_serials": """
INSERT INTO slot_serials (slot, last_serial) SELECT slot, last_serial FROM incoming_slot_serials
ON CONFLICT (slot) DO UPDATE SET last_serial = EXCLUDED.last_serial
WHERE EXCLUDED.last_serial > slot_serials.last_serial""",
}
# Accounts first (holds refer to them), postings before their transfers' merge is harmless (no key).
ORDER = ("accounts", "transfers", "postings", "holds", "requests", "outbox", "slot_serials")
COLUMNS = {
    "accounts": ACCOUNTS, "postings": POSTINGS, "transfers": TRANSFERS, "holds": HOLDS,
    "requests": REQUESTS, "outbox": OUTBOX, "slot_serials": "slot, last_serial",
}  # fmt: skip

SQL_HIGH_WATER = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint % 4294967296"
# What both sides must agree on, per slot: accounts, their balances, and every posting. The
# digests are sums of 64-bit row hashes: no sort, and a row missing, added or changed on one
# side changes its slot's sum (a statement's order is kept by the copy, see `_copy_table`).
SQL_DIGEST = f"""
SELECT slot, count(*), coalesce(sum(balance), 0)::bigint,
       sum(hashtextextended(account_number || ':' || balance || ':' || status || ':' || held, 0)::numeric)
FROM accounts WHERE {IN_ACCOUNTS} GROUP BY slot
"""
SQL_POSTING_DIGEST = f"""
SELECT substr(account_number, 1, 4)::integer, count(*),
       sum(hashtextextended(transfer_id || ':' || account_number || ':' || amount || ':'
                            || coalesce(balance_after::text, '-'), 0)::numeric)
FROM postings WHERE {IN_ACCOUNTS} GROUP BY 1
"""
# Postings are never changed, only added: once a pass's copy matched in full, a later pass
# that copied what was added since needs only their number to match.
SQL_POSTING_COUNT = f"""
SELECT substr(account_number, 1, 4)::integer, count(*), NULL FROM postings WHERE {IN_ACCOUNTS} GROUP BY 1
"""
DELETES = {
    "postings": f"DELETE FROM postings WHERE {IN_ACCOUNTS}",
    "holds": "DELETE FROM holds WHERE hold_id >= %(h_low)s AND hold_id < %(h_high)s",
    "accounts": f"DELETE FROM accounts WHERE {IN_ACCOUNTS}",
    "requests": "DELETE FROM requests WHERE slot BETWEEN %(first)s AND %(last)s",
    "outbox": "DELETE FROM outbox WHERE transfer_id >= %(t_low)s AND transfer_id < %(t_high)s",
    "slot_serials": "DELETE FROM slot_serials WHERE slot BETWEEN %(first)s AND %(last)s",
}


@dataclass(frozen=True)
class Mark:
    """How far a copy pass went: the oldest transaction its snapshot did not see, as a 32-bit
    xid (rows it wrote, or later ones, are copied again)."""

    xmin: int


def high_water(source: psycopg.Connection[Any]) -> Mark:
    row = source.execute(SQL_HIGH_WATER).fetchone()
    assert row is not None
    return Mark(int(row[0]))


def copy_pass(
    source: psycopg.Connection[Any], target: psycopg.Connection[Any], slots: SlotRange, since: Mark | None
) -> int:
    """Streams the slots' rows changed since `since` (all of them without) from `source` to
    `target` and merges them, in the callers' transactions; returns the rows sent. Few round
    trips: the temporary tables made in one (if not made already), a COPY per table, the
    merges in one. The tables (incoming_<table>) keep the rows sent until the transaction ends:
    the postings sent can be read there."""
    params: dict[str, Any] = {**slots.params, "since_xid": since.xmin if since else None}
    prepare_incoming(target)
    sent = {"postings": _stream(source, target, "postings", params)}
    # The transfers of the postings sent go along (a transfer of another slot may credit one).
    params["posted"] = [r[0] for r in target.execute("SELECT DISTINCT transfer_id FROM incoming_postings")]
    sent.update({table: _stream(source, target, table, params) for table in ORDER if table != "postings"})
    merges = [MERGES[table] for table in ORDER if sent[table]]
    if merges:
        target.execute(";\n".join(merges).encode())
    return sum(sent.values())


def prepare_incoming(target: psycopg.Connection[Any]) -> None:
    """The temporary tables a copy pass fills on the target, made once per session (emptied at
    every commit): a session made ready before a freeze writes no catalog rows in it."""
    target.execute(";\n".join(_incoming(table) for table in ORDER).encode())


def _incoming(table: str) -> str:
    order = ", 0::bigint AS ord" if table == "postings" else ""
    columns = f"{COLUMNS[table]}{order}"
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS incoming_{table} ON COMMIT DELETE ROWS"
        f" AS SELECT {columns} FROM {table} LIMIT 0"
    )


def _stream(
    source: psycopg.Connection[Any], target: psycopg.Connection[Any], table: str, params: dict[str, Any]
) -> int:
    """One table's rows from the source's query into its temporary table on the target."""
    query = SOURCES[table]
    if table == "postings":  # the source's order travels along, so that statements keep it
        query = query.replace(
            f"SELECT {POSTINGS}", f"SELECT {POSTINGS}, row_number() OVER (ORDER BY sequence)"
        )
    statement = psycopg.ClientCursor(source).mogrify(query, params)
    with source.cursor() as out_cur, target.cursor() as in_cur:
        with (
            out_cur.copy(f"COPY ({statement}) TO STDOUT (FORMAT BINARY)") as out,
            in_cur.copy(f"COPY incoming_{table} FROM STDIN (FORMAT BINARY)") as into,
        ):
            for block in out:
                into.write(block)
        return max(in_cur.rowcount, 0)


def digest(conn: psycopg.Connection[Any], slots: SlotRange, full: bool = True) -> dict[int, tuple[Any, ...]]:
    """Per slot: accounts, sum of balances, a digest of the accounts, postings, a digest of them
    (not `full`: their number only, for a pass after one whose full digests matched)."""
    params = slots.params
    accounts = {int(r[0]): r[1:] for r in conn.execute(SQL_DIGEST, params)}
    postings = {
        int(r[0]): r[1:] for r in conn.execute(SQL_POSTING_DIGEST if full else SQL_POSTING_COUNT, params)
    }
    return {
        s: (*accounts.get(s, (0, 0, None)), *postings.get(s, (0, None)))
        for s in sorted({*accounts, *postings})
    }


def delete_rows(conn: psycopg.Connection[Any], slots: SlotRange) -> int:
    """Removes the slots' rows (from the source after the move, or a rolled-back copy from the
    target); transfers are kept: other accounts' statements may still refer to them."""
    deleted = 0
    for statement in DELETES.values():
        deleted += conn.execute(statement.encode(), slots.params).rowcount
    return deleted


SQL_SYSTEM_SUMS = """
SELECT account_number, currency, sum(amount)::bigint FROM postings
WHERE account_number LIKE 'SYS:CASH:%%' OR account_number LIKE 'SYS:TRANSIT:%%'
GROUP BY account_number, currency HAVING sum(amount) <> 0 ORDER BY account_number
"""
SQL_CARRY_TRANSFER = """
INSERT INTO transfers (transfer_id, request_id, kind, amount, currency, status, reference)
VALUES (%s, %s, 'TRANSFER', %s, %s, 'COMMITTED', %s)
"""
SQL_CARRY_POSTINGS = """
INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty,
                      business_date)
VALUES (%s, %s, %s, %s, NULL, %s, shard_business_date()),
       (%s, 'SYS:MIGRATION:' || %s, %s, %s, NULL, %s, shard_business_date())
"""


def carry_system_accounts(
    source: psycopg.Connection[Any],
    target: psycopg.Connection[Any],
    note: str,
    new_id: Callable[[], str],
) -> int:
    """Carries a retiring shard's cash and transit balances to another shard, each as one
    transfer booked on both (the sum leaves the source's system account and reaches the
    target's, through the migration accounts), so that the retired shard's books hold nothing
    and the bank's still add up without it. In the callers' transactions; returns the lines."""
    sums = [(str(a), str(c), int(t)) for a, c, t in source.execute(SQL_SYSTEM_SUMS)]
    for account, currency, total in sums:
        tid = new_id()
        for conn, sign in ((source, -1), (target, 1)):
            conn.execute(SQL_CARRY_TRANSFER, (tid, f"carry:{tid}", abs(total), currency, note))
            conn.execute(
                SQL_CARRY_POSTINGS,
                (tid, account, sign * total, currency, note, tid, currency, -sign * total, currency, note),
            )
    return len(sums)
