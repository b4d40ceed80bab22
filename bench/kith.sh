#!/usr/bin/env bash
# kith's figures against the targets of the benchmark issue, in one command:
#
#   bench/kith.sh            # all scenarios
#   bench/kith.sh idle latency
#
# Builds release binaries, waits for a quiet machine before each run, starts a fresh node per
# run (SQLite in a temporary data dir, or a fresh PostgreSQL schema), runs kith-load, stops the
# node, and writes the figures, the machine, the commit, the exact commands and the load
# averages into docs/benchmarks.md (between the kith:begin/kith:end markers).
#
# Environment: CARGO_TARGET_DIR, KITH_BENCH_DIR (/tmp/kith-bench), KITH_BENCH_POSTGRES_URL,
# KITH_BENCH_QUIET_LOAD (1.0), KITH_BENCH_SKIP_BUILD, IDLE_CONNECTIONS (19000).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_all EXIT

scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(idle throughput latency federation)
build
results="$work/kith-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$results"
port=18180
server=kith.bench

# run NAME ARGS…: one kith-load run, its command, summary and load average kept in $results.
run() {
    local name="$1"
    shift
    wait_quiet
    load1 >"$results/$name.load"
    echo "kith-load $*" >"$results/$name.cmd"
    echo "== $name: kith-load $*" >&2
    "$load" "$@" --quiet --json-out "$results/$name.json" | tee "$results/$name.txt"
}

for scenario in "${scenarios[@]}"; do
    case "$scenario" in
    idle)
        # The core node's figure (1,000 idle connections), then the target's.
        start_kith "$work/node-idle" "$port" "$server" ""
        run idle-sqlite-1000 idle --target "http://127.0.0.1:$port" --data-dir "$work/node-idle" \
            --server-name "$server" --connections 1000 --duration 20 --pid "$node_pid"
        stop_all
        start_kith "$work/node-idle" "$port" "$server" ""
        run idle-sqlite idle --target "http://127.0.0.1:$port" --data-dir "$work/node-idle" \
            --server-name "$server" --connections "${IDLE_CONNECTIONS:-19000}" --duration 40 \
            --pid "$node_pid"
        stop_all
        ;;
    throughput)
        start_kith "$work/node-tp" "$port" "$server" ""
        run throughput-sqlite throughput --target "http://127.0.0.1:$port" \
            --data-dir "$work/node-tp" --server-name "$server" --pid "$node_pid"
        stop_all
        url="$(fresh_pg_schema tp)"
        start_kith "$work/node-tp-pg" "$port" "$server" "$url"
        run throughput-postgres throughput --target "http://127.0.0.1:$port" \
            --data-dir "$work/node-tp-pg" --server-name "$server" --database-url "$url" \
            --pid "$node_pid"
        stop_all
        ;;
    latency)
        start_kith "$work/node-lat" "$port" "$server" ""
        run latency-sqlite latency --target "http://127.0.0.1:$port" \
            --data-dir "$work/node-lat" --server-name "$server" --connections 10000 \
            --pairs 1000 --rate 5000 --duration 20 --pid "$node_pid"
        stop_all
        # The same clients at a rate the node sustains, to show latency below saturation.
        start_kith "$work/node-lat" "$port" "$server" ""
        run latency-sqlite-1000 latency --target "http://127.0.0.1:$port" \
            --data-dir "$work/node-lat" --server-name "$server" --connections 10000 \
            --pairs 1000 --rate 1000 --duration 20 --pid "$node_pid"
        stop_all
        ;;
    federation)
        # Each node's key first, so that each can pin the other.
        rm -rf "$work/node-alpha" "$work/node-beta"
        alpha_id="$("$kith" id --data-dir "$work/node-alpha")"
        beta_id="$("$kith" id --data-dir "$work/node-beta")"
        KEEP_DIR=1 start_kith "$work/node-alpha" "$port" alpha "" \
            --peer "beta=/ip4/127.0.0.1/tcp/$((port + 2001))/p2p/$beta_id"
        alpha="$node_pid"
        KEEP_DIR=1 start_kith "$work/node-beta" $((port + 1)) beta "" \
            --peer "alpha=/ip4/127.0.0.1/tcp/$((port + 2000))/p2p/$alpha_id"
        beta="$node_pid"
        run federation federation --target "http://127.0.0.1:$port" \
            --data-dir "$work/node-alpha" --server-name alpha \
            --receiver-target "http://127.0.0.1:$((port + 1))" \
            --receiver-data-dir "$work/node-beta" --receiver-server-name beta \
            --pid "$alpha" --pid "$beta" --duration 10 --drain-timeout 5
        stop_all
        ;;
    *)
        echo "unknown scenario $scenario (idle, throughput, latency, federation)" >&2
        exit 2
        ;;
    esac
done

section="$results/section.md"
{
    echo "Measured $(date -u +'%Y-%m-%d %H:%M UTC') at commit \`$(commit)\` by \`bench/kith.sh ${*:-}\`"
    echo "on $(machine); node and kith-load release builds on the same machine."
    echo
    "$load" targets "$results"
    for name in idle-sqlite-1000 idle-sqlite throughput-sqlite throughput-postgres latency-sqlite latency-sqlite-1000 federation; do
        [ -f "$results/$name.json" ] || continue
        echo
        echo "**$name** (load average $(cat "$results/$name.load") before the run):"
        echo
        echo '```'
        echo "\$ $(sed "s|$work|\$KITH_BENCH_DIR|g" "$results/$name.cmd")"
        cat "$results/$name.txt"
        echo '```'
    done
} >"$section"
splice_doc kith "$section"
echo "results in $results; docs/benchmarks.md updated" >&2
