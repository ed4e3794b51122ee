"""Simulated data centers on the network: one namespace per DC joined by a bridge (as root), or
one loopback address per DC (without root). Traffic never leaves the machine."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence

from services.cluster.forwarding import allow_bridge, remove_bridge_rules
from services.cluster.topology import LOOPBACK, NETNS, ClusterSpec
from services.host.processes import LaunchError, run_checked
from services.host.service_user import running_as_root


def netns_usable() -> bool:
    """Root, the `ip` tool, and a kernel that lets us make a namespace."""
    if not running_as_root() or shutil.which("ip") is None:
        return False
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, check=False)
    return probe.returncode == 0


def choose_net(requested: str) -> str:
    if requested == "auto":
        return NETNS if netns_usable() else LOOPBACK
    if requested == NETNS and not netns_usable():
        raise LaunchError("--net netns needs root and a working `ip netns`; use --net loopback")
    return requested


def in_dc(spec: ClusterSpec, dc: str, cmd: Sequence[str]) -> list[str]:
    """The command as run inside the DC (in its namespace when there is one)."""
    if spec.net == NETNS:
        return ["ip", "netns", "exec", spec.namespace(dc), *cmd]
    return list(cmd)


def create_network(spec: ClusterSpec) -> None:
    """Namespaces, veth pairs and the bridge; the host gets the bridge's address, and the bridge's
    traffic an ACCEPT rule in the host's firewall (see forwarding.py: Docker's `DROP` policy)."""
    if spec.net != NETNS:
        return
    ip = ["ip"]
    existing = subprocess.run(["ip", "link", "show", spec.bridge], capture_output=True, check=False)
    if existing.returncode != 0:
        run_checked([*ip, "link", "add", spec.bridge, "type", "bridge"], f"bridge {spec.bridge}")
        run_checked(
            [*ip, "addr", "add", f"{spec.bridge_address}/24", "dev", spec.bridge], f"address of {spec.bridge}"
        )
        run_checked([*ip, "link", "set", spec.bridge, "up"], f"bridge {spec.bridge} up")
    allow_bridge(spec)
    for dc in spec.dc_names:
        ns, veth = spec.namespace(dc), spec.host_veth(dc)
        if ns in list_namespaces():
            continue
        run_checked([*ip, "netns", "add", ns], f"namespace {ns}")
        run_checked(
            [*ip, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns], f"veth of {dc}"
        )
        run_checked([*ip, "link", "set", veth, "master", spec.bridge], f"{veth} on the bridge")
        run_checked([*ip, "link", "set", veth, "up"], f"{veth} up")
        inside = [*ip, "netns", "exec", ns, "ip"]
        run_checked([*inside, "addr", "add", f"{spec.address(dc)}/24", "dev", "eth0"], f"address of {dc}")
        run_checked([*inside, "link", "set", "eth0", "up"], f"eth0 of {dc} up")
        run_checked([*inside, "link", "set", "lo", "up"], f"loopback of {dc} up")


def delete_network(spec: ClusterSpec) -> None:
    """Removes what `create_network` made; harmless when it is already gone."""
    if spec.net != NETNS:
        return
    present = list_namespaces()
    for dc in spec.dc_names:
        if spec.namespace(dc) in present:
            subprocess.run(["ip", "netns", "delete", spec.namespace(dc)], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", spec.host_veth(dc)], capture_output=True, check=False)
    subprocess.run(["ip", "link", "delete", spec.bridge], capture_output=True, check=False)
    remove_bridge_rules(spec)


def list_namespaces() -> list[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def probe_netem(spec: ClusterSpec) -> tuple[bool, str]:
    """Whether the kernel has the netem qdisc (delay between DCs); tried on a DC's own link."""
    if spec.net != NETNS:
        return False, "loopback mode: no per-DC links to delay"
    dc = spec.dc_names[0]
    cmd = in_dc(spec, dc, ["tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms"])
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        subprocess.run(in_dc(spec, dc, ["tc", "qdisc", "del", "dev", "eth0", "root"]), capture_output=True)
        return True, "netem available"
    detail = (done.stderr or done.stdout).strip().splitlines()
    return False, f"netem unavailable in this kernel ({detail[0] if detail else 'tc failed'})"
