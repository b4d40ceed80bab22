#!/usr/bin/env bash
# Before and after in one run: the same scenarios against two kith binaries, alternating
# (A B A B …), so that both meet the same machine. On these shared machines only ratios within
# one run mean anything; this prints them.
#
#   bench/ab.sh BEFORE_KITH AFTER_KITH [ROUNDS]     # e.g. a binary built at the parent commit
#
# Scenarios (SCENARIOS, default "throughput paced federation"):
#   throughput  one SQLite node, 50 pairs at full speed for 10 s: messages/s, CPU per 1,000
#   throughput-pg  the same on PostgreSQL (a fresh schema each run; KITH_BENCH_POSTGRES_URL)
#   paced       one SQLite node, 2,000 clients, 100 pairs at 200/s for 20 s: CPU per 1,000, p50/p99/p99.9
#   sustained   one SQLite node, 10,000 clients, 1,000 pairs at 5,000/s for 20 s: the same figures
#   federation  two SQLite nodes, alice@alpha → bob@beta at full speed for 10 s: messages/s
#   federation-paced  the same two nodes at a set 5,000/s (FEDERATION_RATE) for 20 s: p50/p99/p99.9
# kith-load is this tree's (built if needed); it provisions users with the binary under test, so
# each side's own migrations make its schema. Results: $KITH_BENCH_DIR/ab/*.json and a table.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_all EXIT
[ $# -ge 2 ] || { sed -n 2,12p "$0" >&2; exit 2; }
binaries=("$1" "$2")
rounds="${3:-2}"
scenarios=(${SCENARIOS:-throughput paced federation})
build
out="$work/ab"
rm -rf "$out"
mkdir -p "$out"
port=18700

one() {
    local scenario="$1" side="$2" round="$3"
    kith="${binaries[$side]}"
    local json="$out/$scenario-$side-$round.json"
    wait_quiet
    case "$scenario" in
    throughput)
        start_kith "$work/ab-node" "$port" kith.ab ""
        "$load" throughput --kith-bin "$kith" --target "http://127.0.0.1:$port" --data-dir "$work/ab-node" --server-name kith.ab \
            --pairs 50 --duration 10 --pid "$node_pid" --quiet --json-out "$json" >/dev/null
        ;;
    throughput-pg)
        local url
        url="$(fresh_pg_schema ab)"
        start_kith "$work/ab-node" "$port" kith.ab "$url"
        "$load" throughput --kith-bin "$kith" --target "http://127.0.0.1:$port" --data-dir "$work/ab-node" --server-name kith.ab \
            --database-url "$url" --pairs 50 --duration 10 --pid "$node_pid" --quiet --json-out "$json" >/dev/null
        ;;
    paced)
        start_kith "$work/ab-node" "$port" kith.ab ""
        "$load" latency --kith-bin "$kith" --target "http://127.0.0.1:$port" --data-dir "$work/ab-node" --server-name kith.ab \
            --connections 2000 --pairs 100 --rate 200 --duration 20 --pid "$node_pid" --quiet --json-out "$json" >/dev/null
        ;;
    sustained)
        start_kith "$work/ab-node" "$port" kith.ab ""
        "$load" latency --kith-bin "$kith" --target "http://127.0.0.1:$port" --data-dir "$work/ab-node" --server-name kith.ab \
            --connections 10000 --pairs 1000 --rate 5000 --duration 20 --pid "$node_pid" --quiet --json-out "$json" >/dev/null
        ;;
    federation | federation-paced)
        local paced=(--duration 10)
        [ "$scenario" = federation-paced ] && paced=(--rate "${FEDERATION_RATE:-5000}" --duration 20)
        rm -rf "$work/ab-alpha" "$work/ab-beta"
        local alpha_id beta_id alpha
        alpha_id="$("$kith" id --data-dir "$work/ab-alpha")"
        beta_id="$("$kith" id --data-dir "$work/ab-beta")"
        KEEP_DIR=1 start_kith "$work/ab-alpha" "$port" alpha "" --peer "beta=/ip4/127.0.0.1/tcp/$((port + 2001))/p2p/$beta_id"
        alpha="$node_pid"
        KEEP_DIR=1 start_kith "$work/ab-beta" $((port + 1)) beta "" --peer "alpha=/ip4/127.0.0.1/tcp/$((port + 2000))/p2p/$alpha_id"
        "$load" federation --kith-bin "$kith" --target "http://127.0.0.1:$port" --data-dir "$work/ab-alpha" --server-name alpha \
            --receiver-target "http://127.0.0.1:$((port + 1))" --receiver-data-dir "$work/ab-beta" \
            --receiver-server-name beta --pid "$alpha" --pid "$node_pid" --drain-timeout 5 "${paced[@]}" \
            --quiet --json-out "$json" >/dev/null
        ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
    esac
    stop_all
    started_pids=()
}

for scenario in "${scenarios[@]}"; do
    for round in $(seq 1 "$rounds"); do
        for side in 0 1; do
            echo "== $scenario round $round: ${binaries[$side]}" >&2
            one "$scenario" "$side" "$round"
        done
    done
done

# One line per scenario and side: the mean over rounds of each figure, and after/before.
python3 - "$out" "${scenarios[@]}" <<'EOF'
import json, sys, glob, statistics
out, scenarios = sys.argv[1], sys.argv[2:]
fields = {
    "throughput": ["throughput", "server.cpuSecondsPer1000Messages", "server.storageBytesPerMessage"],
    "throughput-pg": ["throughput", "server.cpuSecondsPer1000Messages"],
    "paced": ["server.cpuSecondsPer1000Messages", "server.storageBytesPerMessage", "latencyMs.p50", "latencyMs.p99", "latencyMs.p999"],
    "sustained": ["throughput", "server.cpuSecondsPer1000Messages", "server.storageBytesPerMessage", "latencyMs.p50", "latencyMs.p90", "latencyMs.p99", "latencyMs.p999"],
    "federation": ["throughput", "server.cpuSecondsPer1000Messages", "server.storageBytesPerMessage", "latencyMs.p99"],
    "federation-paced": ["throughput", "server.cpuSecondsPer1000Messages", "server.storageBytesPerMessage", "latencyMs.p50", "latencyMs.p99", "latencyMs.p999"],
}
def find(d, path):
    for key in path.split("."):
        d = d.get(key) if isinstance(d, dict) else None
    return d if isinstance(d, (int, float)) else None
print("| scenario | figure | before | after | after/before |")
print("|---|---|---:|---:|---:|")
for s in scenarios:
    for f in fields[s]:
        vals = []
        for side in (0, 1):
            xs = [find(json.load(open(p)), f) for p in sorted(glob.glob(f"{out}/{s}-{side}-*.json"))]
            xs = [x for x in xs if x is not None]
            vals.append(statistics.mean(xs) if xs else None)
        b, a = vals
        ratio = f"{a / b:.2f}" if a is not None and b else "?"
        fmt = lambda v: "?" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.3f}")
        print(f"| {s} | {f} | {fmt(b)} | {fmt(a)} | {ratio} |")
EOF
