"""docker-compose and Kubernetes files: rendered from the launcher's topology (so the committed
ones must be current), valid against Compose's schema (docker-compose's own `config`, which
needs no engine) and Kubernetes' (kubernetes-validate, strict), and consistent with what
`bankctl up` runs: images, ports, shard primaries, settings. No Docker engine here: validated,
not run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.cluster import zookeeper
from services.cluster.redis_group import SENTINEL_QUORUM
from services.cluster.topology import (
    GATEWAY_METRICS_PORT,
    GATEWAY_PORT,
    NODE_METRICS_PORT,
    ClusterSpec,
)
from services.render import deploy_files

DEPLOY = deploy_files.DEPLOY
SPEC = ClusterSpec()
SECRETS = {name: "x" for name in deploy_files.SECRETS} | {"BANK_ZK_AUTH": "bank:x"}


def compose_file() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8")))


def test_committed_deploy_files_are_what_the_topology_renders() -> None:
    assert deploy_files.main(["--check"]) == 0, "run: python -m services.render.deploy_files"


def docker_compose(*args: str, secrets: bool = True) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose (Debian package) is missing: run `make setup` as root"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("BANK_")}
    return subprocess.run(
        [binary, "-f", str(DEPLOY / "docker-compose.yml"), *args], cwd=DEPLOY, capture_output=True, text=True,
        env=environment | (SECRETS if secrets else {}), check=False, timeout=60,
    )  # fmt: skip


def test_compose_file_is_valid_and_refuses_to_start_without_secrets() -> None:
    valid = docker_compose("config", "-q")
    assert valid.returncode == 0, valid.stderr
    missing = docker_compose("config", "-q", secrets=False)
    assert missing.returncode != 0 and "set BANK_PG_PASSWORD in deploy/.env" in missing.stderr


def test_compose_matches_the_launchers_defaults() -> None:
    services = compose_file()["services"]
    for dc in SPEC.dc_names:
        for kind in ("zk", "redis", "sentinel", "node", "gateway"):
            assert f"{kind}-{dc}" in services
            assert services[f"{kind}-{dc}"]["labels"]["bank.dc"] == dc
        assert set(services[f"node-{dc}"]["networks"]) == {dc, "backbone"}
        assert services[f"zk-{dc}"]["image"].startswith("zookeeper:")
        assert services[f"zk-{dc}"]["environment"]["ZOO_TICK_TIME"] == str(zookeeper.TICK_MS)
        assert services[f"redis-{dc}"]["image"].startswith("redis:")
        assert services[f"gateway-{dc}"]["ports"] == [f"{GATEWAY_PORT + SPEC.dc_index(dc)}:{GATEWAY_PORT}"]
        assert f"bank {'redis-dc1'} 6379 {SENTINEL_QUORUM}" in " ".join(services[f"sentinel-{dc}"]["command"])
        for shard in range(SPEC.shards):
            member = services[f"pg-s{shard}-{dc}"]
            assert member["image"].startswith("postgres:15")
            is_primary = "entrypoint" not in member
            assert is_primary == (dc == SPEC.primary_dc(shard))
            group = ", ".join(SPEC.pg_member(shard, d) for d in SPEC.dc_names)
            assert f"synchronous_standby_names=ANY 1 ({group})" in member["command"]
            assert member["environment"]["BANK_MEMBER"] == SPEC.pg_member(shard, dc)
    assert {"prometheus", "grafana", "bank-init"} <= set(services)
    for script in ("primary-init.sh", "standby-entrypoint.sh"):
        assert os.access(DEPLOY / "postgres" / script, os.X_OK)
    scraped = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    targets = {t["targets"][0] for t in scraped["scrape_configs"][0]["static_configs"]}
    assert targets == {f"{k}-{dc}:{p}" for dc in SPEC.dc_names for k, p in
                       (("node", NODE_METRICS_PORT), ("gateway", GATEWAY_METRICS_PORT))}  # fmt: skip
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert 'ENTRYPOINT ["python", "-m", "services.container.roles"]' in dockerfile


def test_kubernetes_manifests_are_valid_and_spread_each_dc_over_a_zone() -> None:
    documents = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "bank-sim.yaml").read_text()) if d]
    for document in documents:
        kubernetes_validate.validate(document, "1.30.0", strict=True)  # raises on any schema error
    statefulsets = {d["metadata"]["name"]: d for d in documents if d["kind"] == "StatefulSet"}
    assert set(statefulsets) == {
        "zk",
        "redis",
        "sentinel",
        "node",
        "gateway",
        *(f"pg-s{s}" for s in range(3)),
    }
    for name, statefulset in statefulsets.items():
        assert statefulset["spec"]["replicas"] == SPEC.dcs, name
        spread = statefulset["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
        assert (spread["topologyKey"], spread["maxSkew"], spread["whenUnsatisfiable"]) == (
            "topology.kubernetes.io/zone",
            1,
            "DoNotSchedule",
        )
    with pytest.raises(kubernetes_validate.ValidationError):
        broken = json.loads(json.dumps(statefulsets["node"]))
        broken["spec"]["replicas"] = "three"
        kubernetes_validate.validate(broken, "1.30.0", strict=True)


def test_grafana_provisioning_points_at_the_dashboards_datasource() -> None:
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    for path in (DEPLOY / "grafana" / "dashboards").glob("*.json"):
        board = json.loads(path.read_text(encoding="utf-8"))
        assert {p["datasource"]["uid"] for p in board["panels"]} == {uid}, path.name
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/bank.yml").read_text())
    mounted = compose_file()["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in mounted
