"""docker-compose and Kubernetes files: rendered from the launcher's topology (so the committed
ones must be current), valid against Compose's schema (docker-compose's own `config`, which
needs no engine) and Kubernetes' (kubernetes-validate, strict), and consistent with what
`bankctl up` runs: images, ports, shard primaries, settings. The compose launch itself is run by
tests/compose/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.cluster.compose import compose_file as compose_render
from services.cluster.topology import COMPOSE, GATEWAY_PORT, ClusterSpec
from services.render import deploy_files

DEPLOY = deploy_files.DEPLOY
SPEC = ClusterSpec()
SECRETS = {name: "x" for name in compose_render.SECRETS} | {"BANK_ZK_AUTH": "bank:x"}


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
    assert missing.returncode != 0 and "set BANK_PG_PASSWORD" in missing.stderr


def test_compose_matches_the_launchers_defaults() -> None:
    """Every role runs the bank's image through the launcher's own code; a DC is one network
    namespace (its `dcN` container's) at the launcher's address for it; members keep their data
    on volumes of their own; only 127.0.0.1 is published."""
    compose = compose_file()
    services = compose["services"]
    spec = ClusterSpec(net=COMPOSE)
    assert compose["networks"]["backbone"]["ipam"]["config"] == [{"subnet": spec.dc_subnet}]
    for dc in SPEC.dc_names:
        holder = services[dc]
        assert holder["networks"]["backbone"]["ipv4_address"] == spec.address(dc)
        assert holder["ports"] == [f"127.0.0.1:{GATEWAY_PORT + SPEC.dc_index(dc)}:{GATEWAY_PORT}"]
        for kind in ("zk", "redis", "sentinel", "node", "gateway"):
            service = services[f"{kind}-{dc}"]
            assert service["labels"]["bank.dc"] == dc and service["network_mode"] == f"service:{dc}"
            assert service["command"][1:] == ["--dc", dc]
        for shard in range(SPEC.shards):
            member = services[f"pg-s{shard}-{dc}"]
            assert member["command"] == ["postgres", "--dc", dc, "--shard", str(shard)]
            assert member["volumes"] == [f"pg-s{shard}-{dc}:/var/lib/bank/pg"]
            assert f"pg-s{shard}-{dc}" in compose["volumes"]
    for name, service in services.items():
        if name != "grafana":
            assert service["image"] == "bank-sim:latest" and service["init"] is True, name
            assert service["environment"]["BANK_OCTET"] == str(SPEC.octet)
        for published in service.get("ports", []):
            assert published.startswith("127.0.0.1:"), (name, published)
    assert services["grafana"]["profiles"] == ["grafana"]
    assert {"prometheus", "grafana", "bank-init"} <= set(services)
    dockerfile = (DEPLOY / "image" / "Dockerfile").read_text(encoding="utf-8")
    assert dockerfile.startswith("#") and "FROM debian:bookworm-slim" in dockerfile
    assert 'ENTRYPOINT ["/opt/bank-sim/.venv/bin/python", "-m", "services.container.roles"]' in dockerfile


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
