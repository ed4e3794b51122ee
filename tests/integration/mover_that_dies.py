"""A slot mover that kills itself with SIGKILL (no clean-up, as when its host is lost) at one
point of its move, for the tests of a mover killed half way:

    python -m tests.integration.mover_that_dies HOME POINT FIRST LAST TARGET

POINT is `copy` (in the first copy pass, its rows sent and not committed), `catch_up` (in the
catch-up pass, likewise), `freeze` (the source's slots frozen, before the final pass) or `flip`
(both halves handed over, the slot map not flipped yet)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from services.cluster import slot_moves
from services.cluster.launcher import require_state
from services.moves.mover import SlotMover
from services.storage import slot_copy

POINTS = ("copy", "catch_up", "freeze", "flip")


def die(point: str) -> None:
    print(f"mover_that_dies: killing itself at {point}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def arm(mover: SlotMover, point: str) -> None:
    if point in ("copy", "catch_up"):
        original = slot_copy.copy_pass

        def pass_then_die(src: Any, dst: Any, slot_range: Any, since: Any) -> int:
            copied = original(src, dst, slot_range, since)
            if (since is None) == (point == "copy"):
                die(point)
            return copied

        slot_copy.copy_pass = pass_then_die  # type: ignore[assignment]
    elif point == "freeze":
        mover._final_pass = lambda *args: die(point)  # type: ignore[assignment,method-assign,return-value]
    elif point == "flip":
        mover._flip = lambda *args: die(point)  # type: ignore[assignment,method-assign]
    else:
        raise SystemExit(f"POINT must be one of {POINTS}, not {point!r}")


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
