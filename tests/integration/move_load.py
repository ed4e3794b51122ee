"""Load for the slot-move tests: transfers among accounts from several clients while a move
runs, every outcome kept, and customers whose accounts land in given slots."""

from __future__ import annotations

import contextlib
import random
import threading
from collections.abc import Iterator

import grpc

from bankclient import BankClient
from services.common.identifiers import slot_of_customer


def customers_in(first: int, last: int, count: int, prefix: str) -> list[str]:
    found = [f"{prefix}-{i}" for i in range(200_000) if first <= slot_of_customer(f"{prefix}-{i}") <= last]
    return found[:count]


class Load(threading.Thread):
    """Transfers among the accounts until stopped, each with a 5 s deadline; every outcome kept."""

    def __init__(self, client: BankClient, accounts: list[str], seed: int) -> None:
        super().__init__(daemon=True)
        self.client, self.accounts, self.random = client, accounts, random.Random(seed)
        self.acked: dict[str, tuple[str, str, int]] = {}
        self.failed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            source, target = self.random.sample(self.accounts, 2)
            amount = self.random.randint(1, 500)
            try:
                moved = self.client.transfer(source, target, amount, "CNY", deadline_s=5)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.FAILED_PRECONDITION:  # insufficient funds is an answer
                    self.failed.append(f"{err.code().name}: {err.details()}")
                continue
            self.acked[moved.transfer_id] = (source, target, amount)


@contextlib.contextmanager
def under_load(clients: list[BankClient], accounts: list[str]) -> Iterator[list[Load]]:
    """Transfers among `accounts` from each client while the block runs; stopped and closed after."""
    loads = [Load(client, accounts, seed) for seed, client in enumerate(clients)]
    for load in loads:
        load.start()
    try:
        yield loads
    finally:
        for load in loads:
            load.stop.set()
        for load in loads:
            load.join(timeout=15)
            load.client.close()
