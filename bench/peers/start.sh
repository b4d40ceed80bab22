#!/usr/bin/env bash
# Starts a benchmark peer on loopback with bench/peers' configuration and prints the pid of
# its server process (what kith-load --pid measures).
#
#   bench/peers/start.sh ejabberd|prosody
#
# Environment: KITH_PEERS_DIR (state, default /tmp/kith-bench-peers), EJABBERD_PORT (15222),
# PROSODY_PORT (15223). The servers run as their own users, started with setpriv rather than
# su/runuser, which would drop the open-file limit to 1024.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
peers_dir="${KITH_PEERS_DIR:-/tmp/kith-bench-peers}"
which="${1:?usage: start.sh ejabberd|prosody}"

wait_port() {
    for _ in $(seq 1 120); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.5
    done
    echo "$which did not open port $1" >&2
    return 1
}

case "$which" in
ejabberd)
    port="${EJABBERD_PORT:-15222}"
    dir="$peers_dir/ejabberd"
    rm -rf "$dir"
    mkdir -p "$dir/spool" "$dir/logs"
    sed -e "s|@PORT@|$port|" "$here/ejabberd.yml" > "$dir/ejabberd.yml"
    sed -e "s|@PID@|$dir/ejabberd.pid|" "$here/ejabberdctl.cfg" > "$dir/ejabberdctl.cfg"
    cp /etc/ejabberd/inetrc "$dir/inetrc" 2>/dev/null || true
    chown -R ejabberd:ejabberd "$dir"
    setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
        env HOME=/var/lib/ejabberd ERL_EPMD_ADDRESS=127.0.0.1 \
        ejabberdctl --config-dir "$dir" --config "$dir/ejabberd.yml" \
        --spool "$dir/spool" --logs "$dir/logs" start
    wait_port "$port"
    pid="$(pgrep -u ejabberd -f 'beam.smp.*kithbench@localhost' | head -1)"
    ;;
prosody)
    port="${PROSODY_PORT:-15223}"
    dir="$peers_dir/prosody"
    rm -rf "$dir"
    mkdir -p "$dir/data"
    sed -e "s|@PORT@|$port|" -e "s|@DATA@|$dir/data|" -e "s|@PID@|$dir/prosody.pid|" \
        "$here/prosody.cfg.lua" > "$dir/prosody.cfg.lua"
    chown -R prosody:prosody "$dir"
    setpriv --reuid=prosody --regid=prosody --init-groups \
        prosody -F --config "$dir/prosody.cfg.lua" > "$dir/prosody.log" 2>&1 &
    wait_port "$port"
    pid="$(pgrep -u prosody -f "prosody.*$dir/prosody.cfg.lua" | head -1)"
    ;;
*)
    echo "usage: start.sh ejabberd|prosody" >&2
    exit 2
    ;;
esac

# Nothing of the peer may listen anywhere but loopback.
if ss -ltnpH | grep -E "pid=$pid," | awk '{print $4}' | grep -vqE '^(127\.0\.0\.1|\[::1\]):'; then
    echo "$which listens beyond loopback; stopping it" >&2
    ss -ltnpH | grep -E "pid=$pid," >&2
    "$here/stop.sh" "$which"
    exit 1
fi
echo "$pid"
