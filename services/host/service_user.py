"""Running servers that refuse root (PostgreSQL) as their own system user, in dirs it owns."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pwd
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

SERVICE_USER = "postgres"


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_service_user(cmd: Sequence[str]) -> list[str]:
    """The command as the service user when we are root, as it is otherwise."""
    if running_as_root():
        return ["runuser", "-u", SERVICE_USER, "--", *cmd]
    return list(cmd)


def give_to_service_user(path: Path) -> None:
    """Makes `path` (a directory or file we created) owned by the service user, when root."""
    if not running_as_root():
        return
    entry = pwd.getpwnam(SERVICE_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    if path.is_dir():
        for child in path.rglob("*"):
            os.chown(child, entry.pw_uid, entry.pw_gid, follow_symlinks=False)


@functools.lru_cache(maxsize=64)
def service_user_can_reach(path: Path) -> bool:
    """Whether the service user may enter `path` (every parent must let it through).

    Asked once per path and process: it runs a command, and status asks for every member."""
    if not running_as_root():
        return True
    probe = subprocess.run(
        ["runuser", "-u", SERVICE_USER, "--", "test", "-x", str(path)], capture_output=True, check=False
    )
    return probe.returncode == 0


def data_root(home: Path, name: str) -> Path:
    """Where a service's data lives under `home`.

    As root the service user must reach it; when `home` is inside a private directory (such as
    /root or a pytest temporary directory), the data goes to /var/tmp instead and `home/name`
    becomes a link to it, so that everything is still found from `home`.
    """
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    wanted = home / name
    if service_user_can_reach(home):
        wanted.mkdir(exist_ok=True)
        return wanted
    digest = hashlib.sha1(str(home).encode()).hexdigest()[:12]
    outside = Path("/var/tmp") / f"bank-sim-{digest}" / name
    outside.mkdir(parents=True, exist_ok=True)
    outside.parent.chmod(0o755)
    outside.chmod(0o755)
    if wanted.is_symlink() and wanted.resolve() == outside.resolve():
        return outside
    if wanted.is_symlink():
        wanted.unlink()
    with contextlib.suppress(FileExistsError):  # another thread made the same link first
        wanted.symlink_to(outside, target_is_directory=True)
    return outside


def remove_data_root(home: Path, name: str) -> None:
    """Removes what `data_root` made, link target included."""
    link = home.resolve() / name
    target = link.resolve() if link.is_symlink() else link
    shutil.rmtree(target, ignore_errors=True)
    if link.is_symlink():
        link.unlink()
        if target.parent.name.startswith("bank-sim-"):
            shutil.rmtree(target.parent, ignore_errors=True)
