"""A reconnecting ZooKeeper client does not wait a whole session timeout on a server that is cut
off: each TCP connect gives up after CONNECT_TIMEOUT_S and the next server is tried."""

from __future__ import annotations

from typing import Any

import pytest
from kazoo.handlers import utils
from kazoo.retry import ForceRetryError

from services.dcs import store


@pytest.mark.parametrize(
    ("asked", "used"), [(2.0, store.CONNECT_TIMEOUT_S), (0.2, 0.2), (None, store.CONNECT_TIMEOUT_S)]
)
def test_a_connect_to_one_server_is_cut_short(
    monkeypatch: pytest.MonkeyPatch, asked: float | None, used: float
) -> None:
    seen: dict[str, Any] = {}

    def connect(module: Any, *args: Any, **kwargs: Any) -> str:
        seen.update(kwargs)
        return "socket"

    monkeypatch.setattr(utils, "create_tcp_connection", connect)
    handler = store.QuickConnectHandler()
    assert handler.create_connection(address=("127.0.0.1", 2181), timeout=asked) == "socket"
    assert seen["timeout"] == used and seen["address"] == ("127.0.0.1", 2181)


def test_every_session_of_the_bank_uses_it() -> None:
    dcs = store.Dcs.session("127.0.0.1:2181", 2.0)
    assert isinstance(dcs.client.handler, store.QuickConnectHandler)


def test_a_dropped_session_tries_the_servers_again_within_a_third_of_a_second() -> None:
    """While the ensemble elects a leader every server drops its clients: a round of connects
    fails, and the next round comes soon (not after a doubling wait of up to a second)."""
    retry = store.Dcs.session("127.0.0.1:2181", 2.0).client._conn_retry.copy()
    slept: list[float] = []
    retry.sleep_func, retry.interrupt = slept.append, None  # (a client not started counts as stopped)
    rounds = iter(range(8))

    def connect_round() -> None:
        if next(rounds) < 7:
            raise ForceRetryError("every server dropped the connection")

    retry(connect_round)
    assert len(slept) == 7 and max(slept) <= 0.25 * 1.4, slept  # the longest wait, with its jitter
