"""A Locust user that speaks gRPC to the bank's gateways, failing over between DCs.

gRPC must run on gevent in the load process, and that must be set up before any gRPC object
exists: importing this module does it. Locust's statistics count operations: each one the client
library finishes fires Locust's request event once, with its latency and the error its caller
got, however many gateways it tried. Calls (each attempt at one gateway) are counted apart, by a
client interceptor, and written to <bank-home>/acked/calls-<pid>.json when the test stops, so
that a report can give availability both per operation and per call.
"""

from __future__ import annotations

from locust import User  # first: it imports gevent and patches the standard library

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # after the patching, before any gRPC object exists

import json
import os
from pathlib import Path
from typing import Any

from locust.env import Environment

from bankclient import BankClient, read_ca, read_token
from bankclient.calls import CallCounter

REASON_KEY = "bank-error-reason"


def write_calls(counter: CallCounter, directory: Path) -> None:
    """This process's call counts, for the report (see loadtest/report.read_calls)."""
    directory.mkdir(exist_ok=True)
    (directory / f"calls-{os.getpid()}.json").write_text(json.dumps(counter.figures()), encoding="utf-8")


CALLS = CallCounter()  # every user of this process counts into it


def operation_observer(environment: Environment) -> Any:
    """Fires Locust's request event once per operation of the client library."""

    def observe(method: str, elapsed_ms: float, error: BaseException | None, answer: Any) -> None:
        environment.events.request.fire(
            request_type="grpc",
            name=method,
            response_time=elapsed_ms,
            response_length=0 if answer is None else answer.ByteSize(),
            exception=error,
            context={},
        )

    return observe


def bank_home(environment: Environment) -> Path:
    options = environment.parsed_options
    return Path(getattr(options, "bank_home", None) or os.environ.get("BANK_HOME", ".bank"))


def gateways_of(home: Path) -> list[str]:
    """The gateways `bankctl up` recorded, in DC order."""
    state = json.loads((home / "cluster.json").read_text(encoding="utf-8"))
    return [f"{c['host']}:{c['port']}" for c in state["components"] if c["kind"] == "gateway"]


class BankGrpcUser(User):
    """Each user prefers one DC's gateway (users are spread over the DCs) and moves to another
    when it does not answer; with `--route direct`, it calls the shards' leaders itself and
    the gateways only for what they cannot take."""

    abstract = True
    deadline_s = 5.0
    _count = 0

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        home = bank_home(environment)
        gateways = gateways_of(home)
        BankGrpcUser._count += 1
        self.client = BankClient(
            gateways,
            prefer=BankGrpcUser._count % len(gateways),
            deadline_s=self.deadline_s,
            interceptors=[CALLS],
            observer=operation_observer(environment),
            token=read_token(home),
            root_certificates=read_ca(home),
            route=getattr(environment.parsed_options, "route", None) or "gateway",
        )

    def on_stop(self) -> None:
        self.client.close()
