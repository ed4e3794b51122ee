"""The picture of the bank: drawn from the topology (committed) or from a live status."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree

from services.cluster.topology import ClusterSpec
from services.render import deploy_files
from services.render.topology_svg import picture_of_spec, picture_of_status, render

COMMITTED = Path(deploy_files.DEPLOY) / "architecture.svg"


def labels(svg: str) -> list[str]:
    root = ElementTree.fromstring(svg)
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def test_the_committed_picture_is_what_the_topology_draws() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(picture_of_spec(ClusterSpec())), (
        "stale: run make deploy-files"
    )


def test_every_dc_holds_every_component_and_each_shard_one_primary() -> None:
    spec = ClusterSpec(dcs=4, shards=5)
    found = labels(render(picture_of_spec(spec)))
    assert [t for t in found if t.startswith("dc")] == spec.dc_names
    for shard in range(5):
        assert found.count(f"PostgreSQL shard {shard}: PRIMARY") == 1
        assert found.count(f"PostgreSQL shard {shard}: sync standby") == 3
    for kind in ("gateway", "bank-node", "ZooKeeper", "Redis Sentinel"):
        assert sum(t.startswith(kind) for t in found) == 4, kind
    # Each primary streams to its 3 standbys: 5 x 3 replication paths.
    assert len(re.findall(r'<path d="[^"]*" fill="none"', render(picture_of_spec(spec)))) == 15


def test_a_live_status_shows_leaders_where_they_are_now_and_what_is_down() -> None:
    def component(
        kind: str, dc: str, shard: int | None, role: str, healthy: bool = True
    ) -> dict[str, object]:
        return {"kind": kind, "dc": dc, "shard": shard, "role": role, "healthy": healthy}

    status = {
        "dcs": ["dc1", "dc2", "dc3"],
        "shards": [{"shard": 0, "primary_dc": "dc2"}, {"shard": 1, "primary_dc": "dc2"}],
        "components": [
            component("redis", "dc3", None, "primary"),
            component("node", "dc1", None, "down", healthy=False),
            component("postgres", "dc1", 0, "down", healthy=False),
        ],
        "faults": [{"fault": "kill-dc", "target": "dc1", "active": True}],
    }
    found = labels(render(picture_of_status(status)))
    assert found.count("PostgreSQL shard 0: PRIMARY") == 1 and found.count("PostgreSQL shard 1: PRIMARY") == 1
    dc2 = [t for t in found if "PRIMARY" in t]
    assert len(dc2) == 2
    assert "bank-node (leads its primaries) (down)" in found
    assert "PostgreSQL shard 0: sync standby (down)" in found
    assert "Redis: primary (routes)" in found and "active faults: kill-dc dc1" in found
