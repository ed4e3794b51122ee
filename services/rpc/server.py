"""A gRPC server with the standard health checking and reflection services on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.rpc.metrics import ServerMetrics
from services.rpc.tls import add_port

# Requests of the bank are small; anything near this is an abuse, refused by gRPC itself
# with RESOURCE_EXHAUSTED before it reaches our code.
MAX_MESSAGE_BYTES = 1 << 20


@dataclass
class Registration:
    """A servicer and the generated function that adds it to a server."""

    service_name: str
    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    service_names: list[str]

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            self.health.set(name, status)

    def stop(self, grace_s: float = 2.0) -> None:
        self.set_serving(False)
        self.server.stop(grace_s).wait()


def start_server(
    address: str,
    registrations: Sequence[Registration],
    max_workers: int = 32,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    tls: dict[str, str] | None = None,
) -> RunningServer:
    """Binds `address` (host:port, port 0 for any free one) and starts serving."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
        interceptors=[ServerMetrics(), *interceptors],  # metrics outermost: refusals count too
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # Clients ping every second while a call waits (bankclient's keepalive tells a
            # gateway that is holding from one that is cut off): never count that as abuse.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 500),
            ("grpc.http2.max_ping_strikes", 0),
        ],
    )
    for registration in registrations:
        registration.add_to_server(registration.servicer, server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [r.service_name for r in registrations]
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = add_port(server, address, tls)
    if port == 0:
        raise OSError(f"could not bind the gRPC server to {address}")
    server.start()
    running = RunningServer(server, health_servicer, port, names)
    running.set_serving(True)
    return running
