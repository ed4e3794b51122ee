"""Starting, waiting for and stopping processes on this host, by the PIDs recorded for them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class LaunchError(RuntimeError):
    """A component failed to start; the message says which and where its log is."""


def run_checked(cmd: Sequence[str], what: str, log_file: Path | None = None, timeout_s: float = 120) -> str:
    """Runs a set-up command to its end; on failure says what failed, with its output."""
    try:
        done = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{what}: no answer after {timeout_s:.0f} s ({' '.join(cmd)})") from None
    if done.returncode != 0:
        where = f"; log: {log_file}" if log_file else ""
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise LaunchError(f"{what} failed (exit {done.returncode}){where}\n{output}")
    return done.stdout


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """Polls `condition` until it holds, or raises after `timeout_s` naming what never happened."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not reached after {timeout_s:.1f} s")
        time.sleep(interval_s)


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def terminate(pid: int, grace_s: float = 10.0, first: signal.Signals = signal.SIGTERM) -> None:
    """`first` (SIGTERM), then SIGKILL after `grace_s`; returns once the process is gone."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first)
    try:
        wait_until(lambda: not pid_alive(pid), grace_s, f"process {pid} to exit")
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10.0, f"process {pid} to die")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on `host` a moment ago (the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False
