"""A reconnecting ZooKeeper client does not wait a whole session timeout on a server that is cut
off: each TCP connect gives up after CONNECT_TIMEOUT_S and the next server is tried."""

from __future__ import annotations

from typing import Any

import pytest
from kazoo.handlers import utils

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
