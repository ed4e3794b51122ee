"""`bankctl up --with-prometheus`: a real Prometheus (the Debian package) on the host, scraping
the /metrics endpoint of every bank-node and gateway every 2 s, each target labelled with its DC
and kind; its address is in `status --json` as the component of kind `prometheus`."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from services.cluster.state import ClusterState, Component, spawn
from services.host.processes import LaunchError, free_port, wait_until

HOST = "127.0.0.1"  # on the host, which reaches every DC; not on any DC's network
SCRAPE_INTERVAL_S = 2
JOB = "bank"


def _binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise LaunchError("prometheus is not installed; run `make setup` as root (Debian package prometheus)")
    return path


def scrape_config(state: ClusterState) -> dict[str, Any]:
    targets = [
        {
            "targets": [f"{c.host}:{c.metrics_port}"],
            "labels": {"dc": c.dc, "kind": c.kind, "instance_name": c.name},
        }
        for c in state.components
        if c.metrics_port
    ]
    return {
        "global": {
            "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
            "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
        },
        "scrape_configs": [{"job_name": JOB, "scrape_timeout": "1s", "static_configs": targets}],
    }


def prometheus_command(state: ClusterState, listen: str) -> list[str]:
    """Writes the scrape configuration of the recorded targets and returns Prometheus's command."""
    data_dir = state.home / "prometheus"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "prometheus.yml"
    config.write_text(json.dumps(scrape_config(state), indent=2), encoding="utf-8")  # JSON is YAML
    return [
        _binary(), f"--config.file={config}", f"--storage.tsdb.path={data_dir / 'data'}",
        f"--web.listen-address={listen}", "--storage.tsdb.retention.time=1d", "--log.level=warn",
    ]  # fmt: skip


def start_prometheus(state: ClusterState) -> Component:
    port = free_port(HOST)
    cmd = prometheus_command(state, f"{HOST}:{port}")
    log_file = state.home / "logs" / "prometheus.log"
    pid = spawn(cmd, log_file)
    component = state.add(Component("host", "prometheus", "prometheus", HOST, port, pid, str(log_file),
                                    data_dir=str(state.home / "prometheus")))  # fmt: skip
    wait_until(lambda: ready(HOST, port), 30, f"Prometheus to be ready (log: {log_file})", interval_s=0.2)
    return component


def ready(host: str, port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/-/ready", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def query(host: str, port: int, promql: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The result vector of an instant query (raises on a query Prometheus refuses)."""
    url = f"http://{host}:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=timeout_s) as answer:
        body = json.loads(answer.read())
    if body.get("status") != "success":
        raise ValueError(f"Prometheus refused {promql!r}: {body.get('error')}")
    return list(body["data"]["result"])
