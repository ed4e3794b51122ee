"""Where PostgreSQL's share of a batch transfer goes: the CPU of shard 0's group by process role
(the primary's backends, walsender, checkpointer, autovacuum; each standby's startup process
replaying the WAL and its walreceiver), and the WAL a transfer writes by record type
(pg_walinspect), during direct batches on a fresh cluster.

    .venv/bin/python bench/pg_split.py [--phases 3] [--seconds 20] [--accounts 60000]

Prints per phase: transfers/s, PostgreSQL CPU milliseconds per transfer by role, WAL records,
full-page images and bytes per transfer; then, over the last phase, the WAL per transfer of
each record type.
"""

from __future__ import annotations

import argparse
import sys

import psutil

from bankclient import BankClient
from services.cli.bench import Phase, batch_step
from services.cli.bench_cluster import fresh_cluster
from services.cluster.check import current_primaries
from services.cluster.pg_group import member_instance
from services.cluster.state import ClusterState
from services.host.postgres import PostgresInstance

AUXILIARY = (
    "checkpointer", "background writer", "walwriter", "autovacuum launcher", "autovacuum worker",
    "logical replication launcher", "startup", "walreceiver", "walsender", "archiver",
)  # fmt: skip
SQL_WAL = "SELECT wal_records, wal_fpi, wal_bytes FROM pg_stat_wal"
SQL_WAL_BY_TYPE = (
    'SELECT "resource_manager/record_type", count, combined_size, fpi_size'
    " FROM pg_get_wal_stats('{}'::pg_lsn, '{}'::pg_lsn, true) WHERE count > 0 ORDER BY combined_size DESC"
)


def role_of(process: psutil.Process, cluster_name: str) -> str:
    """A PostgreSQL process's role from its title ("postgres: <cluster>: <role> ...")."""
    title = " ".join(process.cmdline())
    prefix = f"postgres: {cluster_name}: "
    if not title.startswith(prefix):
        return "postmaster"
    rest = title[len(prefix) :]
    return next((role for role in AUXILIARY if rest.startswith(role)), "backend")


def cpu_by_role(state: ClusterState, primary_dc: str) -> dict[str, float]:
    """CPU seconds of shard 0's PostgreSQL processes, keyed "primary <role>" / "standbys <role>"."""
    seconds: dict[str, float] = {}
    for component in state.find("postgres", shard=0):
        side = "primary" if component.dc == primary_dc else "standbys"
        try:
            postmaster = psutil.Process(component.pid)
            for process in [postmaster, *postmaster.children(recursive=True)]:
                times = process.cpu_times()
                key = f"{side} {role_of(process, state.spec.pg_member(0, component.dc))}"
                seconds[key] = seconds.get(key, 0.0) + times.user + times.system
        except psutil.Error:
            continue
    return seconds


def wal_position(primary: PostgresInstance) -> tuple[str, tuple[int, int, int]]:
    lsn = str(primary.execute("SELECT pg_current_wal_lsn()")[0][0])
    records, fpi, size = primary.execute(SQL_WAL)[0]
    return lsn, (int(str(records)), int(str(fpi)), int(str(size)))


def wal_by_type(primary: PostgresInstance, start: str, end: str, transfers: int) -> list[str]:
    sql = SQL_WAL_BY_TYPE.format(start, end)  # positions PostgreSQL itself gave
    return [
        f"  {kind:<28} {int(str(count)) / transfers:6.2f} records {int(str(size)) / transfers:8.1f} bytes"
        f" (full pages {int(str(fpi)) / transfers:.1f})"
        for kind, count, size, fpi in primary.execute(sql, dbname="bank")
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--phases", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--accounts", type=int, default=60_000)
    args = parser.parse_args()
    with fresh_cluster("pgsplt", 86, args.accounts) as (state, accounts):
        primary_dc = current_primaries(state)[0]
        primary = member_instance(state, 0, primary_dc)
        primary.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect", dbname="bank")
        with BankClient.from_home(state.home, deadline_s=60, route="direct") as client:
            step = batch_step(client, accounts)
            for number in range(args.phases):
                start, wal_before = wal_position(primary)
                cpu_before = cpu_by_role(state, primary_dc)
                phase = Phase(state, 4, args.seconds).run(step)
                cpu_after = cpu_by_role(state, primary_dc)
                end, wal_after = wal_position(primary)
                count = max(phase["transfers"], 1)
                spent = {k: 1000 * (cpu_after[k] - cpu_before.get(k, 0.0)) / count for k in sorted(cpu_after)}
                records, fpi, size = (
                    after - before for after, before in zip(wal_after, wal_before, strict=True)
                )
                roles = ", ".join(f"{k} {v:.3f}" for k, v in spent.items() if v >= 0.001)
                total = sum(spent.values())
                print(
                    f"phase {number}: {phase['tps']:,.0f} transfers/s; PostgreSQL {total:.3f} ms a transfer:"
                )
                print(f"  {roles}")
                print(
                    f"  WAL a transfer: {records / count:.1f} records, {fpi / count:.2f} full pages,"
                    f" {size / count:,.0f} bytes"
                )
            print(f"WAL a transfer by record type, phase {args.phases - 1}:")
            print("\n".join(wal_by_type(primary, start, end, count)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
