#!/usr/bin/env bash
# Runs the suites that need PostgreSQL, as an unprivileged user, in the
# tree given as $1: pg_regress + isolation on a throwaway cluster (notify
# loaded by CREATE EXTENSION only), then the TAP tests (which start their
# own clusters with notify preloaded, and the simulators).
set -euo pipefail
cd "$1"

PGTEST=$(mktemp -d /tmp/notify-pg.XXXXXX)
PORT=$((20000 + RANDOM % 20000))
cleanup() {
	pg_ctl -D "$PGTEST/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$PGTEST"
}
trap cleanup EXIT

echo "== pg_regress + isolation (throwaway cluster on port $PORT)"
initdb -D "$PGTEST/data" -A trust -U postgres >/dev/null
cat >> "$PGTEST/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$PGTEST'
fsync = off
max_prepared_transactions = 10
CONF
pg_ctl -D "$PGTEST/data" -l "$PGTEST/server.log" -w start >/dev/null
mkdir -p test/regress-out test/isolation-out
make -s installcheck PGHOST="$PGTEST" PGPORT=$PORT PGUSER=postgres
pg_ctl -D "$PGTEST/data" -m fast stop >/dev/null

echo "== TAP tests"
if ls test/t/*.pl >/dev/null 2>&1; then
	make -s tap ${T:+T=$T}
fi
