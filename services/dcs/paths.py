"""Every znode the bank keeps in ZooKeeper, in one place.

/bank/slots                  the slot map (persistent, the truth)
/bank/shards/<n>             a shard's route: leader DC, epoch, endpoint (persistent, the truth)
/bank/added-shards/<n>       the members of a shard added while the bank runs
/bank/retired-shards/<n>     a shard removed: nodes stop serving it, nothing fails it over
/bank/leaders/<n>            ephemeral, held by the node that serves shard n
/bank/members/<n>/<dc>       ephemeral, held by every live node with a member of shard n
/bank/locks/failover-<n>     the lock under which one survivor runs a failover
/bank/locks/mover            ephemeral, held by the process moving slots now
/bank/failover/<n>           the member an unfinished failover chose (see coordinator/failover)
/bank/switchover/<n>         a planned move of shard n's leader, acted on by its leader
/bank/moves/<id>             the journal of one slot move
/bank/failovers/<n>-<epoch>  the phases of the failover that made epoch <epoch> of shard n
/bank/suspects/<n>/<dc>      ephemeral: dc's node has had no answer from shard n's leader (its DC
                             is the value) for a while; see coordinator/liveness.py
"""

from __future__ import annotations

ROOT = "/bank"
SLOTS = f"{ROOT}/slots"
SHARDS = f"{ROOT}/shards"
ADDED_SHARDS = f"{ROOT}/added-shards"
RETIRED_SHARDS = f"{ROOT}/retired-shards"
LEADERS = f"{ROOT}/leaders"
MEMBERS = f"{ROOT}/members"
LOCKS = f"{ROOT}/locks"
MOVER_LOCK = f"{LOCKS}/mover"
CHOSEN = f"{ROOT}/failover"
SWITCHOVER = f"{ROOT}/switchover"
MOVES = f"{ROOT}/moves"
FAILOVERS = f"{ROOT}/failovers"
SUSPECTS = f"{ROOT}/suspects"


def route(shard: int) -> str:
    return f"{SHARDS}/{shard}"


def leader(shard: int) -> str:
    return f"{LEADERS}/{shard}"


def members(shard: int) -> str:
    return f"{MEMBERS}/{shard}"


def member(shard: int, dc: str) -> str:
    return f"{MEMBERS}/{shard}/{dc}"


def added(shard: int) -> str:
    return f"{ADDED_SHARDS}/{shard}"


def retired(shard: int) -> str:
    return f"{RETIRED_SHARDS}/{shard}"


def suspects(shard: int) -> str:
    return f"{SUSPECTS}/{shard}"


def failover_lock(shard: int) -> str:
    return f"{LOCKS}/failover-{shard}"


def chosen(shard: int) -> str:
    return f"{CHOSEN}/{shard}"


def switchover(shard: int) -> str:
    return f"{SWITCHOVER}/{shard}"


def move(move_id: str) -> str:
    return f"{MOVES}/{move_id}"
