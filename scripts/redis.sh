#!/usr/bin/env bash
# Start/stop the project's own redis-server (Debian package) on 127.0.0.1:${SPEAKING_REDIS_PORT:-6399}.
#
#   scripts/redis.sh start [--empty]   start (--empty: forget what it had stored first)
#   scripts/redis.sh stop              stop; its data stays on disk for the next start
#
# AOF persistence (appendonly, fsync every second), as a deployment should run it: a
# restart keeps sessions, API keys and unacknowledged commands.
set -euo pipefail
port="${SPEAKING_REDIS_PORT:-6399}"
dir="${SPEAKING_RUN_DIR:-/var/run/speaking}/redis-$port"
log() { printf '[redis] %s\n' "$*" >&2; }
cli() { timeout 5 redis-cli -p "$port" "$@"; }

start() {
    if cli ping >/dev/null 2>&1; then log "already running on $port"; return; fi
    if [[ "${1:-}" == "--empty" ]]; then rm -rf "$dir"; fi
    mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --save "" \
        --appendonly yes --appendfsync everysec --appenddirname aof \
        --dir "$dir" --pidfile "$dir/redis.pid" --daemonize yes --logfile "$dir/redis.log"
    for _ in $(seq 1 100); do
        cli ping >/dev/null 2>&1 && { log "running on 127.0.0.1:$port"; return; }
        sleep 0.05
    done
    log "redis did not start"; cat "$dir/redis.log" >&2; exit 1
}

stop() {
    # SHUTDOWN (without NOSAVE) flushes the AOF, as a clean stop of a deployment does.
    cli shutdown >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
        [[ -f "$dir/redis.pid" ]] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null || break
        sleep 0.05
    done
    if [[ -f "$dir/redis.pid" ]] && kill -0 "$(cat "$dir/redis.pid")" 2>/dev/null; then
        kill -9 "$(cat "$dir/redis.pid")" 2>/dev/null || true
    fi
}

case "${1:-}" in
    start) start "${2:-}" ;;
    stop) stop ;;
    *) echo "usage: $0 start [--empty]|stop" >&2; exit 2 ;;
esac
