"""The launcher's record of a cluster (`<home>/cluster.json`): what it started, where, with
which PID, so that `status` can find it and `down` can stop exactly that."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.cluster.topology import ClusterSpec
from services.host.processes import LaunchError

STATE_FILE = "cluster.json"
_children: list[subprocess.Popen[bytes]] = []  # kept so that Python does not warn they still run


@dataclass
class Component:
    dc: str
    kind: str  # zookeeper | redis | sentinel | postgres | node | gateway
    name: str
    host: str
    port: int
    pid: int | None
    log: str
    shard: int | None = None
    data_dir: str = ""
    metrics_port: int | None = None  # where Prometheus scrapes it (nodes and gateways)
    container: str = ""  # the compose engine's container (its name), where there is one


@dataclass
class ClusterState:
    spec: ClusterSpec
    home: Path
    secrets: dict[str, str] = field(default_factory=dict)
    components: list[Component] = field(default_factory=list)
    netem: dict[str, Any] = field(default_factory=dict)
    status: str = "starting"  # starting | up | stopping
    started_at: float = 0.0
    # Chaos: every fault injected (with its measured recovery), and the accounts probed for it.
    faults: list[dict[str, Any]] = field(default_factory=list)
    probes: dict[str, str] = field(default_factory=dict)  # shard -> account number
    retired: list[int] = field(default_factory=list)  # shards removed (remove-shard), numbers kept
    engine: str = "processes"  # what runs it: the launcher's processes, or "compose" (engine.py)
    compose: dict[str, Any] = field(default_factory=dict)  # the compose engine's project and files
    # Shards start in parallel threads, each recording its members.
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    @classmethod
    def new(cls, spec: ClusterSpec, home: Path) -> ClusterState:
        return cls(spec=spec, home=home.resolve(), secrets=new_secrets())

    @property
    def path(self) -> Path:
        return self.home / STATE_FILE

    def add(self, component: Component) -> Component:
        with self._lock:
            self.components = [c for c in self.components if c.name != component.name] + [component]
            self.save()
        return component

    @property
    def active_shards(self) -> list[int]:
        """The shards serving now: every one `up` or `add-shard` made but those removed."""
        return [s for s in range(self.spec.shards) if s not in self.retired]

    def find(self, kind: str, dc: str | None = None, shard: int | None = None) -> list[Component]:
        return [
            c
            for c in self.components
            if c.kind == kind and (dc is None or c.dc == dc) and (shard is None or c.shard == shard)
        ]

    def save(self) -> None:
        """Written whole to a temporary file and renamed: never half a state."""
        with self._lock:
            self._write()

    def _write(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        data = {
            "spec": self.spec.to_json(),
            "secrets": self.secrets,
            "components": [asdict(c) for c in self.components],
            "netem": self.netem,
            "status": self.status,
            "started_at": self.started_at,
            "faults": self.faults,
            "probes": self.probes,
            "retired": self.retired,
            "engine": self.engine,
            "compose": self.compose,
        }
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(data, indent=2), encoding="utf-8")
        partial.chmod(0o600)
        os.replace(partial, self.path)

    @classmethod
    def load(cls, home: Path) -> ClusterState | None:
        path = home.resolve() / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            spec=ClusterSpec.from_json(data["spec"]),
            home=home.resolve(),
            secrets=data["secrets"],
            components=[Component(**c) for c in data["components"]],
            netem=data.get("netem", {}),
            status=data.get("status", "up"),
            started_at=data.get("started_at", 0.0),
            faults=data.get("faults", []),
            probes=data.get("probes", {}),
            retired=[int(s) for s in data.get("retired", [])],
            engine=data.get("engine", "processes"),
            compose=data.get("compose", {}),
        )

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)


def require_state(home: Path) -> ClusterState:
    state = ClusterState.load(home)
    if state is None:
        raise LaunchError(f"no cluster in {home.resolve()}; start one with `bankctl up`")
    return state


def begin_stopping(home: Path, say: Callable[[str], None]) -> ClusterState | None:
    """The record of the cluster in `home`, marked as stopping (None, said, when there is none)."""
    state = ClusterState.load(home)
    if state is None:
        say(f"no cluster recorded in {home.resolve()}; nothing to stop")
        return None
    state.status = "stopping"
    state.save()
    return state


def new_secrets() -> dict[str, str]:
    """Every credential of a cluster, made by `up`: PostgreSQL's and Redis's passwords, the
    ZooKeeper digest user of the bank's znodes, and the bearer tokens of the three roles."""
    return {
        "pg_password": secrets.token_hex(16),
        "redis_password": secrets.token_hex(16),
        "zk_auth": f"bank:{secrets.token_hex(16)}",
        "peer_token": secrets.token_urlsafe(32),
        "client_token": secrets.token_urlsafe(32),
        "admin_token": secrets.token_urlsafe(32),
    }


def spawn(cmd: list[str], log_file: Path, env: dict[str, str] | None = None) -> int:
    """Starts a long-running process in its own session, its output appended to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        child = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    _children.append(child)
    return child.pid
