"""The deployment files under `deploy/`, rendered from the same topology `bankctl up` uses, so
that ports, DC names, shard placement and settings cannot drift apart:

    python -m services.render.deploy_files          # rewrites deploy/docker-compose.yml, ...
    python -m services.render.deploy_files --check  # exit 1 if a committed file differs

docker-compose: one network per DC plus a backbone joining them; the official zookeeper, redis
and postgres images (streaming replication set up by deploy/postgres/*.sh), the bank's own image
(deploy/Dockerfile) for the bank-nodes, gateways and the one-shot init, Prometheus and Grafana.
Kubernetes: a namespace, the same secrets, and one StatefulSet per role whose replicas are
spread one per zone (a zone is a DC; the pod's ordinal names its DC).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from services.cluster import zookeeper
from services.cluster.redis_group import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SENTINEL_QUORUM
from services.cluster.topology import (
    GATEWAY_METRICS_PORT,
    GATEWAY_PORT,
    NODE_METRICS_PORT,
    REDIS_PORT,
    SENTINEL_MASTER,
    SENTINEL_PORT,
    ZK_CLIENT_PORT,
    ZK_ELECTION_PORT,
    ZK_PEER_PORT,
    ClusterSpec,
)
from services.host.postgres import BASE_SETTINGS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
IMAGES = {"zookeeper": "zookeeper:3.8", "redis": "redis:7.0", "postgres": "postgres:15",
          "prometheus": "prom/prometheus:v2.42.0", "grafana": "grafana/grafana:10.4.2"}  # fmt: skip
BANK_IMAGE = "bank-sim:latest"
SECRETS = ["BANK_PG_PASSWORD", "BANK_REDIS_PASSWORD", "BANK_ZK_AUTH", "BANK_PEER_TOKEN",
           "BANK_CLIENT_TOKEN", "BANK_ADMIN_TOKEN"]  # fmt: skip
HEADER = "# Rendered by `python -m services.render.deploy_files` from the launcher's topology; do not edit.\n"


def _secret_env() -> dict[str, str]:
    return {
        name: f"${{{name}:?set {name} in deploy/.env (deploy/make-env.sh writes one)}}" for name in SECRETS
    }


def pg_settings() -> list[str]:
    """The settings every member runs with, as `bankctl up` writes them (minus local logging)."""
    skipped = {"logging_collector", "log_line_prefix", "log_min_messages", "log_min_error_statement"}
    return [f"{k}={v.strip(chr(39))}" for k, v in BASE_SETTINGS.items() if k not in skipped]


def compose(spec: ClusterSpec) -> dict[str, Any]:
    services: dict[str, Any] = {}
    networks: dict[str, Any] = {"backbone": {}}
    zk_servers = " ".join(
        f"server.{spec.dc_index(dc)}=zk-{dc}:{ZK_PEER_PORT}:{ZK_ELECTION_PORT};{ZK_CLIENT_PORT}"
        for dc in spec.dc_names
    )
    for dc in spec.dc_names:
        networks[dc] = {}
        dc_nets = [dc, "backbone"]
        labels = {"bank.dc": dc}
        services[f"zk-{dc}"] = {
            "image": IMAGES["zookeeper"], "hostname": f"zk-{dc}", "networks": dc_nets, "labels": labels,
            "environment": {"ZOO_MY_ID": str(spec.dc_index(dc)), "ZOO_SERVERS": zk_servers,
                            "ZOO_TICK_TIME": str(zookeeper.TICK_MS),
                            "ZOO_SYNC_LIMIT": str(zookeeper.SYNC_LIMIT),
                            "ZOO_4LW_COMMANDS_WHITELIST": "srvr,ruok,mntr"},
        }  # fmt: skip
        replica_of = (
            [] if dc == spec.dc_names[0] else ["--replicaof", f"redis-{spec.dc_names[0]}", str(REDIS_PORT)]
        )
        services[f"redis-{dc}"] = {
            "image": IMAGES["redis"], "hostname": f"redis-{dc}", "networks": dc_nets, "labels": labels,
            "command": ["redis-server", "--port", str(REDIS_PORT), "--save", "", "--appendonly", "no",
                        "--requirepass", "${BANK_REDIS_PASSWORD}", "--masterauth", "${BANK_REDIS_PASSWORD}",
                        "--replica-announce-ip", f"redis-{dc}", *replica_of],
        }  # fmt: skip
        sentinel_conf = "\\n".join([
            f"port {SENTINEL_PORT}", "sentinel resolve-hostnames yes", "sentinel announce-hostnames yes",
            f"sentinel announce-ip sentinel-{dc}",
            f"sentinel monitor {SENTINEL_MASTER} redis-{spec.dc_names[0]} {REDIS_PORT} {SENTINEL_QUORUM}",
            f"sentinel down-after-milliseconds {SENTINEL_MASTER} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {SENTINEL_MASTER} {FAILOVER_TIMEOUT_MS}",
            f"sentinel auth-pass {SENTINEL_MASTER} $$BANK_REDIS_PASSWORD",
            "requirepass $$BANK_REDIS_PASSWORD",
            "sentinel sentinel-pass $$BANK_REDIS_PASSWORD",
        ])  # fmt: skip
        services[f"sentinel-{dc}"] = {
            "image": IMAGES["redis"], "hostname": f"sentinel-{dc}", "networks": dc_nets, "labels": labels,
            "environment": {"BANK_REDIS_PASSWORD": "${BANK_REDIS_PASSWORD}"},
            "command": ["sh", "-c", f'printf "{sentinel_conf}\\n" > /tmp/sentinel.conf && '
                        "exec redis-server /tmp/sentinel.conf --sentinel"],
            "depends_on": [f"redis-{d}" for d in spec.dc_names],
        }  # fmt: skip
        for shard in range(spec.shards):
            services[f"pg-s{shard}-{dc}"] = _pg_service(spec, shard, dc, dc_nets, labels)
        services[f"node-{dc}"] = {
            "image": BANK_IMAGE, "build": {"context": "..", "dockerfile": "deploy/Dockerfile"},
            "hostname": f"node-{dc}", "networks": dc_nets, "labels": labels,
            "command": ["node", "--dc", dc], "environment": {**_secret_env(), "BANK_DCS": str(spec.dcs),
                                                            "BANK_SHARDS": str(spec.shards)},
            "volumes": ["credentials:/var/lib/bank/credentials:ro"],
            "depends_on": {"bank-init": {"condition": "service_completed_successfully"},
                           **{f"pg-s{s}-{d}": {"condition": "service_healthy"}
                              for s in range(spec.shards) for d in spec.dc_names}},
        }  # fmt: skip
        services[f"gateway-{dc}"] = {
            "image": BANK_IMAGE, "hostname": f"gateway-{dc}", "networks": dc_nets, "labels": labels,
            "command": ["gateway", "--dc", dc], "environment": {**_secret_env(), "BANK_DCS": str(spec.dcs),
                                                               "BANK_SHARDS": str(spec.shards)},
            "volumes": ["credentials:/var/lib/bank/credentials:ro"],
            "ports": [f"{GATEWAY_PORT + spec.dc_index(dc)}:{GATEWAY_PORT}"],
            "depends_on": [f"node-{dc}"],
        }  # fmt: skip
    services["bank-init"] = {
        "image": BANK_IMAGE, "networks": ["backbone"], "command": ["init"],
        "environment": {**_secret_env(), "BANK_DCS": str(spec.dcs), "BANK_SHARDS": str(spec.shards)},
        "volumes": ["credentials:/var/lib/bank/credentials"],
        "depends_on": [*(f"zk-{d}" for d in spec.dc_names), *(f"sentinel-{d}" for d in spec.dc_names)],
    }  # fmt: skip
    services["prometheus"] = {
        "image": IMAGES["prometheus"], "networks": ["backbone"], "ports": ["9090:9090"],
        "volumes": ["./prometheus.yml:/etc/prometheus/prometheus.yml:ro"],
    }  # fmt: skip
    services["grafana"] = {
        "image": IMAGES["grafana"], "networks": ["backbone"], "ports": ["3000:3000"],
        "environment": {"BANK_PROMETHEUS_URL": "http://prometheus:9090", "GF_AUTH_ANONYMOUS_ENABLED": "true"},
        "volumes": ["./grafana/provisioning:/etc/grafana/provisioning:ro",
                    "./grafana/dashboards:/var/lib/grafana/dashboards:ro"],
        "depends_on": ["prometheus"],
    }  # fmt: skip
    return {"services": services, "networks": networks, "volumes": {"credentials": {}}}


def _pg_service(
    spec: ClusterSpec, shard: int, dc: str, nets: list[str], labels: dict[str, str]
) -> dict[str, Any]:
    primary = spec.primary_dc(shard)
    group = ", ".join(spec.pg_member(shard, d) for d in spec.dc_names)
    settings = [*pg_settings(), f"synchronous_standby_names=ANY 1 ({group})"]
    service: dict[str, Any] = {
        "image": IMAGES["postgres"], "hostname": f"pg-s{shard}-{dc}", "networks": nets,
        "labels": {**labels, "bank.shard": str(shard)},
        "environment": {"POSTGRES_USER": "bank", "POSTGRES_DB": "bank",
                        "POSTGRES_PASSWORD": "${BANK_PG_PASSWORD}", "BANK_MEMBER": spec.pg_member(shard, dc),
                        "BANK_PRIMARY_HOST": f"pg-s{shard}-{primary}"},
        "command": ["postgres", *[x for s in settings for x in ("-c", s)]],
        "volumes": ["./postgres:/bank-postgres:ro"],
        "healthcheck": {"test": ["CMD", "pg_isready", "-U", "bank", "-d", "bank"], "interval": "2s",
                        "timeout": "2s", "retries": 60},
    }  # fmt: skip
    if dc == primary:
        service["volumes"].append(
            "./postgres/primary-init.sh:/docker-entrypoint-initdb.d/10-replication.sh:ro"
        )
    else:
        service["entrypoint"] = ["/bank-postgres/standby-entrypoint.sh"]
        service["depends_on"] = {f"pg-s{shard}-{primary}": {"condition": "service_healthy"}}
    return service


def prometheus_config(spec: ClusterSpec) -> dict[str, Any]:
    targets = [
        {"targets": [f"{kind}-{dc}:{port}"], "labels": {"dc": dc, "kind": kind}}
        for dc in spec.dc_names
        for kind, port in (("node", NODE_METRICS_PORT), ("gateway", GATEWAY_METRICS_PORT))
    ]
    return {
        "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
        "scrape_configs": [{"job_name": "bank", "scrape_timeout": "1s", "static_configs": targets}],
    }


def postgres_scripts() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((DEPLOY / "postgres").glob("*.sh"))}


class _Plain(yaml.SafeDumper):
    """Writes shared values out in full: no YAML anchors for a reader to chase."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(*documents: Any) -> str:
    return HEADER + yaml.dump_all(documents, Dumper=_Plain, sort_keys=False, width=120)


def rendered(spec: ClusterSpec) -> dict[Path, str]:
    from services.render import k8s, topology_svg

    return {
        DEPLOY / "architecture.svg": topology_svg.render(topology_svg.picture_of_spec(spec)),
        DEPLOY / "docker-compose.yml": _dump(compose(spec)),
        DEPLOY / "prometheus.yml": _dump(prometheus_config(spec)),
        DEPLOY / "k8s" / "bank-sim.yaml": _dump(
            *k8s.manifests(spec, pg_settings(), postgres_scripts())
        ),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    args = parser.parse_args(argv)
    stale = []
    for path, text in rendered(ClusterSpec()).items():
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(REPO)}")
    for path in stale:
        print(
            f"stale: {path.relative_to(REPO)} (run python -m services.render.deploy_files)", file=sys.stderr
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
