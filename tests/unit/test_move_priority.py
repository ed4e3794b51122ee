"""A move changes the CPU priority only of its own PostgreSQL sessions on this machine: a pid
that is not a postgres process serving this very socket is left alone (the real sessions are
favoured in the slot-move tests, against real PostgreSQL)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.moves import priority


class FakeSession:
    """A connection whose 'server process' is the pid given, on a real TCP socket."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid, self.pgconn = pid, type("PgConn", (), {"socket": sock.fileno()})()

    def execute(self, query: str) -> Any:
        assert query == "SELECT pg_backend_pid()"
        return type("Cursor", (), {"fetchone": lambda _: (self.pid,)})()


@pytest.fixture
def tcp_socket() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        try:
            yield client
        finally:
            client.close()


def test_a_pid_that_is_not_a_postgres_session_of_this_socket_is_left_alone(tcp_socket: socket.socket) -> None:
    before = os.getpriority(os.PRIO_PROCESS, os.getpid())
    assert priority.favour(FakeSession(os.getpid(), tcp_socket), priority.BACKGROUND) is False  # type: ignore[arg-type]
    assert os.getpriority(os.PRIO_PROCESS, os.getpid()) == before


def test_a_pid_of_no_process_here_is_left_alone(tcp_socket: socket.socket) -> None:
    assert priority.favour(FakeSession(2**22 + 12345, tcp_socket), priority.CRITICAL) is False  # type: ignore[arg-type]


def test_a_freeze_raises_the_scheduling_group_of_a_server_and_sets_it_back() -> None:
    """A process of its own session stands for a PostgreSQL server (an autogroup of its own);
    the test runner's group is never changed. A kernel without autogroups has nothing to raise."""
    server = subprocess.Popen(["sleep", "30"], start_new_session=True)
    group = Path(f"/proc/{server.pid}/autogroup")

    def level() -> str:
        return group.read_text().split()[-1] if group.exists() else "none"

    try:
        before = level()
        with priority.groups_raised([server.pid, server.pid], -5):
            during = level()
        expected = ["0", "-5", "0"] if group.exists() else ["none"] * 3
        assert [before, during, level()] == expected
    finally:
        server.kill()
        server.wait()
