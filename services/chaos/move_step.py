"""A chaos step that moves slots while the workload runs, alone or cut by a fault: the source's
or the target's primary DC killed at a point of the move, or the mover itself killed (SIGKILL)
a while after its move started. Whatever the cut leaves, the bank's nodes settle the move (see
services/moves/keeper.py); the step waits for that and says how the move ended, and the run's
checker holds across it like any other step.

The slots are a few from the one drawn, all on its owner's shard as the slot map says when the
step strikes; the target is the next shard of the cluster after the owner."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from services.chaos import faults
from services.cluster import slot_moves
from services.cluster.check import current_shard_of_slot, current_table
from services.cluster.state import ClusterState
from services.cluster.zookeeper import zk_client
from services.moves import journal as j
from services.moves.mover import MoveFailed, MoveLeft

Say = Callable[[str], None]
WIDTH = 8  # slots per move step
SETTLE_S = 60.0  # a cut move is settled by the nodes once its shards are led again
START_WAIT_S = 30.0  # for a mover process to start its move (journal it) before it is killed


def plan(state: ClusterState, slot: int) -> tuple[int, int, int, int]:
    """(first, last, source, target): up to WIDTH slots from `slot`, all of its owner's."""
    owner = current_shard_of_slot(state)
    source = owner[slot]
    last = slot
    while last + 1 < len(owner) and last + 1 < slot + WIDTH and owner[last + 1] == source:
        last += 1
    shards = state.active_shards
    target = shards[(shards.index(source) + 1) % len(shards)]
    return slot, last, source, target


def run(state: ClusterState, args: dict[str, Any], say: Say) -> dict[str, Any]:
    """Moves the slots with the cut `args` asks for; returns what happened, the move's record and
    the faults struck on the way (active until the run heals them)."""
    first, last, source, target = plan(state, int(args["slot"]))
    cut, point = str(args.get("cut", "none")), str(args.get("at", "copy"))
    where = f" at {point}" if cut in ("kill-source-dc", "kill-target-dc") else ""
    say(f"move-slots {first}-{last}: shard {source} -> {target}, cut: {cut}{where}")
    before = _move_ids(state)
    struck: list[dict[str, Any]] = []
    error = ""
    if cut == "kill-mover":
        error = _kill_mover(state, first, last, target, float(args.get("after_s", 1.0)), before, say)
    else:
        victim = {"kill-source-dc": source, "kill-target-dc": target}.get(cut)
        error = _move_in_process(state, first, last, target, victim, point, struck, say)
    record = _settled(state, before, say)
    return {"slots": [first, last], "from": source, "to": target, "cut": cut, "at": point, "error": error,
            "move": record, "struck": struck}  # fmt: skip


def _move_in_process(
    state: ClusterState, first: int, last: int, target: int, victim: int | None, point: str,
    struck: list[dict[str, Any]], say: Say,
) -> str:  # fmt: skip
    mover, close = slot_moves.mover(state, lambda line: say(f"  {line}"))
    if victim is not None:

        def strike(reached: str) -> None:
            if reached == point and not struck:
                dc = current_table(state).routes[victim].leader_dc
                struck.append(faults.strike(state, "kill-dc", {"dc": dc}, say))

        mover.at = strike
    try:
        mover.move(first, last, target)
        return ""
    except (MoveFailed, MoveLeft, j.MoveTakenOver) as err:
        return str(err)
    except Exception as err:  # whatever else the lost DC made of the step it was in
        return f"{type(err).__name__}: {err}"
    finally:
        close()


def _kill_mover(
    state: ClusterState, first: int, last: int, target: int, after_s: float, before: set[str], say: Say
) -> str:
    """`bankctl move-slots` in a process of its own, SIGKILLed `after_s` after its move started
    (a record not in `before` in the journal: the process takes a while to start), by the pid
    this step started; nothing else is touched."""
    command = [sys.executable, "-m", "services.cli.main", "--home", str(state.home), "move-slots",
               "--slots", f"{first}-{last}", "--to", str(target)]  # fmt: skip
    with tempfile.TemporaryFile("w+") as errors:
        mover = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, text=True)
        try:
            if not _move_started(state, before, mover):
                errors.seek(0)
                why = errors.read()[-300:].strip() if mover.poll() is not None else "still starting"
                return f"the mover did not start its move (exit {mover.returncode}): {why}"
            mover.wait(timeout=after_s)
            return f"the mover ended before its kill (exit {mover.returncode})"
        except subprocess.TimeoutExpired:
            mover.send_signal(signal.SIGKILL)
            mover.wait(timeout=10)
            say(f"  mover pid {mover.pid} killed {after_s:.1f} s after its move started")
            return ""
        finally:
            if mover.poll() is None:  # it never started its move within the wait: not left running
                mover.kill()
                mover.wait(timeout=10)


def _move_started(state: ClusterState, before: set[str], mover: subprocess.Popen[str]) -> bool:
    """Waits until the journal holds a move that was not in `before` (True), or the mover ended
    or START_WAIT_S passed (False)."""
    give_up = time.monotonic() + START_WAIT_S
    with zk_client(state) as dcs:
        while time.monotonic() < give_up and mover.poll() is None:
            if any(r["id"] not in before for r in j.read_all(dcs.client)):
                return True
            time.sleep(0.02)
    return False


def _move_ids(state: ClusterState) -> set[str]:
    with zk_client(state) as dcs:
        return {r["id"] for r in j.read_all(dcs.client)}


def _settled(state: ClusterState, before: set[str], say: Say) -> dict[str, Any]:
    """The step's move once finished or rolled back (by its mover or by a node), or as it was
    left after SETTLE_S."""
    give_up = time.monotonic() + SETTLE_S
    record: dict[str, Any] = {}
    with zk_client(state) as dcs:
        while time.monotonic() < give_up:
            with contextlib.suppress(StopIteration):
                record = next(r for r in reversed(j.read_all(dcs.client)) if r["id"] not in before)
            if not record or record["state"] in j.FINISHED:
                break
            time.sleep(0.2)
    if record:
        by = f" by {record['resumed_by']}" if record.get("resumed_by") else ""
        say(f"  move {record['id']}: {record['state']}{by}, freeze {record.get('freeze_ms')} ms")
    return record
