"""`deploy/docker-compose.yml`: the launcher's cluster as containers of one image (bank-sim,
built from Debian packages and PyPI by deploy/image/Dockerfile), each role started by the
launcher's own code (services/container/roles.py).

A DC is one network namespace: a `dcN` container holds it, with the DC's address on the
`backbone` network, and every other container of the DC joins it (`network_mode:
service:dcN`), so each process binds where `bankctl up --net netns` binds it. Killing a DC is
`docker kill` of its containers; cutting it off, `docker network disconnect` of its `dcN`
container from the backbone. Each PostgreSQL member keeps its data on a named volume of its
own, beside a keeper that rejoins it by itself (services/container/member_keeper.py). Gateways
and Prometheus are published on 127.0.0.1 only; Grafana runs under the `grafana` profile, where
a registry serves its image.
"""

from __future__ import annotations

from typing import Any

from services.cluster.topology import GATEWAY_PORT, ClusterSpec

BANK_IMAGE = "bank-sim:latest"
GRAFANA_IMAGE = "grafana/grafana:10.4.2"
SECRETS = ["BANK_PG_PASSWORD", "BANK_REDIS_PASSWORD", "BANK_ZK_AUTH", "BANK_PEER_TOKEN",
           "BANK_CLIENT_TOKEN", "BANK_ADMIN_TOKEN"]  # fmt: skip
PROMETHEUS_PORT = 9090


def published_gateway_port(spec: ClusterSpec, dc: str) -> int:
    """Where the host reaches a DC's gateway: 127.0.0.1:7101, 7102, ..."""
    return GATEWAY_PORT + spec.dc_index(dc)


def member_service(shard: int, dc: str) -> str:
    return f"pg-s{shard}-{dc}"


def volume(shard: int, dc: str) -> str:
    return f"pg-s{shard}-{dc}"


def _environment(spec: ClusterSpec) -> dict[str, str]:
    secrets = {
        name: f"${{{name}:?set {name} in the env file (deploy/make-env.sh writes one)}}" for name in SECRETS
    }
    topology = {"BANK_DCS": str(spec.dcs), "BANK_SHARDS": str(spec.shards), "BANK_NAME": spec.name,
                "BANK_OCTET": str(spec.octet), "BANK_TIME_ZONE": spec.time_zone,
                "BANK_DAY_SECONDS": str(spec.day_seconds)}  # fmt: skip
    return {**topology, **secrets}


def _role(spec: ClusterSpec, dc: str | None, role: str, *args: str) -> dict[str, Any]:
    """A container of the bank's image running one role; in a DC's namespace when `dc` is set."""
    service: dict[str, Any] = {
        "image": BANK_IMAGE, "init": True, "command": [role, *(["--dc", dc] if dc else []), *args],
        "environment": _environment(spec), "labels": {"bank.role": role, **({"bank.dc": dc} if dc else {})},
        "stop_grace_period": "20s",
    }  # fmt: skip
    if dc is not None:
        service["network_mode"] = f"service:{dc}"
    return service


def _dc(spec: ClusterSpec, dc: str) -> dict[str, Any]:
    service = _role(spec, dc, "dc")
    del service["network_mode"]
    service["networks"] = {"backbone": {"ipv4_address": spec.address(dc)}}
    service["ports"] = [f"127.0.0.1:{published_gateway_port(spec, dc)}:{GATEWAY_PORT}"]
    return service


def _member(spec: ClusterSpec, shard: int, dc: str) -> dict[str, Any]:
    service = _role(spec, dc, "postgres", "--shard", str(shard))
    service["labels"]["bank.shard"] = str(shard)
    service["volumes"] = [f"{volume(shard, dc)}:/var/lib/bank/pg"]
    service["tmpfs"] = ["/run/bank"]
    ready = f"/run/bank/{spec.pg_member(shard, dc)}.ready"
    service["healthcheck"] = {"test": ["CMD", "test", "-f", ready], "interval": "2s", "timeout": "2s",
                              "retries": 150, "start_period": "5s"}  # fmt: skip
    service["depends_on"] = [dc, *(f"zk-{d}" for d in spec.dc_names)]
    return service


def compose(spec: ClusterSpec, deploy_dir: str = ".") -> dict[str, Any]:
    """`deploy_dir`: where Grafana's provisioning and dashboards are, from the file's folder."""
    services: dict[str, Any] = {}
    members = [member_service(s, d) for s in range(spec.shards) for d in spec.dc_names]
    for dc in spec.dc_names:
        services[dc] = _dc(spec, dc)
        services[f"zk-{dc}"] = {**_role(spec, dc, "zookeeper"), "depends_on": [dc]}
        services[f"redis-{dc}"] = {**_role(spec, dc, "redis"), "depends_on": [dc]}
        services[f"sentinel-{dc}"] = {**_role(spec, dc, "sentinel"),
                                      "depends_on": [f"redis-{d}" for d in spec.dc_names]}  # fmt: skip
        for shard in range(spec.shards):
            services[member_service(shard, dc)] = _member(spec, shard, dc)
        services[f"node-{dc}"] = {**_role(spec, dc, "node"), "depends_on": {
            "bank-init": {"condition": "service_completed_successfully"},
            **{m: {"condition": "service_healthy"} for m in members}}}  # fmt: skip
        services[f"gateway-{dc}"] = {**_role(spec, dc, "gateway"), "depends_on": [f"node-{dc}"]}
    services["bank-init"] = {**_role(spec, None, "init"), "networks": ["backbone"],
                             "depends_on": [*(f"zk-{d}" for d in spec.dc_names),
                                            *(f"sentinel-{d}" for d in spec.dc_names)]}  # fmt: skip
    services["prometheus"] = {**_role(spec, None, "prometheus"), "networks": ["backbone"],
                              "ports": [f"127.0.0.1:{PROMETHEUS_PORT}:{PROMETHEUS_PORT}"]}  # fmt: skip
    services["grafana"] = {
        "image": GRAFANA_IMAGE, "profiles": ["grafana"], "networks": ["backbone"],
        "ports": ["127.0.0.1:3000:3000"],
        "environment": {"BANK_PROMETHEUS_URL": f"http://prometheus:{PROMETHEUS_PORT}",
                        "GF_AUTH_ANONYMOUS_ENABLED": "true"},
        "volumes": [f"{deploy_dir}/grafana/provisioning:/etc/grafana/provisioning:ro",
                    f"{deploy_dir}/grafana/dashboards:/var/lib/grafana/dashboards:ro"],
        "depends_on": ["prometheus"],
    }  # fmt: skip
    return {
        "services": services,
        "networks": {"backbone": {"ipam": {"config": [{"subnet": spec.dc_subnet}]}}},
        "volumes": {volume(s, d): {} for s in range(spec.shards) for d in spec.dc_names},
    }
