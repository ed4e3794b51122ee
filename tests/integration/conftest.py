"""Fixtures of the integration tier: a real PostgreSQL started by the project's launcher, and a
bank-node (in this process) on a fresh database per test module."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest

from bank.v1 import account_pb2, account_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from services.host.postgres import PostgresInstance
from services.host.processes import free_port
from services.host.service_user import data_root, remove_data_root
from services.node.server import BankNode, NodeConfig
from tests.integration.cluster_helpers import Cluster, bankctl

HOST = "127.0.0.1"


def report(config: pytest.Config, line: str) -> None:
    """Writes a line to the test log even while output is captured."""
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capture = config.pluginmanager.getplugin("capturemanager")
    assert reporter is not None and capture is not None
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def bank_cluster(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Iterator[Cluster]:
    """A whole cluster (loopback or netns, as `up` chooses) shared by the routing and security tests."""
    home = tmp_path_factory.mktemp("routing")
    started = time.monotonic()
    up = bankctl(home, "up", "--name", "bkr", "--octet", "79")
    try:
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        report(pytestconfig, f"\n[routing] bankctl up: {time.monotonic() - started:.1f} s")
        yield Cluster(home)
    finally:
        assert bankctl(home, "down").returncode == 0


@pytest.fixture(scope="session")
def postgres(
    tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> Iterator[PostgresInstance]:
    home = tmp_path_factory.mktemp("bank-home")
    pg = PostgresInstance(
        "it-shard", data_root(home, "pg") / "it-shard", HOST, free_port(HOST), secrets.token_hex(16)
    )
    try:
        pg.init()
        with psycopg.connect(pg.conninfo()) as conn:
            version = conn.execute("SELECT version()").fetchone()
        report(
            pytestconfig,
            f"\n[integration] PostgreSQL started by the launcher: pid {pg.pid()}, {HOST}:{pg.port},"
            f" data {pg.data_dir}; the server says: {version[0] if version else '?'}",
        )
        yield pg
    finally:
        pg.stop()
        remove_data_root(home, "pg")
        report(pytestconfig, f"\n[integration] PostgreSQL on {HOST}:{pg.port} stopped, its data removed")


@dataclass
class Bank:
    """A bank-node on its own database, and clients of it."""

    node: BankNode
    conninfo: str
    channel: grpc.Channel
    accounts: account_pb2_grpc.AccountServiceStub
    ledger: ledger_pb2_grpc.LedgerServiceStub

    def sql(self, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            cursor = conn.execute(query.encode(), params or None)
            return cursor.fetchall() if cursor.description else []

    def open(self, customer: str, currency: str = "CNY", overdraft_limit: int = 0) -> str:
        answer = self.accounts.OpenAccount(
            account_pb2.OpenAccountRequest(
                request_id=rid(), customer_id=customer, currency=currency, overdraft_limit=overdraft_limit
            )
        )
        return str(answer.account.account_number)

    def deposit(self, account: str, amount: int, currency: str = "CNY") -> int:
        answer = self.ledger.Deposit(
            ledger_pb2.DepositRequest(
                request_id=rid(), account_number=account, amount=amount, currency=currency
            )
        )
        return int(answer.balance_after)

    def balance(self, account: str) -> int:
        return int(
            self.accounts.GetAccount(account_pb2.GetAccountRequest(account_number=account)).account.balance
        )


def rid() -> str:
    return f"test-{uuid.uuid4()}"


def fresh_database(pg: PostgresInstance, name: str) -> str:
    with psycopg.connect(pg.conninfo(dbname="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return pg.conninfo(dbname=name)


@pytest.fixture(scope="module")
def bank(postgres: PostgresInstance, request: pytest.FixtureRequest) -> Iterator[Bank]:
    name = "it_" + Path(str(request.node.name)).stem.replace("-", "_")
    conninfo = fresh_database(postgres, name)
    node = BankNode(NodeConfig.single(0, conninfo, f"{HOST}:0", sweep_interval_s=0.2))
    node.start()
    channel = grpc.insecure_channel(f"{HOST}:{node.port}")
    try:
        yield Bank(
            node,
            conninfo,
            channel,
            account_pb2_grpc.AccountServiceStub(channel),
            ledger_pb2_grpc.LedgerServiceStub(channel),
        )
    finally:
        channel.close()
        node.stop()
