"""A bank-node or gateway as a child process of the launcher, with its log and its PID."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.cluster.state import spawn
from services.host.processes import LaunchError, pid_alive, terminate, wait_until


@dataclass
class ServiceProcess:
    pid: int
    port: int
    log_file: Path

    def stop(self) -> None:
        terminate(self.pid)


def start_service(
    module: str, name: str, config: dict[str, Any], run_dir: Path, log_file: Path,
    exec_prefix: list[str] | None = None, extra_args: list[str] | None = None, timeout_s: float = 30,
) -> ServiceProcess:  # fmt: skip
    """Starts `python -m <module> --config F --port-file P` and returns once it serves."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / f"{name}.json"
    config_file.touch(mode=0o600)
    config_file.write_text(json.dumps(config, indent=2), encoding="utf-8")
    port_file = run_dir / f"{name}.port"
    with contextlib.suppress(FileNotFoundError):
        port_file.unlink()
    cmd = [sys.executable, "-m", module, "--config", str(config_file), "--port-file", str(port_file)]
    pid = spawn([*(exec_prefix or []), *cmd, *(extra_args or [])], log_file)
    try:
        wait_until(lambda: port_file.exists() or not pid_alive(pid), timeout_s, name)
    except TimeoutError:
        terminate(pid)
        raise LaunchError(f"{name} did not start in {timeout_s:.0f} s; log: {log_file}") from None
    if not port_file.exists():
        raise LaunchError(f"{name} exited while starting; log: {log_file}")
    return ServiceProcess(pid=pid, port=int(port_file.read_text(encoding="ascii")), log_file=log_file)
