"""One PostgreSQL instance owned by the project: initdb, configure, start, stop, kill."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from services.host.processes import LaunchError, pid_alive, run_checked, wait_until
from services.host.service_user import as_service_user, give_to_service_user

SUPERUSER = "bank"
DATABASE = "bank"

# Small memory: a shard's instance on a laptop-sized machine, three of them per shard. 256MB of
# shared buffers (9 instances: 2.3 GB): with 32MB, once a benchmark had booked some 50,000
# transfers a primary's backends spent most of their CPU evicting and writing back pages (566 us
# of backend CPU per transfer in the batch phase after a single-transfer phase; 104 us with 128MB);
# with 128MB, `make bench`'s tables and indexes outgrew the buffers after six minutes.
BASE_SETTINGS: dict[str, str] = {
    "shared_buffers": "256MB",
    "work_mem": "4MB",
    "maintenance_work_mem": "32MB",
    "max_connections": "60",
    "wal_level": "replica",
    "wal_log_hints": "on",
    "max_wal_senders": "8",
    "max_replication_slots": "8",
    "wal_keep_size": "256MB",
    # Checkpoints far apart: the first change of a page after a checkpoint writes the whole page
    # to the WAL (8 KB), and the WAL is shipped to and replayed by both standbys on the same
    # cores. With the defaults (5 min, 1 GB) a benchmark's batches met a checkpoint every minute
    # or so, and a transfer's WAL went from 1.9 KB to up to 6.4 KB after each. The WAL kept
    # between checkpoints is disk only; crash recovery replays at most that much.
    "checkpoint_timeout": "30min",
    "max_wal_size": "4GB",
    "wal_compression": "lz4",  # the full-page images that remain, compressed
    "password_encryption": "scram-sha-256",
    "logging_collector": "off",
    "log_line_prefix": "'%m [%p] %a '",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "timezone": "'UTC'",
}


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's binaries (Debian keeps them out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise LaunchError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); run `make setup`"
        )
    return Path(found[-1]).parent


@dataclass
class PostgresInstance:
    """A PostgreSQL server in `data_dir`, listening on `host:port` only."""

    name: str
    data_dir: Path
    host: str
    port: int
    password: str
    settings: dict[str, str] = field(default_factory=dict)
    # Runs commands inside the DC (e.g. `ip netns exec <ns>`); empty on the host.
    exec_prefix: list[str] = field(default_factory=list)
    # Extra pg_hba.conf lines, e.g. to let the other DCs' members replicate.
    hba_lines: list[str] = field(default_factory=list)

    def command(self, cmd: list[str]) -> list[str]:
        """`cmd` as the service user, inside this instance's DC."""
        return [*self.exec_prefix, *as_service_user(cmd)]

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.name}.log"

    @property
    def socket_dir(self) -> Path:
        return self.data_dir.parent / f"{self.name}.sock"

    def conninfo(self, dbname: str = DATABASE, application_name: str = "bank") -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host,
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname=dbname,
            application_name=application_name,
            connect_timeout=3,
        )

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(self) -> None:
        """Creates the cluster with a scram-protected superuser and the bank's database."""
        bin_dir = postgres_bin_dir()
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(mode=0o700, exist_ok=True)
            give_to_service_user(path)
        self.log_file.touch()
        give_to_service_user(self.log_file)
        with tempfile.NamedTemporaryFile("w", dir=self.data_dir.parent, delete=False) as pwfile:
            pwfile.write(self.password + "\n")
        try:
            give_to_service_user(Path(pwfile.name))
            run_checked(
                self.command(
                    [
                        str(bin_dir / "initdb"),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        SUPERUSER,
                        f"--pwfile={pwfile.name}",
                        "--auth-local=scram-sha-256",
                        "--auth-host=scram-sha-256",
                        "--encoding=UTF8",
                        "--locale=C",
                        "--no-sync",
                    ]
                ),
                f"initdb of {self.name}",
            )
        finally:
            os.unlink(pwfile.name)
        self.write_settings()
        self._append_hba()
        self.start()
        with psycopg.connect(self.conninfo(dbname="postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def write_settings(self) -> None:
        """Puts this instance's own settings in bank.conf, included last by postgresql.conf."""
        settings = {
            **BASE_SETTINGS,
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "cluster_name": f"'{self.name}'",
            **self.settings,
        }
        conf = self.data_dir / "bank.conf"
        conf.write_text("".join(f"{key} = {value}\n" for key, value in settings.items()), encoding="utf-8")
        give_to_service_user(conf)
        main_conf = self.data_dir / "postgresql.conf"
        text = main_conf.read_text(encoding="utf-8")
        if "include_if_exists = 'bank.conf'" not in text:
            main_conf.write_text(text + "\ninclude_if_exists = 'bank.conf'\n", encoding="utf-8")

    def _append_hba(self) -> None:
        if not self.hba_lines:
            return
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text(encoding="utf-8")
        missing = [line for line in self.hba_lines if line not in text]
        if missing:
            hba.write_text(text + "\n" + "\n".join(missing) + "\n", encoding="utf-8")

    def clone_from(self, primary: PostgresInstance, slot: str) -> None:
        """Makes this instance a streaming standby of `primary` (base backup, slot, -R)."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        for path in (self.data_dir, self.socket_dir):  # pg_basebackup fills an empty directory
            path.mkdir(mode=0o700, exist_ok=True)
            give_to_service_user(path)
        self.log_file.touch()
        give_to_service_user(self.log_file)
        source = psycopg.conninfo.make_conninfo(
            host=primary.host,
            port=primary.port,
            user=SUPERUSER,
            password=primary.password,
            application_name=self.name,
        )
        run_checked(
            self.command(
                [
                    str(postgres_bin_dir() / "pg_basebackup"),
                    "-D",
                    str(self.data_dir),
                    "-R",
                    "-X",
                    "stream",
                    "-c",
                    "fast",
                    "-S",
                    slot,
                    "-d",
                    source,
                    "--no-sync",
                ]
            ),
            f"base backup of {self.name} from {primary.name}",
            timeout_s=300,
        )
        # The copy carries the primary's own settings: this instance's port and name go on top.
        self.write_settings()
        self._append_hba()

    def rejoin_as_standby(self, primary: PostgresInstance, slot: str) -> str:
        """Brings a former primary (or a standby of one) back as a standby of `primary`.

        pg_rewind takes back what diverged (it recovers a crashed target first); when it cannot,
        or the rewound member does not start (a rewind cut short by a crash leaves a data
        directory that cannot be trusted), a fresh base backup replaces the data. Returns what
        was done.
        """
        self.stop()
        primary.execute("CHECKPOINT")  # else pg_rewind may see no divergence and skip silently
        source = psycopg.conninfo.make_conninfo(
            host=primary.host, port=primary.port, user=SUPERUSER, password=primary.password, dbname="postgres"
        )
        how = "rewound"
        try:
            output = run_checked(
                self.command(
                    [
                        str(postgres_bin_dir() / "pg_rewind"),
                        "-D",
                        str(self.data_dir),
                        f"--source-server={source}",
                    ]
                ),
                f"pg_rewind of {self.name} from {primary.name}",
                log_file=self.log_file,
                timeout_s=300,
            )
            if "no rewind required" in output:
                how = "repointed"
            self._write_standby_config(primary, slot)
            self.write_settings()  # pg_rewind copied the source's configuration files
            self._append_hba()
            self.start()
        except LaunchError:
            self.stop()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.clone_from(primary, slot)
            self.start()
            return "recloned"
        return how

    def follow_without_rewind(self, primary: PostgresInstance, slot: str) -> None:
        """Starts a standby's data as a standby of `primary` (no rewind: it never led)."""
        self.stop()
        self._write_standby_config(primary, slot)
        self.write_settings()
        self._append_hba()
        self.start()

    def streams_from(self, primary: PostgresInstance) -> bool:
        """Whether this instance runs as a standby whose WAL receiver streams from `primary`."""
        query = (
            "SELECT pg_is_in_recovery(), (SELECT status = 'streaming' AND sender_host = %s"
            " FROM pg_stat_wal_receiver LIMIT 1)"
        )
        try:
            with psycopg.connect(self.conninfo(dbname="postgres"), autocommit=True) as conn:
                row = conn.execute(query, (primary.host,)).fetchone()
        except psycopg.Error:
            return False
        return bool(row and row[0] and row[1])

    def _write_standby_config(self, primary: PostgresInstance, slot: str) -> None:
        conninfo = psycopg.conninfo.make_conninfo(
            host=primary.host, port=primary.port, user=SUPERUSER, password=primary.password,
            application_name=self.name,
        ).replace("'", "''")  # fmt: skip
        auto = self.data_dir / "postgresql.auto.conf"
        auto.write_text(
            "# Written by the bank's launcher: this instance follows the shard's primary.\n"
            f"primary_conninfo = '{conninfo}'\nprimary_slot_name = '{slot}'\n",
            encoding="utf-8",
        )
        signal_file = self.data_dir / "standby.signal"
        signal_file.touch()
        for path in (auto, signal_file):
            give_to_service_user(path)

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        with psycopg.connect(self.conninfo(dbname=dbname), autocommit=True) as conn:
            cursor = conn.execute(sql.encode("utf-8"))
            return cursor.fetchall() if cursor.description else []

    def reload(self) -> None:
        self.execute("SELECT pg_reload_conf()")

    def start(self, timeout_s: float = 60) -> int:
        """Starts the server (no-op when it runs) and returns the postmaster's PID."""
        running = self.pid()
        if running is not None:
            return running
        self._clear_stale_locks()
        run_checked(
            self.command(
                [
                    str(postgres_bin_dir() / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-w",
                    "-t",
                    str(int(timeout_s)),
                    "start",
                ]
            ),
            f"PostgreSQL {self.name} on {self.host}:{self.port}",
            log_file=self.log_file,
            timeout_s=timeout_s + 10,
        )
        pid = self.pid()
        if pid is None:
            raise LaunchError(f"PostgreSQL {self.name} started but wrote no PID; log: {self.log_file}")
        return pid

    def pid(self) -> int | None:
        """The postmaster's PID while it runs, from its own postmaster.pid."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text(encoding="ascii").split("\n", 1)[0]
        except (FileNotFoundError, PermissionError):
            return None
        pid = int(first) if first.strip().isdigit() else None
        return pid if pid is not None and pid_alive(pid) else None

    def stop(self, timeout_s: float = 60) -> None:
        """Stops the server cleanly (fast mode: open transactions are rolled back)."""
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGINT)  # what `pg_ctl stop -m fast` sends
        try:
            wait_until(lambda: not pid_alive(pid), timeout_s, f"PostgreSQL {self.name} to stop")
        except TimeoutError:
            self.kill()

    def kill(self) -> None:
        """Crashes the instance: SIGKILL to the postmaster and every child (each has its own
        session, so killing the process group is not enough)."""
        pid = self.pid()
        if pid is None:
            return
        children = _children_of(pid)
        for victim in [pid, *children]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        for victim in [pid, *children]:
            _wait_gone(victim, f"process {victim} of {self.name} to die")
        # A dead postmaster stays a zombie until init reaps it (about a second here), and while
        # its PID exists a new postmaster refuses the lock files it left. Wait for the reaping.
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), 5.0, f"postmaster {pid} to be reaped")

    def _clear_stale_locks(self) -> None:
        """Removes the lock files of a postmaster that is dead (killed, or a zombie)."""
        locks = [self.data_dir / "postmaster.pid", *self.socket_dir.glob(".s.PGSQL.*.lock")]
        for lock in locks:
            with contextlib.suppress(FileNotFoundError, PermissionError, ValueError):
                owner = int(lock.read_text(encoding="ascii").split("\n", 1)[0])
                if not pid_alive(owner):
                    lock.unlink()


def _wait_gone(pid: int, what: str) -> None:
    wait_until(lambda: not pid_alive(pid), 10, what)


def _children_of(pid: int) -> list[int]:
    children: list[int] = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat_path, encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat_path.split("/")[2]))
    return children
