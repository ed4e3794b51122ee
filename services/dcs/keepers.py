"""The channel between a bank-node and the keepers of its DC's PostgreSQL members (containers,
where a member's data directory is in the member's own container): the node writes a request
(start, stop, rejoin), the keeper does it and writes the answer with the request's id.

/bank/keepers/<n>/<dc>          ephemeral: the keeper of shard n's member in dc is alive
/bank/keeper-requests/<n>/<dc>  the latest request to it: {"id", "op", "leader_dc"}
/bank/keeper-answers/<n>/<dc>   its answer to the request of that id: {"id", "ok", "how", "error"}
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError

from services.dcs import paths
from services.dcs.store import Dcs

KEEPERS = f"{paths.ROOT}/keepers"
REQUESTS = f"{paths.ROOT}/keeper-requests"
ANSWERS = f"{paths.ROOT}/keeper-answers"
OPS = ("start", "stop", "rejoin")


def alive_path(shard: int, dc: str) -> str:
    return f"{KEEPERS}/{shard}/{dc}"


def request_path(shard: int, dc: str) -> str:
    return f"{REQUESTS}/{shard}/{dc}"


def answer_path(shard: int, dc: str) -> str:
    return f"{ANSWERS}/{shard}/{dc}"


@dataclass(frozen=True)
class KeeperRequest:
    id: str
    op: str  # start | stop | rejoin
    leader_dc: str = ""  # for rejoin: whose standby the member becomes


@dataclass(frozen=True)
class KeeperAnswer:
    id: str
    ok: bool
    how: str = ""  # for rejoin: repointed | rewound | recloned
    error: str = ""


class KeeperError(RuntimeError):
    """The keeper refused or failed a request, or did not answer in time."""


def _put(dcs: Dcs, path: str, data: dict[str, Any]) -> None:
    raw = json.dumps(data).encode()
    try:
        dcs.client.set(path, raw)
    except NoNodeError:
        dcs.client.ensure_path(path.rsplit("/", 1)[0])
        try:
            dcs.client.create(path, raw)
        except NodeExistsError:
            dcs.client.set(path, raw)


def announce(dcs: Dcs, shard: int, dc: str) -> None:
    """The keeper's presence (ephemeral: it goes with the keeper's session)."""
    path = alive_path(shard, dc)
    dcs.client.ensure_path(path.rsplit("/", 1)[0])
    with contextlib.suppress(NodeExistsError):
        dcs.client.create(path, b"", ephemeral=True)


def keeper_alive(dcs: Dcs, shard: int, dc: str) -> bool:
    return dcs.client.exists(alive_path(shard, dc)) is not None


def read_request(dcs: Dcs, shard: int, dc: str) -> KeeperRequest | None:
    try:
        raw, _ = dcs.client.get(request_path(shard, dc))
    except NoNodeError:
        return None
    return KeeperRequest(**json.loads(raw)) if raw else None


def answer(dcs: Dcs, shard: int, dc: str, reply: KeeperAnswer) -> None:
    _put(dcs, answer_path(shard, dc), asdict(reply))


def read_answer(dcs: Dcs, shard: int, dc: str) -> KeeperAnswer | None:
    try:
        raw, _ = dcs.client.get(answer_path(shard, dc))
    except NoNodeError:
        return None
    return KeeperAnswer(**json.loads(raw)) if raw else None


def ask(
    dcs: Dcs, shard: int, dc: str, op: str, leader_dc: str = "", timeout_s: float = 300.0
) -> KeeperAnswer:
    """Sends a request to the member's keeper and waits for its answer (bounded): a rejoin by a
    new base backup takes seconds to minutes with the shard's size."""
    if op not in OPS:
        raise ValueError(f"unknown keeper request {op!r}")
    if not keeper_alive(dcs, shard, dc):
        raise KeeperError(f"shard {shard}: the keeper of {dc}'s member is not running")
    request = KeeperRequest(uuid.uuid4().hex, op, leader_dc)
    answered = threading.Event()
    dcs.client.ensure_path(answer_path(shard, dc).rsplit("/", 1)[0])

    def on_answer(data: bytes | None, _stat: Any) -> None:
        if data and json.loads(data).get("id") == request.id:
            answered.set()

    dcs.client.DataWatch(answer_path(shard, dc), on_answer)
    _put(dcs, request_path(shard, dc), asdict(request))
    deadline = time.monotonic() + timeout_s
    while not answered.wait(1.0):
        if time.monotonic() > deadline:
            raise KeeperError(f"shard {shard}: {dc}'s keeper did not answer {op} in {timeout_s:.0f} s")
        if not keeper_alive(dcs, shard, dc):
            raise KeeperError(f"shard {shard}: {dc}'s keeper went away during {op}")
    reply = read_answer(dcs, shard, dc)
    if reply is None or reply.id != request.id:
        raise KeeperError(f"shard {shard}: {dc}'s keeper answered another request")
    if not reply.ok:
        raise KeeperError(f"shard {shard}: {dc}'s keeper could not {op}: {reply.error}")
    return reply
