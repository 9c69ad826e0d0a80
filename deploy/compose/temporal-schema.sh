#!/bin/sh
# One-shot schema step of docker-compose.yml (image temporalio/admin-tools, busybox sh).
# Creates the temporal and temporal_visibility databases when missing, sets up their schema
# version tables, and upgrades both schemas to the versions this admin-tools release ships
# (what the temporalio/server image of the same version expects). Then creates the engine's
# own database (OCW_DB_URL) when missing. Every step is idempotent: running it on every
# `docker compose up` is how a server upgrade gets its schema upgrade.
# The password comes from SQL_PASSWORD (read by temporal-sql-tool), never from the command line.
set -eu

: "${POSTGRES_SEEDS:=postgres}"
: "${DB_PORT:=5432}"
: "${POSTGRES_USER:?POSTGRES_USER is not set}"
: "${SQL_PASSWORD:?SQL_PASSWORD is not set}"
: "${OCW_DB_NAME:=ocw}"
SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

case "$OCW_DB_NAME" in
  *[!a-z0-9_]* | "") echo "OCW_DB_NAME must be lower-case letters, digits and _"; exit 2 ;;
esac

sql() {
  temporal-sql-tool --plugin postgres12 --ep "$POSTGRES_SEEDS" -p "$DB_PORT" -u "$POSTGRES_USER" "$@"
}

# PostgreSQL is healthy before this starts (depends_on); allow a restart in between
tries=0
until nc -z "$POSTGRES_SEEDS" "$DB_PORT"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 30 ]; then
    echo "PostgreSQL at $POSTGRES_SEEDS:$DB_PORT does not answer"
    exit 1
  fi
  sleep 2
done

for db in temporal temporal_visibility; do
  case "$db" in
    temporal) dir="$SCHEMA_DIR/temporal/versioned" ;;
    *) dir="$SCHEMA_DIR/visibility/versioned" ;;
  esac
  echo "database $db: create if missing, then update the schema from $dir"
  sql --db "$db" create
  sql --db "$db" setup-schema -v 0.0
  sql --db "$db" update-schema -d "$dir"
done

echo "database $OCW_DB_NAME (the engine's journal): create if missing"
sql --db "$OCW_DB_NAME" create
echo "schemas ready"
