#!/bin/sh
# Writes deploy/.env with fresh secrets for docker-compose (the same kinds `bankctl up` makes).
set -eu
cd "$(dirname "$0")"
[ -e .env ] && { echo "deploy/.env exists; remove it first to make new secrets" >&2; exit 1; }
hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
umask 077
cat > .env <<ENV
COMPOSE_PROJECT_NAME=bank-sim
BANK_PG_PASSWORD=$(hex 16)
BANK_REDIS_PASSWORD=$(hex 16)
BANK_ZK_AUTH=bank:$(hex 16)
BANK_PEER_TOKEN=$(hex 32)
BANK_CLIENT_TOKEN=$(hex 32)
BANK_ADMIN_TOKEN=$(hex 32)
ENV
echo "wrote deploy/.env (owner-only); clients present BANK_CLIENT_TOKEN as 'authorization: Bearer <token>'"
