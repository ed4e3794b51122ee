"""A shard's PostgreSQL group: a primary in one DC and a synchronous-capable standby in each
other DC, so that a commit acknowledged to a client survives the loss of any one DC."""

from __future__ import annotations

from collections.abc import Callable

from services.cluster.netns import in_dc
from services.cluster.state import ClusterState, Component
from services.cluster.topology import ClusterSpec
from services.host.postgres import PostgresInstance
from services.host.processes import wait_until
from services.host.service_user import data_root


def sync_standby_names(spec: ClusterSpec, shard: int) -> str:
    """'ANY 1 (every member)' on every member: a node never counts itself, and after a failover
    the old primary counts again once it streams (a list without it would block commits)."""
    return f"'ANY 1 ({', '.join(spec.pg_members(shard))})'"


def member_instance(state: ClusterState, shard: int, dc: str) -> PostgresInstance:
    spec = state.spec
    name = spec.pg_member(shard, dc)
    subnet = spec.dc_subnet
    return PostgresInstance(
        name=name,
        data_dir=data_root(state.home, "pg") / name,
        host=spec.address(dc),
        port=spec.pg_port(shard),
        password=state.secrets["pg_password"],
        settings={
            "hot_standby": "on",
            "wal_retrieve_retry_interval": "200ms",
            "wal_receiver_status_interval": "1s",
            "max_slot_wal_keep_size": "1GB",
        },
        exec_prefix=in_dc(spec, dc, []),
        hba_lines=[
            f"host all all {subnet} scram-sha-256",
            f"host replication all {subnet} scram-sha-256",
        ],
    )


def _record(state: ClusterState, shard: int, dc: str, pg: PostgresInstance) -> Component:
    return state.add(
        Component(
            dc,
            "postgres",
            pg.name,
            pg.host,
            pg.port,
            pg.pid(),
            str(pg.log_file),
            shard=shard,
            data_dir=str(pg.data_dir),
        )
    )


def start_shard_group(
    state: ClusterState, shard: int, say: Callable[[str], None], primary_dc: str | None = None
) -> list[PostgresInstance]:
    """Builds and starts shard `shard`'s group (its primary in `primary_dc`, by default the
    round-robin one); returns once every standby streams and commits wait for one of them."""
    spec = state.spec
    primary_dc = primary_dc or spec.primary_dc(shard)
    primary = member_instance(state, shard, primary_dc)
    primary.init()
    _record(state, shard, primary_dc, primary)
    standby_dcs = [dc for dc in spec.dc_names if dc != primary_dc]
    for dc in standby_dcs:
        primary.execute(f"SELECT pg_create_physical_replication_slot('{spec.pg_member(shard, dc)}')")
    say(f"shard {shard}: primary {primary.name} on {primary.host}:{primary.port}")

    members = [primary]
    for dc in standby_dcs:
        standby = member_instance(state, shard, dc)
        standby.settings["synchronous_standby_names"] = sync_standby_names(spec, shard)
        standby.clone_from(primary, slot=spec.pg_member(shard, dc))
        standby.start()
        _record(state, shard, dc, standby)
        members.append(standby)
    names = [spec.pg_member(shard, dc) for dc in standby_dcs]
    enable_synchronous_commit(primary, spec, shard, wait_for=len(names))
    say(f"shard {shard}: standbys {', '.join(names)} streaming, synchronous commit on ANY 1")
    return members


def enable_synchronous_commit(
    primary: PostgresInstance, spec: ClusterSpec, shard: int, wait_for: int, timeout_s: float = 60
) -> None:
    """Once `wait_for` standbys stream, commits on the primary wait for one of them (`ANY 1`):
    before, nothing could acknowledge them."""
    wait_until(lambda: len(_streaming(primary)) >= wait_for, timeout_s, f"shard {shard}'s standbys to stream")
    primary.settings["synchronous_standby_names"] = sync_standby_names(spec, shard)
    primary.write_settings()
    primary.reload()
    wait_until(
        lambda: any(row[1] in ("quorum", "sync") for row in _replication(primary)),
        30,
        f"shard {shard}'s primary to see a synchronous standby",
    )


def _replication(primary: PostgresInstance) -> list[tuple[object, ...]]:
    return primary.execute("SELECT application_name, sync_state, state FROM pg_stat_replication")


def _streaming(primary: PostgresInstance) -> set[str]:
    return {str(row[0]) for row in _replication(primary) if row[2] == "streaming"}
