"""Copying a range of slots' rows from one shard's primary to another's, for a slot move.

Everything of a slot goes: its accounts, their postings (the whole statement, in its order),
the transfers those postings belong to or that the slot's accounts debited, its holds, the
answered requests routed by it, its outbox rows, and its serial counter. Rows are streamed with
binary COPY into a temporary table on the target, then merged: rows that change (accounts,
transfers, holds, outbox, counters) are upserted, so a catch-up may copy them again; postings
and requests only ever arrive, and one already there (same transfer, account and amount) is
not copied twice. A copy pass over postings starts a margin below the last high-water mark, so
a posting whose sequence was taken before the mark but committed after it is not missed.

A transfer id may have a row on both sides (a cross-shard transfer's debit and its credit);
when they meet, a final status (the credit booked, or refused) wins over PENDING.

A moved slot's postings leave their transfers' other postings behind (a deposit's cash line, a
transfer's other account). So that each shard's transfers still sum to zero, the move books the
difference on SYS:MIGRATION:<currency> under the same transfer id: the moved sum on the source,
its opposite on the target (`migration_lines`). Across the bank the migration accounts sum to
zero, and an auditor can follow every moved line to its transfer on both shards.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

# Postings may take their sequence before a high-water mark is read and commit after it.
SEQUENCE_MARGIN = 10_000

ACCOUNTS = (
    "account_number, slot, customer_id, currency, status, balance, held, overdraft_limit, version, opened_at"
)
TRANSFERS = (
    "transfer_id, request_id, kind, from_account, to_account, amount, currency, status, reference,"
    " failure_reason, hold_id, created_at"
)
POSTINGS = "transfer_id, account_number, amount, currency, balance_after, counterparty, posted_at"
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
MOVING_POSTINGS = f"{IN_ACCOUNTS} AND sequence > %(since)s"

# What each table sends: the query on the source, and how the target merges it.
SOURCES = {
    "accounts": f"SELECT {ACCOUNTS} FROM accounts WHERE {IN_ACCOUNTS}",
    "postings": f"SELECT {POSTINGS} FROM postings WHERE {MOVING_POSTINGS} ORDER BY sequence",
    "transfers": f"""
SELECT {TRANSFERS} FROM transfers
WHERE (transfer_id >= %(t_low)s AND transfer_id < %(t_high)s
       AND (created_at >= %(since_time)s OR status = 'PENDING'))
   OR transfer_id IN (SELECT transfer_id FROM postings WHERE {MOVING_POSTINGS})""",
    "holds": f"SELECT {HOLDS} FROM holds WHERE hold_id >= %(h_low)s AND hold_id < %(h_high)s",
    "requests": f"""
SELECT {REQUESTS} FROM requests
WHERE slot BETWEEN %(first)s AND %(last)s AND created_at >= %(since_time)s""",
    "outbox": f"""
SELECT {OUTBOX} FROM outbox
WHERE transfer_id >= %(t_low)s AND transfer_id < %(t_high)s
  AND (created_at >= %(since_time)s OR status = 'PENDING')""",
    "slot_serials": "SELECT slot, last_serial FROM slot_serials WHERE slot BETWEEN %(first)s AND %(last)s",
}
MERGES = {
    "accounts": f"""
INSERT INTO accounts ({ACCOUNTS}) SELECT {ACCOUNTS} FROM incoming
ON CONFLICT (account_number) DO UPDATE SET status = EXCLUDED.status, balance = EXCLUDED.balance,
    held = EXCLUDED.held, overdraft_limit = EXCLUDED.overdraft_limit, version = EXCLUDED.version""",
    "postings": f"""
INSERT INTO postings ({POSTINGS}) SELECT {POSTINGS} FROM incoming i
WHERE NOT EXISTS (SELECT 1 FROM postings p WHERE p.transfer_id = i.transfer_id
                  AND p.account_number = i.account_number AND p.amount = i.amount)
ORDER BY i.ord""",
    "transfers": f"""
INSERT INTO transfers ({TRANSFERS}) SELECT {TRANSFERS} FROM incoming
ON CONFLICT (transfer_id) DO UPDATE
SET status = CASE WHEN transfers.status = 'PENDING' THEN EXCLUDED.status ELSE transfers.status END,
    failure_reason = CASE WHEN transfers.status = 'PENDING' THEN EXCLUDED.failure_reason
                          ELSE transfers.failure_reason END""",
    "holds": f"""
INSERT INTO holds ({HOLDS}) SELECT {HOLDS} FROM incoming
ON CONFLICT (hold_id) DO UPDATE SET status = EXCLUDED.status, captured_amount = EXCLUDED.captured_amount,
    transfer_id = EXCLUDED.transfer_id""",
    "requests": f"INSERT INTO requests ({REQUESTS}) SELECT {REQUESTS} FROM incoming ON CONFLICT DO NOTHING",
    "outbox": f"""
INSERT INTO outbox ({OUTBOX}) SELECT {OUTBOX} FROM incoming
ON CONFLICT (transfer_id) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts,
    next_attempt_at = EXCLUDED.next_attempt_at, last_error = EXCLUDED.last_error,
    finished_at = EXCLUDED.finished_at""",
    "slot_serials": """
INSERT INTO slot_serials (slot, last_serial) SELECT slot, last_serial FROM incoming
ON CONFLICT (slot) DO UPDATE SET last_serial = GREATEST(slot_serials.last_serial, EXCLUDED.last_serial)""",
}
# Accounts first (holds refer to them), postings before their transfers' merge is harmless (no key).
ORDER = ("accounts", "transfers", "postings", "holds", "requests", "outbox", "slot_serials")
COLUMNS = {
    "accounts": ACCOUNTS, "postings": POSTINGS, "transfers": TRANSFERS, "holds": HOLDS,
    "requests": REQUESTS, "outbox": OUTBOX, "slot_serials": "slot, last_serial",
}  # fmt: skip

SQL_HIGH_WATER = "SELECT coalesce(max(sequence), 0), now() FROM postings"
SQL_MIGRATION_SUMS = f"""
SELECT transfer_id, currency, sum(amount)::bigint FROM postings WHERE {MOVING_POSTINGS}
GROUP BY transfer_id, currency HAVING sum(amount) <> 0
"""
SQL_INSERT_MIGRATION = """
INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty)
SELECT t, 'SYS:MIGRATION:' || c, a, c, NULL, %s
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS m(t, c, a)
"""
# What both sides must agree on, per slot: accounts, their balances, and every posting.
SQL_DIGEST = f"""
SELECT slot, count(*), coalesce(sum(balance), 0)::bigint,
       md5(string_agg(account_number || ':' || balance || ':' || status || ':' || held, ','
                      ORDER BY account_number))
FROM accounts WHERE {IN_ACCOUNTS} GROUP BY slot
"""
SQL_POSTING_DIGEST = f"""
SELECT substr(account_number, 1, 4)::integer, count(*),
       md5(string_agg(transfer_id || ':' || account_number || ':' || amount || ':' || balance_after, ','
                      ORDER BY account_number, transfer_id, amount))
FROM postings WHERE {IN_ACCOUNTS} GROUP BY 1
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
    """How far a copy pass went: the postings' high-water sequence and the source's clock then."""

    sequence: int
    time: Any


def high_water(source: psycopg.Connection[Any]) -> Mark:
    row = source.execute(SQL_HIGH_WATER).fetchone()
    assert row is not None
    return Mark(int(row[0]), row[1])


def copy_pass(
    source: psycopg.Connection[Any], target: psycopg.Connection[Any], slots: SlotRange, since: Mark | None
) -> int:
    """Streams the slots' rows changed since `since` (all of them without) from `source` to
    `target` and merges them, in the callers' transactions; returns the rows sent."""
    params = {
        **slots.params,
        "since": max(since.sequence - SEQUENCE_MARGIN, 0) if since else 0,
        "since_time": since.time if since else "-infinity",
    }
    sent = 0
    for table in ORDER:
        sent += _copy_table(source, target, table, params)
    return sent


def _copy_table(
    source: psycopg.Connection[Any], target: psycopg.Connection[Any], table: str, params: dict[str, Any]
) -> int:
    ordered = table == "postings"
    target.execute(
        f"CREATE TEMP TABLE incoming ON COMMIT DROP AS SELECT {COLUMNS[table]}"
        f"{', 0::bigint AS ord' if ordered else ''} FROM {table} LIMIT 0"
    )
    query = SOURCES[table]
    if ordered:  # the source's order travels along, so that statements keep it on the target
        query = query.replace(
            f"SELECT {POSTINGS}", f"SELECT {POSTINGS}, row_number() OVER (ORDER BY sequence)"
        )
    sent = 0
    with source.cursor() as out_cur, target.cursor() as in_cur:
        statement = psycopg.ClientCursor(source).mogrify(query, params)
        with (
            out_cur.copy(f"COPY ({statement}) TO STDOUT (FORMAT BINARY)") as out,
            in_cur.copy("COPY incoming FROM STDIN (FORMAT BINARY)") as into,
        ):
            for block in out:
                into.write(block)
        row = target.execute("SELECT count(*) FROM incoming").fetchone()
        sent = int(row[0]) if row else 0
        if sent:
            target.execute(MERGES[table].encode())
        target.execute("DROP TABLE incoming")
    return sent


def migration_lines(source: psycopg.Connection[Any], slots: SlotRange) -> list[tuple[str, str, int]]:
    """(transfer id, currency, sum) of all the slots' postings whose transfers keep other lines
    behind (a transfer moved whole sums to zero and needs none). Read once the slots are frozen."""
    params = {**slots.params, "since": 0}
    return [(str(t), str(c), int(a)) for t, c, a in source.execute(SQL_MIGRATION_SUMS, params)]


def book_migration(
    conn: psycopg.Connection[Any], lines: list[tuple[str, str, int]], sign: int, other: str
) -> None:
    """The migration lines on one side: `sign` 1 on the source (the moved sum), -1 on the target."""
    if lines:
        conn.execute(
            SQL_INSERT_MIGRATION,
            (other, [t for t, _, _ in lines], [c for _, c, _ in lines], [sign * a for _, _, a in lines]),
        )


def digest(conn: psycopg.Connection[Any], slots: SlotRange) -> dict[int, tuple[Any, ...]]:
    """Per slot: accounts, sum of balances, a digest of the accounts, postings, a digest of them."""
    params = slots.params
    accounts = {int(r[0]): r[1:] for r in conn.execute(SQL_DIGEST, params)}
    postings = {int(r[0]): r[1:] for r in conn.execute(SQL_POSTING_DIGEST, params)}
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
INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty)
VALUES (%s, %s, %s, %s, NULL, %s), (%s, 'SYS:MIGRATION:' || %s, %s, %s, NULL, %s)
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
