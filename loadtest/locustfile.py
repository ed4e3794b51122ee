"""The bank's load: a banking mix over the accounts `bankctl load-accounts` opened.

    locust -f loadtest/locustfile.py --bank-home .bank            # web UI on :8089
    locust -f loadtest/locustfile.py --bank-home .bank --headless -u 50 -r 10 -t 60s

The mix is weighted; change it with --mix read=30,statement=5,transfer=40,cross=15,deposit=5,
withdraw=3,hold=2. Every acknowledged transfer's id is written to <bank-home>/acked/ so that
it can be audited against the ledger after the run.
"""

from __future__ import annotations

import contextlib
import os
import random
from pathlib import Path
from typing import Any

import grpc
from locust import between, events, task
from locust.env import Environment

from bank.v1 import ledger_pb2
from bankclient import new_request_id
from loadtest.grpc_user import (  # sets gRPC up for gevent on import
    CALLS,
    BankGrpcUser,
    bank_home,
    write_calls,
)

DEFAULT_MIX = "read=30,statement=5,transfer=40,cross=15,deposit=5,withdraw=3,hold=2"
CURRENCY = "CNY"


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument(
        "--bank-home", default=os.environ.get("BANK_HOME", ".bank"), help="the cluster's home"
    )
    parser.add_argument("--mix", default=DEFAULT_MIX, help="weights of the banking operations")
    parser.add_argument(
        "--route", choices=("gateway", "direct"), default="gateway",
        help="gateway: every call through a DC's gateway (default); direct: each user routes its"
        " calls to the shards' leader nodes itself (BankClient(route='direct'))",
    )  # fmt: skip


class Accounts:
    """The loaded accounts, by shard as loaded and by slot (read once per process). A slot's
    accounts share a shard wherever moves take it; a shard's, as loaded, may not after a move."""

    by_shard: dict[int, list[str]] = {}
    by_slot: dict[str, list[str]] = {}
    acked_file: Any = None

    @classmethod
    def load(cls, home: Path) -> None:
        if cls.by_shard:
            return
        path = home / "accounts.csv"
        if not path.exists():
            raise SystemExit(f"no {path}: open accounts first with `bankctl load-accounts`")
        for line in path.read_text(encoding="ascii").split():
            number, shard, _ = line.split(",")
            cls.by_shard.setdefault(int(shard), []).append(number)
            cls.by_slot.setdefault(number[:4], []).append(number)
        (home / "acked").mkdir(exist_ok=True)
        cls.acked_file = open(home / "acked" / f"acked-{os.getpid()}.log", "a", encoding="ascii")  # noqa: SIM115


@events.test_stop.add_listener
def _flush(environment: Environment, **_: Any) -> None:
    if Accounts.acked_file is not None:
        Accounts.acked_file.flush()
    write_calls(CALLS, bank_home(environment) / "acked")


def parse_mix(text: str) -> dict[str, int]:
    mix = {}
    for part in text.split(","):
        name, _, weight = part.partition("=")
        mix[name.strip()] = int(weight)
    unknown = set(mix) - set(DEFAULT_MIX_NAMES)
    if unknown:
        raise SystemExit(f"--mix: unknown operations {sorted(unknown)}; known: {DEFAULT_MIX_NAMES}")
    return mix


DEFAULT_MIX_NAMES = [part.split("=")[0] for part in DEFAULT_MIX.split(",")]


class BankUser(BankGrpcUser):
    wait_time = between(0.0, 0.02)

    def on_start(self) -> None:
        Accounts.load(bank_home(self.environment))
        self.rng = random.Random()
        self.shards = sorted(Accounts.by_shard)
        mix = parse_mix(self.environment.parsed_options.mix)
        self.operations = [name for name in DEFAULT_MIX_NAMES for _ in range(mix.get(name, 0))]

    def _account(self, shard: int | None = None) -> str:
        return self.rng.choice(Accounts.by_shard[self.rng.choice(self.shards) if shard is None else shard])

    def _acked(self, transfer_id: str) -> None:
        Accounts.acked_file.write(transfer_id + "\n")

    @task
    def banking(self) -> None:
        operation = self.rng.choice(self.operations)
        # A refusal (say, insufficient funds) is part of banking: the interceptor counted it.
        with contextlib.suppress(grpc.RpcError):
            getattr(self, f"op_{operation}")()

    def op_read(self) -> None:
        self.client.get_account(self._account())

    def op_statement(self) -> None:
        self.client.call(
            "ledger",
            "ListPostings",
            ledger_pb2.ListPostingsRequest(account_number=self._account(), page_size=20),
        )

    def op_transfer(self) -> None:
        shard = self.rng.choice(self.shards)
        source, target = self._account(shard), self._account(shard)
        if source != target:
            self._acked(self.client.transfer(source, target, self.rng.randint(1, 500), CURRENCY).transfer_id)

    def op_cross(self) -> None:
        if len(self.shards) < 2:
            return self.op_transfer()
        first, second = self.rng.sample(self.shards, 2)
        answer = self.client.transfer(
            self._account(first), self._account(second), self.rng.randint(1, 500), CURRENCY
        )
        self._acked(answer.transfer_id)
        return None

    def op_deposit(self) -> None:
        self._acked(
            self.client.deposit(self._account(), self.rng.randint(1, 10_000), CURRENCY).transfer.transfer_id
        )

    def op_withdraw(self) -> None:
        self._acked(
            self.client.withdraw(self._account(), self.rng.randint(1, 500), CURRENCY).transfer.transfer_id
        )

    def op_hold(self) -> None:
        source = self._account()  # holds are between accounts of one shard: take two of a slot
        target = self.rng.choice(Accounts.by_slot[source[:4]])
        if source == target:
            return
        hold = self.client.call(
            "ledger", "CreateHold",
            ledger_pb2.CreateHoldRequest(
                request_id=new_request_id(), account_number=source, to_account=target, amount=300,
                currency=CURRENCY, timeout_seconds=60,
            ),
        ).hold  # fmt: skip
        if self.rng.random() < 0.7:
            captured = self.client.call(
                "ledger", "CaptureHold",
                ledger_pb2.CaptureHoldRequest(request_id=new_request_id(), hold_id=hold.hold_id, amount=200),
            )  # fmt: skip
            self._acked(captured.transfer.transfer_id)
        else:
            self.client.call(
                "ledger",
                "VoidHold",
                ledger_pb2.VoidHoldRequest(request_id=new_request_id(), hold_id=hold.hold_id),
            )
