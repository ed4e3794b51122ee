"""The DC bridge's traffic let through the host's firewall, whatever its `FORWARD` policy.

Frames between two DC namespaces cross the project's bridge, and with `br_netfilter` (which
Docker's daemon needs, and this kernel has built in) bridged frames pass iptables' `FORWARD`
chain. A Docker daemon started on a machine whose IP forwarding was off sets that chain's
policy to `DROP`, and the DCs can no longer reach each other. So `up` adds one ACCEPT rule for
the bridge, in `DOCKER-USER` when that chain exists (Docker jumps to it before any rule of its
own, and leaves rules there alone), else at the top of `FORWARD`; each rule carries a comment
naming the bridge, so `down` removes exactly the rules it added and nothing else.
"""

from __future__ import annotations

import shutil
import subprocess

from services.cluster.topology import NETNS, ClusterSpec

DOCKER_USER = "DOCKER-USER"
FORWARD = "FORWARD"


def _iptables(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["iptables", "-w", "5", *args], capture_output=True, text=True, check=False)


def _rule(spec: ClusterSpec) -> list[str]:
    comment = f"bank-sim {spec.bridge}"
    return ["-i", spec.bridge, "-o", spec.bridge, "-m", "comment", "--comment", comment, "-j", "ACCEPT"]


def has_chain(chain: str) -> bool:
    return _iptables("-S", chain).returncode == 0


def _has_rule(chain: str, spec: ClusterSpec) -> bool:
    return _iptables("-C", chain, *_rule(spec)).returncode == 0


def allow_bridge(spec: ClusterSpec) -> str | None:
    """Adds the bridge's ACCEPT rule once; returns the chain it is in (None without netns or
    without iptables, where there is no firewall of ours to pass)."""
    if spec.net != NETNS or shutil.which("iptables") is None:
        return None
    chain = DOCKER_USER if has_chain(DOCKER_USER) else FORWARD
    if not _has_rule(chain, spec):
        done = _iptables("-I", chain, "1", *_rule(spec))
        if done.returncode != 0:
            raise RuntimeError(f"iptables: cannot let {spec.bridge} through {chain}: {done.stderr.strip()}")
    return chain


def remove_bridge_rules(spec: ClusterSpec) -> int:
    """Removes every copy of the bridge's rule from both chains (a daemon may have made
    `DOCKER-USER` after `up`); returns how many were removed."""
    if spec.net != NETNS or shutil.which("iptables") is None:
        return 0
    removed = 0
    for chain in (DOCKER_USER, FORWARD):
        while has_chain(chain) and _has_rule(chain, spec):
            if _iptables("-D", chain, *_rule(spec)).returncode != 0:
                break
            removed += 1
    return removed


def bridge_rules(spec: ClusterSpec) -> list[str]:
    """The chains holding the bridge's rule now (for status and tests)."""
    return [chain for chain in (DOCKER_USER, FORWARD) if has_chain(chain) and _has_rule(chain, spec)]
