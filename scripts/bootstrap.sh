#!/usr/bin/env bash
# Sets up whatever is missing on a fresh Debian machine: system packages (as root) and the virtualenv.
# Idempotent and quiet when everything is already there; prints each step it takes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)

step() { printf '[setup] %s\n' "$*"; }

missing_debs=()
command -v java >/dev/null 2>&1 || missing_debs+=(openjdk-17-jre-headless)
[ -f /usr/share/java/zookeeper.jar ] || missing_debs+=(zookeeper)
command -v redis-server >/dev/null 2>&1 || missing_debs+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing_debs+=(redis-sentinel)
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || missing_debs+=(postgresql-15 postgresql-contrib)
command -v iptables >/dev/null 2>&1 || missing_debs+=(iptables)
command -v nft >/dev/null 2>&1 || missing_debs+=(nftables)
command -v ip >/dev/null 2>&1 || missing_debs+=(iproute2)
command -v runuser >/dev/null 2>&1 || missing_debs+=(util-linux)
command -v prometheus >/dev/null 2>&1 || missing_debs+=(prometheus)  # bankctl up --with-prometheus
command -v docker-compose >/dev/null 2>&1 || missing_debs+=(docker-compose)  # bankctl up --engine compose
command -v dockerd >/dev/null 2>&1 || missing_debs+=(docker.io)  # Docker's engine (started by bankctl up)
command -v debootstrap >/dev/null 2>&1 || missing_debs+=(debootstrap)  # the base image, where no registry serves one

if [ ${#missing_debs[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    step "installing Debian packages: ${missing_debs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing_debs[@]}" >/dev/null
  else
    step "missing Debian packages (run as root, or: sudo apt-get install ${missing_debs[*]})"
  fi
fi

# The Debian packages may start their own daemons; the project starts its own processes
# on its own ports, so those are left alone (they use none of our ports).

stamp="$VENV/.installed"
if [ ! -x "$VENV/bin/python" ]; then
  step "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  step "installing Python packages into $VENV (pip install -e .[dev])"
  # pip's own chatter goes to a log; it is shown only when the install fails.
  if ! { "$VENV/bin/pip" install -q --upgrade pip && "$VENV/bin/pip" install -q -e '.[dev]'; } \
      > "$VENV/pip.log" 2>&1; then
    tail -n 40 "$VENV/pip.log"
    step "pip install failed; the whole log is $VENV/pip.log"
    exit 1
  fi
  touch "$stamp"
fi
step "ready"
