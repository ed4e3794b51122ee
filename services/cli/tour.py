"""`bankctl tour`: one shard on its own PostgreSQL and a short scripted banking session.

It shows the ledger's rules at work (double entry, no overdraft, idempotent retries, holds,
statements) and stops everything it started, whatever happens.
"""

from __future__ import annotations

import secrets
import time
import uuid
from pathlib import Path

import grpc

from bank.v1 import account_pb2, account_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from services.cluster.service_process import ServiceProcess, start_service
from services.common.money import format_minor
from services.host.postgres import PostgresInstance
from services.host.processes import free_port
from services.host.service_user import data_root, remove_data_root
from services.node.server import NodeConfig

HOST = "127.0.0.1"


def say(message: str) -> None:
    print(f"[tour] {message}", flush=True)


def run_tour(home: Path, keep_data: bool = False) -> int:
    home = home / "tour"
    started = time.monotonic()
    pg = PostgresInstance(
        "shard0", data_root(home, "pg") / "shard0", HOST, free_port(HOST), secrets.token_hex(16)
    )
    node: ServiceProcess | None = None
    try:
        say(f"initdb + start PostgreSQL for shard 0 on {HOST}:{pg.port} (data: {pg.data_dir})")
        pg.init()
        say(f"PostgreSQL is up, pid {pg.pid()}")
        node = start_service(
            "services.node",
            "node-shard0",
            NodeConfig.single(0, pg.conninfo(), f"{HOST}:0").to_json(),
            home / "run",
            home / "node-shard0.log",
        )
        say(f"bank-node of shard 0 serves gRPC on {HOST}:{node.port}, pid {node.pid} (log: {node.log_file})")
        with grpc.insecure_channel(f"{HOST}:{node.port}") as channel:
            _session(account_pb2_grpc.AccountServiceStub(channel), ledger_pb2_grpc.LedgerServiceStub(channel))
    finally:
        if node is not None:
            node.stop()
            say(f"stopped bank-node (pid {node.pid})")
        pg.stop()
        say("stopped PostgreSQL")
        if not keep_data:
            remove_data_root(home, "pg")
    say(f"done in {time.monotonic() - started:.1f} s; nothing left running")
    return 0


def _rid() -> str:
    return str(uuid.uuid4())


def _session(
    accounts: account_pb2_grpc.AccountServiceStub, ledger: ledger_pb2_grpc.LedgerServiceStub
) -> None:
    alice = accounts.OpenAccount(
        account_pb2.OpenAccountRequest(request_id=_rid(), customer_id="alice", currency="CNY")
    ).account
    bob = accounts.OpenAccount(
        account_pb2.OpenAccountRequest(request_id=_rid(), customer_id="bob", currency="CNY")
    ).account
    say(f"opened {alice.account_number} for alice and {bob.account_number} for bob (CNY)")

    deposit = ledger.Deposit(
        ledger_pb2.DepositRequest(
            request_id=_rid(), account_number=alice.account_number, amount_decimal="1000.00", currency="CNY"
        )
    )
    say(f"deposit 1,000.00 CNY to alice -> balance {format_minor(deposit.balance_after, 'CNY')}")

    transfer_request = ledger_pb2.TransferRequest(
        request_id=_rid(),
        from_account=alice.account_number,
        to_account=bob.account_number,
        amount=25_000,
        currency="CNY",
        reference="rent",
    )
    first = ledger.Transfer(transfer_request)
    retry = ledger.Transfer(transfer_request)
    say(
        f"transfer 250.00 CNY alice -> bob: {first.transfer_id} "
        f"{ledger_pb2.TransferStatus.Name(first.status)}; the same request sent again returns "
        f"{'the same transfer' if retry.transfer_id == first.transfer_id else 'ANOTHER transfer (bug)'}"
    )

    try:
        ledger.Transfer(
            ledger_pb2.TransferRequest(
                request_id=_rid(),
                from_account=bob.account_number,
                to_account=alice.account_number,
                amount=1_000_000,
                currency="CNY",
            )
        )
        say("overdraft of 10,000.00 CNY from bob was ACCEPTED (bug)")
    except grpc.RpcError as err:
        say(f"overdraft of 10,000.00 CNY from bob refused: {err.code().name}: {err.details()}")

    hold = ledger.CreateHold(
        ledger_pb2.CreateHoldRequest(
            request_id=_rid(),
            account_number=alice.account_number,
            to_account=bob.account_number,
            amount=10_000,
            currency="CNY",
            timeout_seconds=60,
        )
    ).hold
    captured = ledger.CaptureHold(
        ledger_pb2.CaptureHoldRequest(request_id=_rid(), hold_id=hold.hold_id, amount=7_500)
    )
    say(
        f"hold of 100.00 CNY on alice for bob, captured 75.00 -> hold "
        f"{ledger_pb2.HoldStatus.Name(captured.hold.status)}, the rest released"
    )
    withdrawal = ledger.Withdraw(
        ledger_pb2.WithdrawRequest(
            request_id=_rid(), account_number=bob.account_number, amount_decimal="50", currency="CNY"
        )
    )
    say(f"bob withdraws 50.00 CNY -> balance {format_minor(withdrawal.balance_after, 'CNY')}")

    for name, account in (("alice", alice), ("bob", bob)):
        _print_statement(name, account.account_number, accounts, ledger)


def _print_statement(
    name: str,
    number: str,
    accounts: account_pb2_grpc.AccountServiceStub,
    ledger: ledger_pb2_grpc.LedgerServiceStub,
) -> None:
    state = accounts.GetAccount(account_pb2.GetAccountRequest(account_number=number)).account
    say(
        f"statement of {name} {number}: balance {format_minor(state.balance, 'CNY')}, "
        f"available {format_minor(state.available_balance, 'CNY')}, version {state.version}"
    )
    print(f"    {'seq':>4}  {'kind':<13} {'amount':>16} {'balance after':>16}  counterparty")
    page = ledger.ListPostings(ledger_pb2.ListPostingsRequest(account_number=number, page_size=100))
    for posting in page.postings:
        kind = ledger_pb2.TransferKind.Name(posting.kind).removeprefix("TRANSFER_KIND_")
        print(
            f"    {posting.sequence:>4}  {kind:<13} {format_minor(posting.amount, 'CNY'):>16} "
            f"{format_minor(posting.balance_after, 'CNY'):>16}  {posting.counterparty or '-'}"
        )
