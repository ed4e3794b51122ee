"""Redis for routing: a primary in one DC, a replica in every other, and a Sentinel per DC."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import redis

from services.cluster.netns import in_dc
from services.cluster.state import ClusterState, Component, spawn
from services.cluster.topology import REDIS_PORT, SENTINEL_MASTER, SENTINEL_PORT, ClusterSpec
from services.host.processes import LaunchError

SENTINEL_QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def _redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise LaunchError("redis-server is not installed; run `make setup` as root")
    return path


def write_redis_config(
    spec: ClusterSpec, dc: str, data_dir: Path, primary: str | None, password: str
) -> Path:
    """`primary` is the address to replicate from, or None for the primary itself."""
    data_dir.mkdir(parents=True, exist_ok=True)
    address = spec.address(dc)
    lines = [
        f"bind {address}",
        f"port {REDIS_PORT}",
        "protected-mode no",
        "daemonize no",
        f"dir {data_dir}",
        'save ""',
        "appendonly no",
        "repl-diskless-sync yes",
        "repl-diskless-sync-delay 0",
        f"replica-announce-ip {address}",
        f"bind-source-addr {address}",
        # Every client authenticates; replicas too, to whichever of them is the primary.
        f"requirepass {password}",
        f"masterauth {password}",
    ]
    if primary is not None:
        lines.append(f"replicaof {primary} {REDIS_PORT}")
    config = data_dir / "redis.conf"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def redis_command(
    spec: ClusterSpec, dc: str, data_dir: Path, primary: str | None, password: str
) -> list[str]:
    """Writes the DC's Redis configuration and returns the command that runs it."""
    return [_redis_server(), str(write_redis_config(spec, dc, data_dir, primary, password))]


def start_redis(state: ClusterState, dc: str, primary: str | None) -> Component:
    spec = state.spec
    data_dir = state.home / "redis" / dc
    cmd = redis_command(spec, dc, data_dir, primary, state.secrets["redis_password"])
    log_file = state.home / "logs" / f"redis-{dc}.log"
    pid = spawn(in_dc(spec, dc, cmd), log_file)
    return state.add(
        Component(dc, "redis", f"redis-{dc}", spec.address(dc), REDIS_PORT, pid, str(log_file),
                  data_dir=str(data_dir))
    )  # fmt: skip


def sentinel_command(spec: ClusterSpec, dc: str, data_dir: Path, primary: str, password: str) -> list[str]:
    """Writes a Sentinel's configuration (watching `primary`; the file must stay writable:
    Sentinel rewrites it) and returns the command that runs it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    address = spec.address(dc)
    config = data_dir / "sentinel.conf"
    config.write_text(
        "\n".join(
            [
                f"bind {address}",
                f"port {SENTINEL_PORT}",
                "protected-mode no",
                "daemonize no",
                f"dir {data_dir}",
                f"sentinel announce-ip {address}",
                f"bind-source-addr {address}",
                "sentinel resolve-hostnames no",
                f"sentinel monitor {SENTINEL_MASTER} {primary} {REDIS_PORT} {SENTINEL_QUORUM}",
                f"sentinel down-after-milliseconds {SENTINEL_MASTER} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SENTINEL_MASTER} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {SENTINEL_MASTER} 1",
                f"sentinel auth-pass {SENTINEL_MASTER} {password}",
                f"requirepass {password}",
                f"sentinel sentinel-pass {password}",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return [_redis_server(), str(config), "--sentinel"]


def start_sentinel(state: ClusterState, dc: str, primary: str) -> Component:
    """A Sentinel watching `primary`."""
    spec = state.spec
    data_dir = state.home / "sentinel" / dc
    cmd = sentinel_command(spec, dc, data_dir, primary, state.secrets["redis_password"])
    log_file = state.home / "logs" / f"sentinel-{dc}.log"
    pid = spawn(in_dc(spec, dc, cmd), log_file)
    return state.add(
        Component(dc, "sentinel", f"sentinel-{dc}", spec.address(dc), SENTINEL_PORT, pid, str(log_file),
                  data_dir=str(data_dir))
    )  # fmt: skip


def redis_role(host: str, port: int = REDIS_PORT, password: str | None = None) -> tuple[str, int] | None:
    """('master', connected replicas) or ('slave', 0) as the server says; None if unreachable."""
    try:
        client = redis.Redis(
            host=host, port=port, password=password, socket_timeout=1, socket_connect_timeout=1
        )
        info = client.info("replication")
        client.close()
    except redis.RedisError:
        return None
    return str(info["role"]), int(info.get("connected_slaves", 0))


def _sentinel(host: str, port: int, password: str | None, *command: str) -> Any:
    """One SENTINEL command's answer, or None when the Sentinel does not answer."""
    client = redis.Redis(host=host, port=port, password=password, socket_timeout=1, socket_connect_timeout=1)
    try:
        return client.execute_command("SENTINEL", *command, SENTINEL_MASTER)
    except redis.RedisError:
        return None
    finally:
        client.close()


def sentinel_primary(host: str, port: int = SENTINEL_PORT, password: str | None = None) -> str | None:
    """The primary this Sentinel names, as 'host:port'."""
    answer = _sentinel(host, port, password, "get-master-addr-by-name")
    if not answer:
        return None
    host_part, port_part = (part.decode() if isinstance(part, bytes) else str(part) for part in answer)
    return f"{host_part}:{port_part}"


def sentinel_peers(host: str, port: int = SENTINEL_PORT, password: str | None = None) -> int | None:
    """How many other Sentinels this one knows."""
    others = _sentinel(host, port, password, "sentinels")
    return None if others is None else len(others)
