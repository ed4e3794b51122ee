"""Starting a cluster with `bankctl` (as a user would) and reading its databases directly."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from bankclient import BankClient

BANKCTL = [sys.executable, "-m", "services.cli.main"]


def secrets(home: Path) -> dict[str, str]:
    return dict(json.loads((home / "cluster.json").read_text(encoding="utf-8"))["secrets"])


def peer_metadata(home: Path) -> tuple[tuple[str, str], ...]:
    """What a gateway presents to a bank-node: the cluster's peer token."""
    return (("authorization", f"Bearer {secrets(home)['peer_token']}"),)


def bankctl(home: Path, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BANKCTL, "--home", str(home), *args], capture_output=True, text=True, timeout=timeout_s, check=False
    )


@dataclass
class Cluster:
    home: Path

    def status(self) -> dict[str, Any]:
        done = bankctl(self.home, "status", "--json")
        assert done.stdout, done.stderr[-3000:]
        return dict(json.loads(done.stdout))

    @property
    def password(self) -> str:
        return str(json.loads((self.home / "cluster.json").read_text())["secrets"]["pg_password"])

    def components(self, kind: str) -> list[dict[str, Any]]:
        return [c for c in self.status()["components"] if c["kind"] == kind]

    def primary(self, shard: int) -> dict[str, Any]:
        return next(c for c in self.components("postgres") if c["shard"] == shard and c["role"] == "primary")

    def sql(self, shard: int, query: str, params: tuple[object, ...] | None = None) -> list[tuple[Any, ...]]:
        """Runs a query on the shard's current primary."""
        member = self.primary(shard)
        with psycopg.connect(
            host=member["host"], port=member["port"], user="bank", password=self.password, dbname="bank",
            autocommit=True, connect_timeout=3,
        ) as conn:  # fmt: skip
            cursor = conn.execute(query.encode(), params)
            return cursor.fetchall() if cursor.description else []

    def client(
        self, prefer_dc: str | None = None, deadline_s: float = 10.0, route: str = "gateway"
    ) -> BankClient:
        return BankClient.from_home(self.home, prefer_dc=prefer_dc, deadline_s=deadline_s, route=route)

    def check(self, wait_s: float = 0.0) -> dict[str, Any]:
        done = bankctl(self.home, "check", "--json", "--wait", str(wait_s))
        assert done.stdout, done.stderr[-3000:]
        return dict(json.loads(done.stdout))


def printed_json(stdout: str) -> Any:
    """The JSON a command printed after its progress lines (a line of its own opens it)."""
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if line in ("[", "{", "[]"))
    return json.loads("\n".join(lines[start:]))


def shard_owning(cluster: Cluster, slot: int) -> int:
    """The shard the slot map names for `slot`, as `status` shows it."""
    for shard in cluster.status()["shards"]:
        if any(a <= slot <= b for a, b in shard["slots"]):
            return int(shard["shard"])
    raise AssertionError(f"slot {slot} has no shard")


def move_records(cluster: Cluster) -> list[dict[str, Any]]:
    """Every slot move's journal record as ZooKeeper holds it now, oldest first."""
    from services.cluster.state import require_state
    from services.cluster.zookeeper import zk_client
    from services.moves.journal import read_all

    with zk_client(require_state(cluster.home)) as dcs:
        return read_all(dcs.client)


def move_record(cluster: Cluster, move_id: str) -> dict[str, Any]:
    return next(r for r in move_records(cluster) if r["id"] == move_id)


def settled_by_the_nodes(cluster: Cluster, move_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """Waits until the bank's nodes have finished or rolled back a move its mover left."""
    from tests.eventually import eventually

    def settled() -> dict[str, Any] | None:
        record = move_record(cluster, move_id)
        return record if record["state"] in ("done", "rolled_back") else None

    return eventually(settled, timeout_s, f"move {move_id} finished or rolled back by a node", interval_s=0.2)
