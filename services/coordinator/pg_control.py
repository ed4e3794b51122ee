"""Remote control of a shard's PostgreSQL members over SQL: roles, WAL positions, promotion,
re-pointing a standby. Used by the failover and by a node putting its own member in place."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from services.coordinator.view import ClusterView

log = logging.getLogger(__name__)


def lsn_to_int(lsn: str | None) -> int:
    """'16/B374D848' -> an integer that orders like the WAL position (psycopg gives LSNs as text)."""
    if not lsn:
        return -1
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass(frozen=True)
class MemberState:
    dc: str
    in_recovery: bool
    receive_lsn: int  # for a standby: how far it has received; for a primary: its current LSN
    upstream_host: str  # the host a standby streams from ('' if none)
    streaming: bool = False  # a standby whose WAL receiver streams (not starting, not waiting)
    conninfo_host: str = ""  # the host its primary_conninfo names ('' if none)


def probe(view: ClusterView, shard: int, dc: str) -> MemberState | None:
    """The member's role and WAL position, or None when it does not answer."""
    try:
        with psycopg.connect(view.conninfo(shard, dc, "bank-probe"), autocommit=True) as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(),"
                " CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn()::text"
                "      ELSE pg_current_wal_lsn()::text END,"
                " (SELECT COALESCE(sender_host, '') FROM pg_stat_wal_receiver LIMIT 1),"
                " (SELECT status = 'streaming' FROM pg_stat_wal_receiver LIMIT 1),"
                " current_setting('primary_conninfo')"
            ).fetchone()
    except psycopg.Error:
        return None
    assert row is not None
    return MemberState(dc, bool(row[0]), lsn_to_int(row[1]), str(row[2] or ""), bool(row[3]), _host(row[4]))


def _host(conninfo: object) -> str:
    try:
        return str(psycopg.conninfo.conninfo_to_dict(str(conninfo or "")).get("host", ""))
    except psycopg.ProgrammingError:
        return ""


def execute(view: ClusterView, shard: int, dc: str, *statements: str) -> None:
    with psycopg.connect(view.conninfo(shard, dc, "bank-control"), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


def detach(view: ClusterView, shard: int, dc: str) -> None:
    """Stops a standby streaming from anyone: the old primary can then get no acknowledgement,
    so no commit on it can be acknowledged to a client once this is done on every standby."""
    execute(view, shard, dc, "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()")


def follow(view: ClusterView, shard: int, dc: str, primary_dc: str) -> None:
    """Points a running standby at `primary_dc`'s member (it follows the new timeline)."""
    name = view.members[shard][dc].name
    conninfo = view.replication_conninfo(shard, primary_dc, name).replace("'", "''")
    execute(
        view, shard, dc,
        f"ALTER SYSTEM SET primary_conninfo = '{conninfo}'",
        f"ALTER SYSTEM SET primary_slot_name = '{name}'",
        "SELECT pg_reload_conf()",
    )  # fmt: skip


def promote(view: ClusterView, shard: int, dc: str) -> None:
    with psycopg.connect(view.conninfo(shard, dc, "bank-control"), autocommit=True) as conn:
        row = conn.execute("SELECT pg_promote(wait => true, wait_seconds => 20)").fetchone()
        if not row or not row[0]:
            raise RuntimeError(f"shard {shard}: promotion of {dc} did not finish")
        ensure_slots(view, shard, dc, conn)


def ensure_slots(view: ClusterView, shard: int, dc: str, conn: psycopg.Connection[Any] | None = None) -> None:
    """Every other member needs a slot on the new primary to stream from it."""
    if conn is None:
        with psycopg.connect(view.conninfo(shard, dc, "bank-control"), autocommit=True) as own:
            ensure_slots(view, shard, dc, own)
        return
    for other, member in view.members[shard].items():
        if other != dc:
            conn.execute(
                "SELECT pg_create_physical_replication_slot(%s) WHERE NOT EXISTS"
                " (SELECT 1 FROM pg_replication_slots WHERE slot_name = %s)",
                (member.name, member.name),
            )


def replayed(view: ClusterView, shard: int, dc: str) -> int:
    """How far a standby has replayed (-1 when it does not answer)."""
    try:
        with psycopg.connect(view.conninfo(shard, dc, "bank-probe"), autocommit=True) as conn:
            row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
    except psycopg.Error:
        return -1
    return lsn_to_int(row[0] if row else None)
