#!/usr/bin/env bash
# Instructions the node executes per message, counted by valgrind's callgrind: a figure that
# does not depend on how busy the machine is (wall-clock rates on these shared machines do),
# so a change in the cost of a message shows as a number, and CI can hold the line.
#
#   bench/instructions.sh              # measure, print, compare with bench/instructions.baseline
#   bench/instructions.sh --update     # measure and write the baseline
#   bench/instructions.sh --annotate   # also print where the instructions went
#
# The workload ("paced"): a fresh SQLite node under callgrind, PAIRS (2) sender→receiver pairs
# over WebSockets sending RATE (4) messages a second in all for SECONDS (20), each received,
# acknowledged (delivered) and its receipt pushed back: at this rate every message and every
# receipt is a commit of its own, the low-rate cost the benchmarks issue names. Counting
# starts once the clients are connected (callgrind_control --zero) and stops after the drain.
# It fails (exit 1) when instructions per message exceed the baseline by more than
# KITH_INSTRUCTIONS_MARGIN (default 0.10, i.e. 10 %), or when a message was lost.
#
# Environment: CARGO_TARGET_DIR, KITH_BENCH_DIR (/tmp/kith-bench), KITH_BENCH_SKIP_BUILD.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_all EXIT

mode=check
annotate=false
for arg in "$@"; do
    case "$arg" in
    --update) mode=update ;;
    --annotate) annotate=true ;;
    *) echo "bench/instructions.sh: unknown option $arg" >&2; exit 2 ;;
    esac
done
command -v valgrind >/dev/null || { echo "bench/instructions.sh needs valgrind (Debian package valgrind)" >&2; exit 2; }
build
baseline="$root/bench/instructions.baseline"
margin="${KITH_INSTRUCTIONS_MARGIN:-0.10}"
pairs="${PAIRS:-2}" rate="${RATE:-4}" seconds="${SECONDS_OF_SENDING:-20}"
dir="$work/instructions"
rm -rf "$dir"
mkdir -p "$dir/node"
port=18450
server=kith.instructions

# The node under callgrind (slow to start: up to a minute).
KITH_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" \
    "$kith" serve --listen "127.0.0.1:$port" --data-dir "$dir/node" --server-name "$server" \
    --p2p-listen "/ip4/127.0.0.1/tcp/$((port + 2000))" --message-rate 0 --account-rate 0 --ws-connect-address-rate 0 \
    >"$dir/node.log" 2>&1 &
node_pid=$!
started_pids+=("$node_pid")
for _ in $(seq 1 600); do
    ss -ltnH "sport = :$port" | grep -q LISTEN && break
    kill -0 "$node_pid" 2>/dev/null || { cat "$dir/node.log" >&2; exit 1; }
    sleep 0.1
done

# Clients connect and are provisioned first (a warm-up of one second), then counting starts.
"$load" latency --target "http://127.0.0.1:$port" --data-dir "$dir/node" --server-name "$server" \
    --connections $((pairs * 2)) --pairs "$pairs" --rate "$rate" --duration "$seconds" --warmup 0 \
    --settle 3 --quiet --json-out "$dir/report.json" >"$dir/report.txt" &
load_pid=$!
# Zero the counters once the clients are connected (the settle time after connecting).
for _ in $(seq 1 600); do
    [ "$(ss -tnH state established "dport = :$port" | wc -l)" -ge $((pairs * 2)) ] && break
    sleep 0.1
done
sleep 1
callgrind_control --zero "$node_pid" >/dev/null
wait "$load_pid"
callgrind_control --dump=measured "$node_pid" >/dev/null
stop_all

dump="$(ls -t "$dir"/callgrind.out* | head -1)"
for f in "$dir"/callgrind.out*; do
    grep -q '^desc: Trigger: dump measured' "$f" 2>/dev/null && dump="$f"
done
total="$(awk '/^(summary|totals):/ { print $2; exit }' "$dump")"
received="$(json_number "$dir/report.json" received)"
lost="$(json_number "$dir/report.json" lost)"
duplicated="$(json_number "$dir/report.json" duplicated)"
if [ "${received:-0}" -eq 0 ] || [ "${lost:-1}" -ne 0 ] || [ "${duplicated:-1}" -ne 0 ]; then
    echo "bench/instructions.sh: the run was not clean (received ${received:-?}, lost ${lost:-?}, twice ${duplicated:-?}):" >&2
    cat "$dir/report.txt" >&2
    exit 1
fi
per=$((total / received))
echo "paced: $received messages (sent, pushed, acknowledged, receipt pushed), $total instructions: $per per message"
if $annotate; then
    callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | head -60
fi

if [ "$mode" = update ]; then
    {
        echo "# Instructions per message of bench/instructions.sh (paced scenario), measured at"
        echo "# $(commit) on $(date -u +%Y-%m-%d). CI fails when a change makes this $margin more."
        echo "paced $per"
    } >"$baseline"
    echo "baseline written to $baseline"
    exit 0
fi
[ -f "$baseline" ] || { echo "no baseline yet: bench/instructions.sh --update" >&2; exit 1; }
base="$(awk '$1 == "paced" { print $2 }' "$baseline")"
awk -v now="$per" -v base="$base" -v margin="$margin" 'BEGIN {
    ratio = now / base
    printf "baseline %d per message: now %.3fx\n", base, ratio
    if (ratio > 1 + margin) {
        printf "instructions per message grew by %.1f %% (more than %.0f %%): find the cost, or run bench/instructions.sh --update and say why in the commit\n", (ratio - 1) * 100, margin * 100 > "/dev/stderr"
        exit 1
    }
}'
