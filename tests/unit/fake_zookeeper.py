"""An in-memory stand-in for the few KazooClient calls the moves' journal makes: znodes with
versions (compare-and-set), ephemeral znodes that go with their session, sessions that expire.
Several clients share one tree, as processes share an ensemble."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError


@dataclass
class Stat:
    version: int
    ephemeralOwner: int  # kazoo's name
    mzxid: int = 0  # the transaction that last wrote the znode


class Tree:
    def __init__(self) -> None:
        self.nodes: dict[str, tuple[bytes, Stat]] = {}
        self.next_session = 1
        self.zxid = 0

    def next_zxid(self) -> int:
        self.zxid += 1
        return self.zxid


class FakeZooKeeper:
    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.connected = True
        self.client_id: tuple[int, bytes] | None = None
        self._new_session()

    def _new_session(self) -> None:
        self.client_id = (self.tree.next_session, b"")
        self.tree.next_session += 1

    def expire(self) -> None:
        """The session expires (its ephemeral znodes go) and the client reconnects with a new one."""
        assert self.client_id is not None
        gone = [p for p, (_, stat) in self.tree.nodes.items() if stat.ephemeralOwner == self.client_id[0]]
        for path in gone:
            del self.tree.nodes[path]
        self._new_session()

    def ensure_path(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for end in range(1, len(parts) + 1):
            self.tree.nodes.setdefault("/" + "/".join(parts[:end]), (b"", Stat(0, 0)))

    def create(self, path: str, value: bytes = b"", ephemeral: bool = False) -> str:
        if path in self.tree.nodes:
            raise NodeExistsError()
        assert self.client_id is not None
        self.tree.nodes[path] = (value, Stat(0, self.client_id[0] if ephemeral else 0, self.tree.next_zxid()))
        return path

    def get(self, path: str) -> tuple[bytes, Stat]:
        if path not in self.tree.nodes:
            raise NoNodeError()
        return self.tree.nodes[path]

    def exists(self, path: str) -> Stat | None:
        return self.tree.nodes[path][1] if path in self.tree.nodes else None

    def set(self, path: str, value: bytes, version: int = -1) -> Stat:
        _, stat = self.get(path)
        if version not in (-1, stat.version):
            raise BadVersionError()
        new = Stat(stat.version + 1, stat.ephemeralOwner, self.tree.next_zxid())
        self.tree.nodes[path] = (value, new)
        return new

    def set_async(self, path: str, value: bytes, version: int = -1) -> Any:
        return self.set(path, value, version)

    def delete(self, path: str) -> None:
        self.get(path)
        del self.tree.nodes[path]

    def get_children(self, path: str) -> list[str]:
        if path not in self.tree.nodes:
            raise NoNodeError()
        prefix = path.rstrip("/") + "/"
        names = [p[len(prefix) :] for p in self.tree.nodes if p.startswith(prefix)]
        return [name for name in names if "/" not in name]
