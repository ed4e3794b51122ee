"""When the shard's PostgreSQL goes away, callers get UNAVAILABLE (retry-able), and service
comes back by itself when the database does."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from bank.v1 import account_pb2, account_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from services.host.postgres import PostgresInstance
from services.host.processes import free_port
from services.host.service_user import data_root, remove_data_root
from services.node.server import BankNode, NodeConfig
from tests.integration.conftest import HOST, rid


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresInstance]:
    """A PostgreSQL of this module alone, since the test stops it."""
    home: Path = tmp_path_factory.mktemp("outage-home")
    pg = PostgresInstance(
        "outage", data_root(home, "pg") / "outage", HOST, free_port(HOST), secrets.token_hex(16)
    )
    try:
        pg.init()
        yield pg
    finally:
        pg.stop()
        remove_data_root(home, "pg")


def test_database_outage_is_unavailable_then_heals(own_postgres: PostgresInstance) -> None:
    node = BankNode(NodeConfig.single(0, own_postgres.conninfo(), f"{HOST}:0"))
    node.start()
    try:
        with grpc.insecure_channel(f"{HOST}:{node.port}") as channel:
            accounts = account_pb2_grpc.AccountServiceStub(channel)
            ledger = ledger_pb2_grpc.LedgerServiceStub(channel)
            number = accounts.OpenAccount(
                account_pb2.OpenAccountRequest(request_id=rid(), customer_id="outage", currency="CNY")
            ).account.account_number
            deposit = ledger_pb2.DepositRequest(
                request_id=rid(), account_number=number, amount=500, currency="CNY"
            )

            own_postgres.kill()
            with pytest.raises(grpc.RpcError) as down:
                ledger.Deposit(deposit, timeout=20)
            assert down.value.code() == grpc.StatusCode.UNAVAILABLE, down.value.details()

            own_postgres.start()
            # The pool reconnects on its own; the retry under the same request id goes through once.
            deadline = time.monotonic() + 30
            while True:
                try:
                    answer = ledger.Deposit(deposit, timeout=10)
                    break
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                    assert time.monotonic() < deadline, "the node never recovered from the outage"
                    time.sleep(0.2)
            assert answer.balance_after == 500
            assert ledger.Deposit(deposit).transfer.transfer_id == answer.transfer.transfer_id
            state = accounts.GetAccount(account_pb2.GetAccountRequest(account_number=number)).account
            assert state.balance == 500
    finally:
        node.stop()
