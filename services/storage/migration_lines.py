"""The migration lines of a slot move: how each shard's transfers still sum to zero.

A moved slot's postings leave their transfers' other postings behind (a deposit's cash line, a
transfer's other account). So the move books the difference on SYS:MIGRATION:<currency> under
the same transfer id: the moved sum on the source, its opposite on the target. Across the bank
the migration accounts sum to zero, and an auditor can follow every moved line to its transfer
on both shards; each line's counterparty (its tag) names the other shard and the move.

The lines are booked ahead, before the slots freeze, from the sums of the rows copied so far,
and are left out of the audit until the hand-over counts them (migration 0006). The hand-over
books only the difference: the transfers whose moved postings changed since (`touched`).
"""

from __future__ import annotations

from typing import Any

import psycopg

from services.storage.slot_copy import IN_ACCOUNTS, SlotRange

Sums = dict[tuple[str, str], int]  # (transfer id, currency) -> sum of the moved postings
Lines = list[tuple[str, str, int]]  # (transfer id, currency, signed amount)

SQL_MOVED_SUMS = f"""
SELECT transfer_id, currency, sum(amount)::bigint FROM postings WHERE {IN_ACCOUNTS}
GROUP BY transfer_id, currency HAVING sum(amount) <> 0
"""
SQL_TOUCHED_SUMS = f"""
SELECT transfer_id, currency, sum(amount)::bigint FROM postings
WHERE {IN_ACCOUNTS} AND transfer_id IN (SELECT transfer_id FROM incoming_postings)
GROUP BY transfer_id, currency
"""
SQL_BOOKED = """
SELECT transfer_id, currency, sum(amount)::bigint FROM postings
WHERE account_number LIKE 'SYS:MIGRATION:%%' AND counterparty = %s GROUP BY transfer_id, currency
"""
SQL_TAG = "INSERT INTO move_lines (tag) VALUES (%s) ON CONFLICT DO NOTHING"
SQL_BOOK = """
INSERT INTO postings (transfer_id, account_number, amount, currency, balance_after, counterparty,
                      business_date)
SELECT t, 'SYS:MIGRATION:' || c, a, c, NULL, %s, (SELECT shard_business_date())
FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS m(t, c, a)
"""
SQL_UNBOOK = """
DELETE FROM postings WHERE account_number LIKE 'SYS:MIGRATION:%%' AND counterparty = %s
  AND EXISTS (SELECT 1 FROM move_lines WHERE tag = %s AND NOT counted)
"""
SQL_UNTAG = "DELETE FROM move_lines WHERE tag = %s AND NOT counted"


def tag(other_shard: int, move_id: str) -> str:
    return f"shard {other_shard}, move {move_id}"


def moved_sums(source: psycopg.Connection[Any], slots: SlotRange) -> Sums:
    """What the slots' postings sum to per transfer, where not zero (a transfer moved whole
    needs no line)."""
    return {(str(t), str(c)): int(a) for t, c, a in source.execute(SQL_MOVED_SUMS, slots.params)}


def touched_sums(target: psycopg.Connection[Any], slots: SlotRange) -> Sums:
    """The sums (zero included) of the transfers of the postings a copy pass just sent, read on
    the target in the pass's transaction (once its copy matches the source): every transfer
    whose sum may differ from one read in the snapshot of the pass before."""
    return {(str(t), str(c)): int(a) for t, c, a in target.execute(SQL_TOUCHED_SUMS, slots.params)}


def booked(conn: psycopg.Connection[Any], line_tag: str) -> Sums:
    """The lines booked under `line_tag` on this side, signed as booked."""
    return {(str(t), str(c)): int(a) for t, c, a in conn.execute(SQL_BOOKED, (line_tag,))}


def to_book(needed: Sums, sign: int, already: Sums) -> Lines:
    """The lines that bring what is booked to `sign` times `needed` (in one pass over each: a
    hand-over calls it in the freeze, with thousands of sums of which few changed)."""
    lines = [
        (t, c, sign * amount - already.get((t, c), 0))
        for (t, c), amount in needed.items()
        if sign * amount != already.get((t, c), 0)
    ]
    lines += [(t, c, -amount) for (t, c), amount in already.items() if amount and (t, c) not in needed]
    return sorted(lines)


def book_ahead(conn: psycopg.Connection[Any], lines: Lines, line_tag: str) -> None:
    """Books `lines` under `line_tag`, not counted until the hand-over (one transaction)."""
    with conn.transaction():
        conn.execute(SQL_TAG, (line_tag,))
        conn.execute(
            SQL_BOOK, (line_tag, [t for t, _, _ in lines], [c for _, c, _ in lines], [a for _, _, a in lines])
        )


def unbook(conn: psycopg.Connection[Any], line_tag: str) -> int:
    """Removes the lines a rolled-back move booked ahead (never lines already counted)."""
    with conn.transaction():
        removed = conn.execute(SQL_UNBOOK, (line_tag, line_tag)).rowcount
        conn.execute(SQL_UNTAG, (line_tag,))
    return removed
