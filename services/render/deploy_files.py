"""The deployment files under `deploy/`, rendered from the same topology `bankctl up` uses, so
that ports, DC names, shard placement and settings cannot drift apart:

    python -m services.render.deploy_files          # rewrites deploy/docker-compose.yml, ...
    python -m services.render.deploy_files --check  # exit 1 if a committed file differs

docker-compose: every role in the bank's own image, a DC one network namespace on a backbone
(services/cluster/compose/compose_file.py, which the compose engine renders per topology too).
Kubernetes: a namespace, the same secrets, and one StatefulSet per role whose replicas are
spread one per zone (a zone is a DC; the pod's ordinal names its DC).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from services.cluster.topology import COMPOSE, ClusterSpec
from services.host.postgres import BASE_SETTINGS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
HEADER = "# Rendered by `python -m services.render.deploy_files` from the launcher's topology; do not edit.\n"


def pg_settings() -> list[str]:
    """The settings every member runs with, as `bankctl up` writes them (minus local logging)."""
    skipped = {"logging_collector", "log_line_prefix", "log_min_messages", "log_min_error_statement"}
    return [f"{k}={v.strip(chr(39))}" for k, v in BASE_SETTINGS.items() if k not in skipped]


def postgres_scripts() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((DEPLOY / "postgres").glob("*.sh"))}


class _Plain(yaml.SafeDumper):
    """Writes shared values out in full: no YAML anchors for a reader to chase."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _dump(*documents: Any) -> str:
    return HEADER + yaml.dump_all(documents, Dumper=_Plain, sort_keys=False, width=120)


def rendered(spec: ClusterSpec) -> dict[Path, str]:
    from services.cluster.compose import compose_file
    from services.render import k8s, topology_svg

    return {
        DEPLOY / "architecture.svg": topology_svg.render(topology_svg.picture_of_spec(spec)),
        DEPLOY / "docker-compose.yml": _dump(compose_file.compose(replace(spec, net=COMPOSE))),
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
