"""Brings a shard's schema up to date, under an advisory lock: the versioned migrations in
`migrations/` (tables and indexes) in order, once each; then every SQL function in
`functions/`, one file each holding its contract and its whole body, applied again whenever the
file changes (as Flyway's repeatable migrations), so that a function's current body is in one
place instead of restated by each migration that changed it."""

from __future__ import annotations

import hashlib
import logging
from importlib import resources

import psycopg

log = logging.getLogger(__name__)

# Any constant shared by every migrator of the bank: two nodes starting at once take turns.
_ADVISORY_LOCK_KEY = 0x62616E6B  # "bank"


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("services.storage").joinpath("migrations")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name, folder.joinpath(name).read_text(encoding="utf-8")) for name in names]


def function_files() -> list[tuple[str, str]]:
    folder = resources.files("services.storage").joinpath("functions")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".sql"))
    return [(name, folder.joinpath(name).read_text(encoding="utf-8")) for name in names]


def apply_functions(conn: psycopg.Connection) -> list[str]:
    """Every function whose file differs from what was applied last (by digest); returns the
    files applied, as `functions/<name>`. After the versioned migrations: a body may use any
    table they make."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_functions ("
        " name text PRIMARY KEY, digest text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    applied: dict[str, str] = dict(conn.execute("SELECT name, digest FROM schema_functions").fetchall())
    done: list[str] = []
    for name, sql in function_files():
        digest = hashlib.sha256(sql.encode("utf-8")).hexdigest()
        if applied.get(name) == digest:
            continue
        with conn.transaction():
            conn.execute(sql.encode("utf-8"))
            conn.execute(
                "INSERT INTO schema_functions (name, digest) VALUES (%s, %s)"
                " ON CONFLICT (name) DO UPDATE SET digest = EXCLUDED.digest, applied_at = now()",
                (name, digest),
            )
        done.append(f"functions/{name}")
    return done


def apply_migrations(conninfo: str, shard_id: int) -> list[str]:
    """Brings the database up to date; returns the names of the migrations it applied (the
    functions applied again as `functions/<name>`, after them)."""
    applied: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_ADVISORY_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
            for name, sql in migration_files():
                if name in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode("utf-8"))
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                applied.append(name)
                log.info("event=migration_applied name=%s shard=%s", name, shard_id)
            for name in apply_functions(conn):
                applied.append(name)
                log.info("event=function_applied name=%s shard=%s", name, shard_id)
            _record_shard(conn, shard_id)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_ADVISORY_LOCK_KEY,))
    return applied


def _record_shard(conn: psycopg.Connection, shard_id: int) -> None:
    """A database belongs to one shard for life; serving it as another would mix ledgers."""
    conn.execute(
        "INSERT INTO shard_info (shard_id) VALUES (%s) ON CONFLICT (singleton) DO NOTHING",
        (shard_id,),
    )
    row = conn.execute("SELECT shard_id FROM shard_info").fetchone()
    assert row is not None
    if row[0] != shard_id:
        raise RuntimeError(f"this database holds shard {row[0]}, not shard {shard_id}")
