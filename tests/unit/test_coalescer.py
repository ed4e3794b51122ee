"""The gateway's coalescer: concurrent single transfers to one shard leave together, each caller
gets its own answer, and a caller's deadline says whether its transfer was sent."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import pytest

from bank.v1 import ledger_pb2
from bankclient.coalescing import Closed, Coalescer
from services.gateway.coalescer import TransferCoalescer
from services.gateway.forwarder import SubCall


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class Context:
    """What the coalescer uses of a gRPC servicer context."""

    def __init__(self, deadline_s: float = 5.0) -> None:
        self.deadline = time.monotonic() + deadline_s

    def time_remaining(self) -> float:
        return self.deadline - time.monotonic()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code, details)


class Leader:
    """Stands for the forwarder and the shard's leader: records each call's transfers, can hold
    a call until released, and answers each transfer OK under its request id (or fails all)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.failure: tuple[grpc.StatusCode, str, str] | None = None

    def call(self, service: str, method: str, shard: int, part: Any, sub: SubCall) -> Any:
        assert (service, method, shard) == ("bank.v1.LedgerService", "CreateTransfers", 7)
        assert part.full_transfers
        self.calls.append([t.request_id for t in part.transfers])
        self.entered.set()
        self.hold.wait(10)
        if self.failure is not None:
            code, reason, details = self.failure
            sub.set_trailing_metadata((("bank-error-reason", reason),))
            sub.abort(code, details)
        return ledger_pb2.CreateTransfersResponse(
            results=[
                ledger_pb2.TransferResult(index=i, code="OK", transfer_id=f"T-{t.request_id}")
                for i, t in enumerate(part.transfers)
            ]
        )


def transfer(request_id: str) -> Any:
    return ledger_pb2.TransferRequest(request_id=request_id, amount=1, currency="CNY")


def wait_until(condition: Any, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.005)


def answer_in_thread(key: str, call: Callable[[], Any], out: dict[str, Any]) -> threading.Thread:
    """Runs `call` on a thread of its own; its answer, or what it raised, lands in `out[key]`."""

    def run() -> None:
        try:
            out[key] = call()
        except Exception as err:
            out[key] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def start(
    coalescer: TransferCoalescer, request_id: str, context: Context, out: dict[str, Any]
) -> threading.Thread:
    return answer_in_thread(request_id, lambda: coalescer.transfer(7, transfer(request_id), context), out)


def test_transfers_arriving_during_a_call_leave_together_and_each_gets_its_own_answer() -> None:
    leader = Leader()
    leader.hold.clear()
    coalescer = TransferCoalescer(leader)  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    first = start(coalescer, "r0", Context(), out)
    wait_until(leader.entered.is_set)  # r0 is on its way alone; the next ones queue
    others = [start(coalescer, f"r{i}", Context(), out) for i in range(1, 21)]
    wait_until(lambda: coalescer.lanes.queued(7) == 20)
    leader.hold.set()
    for thread in [first, *others]:
        thread.join(10)
    assert leader.calls[0] == ["r0"] and sorted(leader.calls[1]) == sorted(f"r{i}" for i in range(1, 21))
    assert len(leader.calls) == 2
    assert {rid: result.transfer_id for rid, result in out.items()} == {f"r{i}": f"T-r{i}" for i in range(21)}
    coalescer.close()


def test_a_failed_call_is_every_transfer_s_answer_with_its_reason() -> None:
    leader = Leader()
    leader.failure = (grpc.StatusCode.FAILED_PRECONDITION, "NOT_LEADER", "shard 7 is fenced")
    coalescer = TransferCoalescer(leader)  # type: ignore[arg-type]
    result = coalescer.transfer(7, transfer("r1"), Context())  # type: ignore[arg-type]
    assert (result.code, result.reason, result.message) == (
        "FAILED_PRECONDITION",
        "NOT_LEADER",
        "shard 7 is fenced",
    )
    coalescer.close()


def test_a_deadline_passing_in_the_queue_means_never_sent_and_after_sending_unknown() -> None:
    leader = Leader()
    leader.hold.clear()
    coalescer = TransferCoalescer(leader)  # type: ignore[arg-type]
    out: dict[str, Any] = {}
    sent = start(coalescer, "sent", Context(deadline_s=0.3), out)
    wait_until(leader.entered.is_set)
    queued = start(coalescer, "queued", Context(deadline_s=0.2), out)
    queued.join(5)
    sent.join(5)
    assert out["queued"].code == grpc.StatusCode.DEADLINE_EXCEEDED and "not sent" in str(out["queued"])
    assert out["sent"].code == grpc.StatusCode.UNAVAILABLE and "same request_id" in str(out["sent"])
    leader.hold.set()
    later = coalescer.transfer(7, transfer("later"), Context())  # type: ignore[arg-type]
    assert later.transfer_id == "T-later"
    assert all("queued" not in call for call in leader.calls)  # the expired one never left
    coalescer.close()


class HeldSender:
    """A coalescer's send that records each batch, holds it until released, and fails a batch
    holding `failing`."""

    def __init__(self, failing: str = "") -> None:
        self.batches: list[list[str]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.failing = failing

    def __call__(self, key: Any, items: list[str], latest: float) -> list[str]:
        self.batches.append(items)
        self.entered.set()
        self.release.wait(10)
        if self.failing in items:
            raise ConnectionError("the gateway went away")
        return [f"done-{item}" for item in items]


def submit_in_thread(lanes: Coalescer, item: str, out: dict[str, Any], deadline_s: float) -> threading.Thread:
    return answer_in_thread(item, lambda: lanes.submit("k", item, time.monotonic() + deadline_s), out)


def test_a_send_that_raises_is_raised_to_each_caller_and_the_sender_goes_on() -> None:
    send = HeldSender(failing="bad")
    lanes = Coalescer(send, max_batch=8)
    out: dict[str, Any] = {}
    first = submit_in_thread(lanes, "bad", out, 5)
    wait_until(send.entered.is_set)
    others = [submit_in_thread(lanes, f"ok{i}", out, 5) for i in range(3)]
    wait_until(lambda: lanes.queued("k") == 3)
    send.release.set()
    for thread in [first, *others]:
        thread.join(10)
    assert isinstance(out["bad"], ConnectionError)
    assert {k: v for k, v in out.items() if k != "bad"} == {f"ok{i}": f"done-ok{i}" for i in range(3)}
    assert send.batches[0] == ["bad"] and sorted(send.batches[1]) == ["ok0", "ok1", "ok2"]
    lanes.close()


def test_closing_answers_what_is_still_queued_at_once_and_refuses_more() -> None:
    send = HeldSender()
    lanes = Coalescer(send, max_batch=8)
    out: dict[str, Any] = {}
    sent = submit_in_thread(lanes, "sent", out, 30)
    wait_until(send.entered.is_set)
    queued = submit_in_thread(lanes, "queued", out, 30)
    wait_until(lambda: lanes.queued("k") == 1)
    started = time.monotonic()
    lanes.close()
    queued.join(5)
    assert isinstance(out["queued"], Closed) and time.monotonic() - started < 2  # not at its deadline
    send.release.set()
    sent.join(5)
    assert out["sent"] == "done-sent"  # what was on its way still gets its answer
    with pytest.raises(Closed):
        lanes.submit("k", "late", time.monotonic() + 1)
