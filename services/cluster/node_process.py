"""A bank-node as a child process of the launcher, with its log and its PID."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from services.cluster.processes import LaunchError, terminate, wait_until


@dataclass
class NodeProcess:
    pid: int
    port: int
    log_file: Path

    def stop(self) -> None:
        terminate(self.pid)


def start_node(
    shard: int, conninfo: str, run_dir: Path, host: str = "127.0.0.1", dc: str = "", timeout_s: float = 30
) -> NodeProcess:
    """Starts `python -m services.node` and returns once it serves (it writes its port file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"node-{dc or 'local'}-shard{shard}"
    conninfo_file = run_dir / f"{name}.conninfo"
    conninfo_file.write_text(conninfo, encoding="utf-8")
    conninfo_file.chmod(0o600)
    port_file = run_dir / f"{name}.port"
    with contextlib.suppress(FileNotFoundError):
        port_file.unlink()
    log_file = run_dir / f"{name}.log"
    with open(log_file, "ab") as log:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.node",
                "--shard",
                str(shard),
                "--conninfo-file",
                str(conninfo_file),
                "--listen",
                f"{host}:0",
                "--dc",
                dc,
                "--port-file",
                str(port_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: port_file.exists() or child.poll() is not None, timeout_s, f"bank-node of shard {shard}"
        )
    except TimeoutError:
        terminate(child.pid)
        raise LaunchError(
            f"bank-node of shard {shard} did not start in {timeout_s:.0f} s; log: {log_file}"
        ) from None
    if child.poll() is not None:
        raise LaunchError(f"bank-node of shard {shard} exited with {child.returncode}; log: {log_file}")
    return NodeProcess(pid=child.pid, port=int(port_file.read_text(encoding="ascii")), log_file=log_file)
