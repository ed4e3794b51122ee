"""Channels and server ports, in clear text or TLS: one place decides, from the files it is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc


def read(path: str | Path | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def channel(
    endpoint: str, root_certificates: bytes | None, options: list[tuple[str, Any]] | None = None
) -> grpc.Channel:
    """A TLS channel verified against `root_certificates` (the cluster's CA), or a plain one."""
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
