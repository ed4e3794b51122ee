"""`bankctl status`: the cluster as its components themselves report it, as a table or JSON.

Roles and health come from asking each process (ZooKeeper's `srvr`, Redis `INFO`, Sentinel,
PostgreSQL's recovery state and `pg_stat_replication`, gRPC health), not from the launcher's
own record; the record only says where to ask.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.cluster.engine import engine_of
from services.cluster.pg_group import member_instance
from services.cluster.prometheus import ready as prometheus_ready
from services.cluster.redis_group import redis_role, sentinel_primary
from services.cluster.state import ClusterState, Component
from services.cluster.tls import ca_file
from services.cluster.topology import NETNS
from services.cluster.zookeeper import zk_client, zk_mode
from services.common.routes import RoutingTable, ShardRoute
from services.coordinator import phases
from services.moves.journal import Journal
from services.rpc import tls

SQL_REPLICATION = """
SELECT application_name, state, sync_state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS lag_bytes
FROM pg_stat_replication ORDER BY application_name
"""


MOVE_FIELDS = (
    "id", "slots", "from", "to", "state", "freeze_ms", "freeze_phases_ms", "copied_rows", "started_at",
    "finished_at", "error",
)  # fmt: skip
SHARD_HEADER = f"{'shard':<7}{'primary':<9}{'epoch':<7}{'slots':<7}standbys (state, sync, lag)"


def collect(state: ClusterState) -> dict[str, Any]:
    """The stable JSON shape of `bankctl status --json` (other tools and the tests read it)."""
    spec = state.spec
    with ThreadPoolExecutor(max_workers=8) as pool:
        components = list(pool.map(lambda c: _probe(state, c), state.components))
    table, moves, failovers = _truth(state)
    ranges = table.slot_ranges or spec.slot_ranges()
    shards = [_shard_status(state, shard, table.routes.get(shard), ranges) for shard in state.active_shards]
    return {
        "status": state.status,
        "home": str(state.home),
        "dcs": spec.dc_names,
        "net": spec.net,
        "namespaces": {dc: spec.namespace(dc) for dc in spec.dc_names} if spec.net == NETNS else {},
        "netem": state.netem,
        "components": components,
        "shards": shards,
        "moves": [{key: m.get(key) for key in MOVE_FIELDS} for m in moves],
        "uptime_s": round(time.time() - state.started_at, 1) if state.started_at else None,
        "faults": [
            {
                "fault": f["fault"],
                "target": f["target"],
                "at": f["at"],
                "active": f.get("active", False),
                "rto_s": f.get("rto_s"),
                "shards": [{"shard": int(s), "rto_s": v} for s, v in f["shards"].items()],
                "phases_ms": phases.of_fault(f, failovers),
            }
            for f in state.faults
        ],
    }


def _probe(state: ClusterState, component: Component) -> dict[str, Any]:
    alive = engine_of(state).alive(state, component)
    role: str = "unknown"
    extra: dict[str, Any] = {}
    if component.kind == "zookeeper":
        role = zk_mode(component.host, component.port) or "down"
    elif component.kind == "redis":
        answer = redis_role(component.host, component.port, state.secrets.get("redis_password"))
        role = "down" if answer is None else ("primary" if answer[0] == "master" else "replica")
        if answer is not None and answer[0] == "master":
            extra["connected_replicas"] = answer[1]
    elif component.kind == "sentinel":
        primary = sentinel_primary(component.host, component.port, state.secrets.get("redis_password"))
        role = "sentinel" if primary else "down"
        extra["primary"] = primary
    elif component.kind == "postgres":
        role = _pg_role(state, component)
    elif component.kind in ("node", "gateway"):
        role = _grpc_role(state, component)
    elif component.kind == "prometheus":
        role = "ready" if prometheus_ready(component.host, component.port) else "down"
    if component.kind == "postgres" and component.shard is not None and not component.container:
        # The postmaster's PID can change on restart; its own pid file is the truth.
        pid = member_instance(state, component.shard, component.dc).pid()
        component = Component(**{**component.__dict__, "pid": pid})
    healthy = alive and role not in ("down", "unknown")
    return {
        "dc": component.dc,
        "kind": component.kind,
        "name": component.name,
        "shard": component.shard,
        "role": role,
        "host": component.host,
        "port": component.port,
        "pid": component.pid,
        "healthy": healthy,
        "log": component.log,
        "metrics_port": component.metrics_port,
        "container": component.container,
        **extra,
    }


def _pg_role(state: ClusterState, component: Component) -> str:
    assert component.shard is not None
    instance = member_instance(state, component.shard, component.dc)
    try:
        rows = instance.execute("SELECT pg_is_in_recovery()")
    except psycopg.Error:
        return "down"
    return "standby" if rows[0][0] else "primary"


def _grpc_role(state: ClusterState, component: Component) -> str:
    root = ca_file(state.home).read_bytes() if state.spec.tls else None
    try:
        with tls.channel(f"{component.host}:{component.port}", root) as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1.5)
    except grpc.RpcError:
        return "down"
    return "serving" if answer.status == health_pb2.HealthCheckResponse.SERVING else "down"


def grpc_serving(state: ClusterState, component: Component) -> bool:
    """Whether a node or gateway answers its health check as serving."""
    return _grpc_role(state, component) == "serving"


def _routes(state: ClusterState) -> dict[int, ShardRoute]:
    return _truth(state)[0].routes


def _truth(state: ClusterState) -> tuple[RoutingTable, list[dict[str, Any]], list[dict[str, Any]]]:
    """The routing table, the slot moves' journal and the failovers' phases, as ZooKeeper has
    them (empty when it cannot be reached: the shard table then says so with epoch None)."""
    try:
        dcs = zk_client(state, timeout_s=3)
    except Exception:
        return RoutingTable(version=0, slot_ranges=[]), [], []
    with dcs:
        return dcs.read_table(), Journal(dcs.client).all(), dcs.failovers()


def _shard_status(
    state: ClusterState,
    shard: int,
    route: ShardRoute | None,
    ranges: list[tuple[int, int, int]] | None = None,
) -> dict[str, Any]:
    spec = state.spec
    primary_dc = route.leader_dc if route else spec.primary_dc(shard)
    primary = member_instance(state, shard, primary_dc)
    standbys = []
    try:
        rows = primary.execute(SQL_REPLICATION)
    except psycopg.Error:
        rows = []
    seen = {str(row[0]): row for row in rows}
    for dc in spec.dc_names:
        if dc == primary_dc:
            continue
        row = seen.get(spec.pg_member(shard, dc))
        standbys.append(
            {
                "dc": dc,
                "name": spec.pg_member(shard, dc),
                "state": str(row[1]) if row else "not connected",
                "sync_state": str(row[2]) if row else None,
                "lag_bytes": int(str(row[3])) if row and row[3] is not None else None,
            }
        )
    return {
        "shard": shard,
        "primary_dc": primary_dc,
        "epoch": route.epoch if route else None,
        "slots": [[a, b] for a, b, s in (ranges or spec.slot_ranges()) if s == shard],
        "slot_count": sum(b - a + 1 for a, b, s in (ranges or spec.slot_ranges()) if s == shard),
        "standbys": standbys,
    }


def shard_lines(state: ClusterState, shards: list[int]) -> list[str]:
    """Each shard's leader and standbys, as `render` shows them: why a shard takes no write."""
    table = _truth(state)[0]
    return [
        _shard_line(_shard_status(state, shard, table.routes.get(shard), table.slot_ranges))
        for shard in shards
    ]


def _shard_line(s: dict[str, Any]) -> str:
    standbys = "; ".join(
        f"{b['name']} {b['state']} {b['sync_state'] or '-'} "
        f"{'-' if b['lag_bytes'] is None else str(b['lag_bytes']) + ' B'}"
        for b in s["standbys"]
    )
    epoch = "?" if s["epoch"] is None else s["epoch"]
    return f"{s['shard']:<7}{s['primary_dc']:<9}{epoch!s:<7}{s.get('slot_count', '?')!s:<7}{standbys}"


def render(status: dict[str, Any]) -> str:
    """The status as tables for people."""
    lines = [
        f"cluster in {status['home']}: {status['status']}, DCs {', '.join(status['dcs'])},"
        f" net={status['net']}",
        f"netem: {status['netem'].get('detail', 'not probed')}",
        "",
        f"{'dc':<5}{'component':<22}{'role':<12}{'address':<22}{'pid':>8}  health",
    ]
    for c in sorted(status["components"], key=lambda c: (c["dc"], c["kind"], c["shard"] or 0)):
        name = c["kind"] + (f" s{c['shard']}" if c["shard"] is not None else "")
        lines.append(
            f"{c['dc']:<5}{name:<22}{c['role']:<12}{c['host'] + ':' + str(c['port']):<22}"
            f"{c['pid'] or '-':>8}  {'ok' if c['healthy'] else 'DOWN'}"
        )
    lines += ["", SHARD_HEADER]
    lines += [_shard_line(s) for s in status["shards"]]
    if status.get("moves"):
        lines += [
            "",
            f"{'move':<26}{'slots':<11}{'from':>5}{'to':>4}  {'state':<12}{'freeze':>10}{'rows':>9}",
        ]
        for m in status["moves"][-10:]:
            freeze = "-" if m["freeze_ms"] is None else f"{m['freeze_ms']:.0f} ms"
            slots = f"{m['slots'][0]}-{m['slots'][1]}"
            lines.append(
                f"{m['id']:<26}{slots:<11}{m['from']:>5}{m['to']:>4}  {m['state']:<12}{freeze:>10}"
                f"{m['copied_rows']:>9}"
            )
    if status["faults"]:
        lines += ["", f"{'fault':<20}{'target':<12}{'at':<10}{'active':<8}recovery (first write per shard)"]
        for f in status["faults"]:
            at = time.strftime("%H:%M:%S", time.localtime(f["at"]))
            rtos = ", ".join(
                f"s{x['shard']} {'-' if x['rto_s'] is None else format(x['rto_s'], '.2f') + ' s'}"
                for x in f["shards"]
            )
            lines.append(
                f"{f['fault']:<20}{f['target']:<12}{at:<10}{'yes' if f['active'] else 'no':<8}{rtos}"
            )
            lines += [f"{'':<20}s{shard} phases: {phase_line(p)}" for shard, p in f["phases_ms"].items()]
    return "\n".join(lines)


def phase_line(phases_ms: dict[str, float]) -> str:
    """'detect 412 + lock 3 + ... = 1,020 ms'"""
    parts = " + ".join(f"{name} {ms:.0f}" for name, ms in phases_ms.items())
    return f"{parts} = {sum(phases_ms.values()):,.0f} ms"
