#!/usr/bin/env bash
# Makes the `debian:bookworm-slim` base image from the Debian archive, for engines that reach no
# image registry (the bank's Dockerfile starts FROM it). Harmless when the image exists already.
#   deploy/image/make-base-image.sh [TAG]        # as root; needs debootstrap and a Docker engine
# The archive is the one apt uses on this machine (its debian.sources), so nothing else is reached.
set -euo pipefail
tag=${1:-debian:bookworm-slim}
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "[base-image] $tag exists"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "[base-image] needs debootstrap: apt-get install debootstrap" >&2; exit 1; }
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/bank-sim-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "[base-image] debootstrap --variant=minbase bookworm from $mirror (about 30 s)"
started=$(date +%s)
debootstrap --variant=minbase bookworm "$root" "$mirror" > "$root.log" 2>&1 || {
  tail -n 20 "$root.log" >&2; echo "[base-image] debootstrap failed; log: $root.log" >&2; exit 1; }
rm -f "$root.log"
# What a slim image leaves out: apt's lists and caches (the Dockerfile fetches its own).
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
tar -C "$root" -c . | docker import - "$tag" >/dev/null
echo "[base-image] $tag imported in $(( $(date +%s) - started )) s"
