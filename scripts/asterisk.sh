#!/usr/bin/env bash
# Provision, start and stop a real Asterisk 22 for development and tests.
#
# Debian 12 has no asterisk package, so Asterisk runs from a Debian sid root
# made with debootstrap. The root is built once and cached (SPEAKING_ASTERISK_ROOT);
# it is rebuilt only when missing or incomplete.
#
#   scripts/asterisk.sh provision   build the cached root if needed
#   scripts/asterisk.sh start [N]   install asterisk-config/ and start instance N (default 0)
#   scripts/asterisk.sh stop [N]    stop instance N, unmount, leave no process behind
#   scripts/asterisk.sh status [N]
#
# Instance N listens with ARI on 127.0.0.1:(8088+N) and SIP on 127.0.0.1:(5060+N*100).
# Several instances run side by side from the same cached root: each has its own
# configuration (/etc/asterisk-N) and state directories (/var/*/asterisk-N) inside it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${SPEAKING_ASTERISK_ROOT:-/var/cache/speaking/asterisk-root}"
mirror="${SPEAKING_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ari_user="${SPEAKING_ARI_USER:-speaking}"
ari_password="${SPEAKING_ARI_PASSWORD:-speaking-dev-secret}"

log() { printf '[asterisk] %s\n' "$*" >&2; }

provision() {
    if [[ -f "$cache/.speaking-complete" ]]; then
        log "cached root present: $cache"
        return
    fi
    command -v debootstrap >/dev/null || { log "installing debootstrap"; apt-get install -y -q debootstrap >/dev/null; }
    log "building a Debian sid root with Asterisk in $cache (takes a few minutes the first time)"
    rm -rf "$cache.partial"
    mkdir -p "$(dirname "$cache")"
    # debootstrap prints one line per package; keep the user informed without flooding.
    debootstrap --variant=minbase \
        --include=asterisk,asterisk-modules,asterisk-core-sounds-en-wav \
        sid "$cache.partial" "$mirror" 2>&1 \
        | awk '/^I: (Retrieving|Validating|Extracting|Installing|Configuring|Base system)/ { n++; if (n % 25 == 0 || /Base system/) { print "[asterisk] debootstrap: " $0; fflush() } }'
    [[ -x "$cache.partial/usr/sbin/asterisk" ]] || { log "debootstrap did not install asterisk"; exit 1; }
    rm -rf "$cache"
    mv "$cache.partial" "$cache"
    touch "$cache/.speaking-complete"
    log "root ready: $(chroot "$cache" asterisk -V)"
}

instance_dir() { echo "${SPEAKING_RUN_DIR:-/var/run/speaking}/asterisk-$1"; }

# Inside the root: instance 0 uses Debian's standard paths, instance N its own.
suffix() { if [[ "$1" == 0 ]]; then echo ""; else echo "-$1"; fi; }
conf_of() { echo "/etc/asterisk$(suffix "$1")/asterisk.conf"; }

render_config() {
    local n="$1" dest="$2"
    local ari_port=$((8088 + n)) sip_port=$((5060 + n * 100))
    # RTP ports: instance 0 (the suite's and the benches') has 10,000, enough for 1,600
    # calls with a session each (about 6 ports per call); the others 1,000 each.
    local rtp_start=$((20000 + n * 1000)) rtp_end=$((20000 + n * 1000 + 999))
    if [[ "$n" == 0 ]]; then rtp_start=10000 rtp_end=19999; fi
    rm -rf "$dest"
    mkdir -p "$dest"
    for f in "$here"/asterisk-config/*.conf; do
        sed -e "s/@ARI_PORT@/$ari_port/g" -e "s/@SIP_PORT@/$sip_port/g" \
            -e "s/@RTP_START@/$rtp_start/g" -e "s/@RTP_END@/$rtp_end/g" \
            -e "s/@ARI_USER@/$ari_user/g" -e "s/@ARI_PASSWORD@/$ari_password/g" -e "s/@SYSTEM_NAME@/pbx$n/g" \
            "$f" > "$dest/$(basename "$f")"
    done
    if [[ "$n" != 0 ]]; then
        local sfx; sfx="$(suffix "$n")"
        printf '[directories]\nastetcdir => /etc/asterisk%s\nastrundir => /var/run/asterisk%s\nastlogdir => /var/log/asterisk%s\nastspooldir => /var/spool/asterisk%s\nastdbdir => /var/lib/asterisk%s\n' \
            "$sfx" "$sfx" "$sfx" "$sfx" "$sfx" >> "$dest/asterisk.conf"
    fi
}

mount_root() {
    local root="$1"
    mountpoint -q "$root/proc" || mount -t proc proc "$root/proc"
    mountpoint -q "$root/dev" || mount --bind /dev "$root/dev"
}

# The root's /proc and /dev are shared by all instances: unmount with the last one.
# Instances start and stop concurrently (parallel test lanes): mounting and writing the
# pid file, and checking the pid files and unmounting, each happen under one lock, so a
# stop never unmounts under an instance that is starting.
root_lock() {
    mkdir -p "${SPEAKING_RUN_DIR:-/var/run/speaking}"
    exec 9>"${SPEAKING_RUN_DIR:-/var/run/speaking}/root.lock"
    flock -w 60 9 || { log "could not lock the root's mounts within 60 s"; exit 1; }
}
root_unlock() { flock -u 9; exec 9>&-; }

unmount_root_if_unused() {
    local root="$1" pidfile
    for pidfile in "${SPEAKING_RUN_DIR:-/var/run/speaking}"/asterisk-*/pid; do
        [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null && return 0
    done
    if mountpoint -q "$root/proc"; then umount "$root/proc"; fi
    if mountpoint -q "$root/dev"; then umount "$root/dev"; fi
}

ari_up() {
    local port=$((8088 + $1))
    curl -fsS --max-time 3 -o /dev/null -H "Authorization: Basic $(printf '%s:%s' "$ari_user" "$ari_password" | base64 -w0)" \
        "http://127.0.0.1:$port/ari/asterisk/info" 2>/dev/null
}

start() {
    local n="${1:-0}"
    provision
    local dir root="$cache" sfx
    dir="$(instance_dir "$n")"
    sfx="$(suffix "$n")"
    mkdir -p "$dir"
    if ari_up "$n"; then log "instance $n already answering on ARI"; return; fi
    render_config "$n" "$root/etc/asterisk$sfx"
    for d in /var/lib/asterisk /var/spool/asterisk /var/run/asterisk /var/log/asterisk; do
        mkdir -p "$root$d$sfx"
    done
    rm -f "$root/var/run/asterisk$sfx/asterisk.ctl" "$root/var/run/asterisk$sfx/asterisk.pid"
    # Without the host's name in the root's /etc/hosts, Asterisk's address lookups try DNS
    # (which this sandbox does not have) on every call.
    printf '127.0.0.1 localhost %s\n::1 localhost ip6-localhost\n' "$(hostname)" > "$root/etc/hosts"
    root_lock
    mount_root "$root"
    log "starting instance $n (ARI 127.0.0.1:$((8088 + n)), SIP 127.0.0.1:$((5060 + n * 100)))"
    # -f: foreground (so we own the process), -n: no colour. setsid detaches it from our job.
    setsid chroot "$root" /usr/sbin/asterisk -C "$(conf_of "$n")" -f -n \
        > "$dir/console.log" 2>&1 < /dev/null &
    echo $! > "$dir/pid"
    root_unlock
    for _ in $(seq 1 300); do
        if ari_up "$n"; then log "instance $n: ARI answers"; return; fi
        if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
            log "asterisk exited during start; console log follows"; tail -50 "$dir/console.log" >&2; exit 1
        fi
        sleep 0.1
    done
    log "ARI did not answer within 30 s"; tail -50 "$dir/console.log" >&2; exit 1
}

stop() {
    local n="${1:-0}" dir root="$cache" pid
    dir="$(instance_dir "$n")"
    [[ -d "$root" ]] || return 0
    if [[ -f "$dir/pid" ]] && pid="$(cat "$dir/pid")" && kill -0 "$pid" 2>/dev/null; then
        log "stopping instance $n"
        # A wedged Asterisk may not answer its console either: give it 10 s, then signals.
        timeout 10 chroot "$root" /usr/sbin/asterisk -C "$(conf_of "$n")" -rx "core stop now" \
            >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/pid"
    root_lock
    unmount_root_if_unused "$root"
    root_unlock
}

status() {
    local n="${1:-0}"
    if ari_up "$n"; then echo "instance $n: running"; else echo "instance $n: not running"; return 1; fi
}

case "${1:-}" in
    provision) provision ;;
    start) start "${2:-0}" ;;
    stop) stop "${2:-0}" ;;
    status) status "${2:-0}" ;;
    *) echo "usage: $0 provision|start [N]|stop [N]|status [N]" >&2; exit 2 ;;
esac
