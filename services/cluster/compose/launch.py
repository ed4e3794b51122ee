"""`bankctl up --engine compose` and its `down`: Docker's daemon started if none runs, the image
built if missing or stale, the compose file of this topology rendered into the home with an env
file of the cluster's secrets, the containers brought up and waited for, and every container
recorded where the launcher records PIDs. `down` removes the containers, networks and volumes it
made, and stops the daemon it started (iptables as they were before it)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from services.cluster.compose import compose_file, daemon, docker, images
from services.cluster.compose.engine import healthy
from services.cluster.credentials import DEFAULT_CLIENT_RATE_PER_S, write_credentials
from services.cluster.engine import COMPOSE_ENGINE
from services.cluster.launcher import forget_accounts
from services.cluster.state import ClusterState, Component, begin_stopping
from services.cluster.status import grpc_serving
from services.cluster.topology import (
    COMPOSE,
    GATEWAY_METRICS_PORT,
    NODE_METRICS_PORT,
    NODE_PORT,
    REDIS_PORT,
    SENTINEL_PORT,
    ZK_CLIENT_PORT,
    ClusterSpec,
)
from services.cluster.zookeeper import zk_client
from services.host.processes import LaunchError, wait_until
from services.host.service_user import remove_data_root

Say = Callable[[str], None]
REPO_DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
SERVING_TIMEOUT_S = 180.0
SECRET_ENV = {
    "BANK_PG_PASSWORD": "pg_password", "BANK_REDIS_PASSWORD": "redis_password", "BANK_ZK_AUTH": "zk_auth",
    "BANK_PEER_TOKEN": "peer_token", "BANK_CLIENT_TOKEN": "client_token", "BANK_ADMIN_TOKEN": "admin_token",
}  # fmt: skip


def up(
    home: Path, spec: ClusterSpec, say: Say, client_rate_per_s: float = DEFAULT_CLIENT_RATE_PER_S
) -> ClusterState:
    """Brings the compose cluster up and returns once every shard is led and every gateway serves;
    on a failure it says what failed, removes what it made, and raises."""
    existing = ClusterState.load(home)
    if existing is not None:
        say("found the record of a cluster in this home; bringing it down first")
        down(home, say)
    forget_accounts(home)
    state = ClusterState.new(replace(spec, net=COMPOSE), home)
    state.engine, state.started_at = COMPOSE_ENGINE, time.time()
    started = time.monotonic()
    state.compose = {"project": f"{spec.name}{spec.octet}", "daemon_started": False}
    state.save()
    write_credentials(state, client_rate_per_s)
    try:
        state.compose["daemon_started"] = daemon.ensure_daemon(state.home, say) is not None
        state.save()
        build_s = images.build_image(say, log_file=state.home / "logs" / "image-build.log")
        _write_files(state, client_rate_per_s)
        say(f"compose: starting {state.compose['project']} ({spec.dcs} DCs x {spec.shards} shards)")
        docker.compose(state, "up", "-d", "--no-build")
        _record(state)
        _wait_serving(state)
    except BaseException as err:
        say(f"FAILED: {err}")
        say("removing what was started")
        down(home, say)
        raise
    state.status = "up"
    state.compose["up_s"] = round(time.monotonic() - started, 1)
    state.compose["image_build_s"] = round(build_s, 1)
    state.save()
    say(f"cluster up in {state.compose['up_s']} s (image {build_s:.0f} s of it): engine compose, "
        f"gateways {', '.join(f'127.0.0.1:{c.port}' for c in state.find('gateway'))}")  # fmt: skip
    return state


def _write_files(state: ClusterState, client_rate_per_s: float) -> None:
    """This topology's compose file (Grafana's files from the repository's deploy/) and an env
    file of the cluster's secrets, owner-only."""
    folder = state.home / "compose"
    folder.mkdir(parents=True, exist_ok=True)
    rendered = compose_file.compose(state.spec, deploy_dir=str(REPO_DEPLOY))
    compose_path = folder / "docker-compose.yml"
    compose_path.write_text(yaml.safe_dump(rendered, sort_keys=False, width=120), encoding="utf-8")
    env_path = folder / "bank.env"
    env_path.touch(mode=0o600)
    lines = [f"{name}={state.secrets[key]}" for name, key in SECRET_ENV.items()]
    lines.append(f"BANK_CLIENT_RATE_PER_S={client_rate_per_s}")
    env_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    state.compose.update(file=str(compose_path), env_file=str(env_path))
    state.save()


def _record(state: ClusterState) -> None:
    """Every container of a role the tools ask, as a component, at the address it serves on;
    gateways where the host reaches them (127.0.0.1 and the published port)."""
    spec = state.spec
    project = state.compose["project"]
    records = docker.inspect(docker.containers(project))
    ports = {"zookeeper": ZK_CLIENT_PORT, "redis": REDIS_PORT, "sentinel": SENTINEL_PORT, "node": NODE_PORT}
    for name, record in sorted(records.items()):
        labels: dict[str, Any] = record["Config"]["Labels"]
        role, dc = labels.get("bank.role", ""), labels.get("bank.dc", "")
        pid = record["State"].get("Pid") or None
        log = f"docker logs {name}"
        if role in ports:
            metrics = NODE_METRICS_PORT if role == "node" else None
            state.add(Component(dc, role, f"{role}-{dc}", spec.address(dc), ports[role], pid, log,
                                metrics_port=metrics, container=name))  # fmt: skip
        elif role == "postgres":
            shard = int(labels["bank.shard"])
            member = spec.pg_member(shard, dc)
            state.add(Component(dc, "postgres", member, spec.address(dc), spec.pg_port(shard), pid, log,
                                shard=shard, container=name))  # fmt: skip
        elif role == "gateway":
            port = compose_file.published_gateway_port(spec, dc)
            state.add(Component(dc, "gateway", f"gateway-{dc}", "127.0.0.1", port, pid, log,
                                metrics_port=GATEWAY_METRICS_PORT, container=name))  # fmt: skip
        elif role == "prometheus":
            port = compose_file.PROMETHEUS_PORT
            state.add(Component("host", "prometheus", "prometheus", "127.0.0.1", port, pid, log,
                                container=name))  # fmt: skip


def _wait_serving(state: ClusterState) -> None:
    """Every member healthy (its keeper brought it up), every shard led, every gateway serving."""
    members = [c.container for c in state.find("postgres")]
    wait_until(
        lambda: healthy(members), SERVING_TIMEOUT_S, "every PostgreSQL member to be up (docker logs of pg-*)"
    )
    with zk_client(state) as dcs:
        wait_until(lambda: all(dcs.leader_exists(s) for s in range(state.spec.shards)), SERVING_TIMEOUT_S,
                   "every shard to have a serving leader (docker logs of the node-* containers)")  # fmt: skip
    for gateway in state.find("gateway"):
        _wait_gateway(state, gateway)


def _members_up(members: list[str]) -> bool:
    """Healthy, all of them; a member whose keeper gave up fails the wait at once, naming it."""
    exited = [name for name, up in docker.running(members).items() if not up]
    if exited:
        raise LaunchError(f"{', '.join(exited)} exited while starting; see docker logs {exited[0]}")
    return healthy(members)


def _wait_gateway(state: ClusterState, gateway: Component) -> None:
    wait_until(lambda: grpc_serving(state, gateway), SERVING_TIMEOUT_S, f"{gateway.name} to serve")


def down(home: Path, say: Say) -> None:
    """Removes the project's containers, networks and volumes, then the daemon if `up` started it."""
    state = begin_stopping(home, say)
    if state is None:
        return
    if state.compose.get("file") and Path(state.compose["file"]).exists() and daemon.docker_answers():
        docker.compose(state, "down", "--volumes", "--remove-orphans", "--timeout", "10")
        left = docker.containers(state.compose["project"])
        if left:
            raise LaunchError(f"containers left after docker-compose down: {', '.join(left)}")
        say(f"compose: containers, networks and volumes of {state.compose['project']} removed")
    if state.compose.get("daemon_started"):
        daemon.stop_daemon(state.home, say)
    shutil.rmtree(state.home / "compose", ignore_errors=True)
    remove_data_root(state.home, "pg")  # made on the host only by tools that looked for members
    forget_accounts(state.home)
    state.forget()
    say("cluster down")
