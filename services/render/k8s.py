"""Kubernetes manifests of the bank (rendered into deploy/k8s/ by deploy_files): every role is a
StatefulSet with one replica per DC, spread one per zone; the pod's ordinal is its DC (0 -> dc1),
so a zone outage is a DC outage, as in `bankctl chaos kill-dc`."""

from __future__ import annotations

from typing import Any

from services.cluster import zookeeper
from services.cluster.redis_group import DOWN_AFTER_MS, FAILOVER_TIMEOUT_MS, SENTINEL_QUORUM
from services.cluster.topology import (
    GATEWAY_METRICS_PORT,
    GATEWAY_PORT,
    NODE_METRICS_PORT,
    NODE_PORT,
    PG_BASE_PORT,
    REDIS_PORT,
    SENTINEL_MASTER,
    SENTINEL_PORT,
    ZK_CLIENT_PORT,
    ZK_ELECTION_PORT,
    ZK_PEER_PORT,
    ClusterSpec,
)

NAMESPACE = "bank-sim"
ZONE_KEY = "topology.kubernetes.io/zone"
SECRET = "bank-secrets"
ORDINAL = 'ORDINAL="${HOSTNAME##*-}"'
# The bank's roles in a pod, each configured from the environment with per-role host names.
K8S_ROLES = ["/opt/bank-sim/.venv/bin/python", "-m", "services.container.k8s_roles"]
HOSTS = {
    "BANK_ZK_HOST": "zk-{index}.zk",
    "BANK_REDIS_HOST": "redis-{index}.redis",
    "BANK_SENTINEL_HOST": "sentinel-{index}.sentinel",
    "BANK_PG_HOST": "pg-s{shard}-{index}.pg-s{shard}",
    "BANK_NODE_HOST": "node-{index}.node",
}


def _meta(name: str, **labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": NAMESPACE,
        "labels": {"app.kubernetes.io/part-of": "bank-sim", **labels},
    }


def _secret_env(names: list[str]) -> list[dict[str, Any]]:
    return [{"name": n, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": n}}} for n in names]


def _headless(name: str, ports: list[int]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": _meta(name),
        "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": {"app": name},
                 "ports": [{"name": f"p{p}", "port": p} for p in ports]},
    }  # fmt: skip


def _statefulset(name: str, spec: ClusterSpec, container: dict[str, Any], **extra: Any) -> dict[str, Any]:
    pod_spec = {
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": ZONE_KEY, "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": {"app": name}}}
        ],
        "containers": [{"name": name.split("-")[0], **container}],
        **extra,
    }  # fmt: skip
    return {
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(name),
        "spec": {"serviceName": name, "replicas": spec.dcs, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name, "app.kubernetes.io/part-of": "bank-sim"}},
                              "spec": pod_spec}},
    }  # fmt: skip


def _zookeeper(spec: ClusterSpec) -> dict[str, Any]:
    servers = " ".join(
        f"server.{i + 1}=zk-{i}.zk:{ZK_PEER_PORT}:{ZK_ELECTION_PORT};{ZK_CLIENT_PORT}"
        for i in range(spec.dcs)
    )
    return _statefulset("zk", spec, {
        "image": "zookeeper:3.8",
        "command": ["bash", "-c", f'{ORDINAL}; export ZOO_MY_ID=$((ORDINAL + 1)); '
                    "exec /docker-entrypoint.sh zkServer.sh start-foreground"],
        "env": [{"name": "ZOO_SERVERS", "value": servers},
                {"name": "ZOO_TICK_TIME", "value": str(zookeeper.TICK_MS)},
                {"name": "ZOO_SYNC_LIMIT", "value": str(zookeeper.SYNC_LIMIT)},
                {"name": "ZOO_4LW_COMMANDS_WHITELIST", "value": "srvr,ruok"}],
        "ports": [{"containerPort": p} for p in (ZK_CLIENT_PORT, ZK_PEER_PORT, ZK_ELECTION_PORT)],
    })  # fmt: skip


def _redis(spec: ClusterSpec) -> list[dict[str, Any]]:
    redis = _statefulset("redis", spec, {
        "image": "redis:7.0",
        "command": ["bash", "-c", f'{ORDINAL}; REPLICA=(); [ "$ORDINAL" != 0 ] && '
                    f"REPLICA=(--replicaof redis-0.redis {REDIS_PORT}); "
                    'exec redis-server --save "" --appendonly no --requirepass "$BANK_REDIS_PASSWORD" '
                    '--masterauth "$BANK_REDIS_PASSWORD" --replica-announce-ip "$HOSTNAME.redis" '
                    '"${REPLICA[@]}"'],
        "env": _secret_env(["BANK_REDIS_PASSWORD"]),
        "ports": [{"containerPort": REDIS_PORT}],
    })  # fmt: skip
    conf = "\\n".join([
        f"port {SENTINEL_PORT}", "sentinel resolve-hostnames yes", "sentinel announce-hostnames yes",
        "sentinel announce-ip $HOSTNAME.sentinel",
        f"sentinel monitor {SENTINEL_MASTER} redis-0.redis {REDIS_PORT} {SENTINEL_QUORUM}",
        f"sentinel down-after-milliseconds {SENTINEL_MASTER} {DOWN_AFTER_MS}",
        f"sentinel failover-timeout {SENTINEL_MASTER} {FAILOVER_TIMEOUT_MS}",
        f"sentinel auth-pass {SENTINEL_MASTER} $BANK_REDIS_PASSWORD", "requirepass $BANK_REDIS_PASSWORD",
        "sentinel sentinel-pass $BANK_REDIS_PASSWORD",
    ])  # fmt: skip
    sentinel = _statefulset("sentinel", spec, {
        "image": "redis:7.0",
        "command": ["bash", "-c", f'printf "{conf}\\n" > /tmp/sentinel.conf && '
                    "exec redis-server /tmp/sentinel.conf --sentinel"],
        "env": _secret_env(["BANK_REDIS_PASSWORD"]),
        "ports": [{"containerPort": SENTINEL_PORT}],
    })  # fmt: skip
    return [redis, sentinel]


def _postgres(spec: ClusterSpec, shard: int, settings: list[str]) -> dict[str, Any]:
    name = f"pg-s{shard}"
    primary_index = spec.dc_index(spec.primary_dc(shard)) - 1
    group = ", ".join(spec.pg_member(shard, d) for d in spec.dc_names)
    flags = " ".join(f"-c '{s}'" for s in [*settings, f"synchronous_standby_names=ANY 1 ({group})"])
    script = (
        f'{ORDINAL}; export BANK_MEMBER="s{shard}_dc$((ORDINAL + 1))" '
        f"BANK_PRIMARY_HOST={name}-{primary_index}.{name}; "
        f'if [ "$ORDINAL" = {primary_index} ]; then '
        "cp /bank-postgres/primary-init.sh /docker-entrypoint-initdb.d/; "
        f"exec docker-entrypoint.sh postgres {flags}; "
        f"else exec /bank-postgres/standby-entrypoint.sh postgres {flags}; fi"
    )
    statefulset = _statefulset(name, spec, {
        "image": "postgres:15",
        "command": ["bash", "-c", script],
        "env": [{"name": "POSTGRES_USER", "value": "bank"}, {"name": "POSTGRES_DB", "value": "bank"},
                {"name": "POSTGRES_PASSWORD",
                 "valueFrom": {"secretKeyRef": {"name": SECRET, "key": "BANK_PG_PASSWORD"}}},
                {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
        "ports": [{"containerPort": PG_BASE_PORT}],
        "readinessProbe": {"exec": {"command": ["pg_isready", "-U", "bank", "-d", "bank"]},
                           "periodSeconds": 2},
        "volumeMounts": [{"name": "scripts", "mountPath": "/bank-postgres"},
                         {"name": "data", "mountPath": "/var/lib/postgresql/data"}],
    }, volumes=[{"name": "scripts",
                 "configMap": {"name": "bank-postgres-scripts", "defaultMode": 0o755}}])  # fmt: skip
    return _with_claims(statefulset)


def _with_claims(statefulset: dict[str, Any]) -> dict[str, Any]:
    statefulset["spec"]["volumeClaimTemplates"] = [
        {"metadata": {"name": "data"},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}
    ]  # fmt: skip
    return statefulset


BANK_SECRETS = ["BANK_PG_PASSWORD", "BANK_REDIS_PASSWORD", "BANK_ZK_AUTH", "BANK_PEER_TOKEN",
                "BANK_CLIENT_TOKEN", "BANK_ADMIN_TOKEN"]  # fmt: skip


def _bank_env(spec: ClusterSpec) -> list[dict[str, Any]]:
    plain = {"BANK_DCS": str(spec.dcs), "BANK_SHARDS": str(spec.shards), **HOSTS}
    return [*({"name": k, "value": v} for k, v in plain.items()), *_secret_env(BANK_SECRETS)]


def _bank(spec: ClusterSpec, role: str, ports: list[int]) -> dict[str, Any]:
    """A node or gateway: an init container writes the credentials' digests into the pod."""
    mount = [{"name": "credentials", "mountPath": "/var/lib/bank/credentials"}]
    image = "bank-sim:latest"
    return _statefulset(role, spec, {
        "image": image, "command": K8S_ROLES, "args": [role], "env": _bank_env(spec),
        "ports": [{"containerPort": p} for p in ports], "volumeMounts": mount,
        "readinessProbe": {"grpc": {"port": ports[0]}, "periodSeconds": 2},
    }, initContainers=[{"name": "tokens", "image": image, "command": K8S_ROLES, "args": ["tokens"],
                        "env": _bank_env(spec), "volumeMounts": mount}],
       volumes=[{"name": "credentials", "emptyDir": {"medium": "Memory"}}])  # fmt: skip


def manifests(spec: ClusterSpec, pg_settings: list[str], scripts: dict[str, str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(SECRET), "type": "Opaque",
         # Placeholders: replace them (deploy/make-env.sh makes real ones) before applying.
         "stringData": {n: ("bank:change-me" if n == "BANK_ZK_AUTH" else "change-me") for n in BANK_SECRETS}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("bank-postgres-scripts"),
         "data": scripts},
    ]  # fmt: skip
    docs += [_headless("zk", [ZK_CLIENT_PORT, ZK_PEER_PORT, ZK_ELECTION_PORT]), _zookeeper(spec)]
    docs += [_headless("redis", [REDIS_PORT]), _headless("sentinel", [SENTINEL_PORT]), *_redis(spec)]
    for shard in range(spec.shards):
        docs += [_headless(f"pg-s{shard}", [PG_BASE_PORT]), _postgres(spec, shard, pg_settings)]
    docs += [
        {"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta("bank-init"),
         "spec": {"backoffLimit": 30, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [
             {"name": "init", "image": "bank-sim:latest", "command": K8S_ROLES, "args": ["init"],
              "env": _bank_env(spec),
              "volumeMounts": [{"name": "credentials", "mountPath": "/var/lib/bank/credentials"}]}],
             "volumes": [{"name": "credentials", "emptyDir": {}}]}}}},
    ]  # fmt: skip
    docs += [
        _headless("node", [NODE_PORT, NODE_METRICS_PORT]),
        _bank(spec, "node", [NODE_PORT, NODE_METRICS_PORT]),
    ]
    docs += [_headless("gateway", [GATEWAY_PORT, GATEWAY_METRICS_PORT]),
             _bank(spec, "gateway", [GATEWAY_PORT, GATEWAY_METRICS_PORT])]  # fmt: skip
    docs.append({
        "apiVersion": "v1", "kind": "Service", "metadata": _meta("bank-gateway"),
        "spec": {"type": "LoadBalancer", "selector": {"app": "gateway"},
                 "ports": [{"name": "grpc", "port": GATEWAY_PORT, "targetPort": GATEWAY_PORT}]},
    })  # fmt: skip
    return docs
