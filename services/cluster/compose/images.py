"""The compose cluster's image, built here from Debian packages and PyPI: the base image made
from the Debian archive when no registry serves one, then `deploy/image/Dockerfile` over a
staged context (the bank's code and the host's CA bundle)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from services.host.processes import LaunchError

Say = Callable[[str], None]
REPO = Path(__file__).resolve().parents[3]
IMAGE_DIR = REPO / "deploy" / "image"
BANK_IMAGE = "bank-sim:latest"
BASE_IMAGE = "debian:bookworm-slim"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
# What the image holds of the repository (its Dockerfile copies each).
CONTEXT = ["pyproject.toml", "README.md", "services", "bankclient", "loadtest", "gen", "proto"]


def image_exists(tag: str) -> bool:
    done = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False)
    return done.returncode == 0


def ensure_base_image(say: Say) -> None:
    if image_exists(BASE_IMAGE):
        return
    say(f"image: {BASE_IMAGE} is not here and no registry serves it; making it from the Debian archive")
    done = subprocess.run([str(IMAGE_DIR / "make-base-image.sh"), BASE_IMAGE], capture_output=True,
                          text=True, check=False)  # fmt: skip
    for line in done.stdout.splitlines():
        say(line)
    if done.returncode != 0:
        raise LaunchError(f"the base image could not be made: {done.stderr.strip()[-2000:]}")


def _stage(context: Path) -> None:
    for name in CONTEXT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, context / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, context / name)
    shutil.copy2(IMAGE_DIR / "Dockerfile", context / "Dockerfile")
    if HOST_CA.exists():
        shutil.copy2(HOST_CA, context / "host-ca.crt")
    else:
        (context / "host-ca.crt").write_text("", encoding="ascii")


def build_image(say: Say, tag: str = BANK_IMAGE, log_file: Path | None = None) -> float:
    """Builds the bank's image (the build cache makes a rebuild of unchanged code take
    seconds); returns how long it took."""
    ensure_base_image(say)
    started = time.monotonic()
    say(f"image: building {tag} from deploy/image/Dockerfile (a cold build takes a few minutes)")
    with tempfile.TemporaryDirectory(prefix="bank-sim-image-") as folder:
        context = Path(folder)
        _stage(context)
        cmd = ["docker", "build", "-q", "--force-rm", "-t", tag, str(context)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise LaunchError(f"docker build of {tag} failed: {done.stderr.strip()[-3000:]}")
    elapsed = time.monotonic() - started
    say(f"image: {tag} built in {elapsed:.0f} s")
    return elapsed


def main() -> int:
    """`python -m services.cluster.compose.images`: the image, for a compose launch by hand."""
    try:
        build_image(print)
    except LaunchError as err:
        print(f"images: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
