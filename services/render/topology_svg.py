"""A picture of the bank as SVG: the data centers as boxes, in each its ZooKeeper node, Redis and
Sentinel, one PostgreSQL member of every shard (the primaries marked), the bank-node and the
gateway; the synchronous replication from each primary to its standbys, and the client's path.

Drawn from the launcher's topology (`picture_of_spec`, committed as deploy/architecture.svg by
`make deploy-files`) or from a running cluster's status (`picture_of_status`, written by
`bankctl status --svg FILE`: leaders where they are now, what is down, the active faults). Plain
SVG written here rather than through Graphviz: the layout is a fixed grid (a DC a column, a
shard a row), and the output must be byte-identical from run to run for the staleness test."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from services.cluster.topology import ClusterSpec

DC_W, GAP, MARGIN, ROW_H, BOX_H = 230, 60, 30, 40, 26
TOP = 120  # below the client and its arrows
PRIMARY, STANDBY, DOWN, SERVICE = "#1a73e8", "#e8f0fe", "#d93025", "#f1f3f4"


@dataclass
class Picture:
    """What the drawing shows, whatever it was read from."""

    dcs: list[str]
    shards: list[int]
    leaders: dict[int, str]  # shard -> DC of its primary ("" while it has none)
    redis_primary: str
    down: set[tuple[str, str, int | None]] = field(default_factory=set)  # (kind, dc, shard)
    caption: list[str] = field(default_factory=list)


def picture_of_spec(spec: ClusterSpec) -> Picture:
    shards = list(range(spec.shards))
    return Picture(spec.dc_names, shards, {s: spec.primary_dc(s) for s in shards}, spec.dc_names[0])


def picture_of_status(status: dict[str, Any]) -> Picture:
    components = status["components"]
    leaders = {int(s["shard"]): str(s.get("primary_dc") or "") for s in status["shards"]}
    redis = next((c["dc"] for c in components if c["kind"] == "redis" and c["role"] == "primary"), "")
    down = {(c["kind"], c["dc"], c["shard"]) for c in components if not c["healthy"]}
    active = [f"{f['fault']} {f['target']}" for f in status["faults"] if f["active"]]
    caption = [f"active faults: {', '.join(active) or 'none'}"]
    return Picture(list(status["dcs"]), sorted(leaders), leaders, redis, down, caption)


def render(picture: Picture) -> str:
    """The SVG text of the picture."""
    rows = _rows(picture)
    height = _bottom(rows) + 30 + 22 * (len(picture.caption) + 2)
    width = 2 * MARGIN + len(picture.dcs) * DC_W + (len(picture.dcs) - 1) * GAP
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5f6368"/></marker></defs>',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    parts += _client(picture, width)
    for index, dc in enumerate(picture.dcs):
        parts += _dc_column(picture, rows, index, dc)
    parts += _replication(picture, rows)
    parts += _legend(picture, height)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _rows(picture: Picture) -> list[tuple[str, int | None]]:
    """The boxes of a DC column, top to bottom: (kind, shard)."""
    services: list[tuple[str, int | None]] = [("gateway", None), ("node", None)]
    members: list[tuple[str, int | None]] = [("postgres", s) for s in picture.shards]
    return [*services, *members, ("redis", None), ("sentinel", None), ("zookeeper", None)]


def _bottom(rows: list[tuple[str, int | None]]) -> int:
    """The lower edge of a DC's frame."""
    return _y(len(rows) - 1) + BOX_H + 10


def _x(index: int) -> int:
    return MARGIN + index * (DC_W + GAP)


def _y(row: int) -> int:
    return TOP + 34 + row * ROW_H


def _box(
    x: int, y: int, w: int, label: str, fill: str, text: str = "#202124", stroke: str = "#5f6368"
) -> str:
    return (
        f'<rect x="{x}" y="{y}" width="{w}" height="{BOX_H}" rx="4" fill="{fill}" stroke="{stroke}"/>'
        f'<text x="{x + w / 2:.0f}" y="{y + 17}" text-anchor="middle" fill="{text}">{escape(label)}</text>'
    )


def _client(picture: Picture, width: int) -> list[str]:
    cx = width // 2
    parts = [_box(cx - 150, 14, 300, "clients (bankclient, Locust): any DC's gateway", SERVICE)]
    for index in range(len(picture.dcs)):
        gx = _x(index) + DC_W // 2
        parts.append(
            f'<line x1="{cx}" y1="40" x2="{gx}" y2="{_y(0)}" stroke="#5f6368" marker-end="url(#arrow)"/>'
        )
    return parts


def _dc_column(picture: Picture, rows: list[tuple[str, int | None]], index: int, dc: str) -> list[str]:
    x = _x(index)
    bottom = _bottom(rows)
    parts = [
        f'<rect x="{x - 10}" y="{TOP}" width="{DC_W + 20}" height="{bottom - TOP}" rx="8" fill="none" '
        f'stroke="#9aa0a6" stroke-dasharray="6 3"/>',
        f'<text x="{x + DC_W / 2:.0f}" y="{TOP + 20}" text-anchor="middle" font-weight="bold">'
        f"{escape(dc)}</text>",
    ]
    for row, (kind, shard) in enumerate(rows):
        label, fill, text = _member(picture, dc, kind, shard)
        down = (kind, dc, shard) in picture.down
        parts.append(
            _box(
                x, _y(row), DC_W, label + (" (down)" if down else ""), fill, text, DOWN if down else "#5f6368"
            )
        )
    # The client's path inside the DC: gateway -> bank-node -> the primaries this DC leads.
    mid = x + DC_W // 2
    parts.append(_arrow(mid, _y(0) + BOX_H, mid, _y(1)))
    return parts


def _member(picture: Picture, dc: str, kind: str, shard: int | None) -> tuple[str, str, str]:
    """Label, fill and text colour of one box."""
    if kind == "postgres" and shard is not None:
        if picture.leaders.get(shard) == dc:
            return f"PostgreSQL shard {shard}: PRIMARY", PRIMARY, "white"
        return f"PostgreSQL shard {shard}: sync standby", STANDBY, "#202124"
    if kind == "redis":
        return (
            ("Redis: primary (routes)" if picture.redis_primary == dc else "Redis: replica"),
            SERVICE,
            "#202124",
        )
    names = {"gateway": "gateway :7100 (routes by slot)", "node": "bank-node (leads its primaries)",
             "sentinel": "Redis Sentinel", "zookeeper": "ZooKeeper (elections, slot map)"}  # fmt: skip
    return names[kind], SERVICE, "#202124"


def _arrow(x1: float, y1: float, x2: float, y2: float, color: str = "#5f6368", dashed: bool = False) -> str:
    dash = ' stroke-dasharray="4 3"' if dashed else ""
    return (
        f'<line x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" stroke="{color}"{dash} '
        'marker-end="url(#arrow)"/>'
    )


def _replication(picture: Picture, rows: list[tuple[str, int | None]]) -> list[str]:
    """From each shard's primary to its standbys in the other DCs, in the lane just above the
    shard's row (a lane per distance, so that no line crosses a box or another line)."""
    parts = []
    for shard, leader in sorted(picture.leaders.items()):
        if leader not in picture.dcs:
            continue
        top = _y(rows.index(("postgres", shard)))
        source = picture.dcs.index(leader)
        for target in range(len(picture.dcs)):
            if target == source:
                continue
            right = target > source
            x1 = _x(source) + (DC_W if right else 0)
            x2 = _x(target) + (0 if right else DC_W)
            step = 12 if right else -12
            lane = top - 4 - 5 * (abs(target - source) - 1)
            mid = top + BOX_H // 2
            parts.append(
                f'<path d="M{x1},{mid} L{x1 + step},{lane} L{x2 - step},{lane} L{x2},{mid}" fill="none" '
                f'stroke="{PRIMARY}" stroke-width="1.4" marker-end="url(#arrow)"/>'
            )
    return parts


def _legend(picture: Picture, height: int) -> list[str]:
    lines = [
        "Blue lines: synchronous streaming replication from each primary to its standbys;"
        " a commit waits for ANY 1 of them.",
        "Client path: client -> a DC's gateway -> the shard leader's bank-node -> its PostgreSQL primary.",
        *picture.caption,
    ]
    first = height - 22 * len(lines) - 10
    return [
        f'<text x="{MARGIN}" y="{first + 22 * i + 14}">{escape(line)}</text>' for i, line in enumerate(lines)
    ]
