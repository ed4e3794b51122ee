#!/bin/bash
# A shard's standby in the official postgres image: on first start, a base backup of the shard's
# primary (BANK_PRIMARY_HOST) with its own application name (BANK_MEMBER, e.g. s0_dc2), so that
# the primary's `synchronous_standby_names = ANY 1 (...)` counts it; then the image's own entrypoint.
set -euo pipefail
: "${BANK_MEMBER:?}" "${BANK_PRIMARY_HOST:?}" "${POSTGRES_PASSWORD:?}"
export PGDATA=${PGDATA:-/var/lib/postgresql/data}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_isready -h "$BANK_PRIMARY_HOST" -U bank -d bank -q; do sleep 1; done
  mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
  PGPASSWORD="$POSTGRES_PASSWORD" gosu postgres pg_basebackup --pgdata="$PGDATA" --write-recovery-conf \
    --wal-method=stream --checkpoint=fast \
    --dbname="host=$BANK_PRIMARY_HOST user=bank application_name=$BANK_MEMBER password=$POSTGRES_PASSWORD"
fi
exec docker-entrypoint.sh "$@"
