#!/usr/bin/env bash
# The same workload against kith (SQLite), kith (PostgreSQL), ejabberd and Prosody, one after
# another in one run on this machine, and a side-by-side table in docs/benchmarks.md (between
# the compare:begin/compare:end markers) with the machine, the commit and the exact commands.
#
#   bench/compare.sh
#
# Each server gets three runs: `idle` (RSS per idle connection), `throughput` (max rate; CPU per
# 1,000 messages) and `latency` (a fixed rate, by default one that every server sustains with
# archiving on: Prosody moves ~270 messages/s here). The XMPP servers come
# from Debian's packages (bench/peers/install.sh installs them), run with bench/peers'
# configurations: loopback only, no TLS, archiving on, shapers and limits off.
#
# Environment: as bench/kith.sh, plus IDLE_CONNECTIONS (2000), PAIRS (50), DURATION (10),
# LATENCY_CONNECTIONS (2000), LATENCY_PAIRS (100), LATENCY_RATE (200), SERVERS
# ("kith-sqlite kith-postgres ejabberd prosody").
set -euo pipefail
source "$(dirname "$0")/lib.sh"
peers="$root/bench/peers"
peer_running=
cleanup() {
    stop_all
    [ -n "$peer_running" ] && "$peers/stop.sh" "$peer_running"
    return 0
}
trap cleanup EXIT

idle_connections="${IDLE_CONNECTIONS:-2000}"
pairs="${PAIRS:-50}"
duration="${DURATION:-10}"
lat_connections="${LATENCY_CONNECTIONS:-2000}"
lat_pairs="${LATENCY_PAIRS:-100}"
lat_rate="${LATENCY_RATE:-200}"
servers=(${SERVERS:-kith-sqlite kith-postgres ejabberd prosody})

build
for peer in ejabberd prosody; do
    if [[ " ${servers[*]} " == *" $peer "* ]] && ! command -v "$([ $peer = ejabberd ] && echo ejabberdctl || echo prosody)" >/dev/null; then
        echo "$peer is not installed: run bench/peers/install.sh (as root) first" >&2
        exit 1
    fi
done
results="$work/compare-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$results"
port=18280
commands="$results/commands.txt"
: >"$commands"

# three_runs NAME TARGET-ARGS…: idle, throughput and latency against one server.
three_runs() {
    local name="$1"
    shift
    local dir="$results/$name"
    mkdir -p "$dir"
    local register=()
    [[ "$1" == --target && "$2" == xmpp://* ]] && register=(--register)
    for scenario in idle throughput latency; do
        local args=("$@")
        case "$scenario" in
        idle) args+=(--connections "$idle_connections" --duration 15 "${register[@]}") ;;
        throughput) args+=(--pairs "$pairs" --duration "$duration") ;;
        latency) args+=(--connections "$lat_connections" --pairs "$lat_pairs" --rate "$lat_rate" --duration "$duration") ;;
        esac
        wait_quiet
        echo "$name/$scenario $(load1)" >>"$results/loads.txt"
        echo "kith-load $scenario ${args[*]}" | sed "s|$work|\$KITH_BENCH_DIR|g; s|--pid [0-9]*|--pid PID|g" >>"$commands"
        echo "== $name $scenario" >&2
        "$load" "$scenario" "${args[@]}" --quiet --json-out "$dir/$scenario.json" | tee "$dir/$scenario.txt"
    done
}

labels=()
for server in "${servers[@]}"; do
    case "$server" in
    kith-sqlite)
        start_kith "$work/cmp-sqlite" "$port" kith.bench ""
        three_runs "$server" --target "http://127.0.0.1:$port" --data-dir "$work/cmp-sqlite" \
            --server-name kith.bench --pid "$node_pid"
        stop_all
        labels+=("kith (SQLite)=$results/$server")
        ;;
    kith-postgres)
        url="$(fresh_pg_schema cmp)"
        start_kith "$work/cmp-pg" "$port" kith.bench "$url"
        three_runs "$server" --target "http://127.0.0.1:$port" --data-dir "$work/cmp-pg" \
            --server-name kith.bench --database-url "$url" --pid "$node_pid"
        stop_all
        labels+=("kith (PostgreSQL)=$results/$server")
        ;;
    ejabberd | prosody)
        pid="$("$peers/start.sh" "$server")"
        peer_running="$server"
        port_var=$([ "$server" = ejabberd ] && echo "${EJABBERD_PORT:-15222}" || echo "${PROSODY_PORT:-15223}")
        three_runs "$server" --target "xmpp://127.0.0.1:$port_var" --domain localhost --pid "$pid"
        "$peers/stop.sh" "$server"
        peer_running=
        version="$(dpkg-query -W -f='${Version}' "$server" 2>/dev/null || echo '?')"
        labels+=("$server $version=$results/$server")
        ;;
    *)
        echo "unknown server $server" >&2
        exit 2
        ;;
    esac
done

section="$results/section.md"
{
    echo "Measured $(date -u +'%Y-%m-%d %H:%M UTC') at commit \`$(commit)\` by \`bench/compare.sh\`"
    echo "on $(machine); every server on this machine, one after another, driven by the same"
    echo "kith-load release build. Ratios are to kith (SQLite). Load averages before each run:"
    echo "$(paste -sd';' "$results/loads.txt" | sed 's/;/, /g')."
    echo
    "$load" table "${labels[@]}"
    echo
    echo "The exact commands (PID is the measured server process; XMPP accounts were created by"
    echo "in-band registration during the idle run):"
    echo
    echo '```'
    cat "$commands"
    echo '```'
} >"$section"
splice_doc compare "$section"
echo "results in $results; docs/benchmarks.md updated" >&2
