"""A Locust user that speaks gRPC to the bank's gateways, failing over between DCs.

gRPC must run on gevent in the load process, and that must be set up before any gRPC object
exists: importing this module does it. Every gRPC call fires Locust's request event through a
client interceptor, so Locust's statistics see each call with its real latency and outcome.
"""

from __future__ import annotations

from locust import User  # first: it imports gevent and patches the standard library

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # after the patching, before any gRPC object exists

import json
import os
import time
from pathlib import Path
from typing import Any

import grpc
from locust.env import Environment

from bankclient import BankClient, read_ca, read_token

REASON_KEY = "bank-error-reason"


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):
    """Reports every unary call to Locust: name, latency, size, and the error if any."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment

    def intercept_unary_unary(self, continuation: Any, call_details: Any, request: Any) -> Any:
        started = time.perf_counter()
        outcome = continuation(call_details, request)
        error = outcome.exception()
        elapsed_ms = (time.perf_counter() - started) * 1000
        size = 0 if error is not None else outcome.result().ByteSize()
        self.environment.events.request.fire(
            request_type="grpc",
            name=str(call_details.method).rsplit("/", 1)[-1],
            response_time=elapsed_ms,
            response_length=size,
            exception=error,
            context={},
        )
        return outcome


def bank_home(environment: Environment) -> Path:
    options = environment.parsed_options
    return Path(getattr(options, "bank_home", None) or os.environ.get("BANK_HOME", ".bank"))


def gateways_of(home: Path) -> list[str]:
    """The gateways `bankctl up` recorded, in DC order."""
    state = json.loads((home / "cluster.json").read_text(encoding="utf-8"))
    return [f"{c['host']}:{c['port']}" for c in state["components"] if c["kind"] == "gateway"]


class BankGrpcUser(User):
    """Each user prefers one DC's gateway (users are spread over the DCs) and moves to another
    when it does not answer."""

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
            interceptors=[LocustInterceptor(environment)],
            token=read_token(home),
            root_certificates=read_ca(home),
        )

    def on_stop(self) -> None:
        self.client.close()
