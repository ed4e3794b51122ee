"""A shard's business date in its own database: read it, and cut it to the next date (see
migrations/0012_business_date.sql and functions/cut_business_date.sql)."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import psycopg

# A writer that asks for the date while the cut waits for its lock queues behind the cut: the
# wait is bounded by this, and the cut tried again a little later (each try a few ms at most
# once the writers that read the date before are done).
CUT_LOCK_TIMEOUT_MS = 100
CUT_ATTEMPTS = 50


@dataclass(frozen=True)
class ShardDay:
    business_date: dt.date
    cut_at: dt.datetime


@dataclass(frozen=True)
class Cut:
    was: dt.date
    now: dt.date
    attempts: int
    took_ms: float


def read_day(conn: psycopg.Connection[Any]) -> ShardDay:
    row = conn.execute("SELECT business_date, cut_at FROM shard_day").fetchone()
    assert row is not None, "shard_day has its one row from migration 0012"
    return ShardDay(row[0], row[1])


def cut(conninfo: str, new_date: dt.date) -> Cut:
    """Moves the shard to `new_date` (never back); every try bounded by CUT_LOCK_TIMEOUT_MS."""
    started = time.monotonic()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for attempt in range(1, CUT_ATTEMPTS + 1):
            try:
                with conn.transaction():
                    conn.execute(f"SET LOCAL lock_timeout = '{CUT_LOCK_TIMEOUT_MS}ms'")
                    row = conn.execute("SELECT cut_business_date(%s)", (new_date,)).fetchone()
                assert row is not None
                took_ms = (time.monotonic() - started) * 1000
                return Cut(row[0], max(row[0], new_date), attempt, took_ms)
            except psycopg.errors.LockNotAvailable:
                time.sleep(0.01 * attempt)
    raise TimeoutError(f"the cut to {new_date} found no moment without a writer in {CUT_ATTEMPTS} tries")
