"""The `docker` and `docker-compose` commands the compose engine runs, each bounded in time."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.cluster.state import ClusterState
from services.host.processes import LaunchError

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"


def docker(*args: str, timeout_s: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout_s, check=False)
    if check and done.returncode != 0:
        raise LaunchError(f"docker {' '.join(args[:3])}: {done.stderr.strip()[-1500:]}")
    return done


def compose_command(state: ClusterState) -> list[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        raise LaunchError("docker-compose is not installed: apt-get install docker-compose (as root)")
    files = state.compose
    return [binary, "-p", files["project"], "-f", files["file"], "--env-file", files["env_file"]]


def compose(state: ClusterState, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*compose_command(state), *args], capture_output=True, text=True,
                          timeout=timeout_s, check=False)  # fmt: skip
    if done.returncode != 0:
        raise LaunchError(f"docker-compose {' '.join(args[:2])} failed: {done.stderr.strip()[-3000:]}")
    return done


def containers(project: str, **labels: str) -> list[str]:
    """Names of the project's containers (running or not) carrying every label given."""
    filters = [f"label={PROJECT_LABEL}={project}", *(f"label={k}={v}" for k, v in labels.items())]
    args = ["ps", "-a", "--format", "{{.Names}}", *(x for f in filters for x in ("--filter", f))]
    return [line for line in docker(*args).stdout.splitlines() if line.strip()]


def inspect(names: list[str]) -> dict[str, dict[str, Any]]:
    """name -> its `docker inspect` record (those that exist)."""
    if not names:
        return {}
    done = docker("inspect", *names, check=False)
    records = json.loads(done.stdout or "[]")
    return {record["Name"].lstrip("/"): record for record in records}


def running(names: list[str]) -> dict[str, bool]:
    records = inspect(names)
    return {name: bool(records.get(name, {}).get("State", {}).get("Running")) for name in names}


def each(action: str, names: list[str], timeout_s: float = 60) -> None:
    """`docker <action> NAME` for every name at once (a DC's containers die or start together)."""
    if not names:
        return
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = list(pool.map(lambda n: docker(action, n, timeout_s=timeout_s, check=False), names))
    failed = [f"{n}: {r.stderr.strip()}" for n, r in zip(names, results, strict=True) if r.returncode != 0]
    if failed:
        raise LaunchError(f"docker {action}: " + "; ".join(failed))
