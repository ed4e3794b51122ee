"""Prometheus metrics of the bank's processes (prometheus-client), served over HTTP on the
process's DC address. Names follow CONVENTIONS: `bank_` prefix, base units, counters ending in
`_total`, no account ids in labels; the gRPC ones reuse the community names
(`grpc_server_handled_total`, `grpc_server_handling_seconds`) so existing dashboards fit.

Values that are cheap to read when asked (leadership, epochs, pool use, outbox depth,
replication lag) are collected at scrape time by collectors the node registers; events (calls,
retries, failovers) are counted where they happen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

GRPC_SERVER_HANDLED = Counter(
    "grpc_server_handled_total", "RPCs completed on the server, by status code",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)  # fmt: skip
GRPC_SERVER_SECONDS = Histogram(
    "grpc_server_handling_seconds", "Time to handle an RPC on the server",
    ["grpc_type", "grpc_service", "grpc_method"], buckets=LATENCY_BUCKETS_S,
)  # fmt: skip
GRPC_CLIENT_HANDLED = Counter(
    "grpc_client_handled_total", "RPCs this process made (gateway to node, relay to node), by code",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)  # fmt: skip
GRPC_CLIENT_SECONDS = Histogram(
    "grpc_client_handling_seconds", "Time of an RPC this process made, one attempt",
    ["grpc_type", "grpc_service", "grpc_method"], buckets=LATENCY_BUCKETS_S,
)  # fmt: skip

GATEWAY_HELD = Gauge("bank_gateway_held_requests", "Requests waiting for their shard's leader", ["shard"])
GATEWAY_RETRIES = Counter(
    "bank_gateway_retries_total", "Re-routed attempts, by shard and cause", ["shard", "code"]
)
ROUTING_VERSION = Gauge("bank_routing_table_version", "Version of the routing table this process holds")
FAILOVERS = Counter(
    "bank_failovers_total", "Failovers this node carried out, by shard and outcome", ["shard", "outcome"]
)
FAILOVER_SECONDS = Histogram(
    "bank_failover_duration_seconds", "From deciding a shard has no leader to its new route published",
    ["shard"], buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0),
)  # fmt: skip
FAILOVER_PHASE_SECONDS = Histogram(
    "bank_failover_phase_seconds",
    "Each phase of the failovers this node ran (detect, lock, probe, detach, promote, repoint, route)",
    ["phase"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0),
)  # fmt: skip
STANDBY_REPAIRS = Counter(
    "bank_standby_repairs_total",
    "Standbys this node put back in line after they stopped streaming, by shard and how"
    " (repointed, rewound, recloned)",
    ["shard", "how"],
)
BUSINESS_DATE = Gauge(
    "bank_business_date", "The business date a shard led here books in, as YYYYMMDD", ["shard"]
)
DAY_CUT_SECONDS = Histogram(
    "bank_day_cut_seconds",
    "A shard's cut to the next business date, lock waits included",
    buckets=LATENCY_BUCKETS_S,
)
ZK_SESSION = Gauge("bank_zookeeper_session_state", "1 for the state the ZooKeeper session is in", ["state"])
ZK_STATES = ("CONNECTED", "SUSPENDED", "LOST")


FAILOVER_OUTCOMES = ("done", "not_possible")
REPAIRS = ("repointed", "rewound", "recloned")
RETRY_CODES = ("UNAVAILABLE", "ABORTED")


def zero_node_series(shards: Iterable[int]) -> None:
    """Creates a node's labelled series at zero for every shard, so that a dashboard shows 0
    (no failover yet), not "No data" (which reads as a missing metric)."""
    for shard in shards:
        label = str(shard)
        for outcome in FAILOVER_OUTCOMES:
            FAILOVERS.labels(shard=label, outcome=outcome)
        FAILOVER_SECONDS.labels(shard=label)
        for how in REPAIRS:
            STANDBY_REPAIRS.labels(shard=label, how=how)
    for state in ZK_STATES:
        ZK_SESSION.labels(state=state)


def zero_gateway_series(shards: Iterable[int]) -> None:
    """The same for a gateway's labelled series."""
    for shard in shards:
        GATEWAY_HELD.labels(shard=str(shard)).set(0)
        for code in RETRY_CODES:
            GATEWAY_RETRIES.labels(shard=str(shard), code=code)


def set_zk_state(state: str) -> None:
    for known in ZK_STATES:
        ZK_SESSION.labels(state=known).set(1 if known == state else 0)


def serve_metrics(host: str, port: int) -> int:
    """Starts the /metrics endpoint (a daemon thread); returns the port."""
    server, _ = start_http_server(port, addr=host)
    return int(server.server_port)


def _split(method: str) -> tuple[str, str]:
    parts = method.split("/")
    return (parts[1], parts[2]) if len(parts) == 3 else ("unknown", method)


def _code_of(context: grpc.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class ServerMetrics(grpc.ServerInterceptor):
    """Counts and times every unary call, the refused ones (authentication, rate) included."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = _split(handler_call_details.method)
        behavior = handler.unary_unary

        def measured(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            try:
                return behavior(request, context)
            except Exception:
                if context.code() is None:
                    context.set_code(grpc.StatusCode.UNKNOWN)
                raise
            finally:
                GRPC_SERVER_SECONDS.labels("unary", service, method).observe(time.perf_counter() - started)
                GRPC_SERVER_HANDLED.labels("unary", service, method, _code_of(context)).inc()

        return grpc.unary_unary_rpc_method_handler(
            measured,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def observe_client_call(service: str, method: str, code: str, seconds: float) -> None:
    GRPC_CLIENT_SECONDS.labels("unary", service, method).observe(seconds)
    GRPC_CLIENT_HANDLED.labels("unary", service, method, code).inc()
