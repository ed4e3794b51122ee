"""The CPU a Python gRPC call costs on this machine with nothing behind it: a `Health/Check`
served by a server of the synchronous API (a thread pool, as every server of the bank) and by
one of the asyncio API (`grpc.aio`), each in a process of its own, called by `--threads`
threads of this process.

    .venv/bin/python bench/grpc_floor.py [--seconds 8] [--threads 32 128]

Prints, per server and thread count, calls/s and CPU milliseconds per call of the server
process and of this client. No cluster is needed; traffic stays on 127.0.0.1. It is the floor
under "one RPC per transfer": a bank-node serving a transfer does this and its work besides.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import psutil
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

KINDS = ("sync", "aio")
SERVER_WORKERS = 32  # the thread pool of services/rpc/server.py


def announce(port_file: Path, port: int) -> None:
    """Writes the port where the caller waits for it, whole (renamed into place)."""
    partial = port_file.with_suffix(".partial")
    partial.write_text(str(port), encoding="ascii")
    partial.rename(port_file)


def serve_sync(port_file: Path) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=SERVER_WORKERS))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    announce(port_file, port)
    server.wait_for_termination()


async def serve_aio(port_file: Path) -> None:
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    announce(port_file, port)
    await server.wait_for_termination()


def start_server(kind: str, folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port_file = folder / f"port-{kind}"
    port_file.unlink(missing_ok=True)  # a server of this kind measured before
    process = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port_file)])
    deadline = time.monotonic() + 30
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the {kind} server did not start")
        time.sleep(0.05)
    return process, int(port_file.read_text(encoding="ascii"))


def calls(stub: health_pb2_grpc.HealthStub, until: float) -> int:
    count = 0
    while time.monotonic() < until:
        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        count += 1
    return count


def measure(kind: str, threads: int, seconds: float, folder: Path) -> str:
    process, port = start_server(kind, folder)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            stub.Check(health_pb2.HealthCheckRequest(), timeout=10, wait_for_ready=True)  # connected
            server = psutil.Process(process.pid)
            server_before, client_before, started = server.cpu_times(), time.process_time(), time.monotonic()
            counts: list[int] = []
            until = started + seconds
            workers = [
                threading.Thread(target=lambda: counts.append(calls(stub, until))) for _ in range(threads)
            ]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
            server_after, client_after = server.cpu_times(), time.process_time()
            elapsed = time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=10)
    total = max(sum(counts), 1)
    server_s = (server_after.user + server_after.system) - (server_before.user + server_before.system)
    client_s = client_after - client_before
    return (
        f"{kind:<5} {threads:>4} threads {total / elapsed:>8,.0f} calls/s   server "
        f"{1000 * server_s / total:.3f} ms/call   client {1000 * client_s / total:.3f} ms/call"
    )


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        kind, port_file = sys.argv[2], Path(sys.argv[3])
        serve_sync(port_file) if kind == "sync" else asyncio.run(serve_aio(port_file))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[32, 128])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="grpc-floor-") as folder:
        for threads in args.threads:
            for kind in KINDS:
                print(measure(kind, threads, args.seconds, Path(folder)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
