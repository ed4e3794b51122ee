#!/bin/bash
# Runs once, when the official postgres image initializes a shard's primary: streaming replication
# for the shard's other members (the bank user replicates; scram passwords), as `bankctl up` does.
set -euo pipefail
cat >> "$PGDATA/pg_hba.conf" <<HBA
host replication bank all scram-sha-256
host all bank all scram-sha-256
HBA
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -c "ALTER ROLE bank REPLICATION"
