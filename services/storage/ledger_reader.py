"""Reads of a shard's ledger that need no transaction of their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import class_row

from services.common.model import Account, Hold, Posting, Transfer
from services.storage.ledger_tx import Delivery
from services.storage.sql import (
    SQL_DUE_DELIVERIES,
    SQL_EXPIRED_HOLD_ACCOUNTS,
    SQL_GET_ACCOUNT,
    SQL_GET_ACCOUNTS,
    SQL_GET_HOLD,
    SQL_GET_TRANSFER,
    SQL_KNOWN_REQUESTS,
    SQL_LIST_POSTINGS,
    SQL_OUTBOX_FIGURES,
    SQL_REPLICATION_LAG,
    SQL_SLOTS_OWNED,
)


@dataclass(frozen=True)
class ShardFigures:
    outbox_pending: int
    outbox_oldest_age_s: float
    lag_by_standby: dict[str, tuple[float, float]]  # application name -> (bytes, seconds)
    slots_owned: int = 0


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
        owned = self.conn.execute(SQL_SLOTS_OWNED).fetchone()
        return ShardFigures(pending, age, lag, int(owned[0]) if owned else 0)

    def accounts_with_expired_holds(self, limit: int) -> list[str]:
        return [row[0] for row in self.conn.execute(SQL_EXPIRED_HOLD_ACCOUNTS, (limit,))]
