#!/usr/bin/env bash
# Start/stop the project's own redis-server (Debian package) on 127.0.0.1:${SPEAKING_REDIS_PORT:-6399}.
#
#   scripts/redis.sh start [--empty] [ROLE]   start (--empty: forget what it had stored first)
#   scripts/redis.sh stop                      stop; its data stays on disk for the next start
#
# ROLE, for the distributed set-ups the tests run (tests/e2e/redis_topologies.py):
#   --cluster             a Redis Cluster node (the caller joins the nodes into a cluster)
#   --replica-of PORT     a replica of the server on PORT
#   --sentinel PORT       a Sentinel watching the primary on PORT as service "speaking"
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
    if [[ "${1:-}" == "--empty" ]]; then rm -rf "$dir"; shift; fi
    mkdir -p "$dir"
    local common=(--bind 127.0.0.1 --port "$port" --dir "$dir" --pidfile "$dir/redis.pid"
        --daemonize yes --logfile "$dir/redis.log")
    case "${1:-}" in
        --sentinel)
            # Sentinel rewrites its config file as it learns the topology: one of its own.
            # Quorum 2 of the 3 the tests run; a primary silent for 1 s is down.
            printf '%s\n' "sentinel monitor speaking 127.0.0.1 $2 2" \
                "sentinel down-after-milliseconds speaking 1000" \
                "sentinel failover-timeout speaking 5000" >"$dir/sentinel.conf"
            redis-server "$dir/sentinel.conf" --sentinel "${common[@]}" ;;
        *)
            local role=()
            case "${1:-}" in
                --cluster) role=(--cluster-enabled yes --cluster-config-file "$dir/nodes.conf"
                    --cluster-node-timeout 2000) ;;
                --replica-of) role=(--replicaof 127.0.0.1 "$2") ;;
                "") ;;
                *) log "unknown role $1"; exit 2 ;;
            esac
            # A replica syncs at once (not after the default 5 s diskless-sync delay).
            redis-server "${common[@]}" --save "" --appendonly yes --appendfsync everysec \
                --appenddirname aof --repl-diskless-sync-delay 0 "${role[@]}" ;;
    esac
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
    start) shift; start "$@" ;;
    stop) stop ;;
    *) echo "usage: $0 start [--empty] [--cluster|--replica-of PORT|--sentinel PORT]|stop" >&2
       exit 2 ;;
esac
