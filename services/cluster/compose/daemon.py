"""Docker's daemon, when none runs: started with the project's own address pool and recorded by
PID, stopped by that PID, and the host's iptables put back as they were before it started.

A daemon started on a machine whose IP forwarding is off turns forwarding on and sets the
`FORWARD` policy to `DROP`, and it adds chains of its own (DOCKER, DOCKER-USER, ...) that it
does not remove when it stops. What we started we undo: the rules are saved before the start
(`iptables-save`) and restored after the stop, and so is `ip_forward`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from services.host.processes import LaunchError, pid_alive, wait_until

# Docker's own default pools are private ranges that may be in use on a user's network; the
# project's DC bridge is 10.213.0.0/16, its containers' networks come from the next range.
ADDRESS_POOL = "base=10.214.0.0/16,size=24"
RECORD = "dockerd.json"
Say = Callable[[str], None]


@dataclass
class DaemonRecord:
    pid: int
    socket: str
    log: str
    iptables_before: str  # iptables-save output, restored at stop
    ip_forward_before: str
    data_root: str


def docker_answers(host: str | None = None) -> bool:
    """Whether a daemon answers on `host` (default: the usual socket or DOCKER_HOST)."""
    if shutil.which("docker") is None:
        return False
    env = {**os.environ, **({"DOCKER_HOST": host} if host else {})}
    done = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True,
                          text=True, env=env, check=False, timeout=30)  # fmt: skip
    return done.returncode == 0 and bool(done.stdout.strip())


def _iptables_save() -> str:
    if shutil.which("iptables-save") is None:
        return ""
    return subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout


def _ip_forward() -> str:
    return Path("/proc/sys/net/ipv4/ip_forward").read_text(encoding="ascii").strip()


def ensure_daemon(home: Path, say: Say) -> DaemonRecord | None:
    """Returns None when a daemon already answers (it is not ours to stop); else starts one,
    records it under `home` and returns the record."""
    if docker_answers():
        return None
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise LaunchError("Docker's engine is not installed: apt-get install docker.io (as root)")
    home.mkdir(parents=True, exist_ok=True)
    log = home / "logs" / "dockerd.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    socket = "/var/run/docker.sock"
    record = DaemonRecord(
        pid=0, socket=socket, log=str(log), iptables_before=_iptables_save(),
        ip_forward_before=_ip_forward(), data_root="/var/lib/docker",
    )  # fmt: skip
    cmd = [dockerd, "--host", f"unix://{socket}", "--default-address-pool", ADDRESS_POOL,
           "--pidfile", str(home / "dockerd.pid"), "--data-root", record.data_root]  # fmt: skip
    with open(log, "ab") as out:
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)  # fmt: skip
    record.pid = child.pid
    (home / RECORD).write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
    started = time.monotonic()
    try:
        wait_until(lambda: child.poll() is None and docker_answers(), 60, f"dockerd to answer (log: {log})")
    except TimeoutError:
        stop_daemon(home, say)
        raise
    say(
        f"docker: started dockerd (pid {child.pid}) in {time.monotonic() - started:.1f} s,"
        f" address pool {ADDRESS_POOL}"
    )
    return record


def _tables(saved: str) -> set[str]:
    return {line[1:].strip() for line in saved.splitlines() if line.startswith("*")}


def _restore_iptables(before: str) -> None:
    """The tables saved before the daemon started, as they were; the tables it made (nat, for
    its port mappings) emptied of every rule and chain it put there."""
    if shutil.which("iptables-restore") is None:
        return
    if before:
        subprocess.run(["iptables-restore"], input=before, text=True, check=False)
    nft_backed = (
        "nf_tables" in subprocess.run(["iptables", "--version"], capture_output=True, text=True).stdout
    )
    for table in sorted(_tables(_iptables_save()) - _tables(before)):
        subprocess.run(["iptables", "-t", table, "-F"], capture_output=True, check=False)
        subprocess.run(["iptables", "-t", table, "-X"], capture_output=True, check=False)
        if nft_backed and shutil.which("nft"):  # an empty table still lists; nftables can drop it
            subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True, check=False)


def load_record(home: Path) -> DaemonRecord | None:
    path = home / RECORD
    if not path.exists():
        return None
    return DaemonRecord(**json.loads(path.read_text(encoding="utf-8")))


def stop_daemon(home: Path, say: Say) -> bool:
    """Stops the daemon `ensure_daemon` started (by its recorded PID) and restores the host's
    iptables and forwarding as they were; False when there was none of ours."""
    record = load_record(home)
    if record is None:
        return False
    if pid_alive(record.pid):
        os.kill(record.pid, signal.SIGTERM)
        try:
            wait_until(lambda: not pid_alive(record.pid), 30, f"dockerd {record.pid} to stop")
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(record.pid, signal.SIGKILL)
    _restore_iptables(record.iptables_before)
    with contextlib.suppress(OSError):
        Path("/proc/sys/net/ipv4/ip_forward").write_text(record.ip_forward_before + "\n", encoding="ascii")
    (home / RECORD).unlink(missing_ok=True)
    say(f"docker: stopped dockerd (pid {record.pid}); iptables and ip_forward as they were before it")
    return True
