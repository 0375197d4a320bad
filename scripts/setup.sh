#!/usr/bin/env bash
# Install everything the product and its tests need on a fresh Debian 12 machine (as root):
# apt packages, a Python venv holding exactly uv.lock, and the cached Asterisk root.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { printf '[setup] %s\n' "$*" >&2; }

apt_packages=(debootstrap sip-tester redis-server tcpdump curl)
missing=()
for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "apt: installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts its own redis-server on 6379 at install; the project runs its own instance.
if command -v systemctl >/dev/null && systemctl is-active --quiet redis-server 2>/dev/null; then
    systemctl stop redis-server || true
fi

# Python: exactly what uv.lock pins (runtime and dev), with hashes, installed by the pinned
# uv (scripts/uv.sh).
uv="$here/scripts/uv.sh"
"$uv" --version >/dev/null  # installs the pinned uv first, so its output stays apart
venv="${SPEAKING_VENV:-$here/.venv}"
export UV_PROJECT_ENVIRONMENT="$venv"
# The lock is the environment: a pyproject.toml that asks for something the lock does not
# pin is an error here, not a silent re-resolve to whatever the index has today. The
# requirements are compared first without the network (scripts/lock_drift.py names the one
# that changed); then uv checks the whole lock, which may need the package index.
if ! why="$(python3 "$here/scripts/lock_drift.py" "$here" 2>&1)" \
    || ! why="$("$uv" lock --locked --project "$here" -q 2>&1)"; then
    log "ERROR: uv.lock does not match pyproject.toml (or is damaged):"
    printf '%s\n' "$why" | sed 's/^/[setup]   /' >&2
    log "refresh it with scripts/lock.sh, run the tests, and commit uv.lock with the change"
    exit 1
fi
# Every run syncs (well under a second when nothing changed): uv compares the venv with the
# lock package by package and puts back whatever differs, removing what the lock does not
# name, so a venv changed by hand is brought back into line instead of trusted. The lock's
# hash is kept in the venv to say when it was rebuilt for a new lock.
lock_sum="$(sha256sum "$here/uv.lock" | cut -d' ' -f1)"
stamp="$venv/.speaking-lock"
if [[ "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]]; then
    log "installing the locked environment into $venv (uv.lock ${lock_sum:0:12}; piper's voice is about 60 MB)"
fi
"$uv" sync --locked --project "$here" --python python3 -q
printf '%s\n' "$lock_sum" >"$stamp"

"$here/scripts/asterisk.sh" provision
log "ready"
