#!/usr/bin/env bash
# Stops a benchmark peer started by start.sh.
#
#   bench/peers/stop.sh ejabberd|prosody
set -uo pipefail
peers_dir="${KITH_PEERS_DIR:-/tmp/kith-bench-peers}"
which="${1:?usage: stop.sh ejabberd|prosody}"
case "$which" in
ejabberd)
    dir="$peers_dir/ejabberd"
    [ -d "$dir" ] || exit 0
    setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
        env HOME=/var/lib/ejabberd ERL_EPMD_ADDRESS=127.0.0.1 \
        ejabberdctl --config-dir "$dir" --config "$dir/ejabberd.yml" \
        --spool "$dir/spool" --logs "$dir/logs" stop >/dev/null 2>&1
    setpriv --reuid=ejabberd --regid=ejabberd --init-groups \
        env HOME=/var/lib/ejabberd ERL_EPMD_ADDRESS=127.0.0.1 \
        ejabberdctl --config-dir "$dir" --config "$dir/ejabberd.yml" \
        --spool "$dir/spool" --logs "$dir/logs" stopped >/dev/null 2>&1
    ;;
prosody)
    dir="$peers_dir/prosody"
    [ -f "$dir/prosody.pid" ] || exit 0
    pid="$(cat "$dir/prosody.pid")"
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    ;;
*)
    echo "usage: stop.sh ejabberd|prosody" >&2
    exit 2
    ;;
esac
