"""Channels and server ports, in clear text or TLS: one place decides, from the files it is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc


def read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


RECONNECT: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.min_reconnect_backoff_ms", 1000),  # gRPC core's connect timeout
]


def channel(
    endpoint: str, root_certificates: bytes | None, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A TLS channel verified against `root_certificates` (the cluster's CA), or a plain one.

    Every channel between the bank's own processes reconnects within a second of its peer's
    return: gRPC's default backoff (1 s, growing to 2 min) once kept a gateway refusing a node
    that had been back for seconds, after the node's DC was killed and restarted and the shard
    switched back to it. Connection attempts that get no answer give up after a second."""
    options = [*RECONNECT, *(options or [])]
    if root_certificates is None:
        return grpc.insecure_channel(endpoint, options=options)
    return grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(root_certificates), options=options)


def add_port(server: grpc.Server, address: str, tls: dict[str, str] | None) -> int:
    """Binds `address`; with `tls` ({"cert": file, "key": file}) it serves TLS only."""
    if not tls:
        return server.add_insecure_port(address)
    credentials = grpc.ssl_server_credentials(
        [(Path(tls["key"]).read_bytes(), Path(tls["cert"]).read_bytes())]
    )
    return server.add_secure_port(address, credentials)
