"""CPU priority for a move's own database sessions, when their server runs on this machine.

A move has two kinds of work. The copy is background work: the bank's clients should not pay for
it, so its sessions yield the CPU to theirs (`BACKGROUND`). The freeze is a critical section:
every client write of the moving slots waits until it ends, so its sessions go first
(`CRITICAL`). On a machine whose cores the load keeps busy, this is what keeps the freeze short
and the clients' throughput up while slots move.

A session's server process is found by its pid (pg_backend_pid) and checked to be this very
connection (the process title on this machine names the client's address and port) before its
nice value is changed: a server elsewhere, or one this process may not renice (raising priority
takes CAP_SYS_NICE), is left as it is. Priority never changes what a move does, only how soon.

A nice value ranks a process only among those of its own scheduling group. Where the kernel
groups processes by session (autogroup, on by default on Debian), the groups share the CPU
evenly whatever their processes' nice values, and PostgreSQL makes each of its processes (every
backend, walsender, walreceiver) the leader of a session of its own: a group of one. So a move's
session gets its nice value on its group as well (`favour`; the group ends with the session),
and the freeze raises the groups of the processes its commits wait for, both primaries'
walsenders and their standbys' walreceivers (`groups_first`), and sets them back after it (or,
if its mover died in it, the node that settles the move does: `calm_groups`). On a busy machine
of some sixty groups a frozen move's session had a sixtieth of the CPU.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger(__name__)

BACKGROUND = 10
CRITICAL = -20


def favour(conn: psycopg.Connection[Any], nice: int) -> bool:
    """Sets the nice value of `conn`'s server process, if it is on this machine and this
    process may; True if it did."""
    pid = _local_backend(conn)
    if pid is None:
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, pid, nice)
        own_group = os.getsid(pid) == pid  # a session, and so an autogroup, of its own
    except OSError as err:  # not allowed (no CAP_SYS_NICE), or the backend is gone
        log.debug("event=move_priority_unchanged pid=%s nice=%s error=%r", pid, nice, err)
        return False
    return _set_autogroup(pid, nice) if own_group and _autogroup(pid) else True


def _local_backend(conn: psycopg.Connection[Any]) -> int | None:
    """The pid of `conn`'s server process if it runs here (its title names our socket's port)."""
    try:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        with socket.fromfd(conn.pgconn.socket, socket.AF_INET, socket.SOCK_STREAM) as sock:
            port = sock.getsockname()[1]
    except (OSError, psycopg.Error, IndexError, TypeError):
        return None
    if not row:
        return None
    pid = int(row[0])
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:  # not a process of this machine
        return None
    return pid if title.startswith("postgres:") and f"({port})" in title else None


@contextlib.contextmanager
def this_process(nice: int) -> Iterator[None]:
    """Every thread of this process at `nice` for the block (the mover's own work in the freeze,
    its ZooKeeper client's thread included), then each as it was; nothing changes where this
    process may not (raising priority takes CAP_SYS_NICE) or where threads are not in /proc."""
    before: dict[int, int] = {}
    try:
        for tid in (int(name) for name in os.listdir("/proc/self/task")):
            with contextlib.suppress(OSError):  # a thread that ended meanwhile
                level = os.getpriority(os.PRIO_PROCESS, tid)
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                before[tid] = level
    except OSError as err:
        log.debug("event=mover_priority_unchanged nice=%s error=%r", nice, err)
    try:
        yield
    finally:
        for tid, level in before.items():
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, level)


@contextlib.contextmanager
def groups_first(conns: Iterable[psycopg.Connection[Any]], nice: int) -> Iterator[None]:
    """The scheduling groups of the replication processes of `conns`' servers (their walsenders
    and their standbys' walreceivers: a commit waits for one of them) at `nice` for the block,
    then each as it was; nothing changes where there are none here (autogroup off, servers
    elsewhere) or where this process may not raise them."""
    with groups_raised(_replication(list(conns)), nice):
        yield


@contextlib.contextmanager
def groups_raised(pids: Iterable[int], nice: int) -> Iterator[None]:
    """The groups of `pids` (each once) at `nice` for the block, then each as it was."""
    before: dict[int, int] = {}
    seen: set[str] = set()
    for pid in pids:
        group = _autogroup(pid)
        if group is None or group[0] in seen:
            continue
        seen.add(group[0])
        if _set_autogroup(pid, nice):
            before[pid] = group[1]
    try:
        yield
    finally:
        for pid, level in before.items():
            _set_autogroup(pid, level)


def calm_groups(conns: Iterable[psycopg.Connection[Any]]) -> int:
    """Sets back to 0 the raised groups of the replication processes of `conns`' servers (a
    mover that died in its freeze could not); returns how many it set back."""
    pids = _replication(list(conns))
    raised = {group[0]: pid for pid, group in ((p, _autogroup(p)) for p in pids) if group and group[1] < 0}
    return sum(1 for pid in raised.values() if _set_autogroup(pid, 0))


def _replication(conns: list[psycopg.Connection[Any]]) -> list[int]:
    """The walsenders of `conns`' servers and the walreceivers of their standbys that run here
    (a standby's walreceiver is named by its cluster_name, the name it streams under)."""
    senders: list[int] = []
    titles: set[bytes] = set()
    for conn in conns:
        try:
            rows = conn.execute("SELECT pid, application_name, state FROM pg_stat_replication").fetchall()
        except psycopg.Error:
            continue
        senders += [int(pid) for pid, _, _ in rows]
        streaming = [name for _, name, state in rows if name and state == "streaming"]
        titles |= {f"postgres: {name}: walreceiver".encode() for name in streaming}
    return [pid for pid in senders if _is_walsender(pid)] + _processes_titled(titles)


def _is_walsender(pid: int) -> bool:
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # not a process of this machine
        return False
    return title.startswith(b"postgres: ") and b": walsender " in title


def _processes_titled(titles: set[bytes]) -> list[int]:
    """The processes of this machine whose title starts with one of `titles`."""
    if not titles:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            title = Path(entry.path, "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if any(title.startswith(t) for t in titles):
            found.append(int(entry.name))
    return found


def _autogroup(pid: int) -> tuple[str, int] | None:
    """The process's autogroup, as its name and nice value (`/autogroup-42 nice 0`)."""
    try:
        name, _, level = Path(f"/proc/{pid}/autogroup").read_text().split()
        return name, int(level)
    except (OSError, ValueError):
        return None


def _set_autogroup(pid: int, nice: int) -> bool:
    try:
        Path(f"/proc/{pid}/autogroup").write_text(str(nice))
    except OSError as err:  # not allowed, or the process is gone
        log.debug("event=move_group_priority_unchanged pid=%s nice=%s error=%r", pid, nice, err)
        return False
    return True
