"""Loading many accounts at once into a shard: COPY instead of one request per account.

Each account gets its opening deposit as a real double-entry transfer (a DEPOSIT with a posting
on the account and one on the shard's cash account), so the books reconcile as after deposits
made one by one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg

from services.common.identifiers import make_account_number, new_transfer_id
from services.storage.ledger_tx import reserve_serials

COPY_ACCOUNTS = "COPY accounts (account_number, slot, customer_id, currency, status) FROM STDIN"
COPY_TRANSFERS = (
    "COPY transfers (transfer_id, request_id, kind, to_account, amount, currency, status, reference)"
    " FROM STDIN"
)
COPY_POSTINGS = (
    "COPY postings (transfer_id, account_number, amount, currency, balance_after, business_date) FROM STDIN"
)
SQL_SET_BALANCES = """
UPDATE accounts SET balance = %s, version = version + 1
WHERE account_number = ANY(%s)
"""


@dataclass(frozen=True)
class NewAccount:
    customer_id: str
    slot: int


def load_accounts(
    conninfo: str, accounts: Sequence[NewAccount], currency: str, opening_minor: int
) -> list[str]:
    """Opens `accounts` on one shard with `opening_minor` each, in one transaction; returns
    their account numbers in the same order."""
    with psycopg.connect(conninfo) as conn, conn.transaction():
        reserved = reserve_serials(conn, Counter(a.slot for a in accounts))
        numbers = [make_account_number(a.slot, reserved[a.slot].pop(0)) for a in accounts]
        with conn.cursor() as cur:
            with cur.copy(COPY_ACCOUNTS) as copy:
                for account, number in zip(accounts, numbers, strict=True):
                    copy.write_row((number, account.slot, account.customer_id, currency, "ACTIVE"))
            if opening_minor > 0:
                transfer_ids = [new_transfer_id(a.slot) for a in accounts]
                with cur.copy(COPY_TRANSFERS) as copy:
                    for number, transfer_id in zip(numbers, transfer_ids, strict=True):
                        copy.write_row(
                            (transfer_id, f"bulk-open:{number}", "DEPOSIT", number, opening_minor, currency,
                             "COMMITTED", "opening balance")
                        )  # fmt: skip
                dated = cur.execute("SELECT shard_business_date()").fetchone()  # this transaction's date
                assert dated is not None
                day = dated[0]
                with cur.copy(COPY_POSTINGS) as copy:
                    for number, transfer_id in zip(numbers, transfer_ids, strict=True):
                        cash = f"SYS:CASH:{currency}"
                        copy.write_row((transfer_id, cash, -opening_minor, currency, None, day))
                        copy.write_row((transfer_id, number, opening_minor, currency, opening_minor, day))
                cur.execute(SQL_SET_BALANCES, (opening_minor, numbers))
    return numbers
