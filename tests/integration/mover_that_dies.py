"""A slot mover that kills itself with SIGKILL (no clean-up, as when its host is lost) at one
point of its move, for the tests of a mover killed half way:

    python -m tests.integration.mover_that_dies HOME POINT FIRST LAST TARGET

POINT is `copy` (the target's copy about to begin), `catch_up` (copied, the catch-up pass
about to begin), `freeze` (the source's slots frozen, before the final pass) or `flip` (both
halves handed over, the slot map not flipped yet): SlotMover.at hears each."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from services.cluster import slot_moves
from services.cluster.state import require_state
from services.moves.mover import SlotMover

POINTS = ("copy", "catch_up", "freeze", "flip")  # of services.moves.mover.POINTS


def die(point: str) -> None:
    print(f"mover_that_dies: killing itself at {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def arm(mover: SlotMover, point: str) -> None:
    if point not in POINTS:
        raise SystemExit(f"POINT must be one of {POINTS}, not {point!r}")
    mover.at = lambda reached: die(point) if reached == point else None


def main(home: str, point: str, first: str, last: str, target: str) -> int:
    mover, close = slot_moves.mover(require_state(Path(home)), lambda line: print(line, flush=True))
    arm(mover, point)
    try:
        mover.move(int(first), int(last), int(target))
    finally:
        close()
    print(f"mover_that_dies: the move ended before reaching {point}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
