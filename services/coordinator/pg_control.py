"""The shard members of the real cluster: remote control over SQL (roles, WAL positions,
promotion, re-pointing a standby) and, for this node's own member, its process (start, stop,
rewind or re-clone). `PostgresMembers` is what the coordinator's `Members` interface names."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import psycopg

from services.coordinator.members import MemberState
from services.coordinator.view import ClusterView
from services.host.postgres import PostgresInstance

log = logging.getLogger(__name__)
PROMOTE_TIMEOUT_S = 20.0
PROMOTE_POLL_S = 0.005


def lsn_to_int(lsn: str | None) -> int:
    """'16/B374D848' -> an integer that orders like the WAL position (psycopg gives LSNs as text)."""
    if not lsn:
        return -1
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


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
    """Promotes, then asks every PROMOTE_POLL_S whether it is done: pg_promote's own wait looks
    only every 100 ms (a promotion here takes some 30-50 ms)."""
    with psycopg.connect(view.conninfo(shard, dc, "bank-control"), autocommit=True) as conn:
        conn.execute("SELECT pg_promote(wait => false)")
        deadline = time.monotonic() + PROMOTE_TIMEOUT_S
        while _in_recovery(conn):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"shard {shard}: promotion of {dc} did not finish in {PROMOTE_TIMEOUT_S:.0f} s"
                )
            time.sleep(PROMOTE_POLL_S)
        ensure_slots(view, shard, dc, conn)


def _in_recovery(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


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


def instance(view: ClusterView, shard: int, dc: str) -> PostgresInstance:
    member = view.members[shard][dc]
    group = ", ".join(m.name for m in view.members[shard].values())
    return PostgresInstance(
        name=member.name,
        data_dir=Path(member.data_dir),
        host=member.host,
        port=member.port,
        password=view.pg_password,
        settings={
            **view.pg_settings,
            # As on every member (see pg_group): a node never counts itself.
            "synchronous_standby_names": f"'ANY 1 ({group})'",
        },
        hba_lines=list(view.pg_hba_lines),
    )


class PostgresMembers:
    """The `Members` of a running cluster, as a bank-node sees them."""

    def __init__(self, view: ClusterView) -> None:
        self.view = view

    def probe(self, shard: int, dc: str) -> MemberState | None:
        return probe(self.view, shard, dc)

    def detach(self, shard: int, dc: str) -> None:
        detach(self.view, shard, dc)

    def follow(self, shard: int, dc: str, primary_dc: str) -> None:
        follow(self.view, shard, dc, primary_dc)

    def promote(self, shard: int, dc: str) -> None:
        promote(self.view, shard, dc)

    def ensure_slots(self, shard: int, dc: str) -> None:
        ensure_slots(self.view, shard, dc)

    def replayed(self, shard: int, dc: str) -> int:
        return replayed(self.view, shard, dc)

    def start(self, shard: int, dc: str) -> None:
        instance(self.view, shard, dc).start()

    def stop(self, shard: int, dc: str) -> None:
        instance(self.view, shard, dc).stop()

    def rejoin(self, shard: int, dc: str, leader_dc: str) -> str:
        name = self.view.members[shard][dc].name
        return instance(self.view, shard, dc).rejoin_as_standby(instance(self.view, shard, leader_dc), name)
