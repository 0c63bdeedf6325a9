#!/usr/bin/env bash
# Start or stop the real servers the storage tests use: redis-server and PostgreSQL 15,
# both bound to 127.0.0.1 on non-default ports, with their data in a temporary directory.
#
#   eval "$(scripts/servers.sh start)"   # starts both, prints the env the tests read
#   scripts/servers.sh stop              # stops both and removes the data directory
#
# The tests read RESILIENCE_TEST_REDIS_URL and RESILIENCE_TEST_POSTGRES_URL; with
# neither set, the server tests are skipped (CI sets RESILIENCE_REQUIRE_SERVERS=1,
# which turns a missing server into a failure).
set -euo pipefail

REDIS_PORT=${REDIS_PORT:-16379}
PG_PORT=${PG_PORT:-15432}
STATE_FILE=${TASKCHAOS_SERVERS_STATE:-/tmp/taskchaos-servers.state}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

log() { echo "servers.sh: $*" >&2; }

start() {
    command -v redis-server >/dev/null || {
        log "redis-server is not installed (Debian: apt-get install -y redis-server)"; exit 1; }
    [ -x "$PG_BIN/initdb" ] || { log "PostgreSQL 15 not found in $PG_BIN"; exit 1; }
    # A server already on a port would answer for ours: refuse rather than test against it.
    if redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
        log "port $REDIS_PORT is in use (REDIS_PORT): stop that server or choose another port"
        exit 1
    fi
    if "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" >/dev/null 2>&1; then
        log "port $PG_PORT is in use (PG_PORT): stop that server or choose another port"
        exit 1
    fi
    dir=$(mktemp -d /tmp/taskchaos-servers.XXXXXX)
    echo "$dir" > "$STATE_FILE"

    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --dir "$dir"

    # initdb refuses to run as root: run the cluster as the postgres user when we are root.
    as_pg=()
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; as_pg=(runuser -u postgres --); fi
    "${as_pg[@]}" "$PG_BIN/initdb" -D "$dir/pg" -A trust -U postgres >"$dir/initdb.log" 2>&1 || {
        log "initdb failed:"; cat "$dir/initdb.log" >&2; exit 1; }
    "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w \
        -o "-p $PG_PORT -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
        start >/dev/null || { log "postgres did not start:"; cat "$dir/pg.log" >&2; exit 1; }

    for _ in $(seq 50); do
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null || { log "redis did not start"; exit 1; }
    log "redis on 127.0.0.1:$REDIS_PORT, postgres on 127.0.0.1:$PG_PORT, data in $dir"
    echo "export RESILIENCE_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
    echo "export RESILIENCE_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
}

stop() {
    [ -f "$STATE_FILE" ] || { log "nothing to stop"; return 0; }
    dir=$(cat "$STATE_FILE")
    if [ -f "$dir/redis.pid" ]; then kill "$(cat "$dir/redis.pid")" 2>/dev/null || true; fi
    if [ -d "$dir/pg" ]; then
        as_pg=()
        if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi
        "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$dir/pg" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir" "$STATE_FILE"
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
