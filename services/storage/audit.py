"""What a shard's books say, read in one snapshot: the inputs of the whole-bank check."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

# Only the rows of the slots this shard holds count: a slot moved away keeps its rows here until
# they are removed, and a slot on its way in is a copy until it is handed over.
COUNTED = "(SELECT slot FROM slot_state WHERE state IN ('OWNED', 'FROZEN'))"
SQL_BALANCES = (
    f"SELECT currency, sum(balance)::bigint, count(*) FROM accounts WHERE slot IN {COUNTED} GROUP BY currency"
)
# Money that came into the bank minus money that left it: the opposite of the cash accounts.
SQL_NET_DEPOSITS = """
SELECT currency, (-sum(amount))::bigint FROM postings WHERE account_number LIKE 'SYS:CASH:%' GROUP BY currency
"""
SQL_TRANSIT = """
SELECT currency, sum(amount)::bigint FROM postings WHERE account_number LIKE 'SYS:TRANSIT:%' GROUP BY currency
"""
SQL_IN_FLIGHT = f"""
SELECT currency, sum(amount)::bigint, count(*) FROM outbox
WHERE status = 'PENDING' AND substr(transfer_id, 2, 4)::integer IN {COUNTED} GROUP BY currency
"""
SQL_BELOW_LIMIT = f"""
SELECT account_number, balance, held, overdraft_limit FROM accounts
WHERE (balance - held < -overdraft_limit OR (balance < 0 AND overdraft_limit = 0)) AND slot IN {COUNTED}
ORDER BY account_number LIMIT 100
"""
# A posting whose transfer is missing counts as unbalanced too (no foreign key checks it). A
# move's migration lines booked ahead count from its hand-over on (see migration 0006).
SQL_UNBALANCED = f"""
SELECT p.transfer_id, sum(p.amount)::bigint FROM postings p
WHERE (p.account_number LIKE 'SYS:%%' OR substr(p.account_number, 1, 4)::integer IN {COUNTED})
  AND NOT EXISTS (SELECT 1 FROM move_lines m WHERE m.tag = p.counterparty AND NOT m.counted)
GROUP BY p.transfer_id
HAVING sum(p.amount) <> 0 OR NOT EXISTS (SELECT 1 FROM transfers t WHERE t.transfer_id = p.transfer_id)
LIMIT 100
"""
SQL_TRANSFER_STATUS = "SELECT status, count(*) FROM transfers GROUP BY status"


@dataclass
class ShardBooks:
    shard: int
    balances: dict[str, int] = field(default_factory=dict)
    accounts: int = 0
    net_deposits: dict[str, int] = field(default_factory=dict)
    transit: dict[str, int] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    below_limit: list[tuple[str, int]] = field(default_factory=list)
    unbalanced: list[str] = field(default_factory=list)
    transfers_by_status: dict[str, int] = field(default_factory=dict)


def read_books(conninfo: str, shard: int) -> ShardBooks:
    """Every figure from one REPEATABLE READ snapshot of the shard's primary."""
    books = ShardBooks(shard)
    with psycopg.connect(conninfo, autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for currency, total, count in conn.execute(SQL_BALANCES):
            books.balances[currency] = int(total)
            books.accounts += int(count)
        books.net_deposits = {c: int(v) for c, v in conn.execute(SQL_NET_DEPOSITS)}
        books.transit = {c: int(v) for c, v in conn.execute(SQL_TRANSIT)}
        for currency, total, count in conn.execute(SQL_IN_FLIGHT):
            books.in_flight[currency] = int(total)
            books.pending += int(count)
        books.below_limit = [(str(n), int(b)) for n, b, _, _ in conn.execute(SQL_BELOW_LIMIT)]
        books.unbalanced = [str(t) for t, _ in conn.execute(SQL_UNBALANCED)]
        books.transfers_by_status = {str(s): int(n) for s, n in conn.execute(SQL_TRANSFER_STATUS)}
        conn.rollback()
    return books


SQL_FIND_TRANSFERS = (
    "SELECT transfer_id, count(*) FROM transfers WHERE transfer_id = ANY(%s) GROUP BY transfer_id"
)
# A movement applied twice shows as two postings of the same sign on the same customer account.
SQL_DOUBLED = """
SELECT count(*) FROM (
  SELECT transfer_id FROM postings
  WHERE account_number NOT LIKE 'SYS:%%' AND transfer_id = ANY(%s)
  GROUP BY transfer_id, account_number, sign(amount) HAVING count(*) > 1
) doubled
"""


def find_transfers(conninfo: str, transfer_ids: list[str]) -> tuple[dict[str, int], int]:
    """How many times each transfer id is booked on this shard, and how many were applied twice."""
    with psycopg.connect(conninfo) as conn:
        found = {str(t): int(n) for t, n in conn.execute(SQL_FIND_TRANSFERS, (transfer_ids,))}
        row = conn.execute(SQL_DOUBLED, (transfer_ids,)).fetchone()
    return found, int(row[0]) if row else 0
