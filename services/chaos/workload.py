"""The bank workload of `bankctl chaos run`: transfers among a few hot and many cold accounts,
across shards, from several threads, each call written to a history before and after it.

A call ends in one of three ways, as in Jepsen: `ok` (acknowledged, with its transfer id),
`fail` (refused for certain: nothing may be booked) or `info` (no answer: it may or may not have
been applied). Every request carries its own id, so an `info` can later be asked again under the
same id; the bank then answers what it did.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc

from bank.v1 import ledger_pb2
from bankclient import BankClient, GatewayUnavailable

CURRENCY = "CNY"
DEFINITE_FAILURES = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}


@dataclass
class Op:
    request_id: str
    source: str
    target: str
    amount: int
    outcome: str = "invoke"  # invoke | ok | fail | info
    transfer_id: str = ""
    status: str = ""
    code: str = ""
    resolved: bool = False  # an `info` asked again after the run
    coalesced: bool = False  # sent by a coalescing client, with other workers' transfers
    direct: bool = False  # routed by the client itself to its shard's leader (route="direct")


class History:
    """Every operation, in memory for the checker and as JSON lines on disk for people."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.ops: dict[str, Op] = {}
        self.funding: dict[str, int] = {}  # account -> opening deposit
        self.started = time.time()
        self._lock = threading.Lock()
        self._file: TextIO = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def event(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"t": round(time.time() - self.started, 3), "type": kind, **fields})
        with self._lock:
            self._file.write(line + "\n")

    def invoke(self, op: Op) -> None:
        with self._lock:
            self.ops[op.request_id] = op
        self.event("invoke", **asdict(op))

    def complete(self, op: Op) -> None:
        self.event(op.outcome, **asdict(op))

    def counts(self) -> dict[str, int]:
        with self._lock:
            ops = list(self.ops.values())
        return {k: sum(1 for o in ops if o.outcome == k) for k in ("ok", "fail", "info", "invoke")}

    def close(self) -> None:
        with self._lock:
            self._file.close()


def call_transfer(client: BankClient, op: Op, deadline_s: float) -> None:
    """One transfer call; sets the op's outcome from the answer or the error."""
    try:
        answer = client.transfer(op.source, op.target, op.amount, CURRENCY, op.request_id, deadline_s)
    except grpc.RpcError as err:
        op.code = err.code().name
        op.outcome = "fail" if err.code() in DEFINITE_FAILURES else "info"
        return
    except GatewayUnavailable:
        op.code, op.outcome = "NO_GATEWAY", "info"
        return
    op.outcome, op.transfer_id = "ok", answer.transfer_id
    op.status = ledger_pb2.TransferStatus.Name(answer.status)


class Workload:
    """Worker threads doing transfers until stopped, the time is up or `max_ops` were invoked;
    `pause()` returns once no call is in flight (a quiet bank for a checkpoint). The workers
    take turns over the `clients` given: (client, coalescing, direct) each, where a coalescing
    one sends concurrent transfers together (`BankClient(coalesce_transfers=True)`) and a direct
    one routes them itself to the shards' leaders (`route="direct"`), under the same faults."""

    def __init__(
        self, clients: list[tuple[BankClient, bool, bool]], hot: list[str], cold: list[str],
        history: History, seed: int, threads: int = 8, max_s: float = 3600.0, max_ops: int = 500_000,
        deadline_s: float = 5.0,
    ) -> None:  # fmt: skip
        if not clients:
            raise ValueError("a workload needs at least one client")
        self.clients, self.hot, self.cold, self.history = clients, hot, cold, history
        self.seed, self.threads, self.max_ops, self.deadline_s = seed, threads, max_ops, deadline_s
        self.deadline = time.monotonic() + max_s
        self._stop = threading.Event()
        self._running = threading.Event()
        self._idle = threading.Condition()
        self._in_flight = 0
        self._invoked = 0
        self._workers: list[threading.Thread] = []

    def start(self) -> None:
        self._running.set()
        self._workers = [
            threading.Thread(target=self._work, args=(i,), name=f"chaos-worker-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()

    def pause(self, timeout_s: float = 30.0) -> bool:
        self._running.clear()
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout=timeout_s)

    def resume(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._stop.set()
        self._running.set()
        for worker in self._workers:
            worker.join(timeout=self.deadline_s + 10)

    def _pair(self, rng: random.Random) -> tuple[str, str]:
        roll = rng.random()
        if roll < 0.5:
            return tuple(rng.sample(self.hot, 2))  # type: ignore[return-value]
        if roll < 0.8:
            pair = [rng.choice(self.hot), rng.choice(self.cold)]
            rng.shuffle(pair)
            return pair[0], pair[1]
        return tuple(rng.sample(self.cold, 2))  # type: ignore[return-value]

    def _next(self, rng: random.Random, index: int) -> Op | None:
        with self._idle:
            if self._stop.is_set() or time.monotonic() > self.deadline or self._invoked >= self.max_ops:
                return None
            if not self._running.is_set():
                return Op("", "", "", 0, outcome="wait")
            self._invoked += 1
            self._in_flight += 1
        source, target = self._pair(rng)
        return Op(
            f"chaos-{self.seed}-{index}-{rng.getrandbits(64):016x}", source, target, rng.randint(1, 500)
        )

    def _work(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-{index}")
        client, coalesced, direct = self.clients[index % len(self.clients)]
        while True:
            op = self._next(rng, index)
            if op is None:
                return
            if op.outcome == "wait":
                self._running.wait(timeout=1.0)
                continue
            op.coalesced, op.direct = coalesced, direct
            try:
                self.history.invoke(op)
                call_transfer(client, op, self.deadline_s)
                self.history.complete(op)
            finally:
                with self._idle:
                    self._in_flight -= 1
                    self._idle.notify_all()
