"""The ZooKeeper ensemble: one node per DC, from the Debian package, run as plain Java."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from services.cluster.netns import in_dc
from services.cluster.state import ClusterState, Component, spawn
from services.cluster.topology import ZK_CLIENT_PORT, ZK_ELECTION_PORT, ZK_PEER_PORT, ClusterSpec
from services.dcs.store import Dcs
from services.host.processes import LaunchError

ZK_JARS = ["/usr/share/java/zookeeper.jar", "/usr/share/java/slf4j-simple.jar"]
# Session expiry is checked every tick: a fine tick makes failover prompt (a 500 ms tick added up
# to half a second to every expiry; 200 ms is what Patroni's anchor figures were taken with).
TICK_MS = 200
INIT_LIMIT = 50  # ticks: 10 s for a follower to connect and sync with the leader
SYNC_LIMIT = 5  # ticks: followers notice a lost leader after 1 s (a busy peer is not a lost one)


def zk_hosts(spec: ClusterSpec) -> str:
    """The connection string of the whole ensemble, for kazoo."""
    return ",".join(f"{spec.address(dc)}:{ZK_CLIENT_PORT}" for dc in spec.dc_names)


def zk_client(state: ClusterState, timeout_s: float = 10.0, session_s: float = 4.0) -> Dcs:
    """A started session of the ensemble, authenticated as the bank's digest user (close it,
    or use it as a context manager)."""
    return Dcs.connect(
        zk_hosts(state.spec), timeout_s=timeout_s, session_s=session_s, auth=state.secrets.get("zk_auth", "")
    )


def write_config(spec: ClusterSpec, dc: str, data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "myid").write_text(f"{spec.dc_index(dc)}\n", encoding="ascii")
    lines = [
        f"tickTime={TICK_MS}",
        f"initLimit={INIT_LIMIT}",
        f"syncLimit={SYNC_LIMIT}",
        f"dataDir={data_dir}",
        f"clientPort={ZK_CLIENT_PORT}",
        f"clientPortAddress={spec.address(dc)}",
        "minSessionTimeout=1000",
        "maxSessionTimeout=10000",
        "admin.enableServer=false",
        "4lw.commands.whitelist=srvr,stat,mntr,ruok",
        "autopurge.snapRetainCount=3",
        "autopurge.purgeInterval=1",
    ]
    lines += [
        f"server.{spec.dc_index(other)}={spec.address(other)}:{ZK_PEER_PORT}:{ZK_ELECTION_PORT}"
        for other in spec.dc_names
    ]
    config = data_dir.parent / f"zoo-{dc}.cfg"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def zookeeper_command(spec: ClusterSpec, dc: str, data_dir: Path) -> list[str]:
    """Writes the DC's server configuration and returns the command that runs the server (the
    launcher spawns it; a container runs it in the foreground)."""
    java = shutil.which("java")
    missing = [jar for jar in ZK_JARS if not Path(jar).exists()]
    if java is None or missing:
        raise LaunchError(
            f"ZooKeeper needs java and {', '.join(missing) or 'its jars'}; run `make setup` as root"
        )
    config = write_config(spec, dc, data_dir)
    return [
        java, "-Xmx128m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss512k",
        "-Dzookeeper.admin.enableServer=false", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
        "-Dorg.slf4j.simpleLogger.showDateTime=true", "-cp", ":".join(ZK_JARS),
        "org.apache.zookeeper.server.quorum.QuorumPeerMain", str(config),
    ]  # fmt: skip


def start_zookeeper(state: ClusterState, dc: str) -> Component:
    spec = state.spec
    data_dir = state.home / "zookeeper" / dc
    cmd = zookeeper_command(spec, dc, data_dir)
    log_file = state.home / "logs" / f"zookeeper-{dc}.log"
    pid = spawn(in_dc(spec, dc, cmd), log_file)
    return state.add(
        Component(dc, "zookeeper", f"zookeeper-{dc}", spec.address(dc), ZK_CLIENT_PORT, pid, str(log_file),
                  data_dir=str(data_dir))
    )  # fmt: skip


def four_letter(host: str, port: int, word: str, timeout_s: float = 1.0) -> str:
    """Sends a ZooKeeper four-letter command and returns the answer ('' when unreachable)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(word.encode("ascii"))
            chunks = []
            while chunk := sock.recv(4096):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    except OSError:
        return ""


def zk_mode(host: str, port: int = ZK_CLIENT_PORT) -> str | None:
    """'leader', 'follower' or 'standalone' as the server itself says; None when not serving."""
    for line in four_letter(host, port, "srvr").splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None
