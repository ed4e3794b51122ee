"""A PostgreSQL member's keeper, in the member's own container, as a Patroni agent sits beside
its PostgreSQL: it makes the member or brings it back in line when the container starts, keeps
it running, and does for the DC's bank-node what needs the member's data directory.

On start (the route of the shard, read from ZooKeeper, says who leads):
1. No data yet, and no route: the cluster is new; the member of the shard's first primary DC is
   made a primary (initdb), with a replication slot for every other member; synchronous commit
   is turned on once a standby streams. Any other member waits for that primary and clones it.
2. No data, a route: a standby cloned from the leader.
3. Data, and the route names this DC (or there is none): started as it is.
4. Data of a standby: pointed at the leader and started; if it cannot follow (a timeline it
   never saw), the node's standby check asks for a rejoin (below).
5. Data of a former primary while another DC leads: rewound from the leader by pg_rewind, or
   cloned again when it cannot be rewound (the launcher's own `rejoin_as_standby`).

Then it serves the node's requests (start, stop, rejoin: dcs/keepers.py), and starts the member
again if it died while it was meant to run. SIGTERM stops the member cleanly.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from kazoo.exceptions import KazooException, NoNodeError

from services.cluster.pg_group import enable_synchronous_commit, member_instance, sync_standby_names
from services.cluster.state import ClusterState
from services.common.routes import ShardRoute
from services.dcs import keepers
from services.dcs.store import Dcs
from services.host.postgres import PostgresInstance
from services.host.processes import LaunchError

log = logging.getLogger("member_keeper")
POLL_S = 0.5
LEADER_WAIT_S = 600.0  # a standby waits this long for its leader to answer before it gives up
BOOT_ATTEMPTS = 5


INIT_PRIMARY, CLONE, START, FOLLOW, REJOIN = "init-primary", "clone", "start", "follow", "rejoin"


def boot_plan(
    dc: str, first_primary_dc: str, leader_dc: str | None, has_data: bool, was_standby: bool
) -> str:
    """What a member does when its container starts (steps 1-5 above): `leader_dc` is the DC the
    shard's route names (None: no route yet), `was_standby` whether its data is a standby's."""
    leads = (leader_dc or first_primary_dc) == dc
    if not has_data:
        if leads and leader_dc is None:
            return INIT_PRIMARY
        if leads:
            raise LaunchError(f"the route names {dc} as the leader, but its member has no data")
        return CLONE
    if leads:
        return START
    return FOLLOW if was_standby else REJOIN


class MemberKeeper:
    def __init__(self, state: ClusterState, shard: int, dc: str, dcs: Dcs, ready_dir: Path) -> None:
        self.state, self.shard, self.dc, self.dcs = state, shard, dc, dcs
        self.spec = state.spec
        self.name = self.spec.pg_member(shard, dc)
        self.wanted_running = True  # False after the node's stop, until its start or rejoin
        self.stopping = threading.Event()
        # Where the container's health check looks: a tmpfs, so that a file of the container's
        # life before a kill never answers for this one.
        self.ready_file = ready_dir / f"{self.name}.ready"

    def instance(self, dc: str | None = None) -> PostgresInstance:
        """A member of the shard as this container sees it (its own, or another DC's)."""
        pg = member_instance(self.state, self.shard, dc or self.dc)
        pg.settings["synchronous_standby_names"] = sync_standby_names(self.spec, self.shard)
        return pg

    def route(self) -> ShardRoute | None:
        """The shard's route; None only when there is none yet (a new cluster). ZooKeeper not
        answering is not "no route": a former primary must not start as one for want of it."""
        deadline = time.monotonic() + LEADER_WAIT_S
        while True:
            try:
                return self.dcs.read_route(self.shard)[0]
            except NoNodeError:
                return None
            except KazooException as err:
                if time.monotonic() > deadline:
                    raise LaunchError(f"{self.name}: ZooKeeper never answered for the route") from err
                log.warning("event=route_unreadable member=%s error=%s", self.name, err)
                time.sleep(1.0)

    def run(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        how = self.boot_with_retries()
        log.info("event=member_booted member=%s how=%s", self.name, how)
        keepers.announce(self.dcs, self.shard, self.dc)
        self.ready_file.write_text(how + "\n", encoding="ascii")
        while not self.stopping.wait(POLL_S):
            self.serve_once()

    def boot_with_retries(self) -> str:
        """A boot cut short (its leader failing over meanwhile, a copy broken off) is tried again
        from the start, a bounded number of times; the container exits after the last."""
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            try:
                return self.boot()
            except (LaunchError, OSError) as err:
                if attempt == BOOT_ATTEMPTS or self.stopping.is_set():
                    raise
                log.warning("event=boot_failed member=%s attempt=%s error=%s", self.name, attempt, err)
                time.sleep(min(2.0 * attempt, 10.0))
        raise AssertionError("not reached")

    def boot(self) -> str:
        own = self.instance()
        route = self.route()
        plan = boot_plan(
            self.dc, self.spec.primary_dc(self.shard), route.leader_dc if route else None,
            own.initialized(), (own.data_dir / "standby.signal").exists(),
        )  # fmt: skip
        if plan == INIT_PRIMARY:
            return self.make_primary(own)
        if plan == START:
            own.write_settings()
            own.start()
            return "started"
        leader = self.wait_for_leader(route.leader_dc if route else self.spec.primary_dc(self.shard))
        if plan == CLONE:
            own.clone_from(leader, slot=self.name)
            own.start()
            return "cloned"
        if plan == FOLLOW:
            own.follow_without_rewind(leader, slot=self.name)
            return "started as standby"
        return own.rejoin_as_standby(leader, slot=self.name)

    def make_primary(self, own: PostgresInstance) -> str:
        """The first primary of a new shard: commits wait for a standby only once one streams
        (before, nothing could acknowledge them), as the launcher does it."""
        own.settings.pop("synchronous_standby_names", None)
        own.init()
        for dc in self.spec.dc_names:
            if dc != self.dc:
                own.execute(
                    f"SELECT pg_create_physical_replication_slot('{self.spec.pg_member(self.shard, dc)}')"
                )
        threading.Thread(target=self._sync_when_streaming, args=(own,), daemon=True).start()
        return "initialized"

    def _sync_when_streaming(self, own: PostgresInstance) -> None:
        enable_synchronous_commit(own, self.spec, self.shard, wait_for=1, timeout_s=LEADER_WAIT_S)
        log.info("event=synchronous_commit_on member=%s", self.name)

    def wait_for_leader(self, leader_dc: str) -> PostgresInstance:
        """The leader's member once it answers as a primary holding this member's replication
        slot (a new primary makes the slots just after it starts)."""
        leader = self.instance(leader_dc)
        deadline = time.monotonic() + LEADER_WAIT_S
        ready = (
            "SELECT NOT pg_is_in_recovery()"
            f" AND EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{self.name}')"
        )
        while time.monotonic() < deadline and not self.stopping.is_set():
            try:
                if leader.execute(ready) == [(True,)]:
                    return leader
            except Exception as err:  # not up yet: psycopg's connection errors
                log.info("event=waiting_for_leader member=%s leader=%s error=%s", self.name, leader_dc, err)
            time.sleep(1.0)
        raise LaunchError(f"{self.name}: {leader.name} never answered as a primary")

    def serve_once(self) -> None:
        """One turn: the node's pending request, else the member kept running. ZooKeeper may
        be away for a while (this DC's server restarting, a cut): the member runs on meanwhile."""
        try:
            self._serve_once()
        except KazooException as err:
            log.warning("event=zookeeper_unavailable member=%s error=%s", self.name, err)

    def _serve_once(self) -> None:
        if not keepers.keeper_alive(self.dcs, self.shard, self.dc):
            keepers.announce(self.dcs, self.shard, self.dc)  # a new session after an expiry
        request = keepers.read_request(self.dcs, self.shard, self.dc)
        done = keepers.read_answer(self.dcs, self.shard, self.dc)
        if request is not None and (done is None or done.id != request.id):
            keepers.answer(self.dcs, self.shard, self.dc, self.handle(request))
            return
        own = self.instance()
        if self.wanted_running and own.pid() is None:
            log.warning("event=member_not_running member=%s action=start", self.name)
            try:
                own.start()
            except LaunchError as err:
                log.error("event=member_start_failed member=%s error=%s", self.name, err)

    def handle(self, request: keepers.KeeperRequest) -> keepers.KeeperAnswer:
        log.info("event=keeper_request member=%s op=%s leader=%s", self.name, request.op, request.leader_dc)
        own = self.instance()
        try:
            if request.op == "stop":
                self.wanted_running = False
                own.stop()
                return keepers.KeeperAnswer(request.id, True, "stopped")
            self.wanted_running = True
            if request.op == "start":
                own.start()
                return keepers.KeeperAnswer(request.id, True, "started")
            leader = self.instance(request.leader_dc)
            if own.streams_from(leader):
                return keepers.KeeperAnswer(request.id, True, "repointed")  # in line already
            how = own.rejoin_as_standby(leader, slot=self.name)
            return keepers.KeeperAnswer(request.id, True, how)
        except Exception as err:  # the node is told, and decides what next
            log.exception("event=keeper_request_failed member=%s op=%s", self.name, request.op)
            return keepers.KeeperAnswer(request.id, False, error=str(err)[-500:])

    def stop(self) -> None:
        self.stopping.set()
        self.instance().stop()


def run_keeper(state: ClusterState, shard: int, dc: str, zk_hosts: str, ready_dir: Path) -> int:
    """The container's main loop; returns its exit code."""
    dcs = Dcs.connect(zk_hosts, timeout_s=60, session_s=4.0, auth=state.secrets["zk_auth"])
    keeper = MemberKeeper(state, shard, dc, dcs, ready_dir)

    def on_term(_signum: int, _frame: object) -> None:
        threading.Thread(target=keeper.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_term)
    try:
        keeper.run()
    finally:
        Path(keeper.ready_file).unlink(missing_ok=True)
        dcs.close()
    return 0
