#!/usr/bin/env bash
# Start a local PostgreSQL server (Debian package) with a database and user for rdu-tune's
# shared-study test; print its URL. Idempotent: an installed, running server is reused.
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1) || true
if [ -z "${version:-}" ]; then
  version=$(ls /usr/lib/postgresql | sort -n | tail -n 1)
  pg_createcluster "$version" main >&2
  read -r version cluster port status _ < <(pg_lsclusters -h | head -n 1)
fi
if [ "$status" != "online" ]; then
  pg_ctlcluster "$version" "$cluster" start >&2
fi
as_postgres() { su postgres -c "$1"; }
if [ "$(as_postgres "psql -p $port -tAc \"SELECT 1 FROM pg_roles WHERE rolname='rdu_tune'\"")" != 1 ]; then
  as_postgres "psql -p $port -qc \"CREATE USER rdu_tune PASSWORD 'rdu_tune'\"" >&2
fi
if [ "$(as_postgres "psql -p $port -tAc \"SELECT 1 FROM pg_database WHERE datname='rdu_tune'\"")" != 1 ]; then
  as_postgres "createdb -p $port -O rdu_tune rdu_tune" >&2
fi
echo "postgresql://rdu_tune:rdu_tune@127.0.0.1:$port/rdu_tune"
