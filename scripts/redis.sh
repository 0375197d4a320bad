#!/usr/bin/env bash
# Start/stop the project's own redis-server (Debian package) on 127.0.0.1:${SPEAKING_REDIS_PORT:-6399}.
# It keeps no data on disk: sessions are live state, and tests start from empty.
set -euo pipefail
port="${SPEAKING_REDIS_PORT:-6399}"
dir="${SPEAKING_RUN_DIR:-/var/run/speaking}/redis-$port"
log() { printf '[redis] %s\n' "$*" >&2; }

start() {
    if timeout 5 redis-cli -p "$port" ping >/dev/null 2>&1; then log "already running on $port"; return; fi
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$dir" --pidfile "$dir/redis.pid" --daemonize yes --logfile "$dir/redis.log"
    for _ in $(seq 1 100); do
        timeout 5 redis-cli -p "$port" ping >/dev/null 2>&1 && { log "running on 127.0.0.1:$port"; return; }
        sleep 0.05
    done
    log "redis did not start"; cat "$dir/redis.log" >&2; exit 1
}

stop() {
    timeout 5 redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
        [[ -f "$dir/redis.pid" ]] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null || break
        sleep 0.05
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
