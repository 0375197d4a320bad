#!/usr/bin/env bash
# Install everything the product and its tests need on a fresh Debian 12 machine (as root):
# apt packages, a Python venv with the project, and the cached Asterisk root.
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

venv="${SPEAKING_VENV:-$here/.venv}"
if [[ ! -x "$venv/bin/python" ]]; then
    log "creating the Python venv in $venv"
    python3 -m venv "$venv"
fi
stamp="$venv/.speaking-installed"
if [[ ! -f "$stamp" || "$here/pyproject.toml" -nt "$stamp" ]]; then
    log "pip: installing the project and its dependencies (piper's voice is about 60 MB)"
    "$venv/bin/pip" install -q --disable-pip-version-check -e "$here[dev]"
    touch "$stamp"
fi

"$here/scripts/asterisk.sh" provision
log "ready"
