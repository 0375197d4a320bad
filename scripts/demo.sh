#!/usr/bin/env bash
# The main job, in one command on a fresh Debian 12 machine (as root):
# installs everything, starts Asterisk, Redis and the worker, places a real two-leg SIP
# call, speaks into it with each direction, and leaves in ./out/ the WAV files of what
# each party heard plus timings.json. Everything it started is stopped at the end.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$here/out}"
mkdir -p "$out"
"$here/scripts/setup.sh"
"$here/scripts/asterisk.sh" start
"$here/scripts/redis.sh" start

export SPEAKING_WORKER_ID=demo SPEAKING_REDIS_URL=redis://127.0.0.1:6399/0
export SPEAKING_ARI_PASSWORD="${SPEAKING_ARI_PASSWORD:-speaking-dev-secret}" SPEAKING_METRICS_PORT=9464
"$here/.venv/bin/speaking-worker" 2> "$out/worker.log" &
worker=$!
cleanup() {
    kill -TERM "$worker" 2>/dev/null && wait "$worker" || true
    "$here/scripts/redis.sh" stop
    "$here/scripts/asterisk.sh" stop
}
trap cleanup EXIT
echo "[demo] waiting for the worker (logs: $out/worker.log)" >&2
for _ in $(seq 1 300); do
    grep -q '"worker ready"' "$out/worker.log" 2>/dev/null && break
    kill -0 "$worker" 2>/dev/null || { cat "$out/worker.log" >&2; exit 1; }
    sleep 0.1
done
"$here/.venv/bin/python" "$here/scripts/demo.py" --out "$out"
