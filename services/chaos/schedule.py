"""Seeded fault schedules for `bankctl chaos run`: the same seed always draws the same steps.

A step strikes one fault, or two, holds them for a while, heals them and waits for the bank to
recover. The second fault of a step is one that leaves a majority of the DCs working (a Redis
primary, a slow link), so that every step can be survived; the first may take a whole DC away.
A `move-slots` step moves a few slots to another shard under the load, alone or cut by a kill
of the source's or the target's primary DC at a point of the move, or of the mover itself
(services/chaos/move_step.py); it has no second fault.

A schedule can also be given step by step (`--step "move-slots cut=kill-source-dc at=freeze"`,
the words `Fault.describe` prints): each step is that one fault, the arguments it leaves out
drawn from the seed, and the run ends after the last one.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from services.cluster.topology import COMPOSE, NETNS
from services.common.identifiers import NUM_SLOTS
from services.moves.mover import POINTS

# (fault, weight): DC-wide losses are the point, so they come most often.
FIRST_FAULTS = [
    ("kill-dc", 4),
    ("isolate-dc", 3),
    ("kill-node", 3),
    ("pause-node", 3),
    ("partition", 2),
    ("kill-zk-leader", 2),
    ("kill-redis-primary", 1),
    ("slow-link", 1),
    ("move-slots", 2),
]
MOVE_CUTS = ("none", "kill-source-dc", "kill-target-dc", "kill-mover")
SECOND_FAULTS = ["kill-redis-primary", "slow-link"]
NEEDS_NETNS = {"isolate-dc", "partition"}
# What each network can strike beyond kills and pauses: a compose cluster's DC is one namespace
# on a backbone it can be disconnected from, but has no per-pair firewall of ours to partition.
NETWORK_FAULTS = {NETNS: {"isolate-dc", "partition"}, COMPOSE: {"isolate-dc"}}


def strikable(fault: str, net: str) -> bool:
    return fault not in NEEDS_NETNS or fault in NETWORK_FAULTS.get(net, set())


SECOND_FAULT_SHARE = 0.3
MAX_STEPS = 200  # far more than any run can use; a run stops drawing when its time is up


@dataclass(frozen=True)
class Fault:
    fault: str
    args: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        words = [self.fault, *(str(self.args[k]) for k in ("dc", "other") if k in self.args)]
        words += [f"{k}={v}" for k, v in self.args.items() if k not in ("dc", "other")]
        return " ".join(words)


@dataclass(frozen=True)
class Step:
    index: int
    faults: list[Fault]
    gap_s: float  # between the first fault and the second
    hold_s: float  # from the last strike to the heal
    quiet_s: float  # of load without faults after recovery, before the next step

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def draw(seed: int, dc_names: list[str], net: str, steps: int = MAX_STEPS) -> list[Step]:
    """The schedule of `seed`: a pure function of its arguments."""
    rng = random.Random(seed)
    usable = [(f, w) for f, w in FIRST_FAULTS if strikable(f, net)]
    names, weights = [f for f, _ in usable], [w for _, w in usable]
    schedule = []
    for index in range(steps):
        first = _fault(rng, rng.choices(names, weights)[0], dc_names)
        faults = [first]
        if first.fault != "move-slots" and rng.random() < SECOND_FAULT_SHARE:
            second = rng.choice([f for f in SECOND_FAULTS if f != first.fault])
            faults.append(_fault(rng, second, dc_names))
        hold_s = first.args["seconds"] if first.fault == "pause-node" else round(rng.uniform(2.0, 8.0), 1)
        schedule.append(
            Step(index, faults, round(rng.uniform(0.5, 2.0), 1), hold_s, round(rng.uniform(3.0, 8.0), 1))
        )
    return schedule


def scripted(seed: int, texts: list[str], dc_names: list[str], net: str) -> list[Step]:
    """One step per text, in order: its fault as written (ValueError if it is not one this
    cluster can strike), what it leaves out and the step's pauses drawn from `seed`."""
    rng = random.Random(seed)
    schedule = []
    for index, text in enumerate(texts):
        first = _written(rng, text, dc_names, net)
        hold_s = first.args["seconds"] if first.fault == "pause-node" else round(rng.uniform(2.0, 8.0), 1)
        schedule.append(Step(index, [first], 0.0, hold_s, round(rng.uniform(3.0, 8.0), 1)))
    return schedule


def _written(rng: random.Random, text: str, dc_names: list[str], net: str) -> Fault:
    """The fault `text` names (`kill-dc dc2`, `slow-link dc1 dc3 delay_ms=50`, `move-slots
    cut=kill-target-dc at=flip`), its other arguments drawn as `draw` draws them."""
    words = text.split()
    known = {f for f, _ in FIRST_FAULTS} | set(SECOND_FAULTS)
    if not words or words[0] not in known:
        raise ValueError(f"step {text!r}: the fault must be one of {', '.join(sorted(known))}")
    if not strikable(words[0], net):
        raise ValueError(f"step {text!r}: {words[0]} needs a cluster started with --net netns")
    drawn = _fault(rng, words[0], dc_names)
    given: dict[str, Any] = {}
    places = [k for k in ("dc", "other") if k in drawn.args]
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq:
            if not places:
                raise ValueError(f"step {text!r}: {word!r} is one word too many (a DC given twice?)")
            key, value = places.pop(0), word
        allowed = set(drawn.args) | ({"at", "after_s"} if words[0] == "move-slots" else set())
        if key not in allowed:
            raise ValueError(f"step {text!r}: {words[0]} takes no {key!r}")
        given[key] = _value(text, key, value, dc_names)
    args = {**drawn.args, **given}
    if words[0] == "move-slots":  # what the cut given needs, and nothing the drawn one needed
        cut = args["cut"]
        if cut not in ("kill-source-dc", "kill-target-dc"):
            args.pop("at", None)
        elif "at" not in args:
            args["at"] = rng.choice(POINTS)
        if cut != "kill-mover":
            args.pop("after_s", None)
        elif "after_s" not in args:
            args["after_s"] = round(rng.uniform(0.3, 3.0), 1)
        if set(given) - set(args):
            raise ValueError(f"step {text!r}: {', '.join(sorted(set(given) - set(args)))} needs another cut")
    if "dc" in args and "other" in args and args["dc"] == args["other"]:
        raise ValueError(f"step {text!r}: the two DCs must differ")
    return Fault(words[0], args)


def _value(text: str, key: str, value: str, dc_names: list[str]) -> Any:
    choices: dict[str, tuple[Any, ...]] = {"cut": MOVE_CUTS, "at": POINTS, "dc": tuple(dc_names),
                                           "other": tuple(dc_names)}  # fmt: skip
    if key in choices:
        if value not in choices[key]:
            raise ValueError(f"step {text!r}: {key} must be one of {', '.join(map(str, choices[key]))}")
        return value
    try:
        number = float(value) if key in ("seconds", "after_s") else int(value)
    except ValueError:
        raise ValueError(f"step {text!r}: {key} must be a number") from None
    if (number <= 0 and key != "slot") or (key == "slot" and not 0 <= number < NUM_SLOTS):
        raise ValueError(f"step {text!r}: {key}={value} is out of range")
    return number


def _fault(rng: random.Random, fault: str, dc_names: list[str]) -> Fault:
    if fault in ("kill-dc", "isolate-dc", "kill-node"):
        return Fault(fault, {"dc": rng.choice(dc_names)})
    if fault == "pause-node":
        return Fault(fault, {"dc": rng.choice(dc_names), "seconds": round(rng.uniform(2.0, 6.0), 1)})
    if fault == "partition":
        first, second = sorted(rng.sample(dc_names, 2))
        return Fault(fault, {"dc": first, "other": second})
    if fault == "slow-link":
        first, second = sorted(rng.sample(dc_names, 2))
        return Fault(fault, {"dc": first, "other": second, "delay_ms": rng.choice([20, 50, 100, 200])})
    if fault == "move-slots":
        cut = rng.choice(MOVE_CUTS)
        args: dict[str, Any] = {"slot": rng.randrange(NUM_SLOTS), "cut": cut}
        if cut in ("kill-source-dc", "kill-target-dc"):
            args["at"] = rng.choice(POINTS)
        if cut == "kill-mover":
            args["after_s"] = round(rng.uniform(0.3, 3.0), 1)
        return Fault(fault, args)
    return Fault(fault)
