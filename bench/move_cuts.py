"""Cuts a slot move at every point, every way, under the chaos workload, on a fresh cluster:
the source's primary DC killed, the target's primary DC killed, at each point of the move (copy,
catch-up, freeze, hand-over, flip), and the mover itself killed early and late. One
`bankctl chaos run` with these steps, so its checker holds across all of them (nothing lost or
applied twice, the books reconciled at every checkpoint, every move settled); prints a line per
cut (how the move ended, who settled it) and the verdict.

    .venv/bin/python bench/move_cuts.py [--points copy,freeze] [--seed 1] [--keep]

The cluster is stopped at the end, whatever happened (with --keep it stays up, for a look).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from services.moves.mover import POINTS

MOVER_KILLS_S = (0.4, 2.5)  # early (copying) and late (catching up, or frozen)


def bankctl(home: Path, *args: str, timeout_s: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", "--home", str(home), *args],
        capture_output=True, text=True, check=False, timeout=timeout_s,
    )  # fmt: skip


def steps(points: list[str]) -> list[str]:
    sides = ("kill-source-dc", "kill-target-dc")
    cuts = [f"move-slots cut={cut} at={point}" for point in points for cut in sides]
    return cuts + [f"move-slots cut=kill-mover after_s={after}" for after in MOVER_KILLS_S]


def line(record: dict[str, Any]) -> str:
    args = record["args"]
    cut = f"{args['cut']} at {args['at']}" if "at" in args else f"{args['cut']} after {args.get('after_s')} s"
    if "error" in record:
        return f"{cut:<32} NOT STRUCK: {record['error'][:200]}"
    if not record.get("move_id"):
        return f"{cut:<32} {record['target']:<28} NO MOVE STARTED: {record.get('cut_error', '')[:200]}"
    settled = record.get("resumed_by") or "the mover"
    return (
        f"{cut:<32} {record['target']:<28} ended {record.get('move_state')} (settled by {settled});"
        f" writable {record.get('recovered_after_heal_s')} s after the heal"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", default=",".join(POINTS), help=f"of {', '.join(POINTS)}")
    parser.add_argument("--seed", type=int, default=1, help="the workload's and the slots' draw")
    parser.add_argument("--keep", action="store_true", help="leave the cluster up at the end")
    args = parser.parse_args()
    points = [p for p in args.points.split(",") if p]
    if not set(points) <= set(POINTS):
        parser.error(f"--points: each of {', '.join(POINTS)}")
    home = Path(tempfile.mkdtemp(prefix="bank-move-cuts-"))
    up = bankctl(home, "up", "--net", "netns")
    if up.returncode != 0:
        print(up.stdout[-2000:], up.stderr[-2000:])
        return 1
    try:
        texts = steps(points)
        print(f"{len(texts)} cut moves under load; home {home}", flush=True)
        command = ["chaos", "run", "--seed", str(args.seed), "--minutes", "60", "--json"]
        done = bankctl(home, *command, *(x for text in texts for x in ("--step", text)))
        if not done.stdout.strip():
            print(done.stderr[-4000:])
            return 1
        verdict = json.loads(done.stdout)
    finally:
        if not args.keep:
            bankctl(home, "down")
    for record in verdict["faults"]:
        print(line(record))
    print(
        f"{verdict['acked_transfers']} transfers acknowledged, {verdict['refused_transfers']} refused,"
        f" {verdict['unresolved_transfers']} unknown; {len(verdict['checkpoints'])} checkpoints,"
        f" all reconciled: {all(p['reconciled'] for p in verdict['checkpoints'])}; in {verdict['seconds']} s"
    )
    for found in verdict["anomalies"]:
        print(f"ANOMALY {found['kind']}: {found['detail']} {found['transfer_ids'][:5]}")
    print("verdict: ok, no anomaly" if verdict["ok"] else "verdict: ANOMALIES FOUND")
    print(f"verdict file: {verdict['verdict_file']}")
    return 0 if verdict["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
