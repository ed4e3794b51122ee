"""The compose tier: what the host had before any compose cluster, to compare after the last."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from services.cluster.compose import daemon


def iptables_rules() -> list[str]:
    """Every rule and chain of every table, without the counters iptables-save adds."""
    saved = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line.split(" [")[0] for line in saved.splitlines() if not line.startswith("#")]


@pytest.fixture(scope="session")
def host_before() -> dict[str, Any]:
    """What the host had before the compose cluster: a Docker daemon or not, and its iptables."""
    return {"daemon": daemon.docker_answers(), "iptables": iptables_rules()}
