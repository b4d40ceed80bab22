#!/usr/bin/env bash
# The scale-out figures: a node of several instances on PostgreSQL shards and Redis, driven by
# several kith-load processes (one process has 20,000 open files here, so 100,000 sockets need
# several instances and several load processes).
#
#   bench/cluster.sh            # idle and traffic
#   bench/cluster.sh idle       # 100,000 idle authenticated WebSockets over 6 instances
#   bench/cluster.sh traffic    # 1 instance beside 2 instances, both on 2 shards, same run
#
# idle: CONNECTIONS (100000) over INSTANCES (6) instances on 2 shards, opened by LOADERS (6)
# kith-load processes at once, each spreading its connections over every instance. Reports
# the time from the first session to the last (connect rate), the instances' RSS per
# connection, Redis memory per online user, and what failed.
# traffic: throughput at full speed and latency at 200 messages/s with 2,000 clients, for one
# instance and then two (every pair's sender on one instance, its receiver on the other), each
# on 2 fresh shards and a fresh Redis prefix. The difference in p50 is the cross-instance push.
#
# Results go to $KITH_BENCH_DIR/cluster-<time>/ and into docs/benchmarks.md (between the
# cluster:begin/cluster:end markers). Environment as bench/kith.sh, plus KITH_BENCH_REDIS_URL.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'stop_all; rm -rf "$work/cluster"' EXIT

scenarios=("$@")
[ ${#scenarios[@]} -eq 0 ] && scenarios=(idle traffic)
build
results="$work/cluster-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$results"
redis_url="${KITH_BENCH_REDIS_URL:-redis://127.0.0.1:6379}"
pg_server="${pg_url%/*}"
server=bench.cluster
base=18500
shards=2
shard_urls=()

# fresh_shards: drops and creates the shard databases; fills shard_urls.
fresh_shards() {
    shard_urls=()
    for s in $(seq 0 $((shards - 1))); do
        psql -q "$pg_server/postgres" -c "DROP DATABASE IF EXISTS kith_bench_shard_$s WITH (FORCE)" >/dev/null
        psql -q "$pg_server/postgres" -c "CREATE DATABASE kith_bench_shard_$s" >/dev/null
        shard_urls+=("$pg_server/kith_bench_shard_$s")
    done
}

# start_instances COUNT [serve flags…]: a fresh node of COUNT instances; sets instance_pids,
# targets (kith-load --target flags) and prefix (its Redis key prefix).
start_instances() {
    local count="$1" i
    shift
    rm -rf "$work/cluster"
    mkdir -p "$work/cluster/secrets"
    prefix="kith-bench:$(date +%s%N):"
    instance_pids=()
    targets=()
    local shard_flags=()
    for url in "${shard_urls[@]}"; do shard_flags+=(--shard "$url"); done
    for i in $(seq 0 $((count - 1))); do
        mkdir -p "$work/cluster/i$i"
        # One at a time: the first makes the shared key and secret and migrates the shards.
        KEEP_DIR=1 start_kith "$work/cluster/i$i" $((base + i)) "$server" "" \
            "${shard_flags[@]}" --redis-url "$redis_url" --redis-prefix "$prefix" --instance-id "i$i" \
            --node-key-file "$work/cluster/secrets/node.key" \
            --token-secret-file "$work/cluster/secrets/token-secret.key" \
            --metrics-listen "127.0.0.1:$((base + 200 + i))" "$@"
        instance_pids+=("$node_pid")
        targets+=(--target "http://127.0.0.1:$((base + i))")
    done
}

# What every kith-load run against the cluster needs to provision users.
files_flags() {
    local flags=(--data-dir "$work/cluster/i0" --server-name "$server"
        --token-secret-file "$work/cluster/secrets/token-secret.key")
    for url in "${shard_urls[@]}"; do flags+=(--shard "$url"); done
    printf '%s\n' "${flags[@]}"
}

pid_flags() { for pid in "${instance_pids[@]}"; do printf -- '--pid\n%s\n' "$pid"; done; }

rss_sum() {
    local total=0 pid
    for pid in "${instance_pids[@]}"; do
        total=$((total + $(awk '/VmRSS/ { print $2 }' "/proc/$pid/status") * 1024))
    done
    echo "$total"
}

# Live sessions over every instance (their /metrics).
sessions_sum() {
    local total=0 i n
    for i in $(seq 0 $((${#instance_pids[@]} - 1))); do
        n="$(curl -fsS "http://127.0.0.1:$((base + 200 + i))/metrics" 2>/dev/null |
            awk '$1 == "kith_sessions" { print $2 }')"
        total=$((total + ${n:-0}))
    done
    echo "$total"
}

redis_memory() { redis-cli -u "$redis_url" info memory | awk -F: '/^used_memory:/ { print $2 }' | tr -d '\r'; }

idle() {
    local connections="${CONNECTIONS:-100000}" instances="${INSTANCES:-6}" loaders="${LOADERS:-6}"
    local per=$(((connections + loaders - 1) / loaders)) hold="${HOLD:-240}" j
    connections=$((per * loaders))
    fresh_shards
    # Six instances on two shards stay under PostgreSQL's 100 connections.
    start_instances "$instances" --pg-writers 1 --db-readers 2 --max-connections 20000
    wait_quiet
    load1 >"$results/idle.load"
    local rss_before redis_before
    rss_before="$(rss_sum)"
    redis_before="$(redis_memory)"
    mapfile -t files < <(files_flags)
    local loader_pids=()
    for j in $(seq 0 $((loaders - 1))); do
        "$load" idle "${targets[@]}" "${files[@]}" --connections "$per" --duration "$hold" \
            --user-prefix "idle$j-" --source-addrs 32 --quiet --json-out "$results/idle-$j.json" \
            >"$results/idle-$j.txt" 2>&1 &
        loader_pids+=("$!")
    done
    echo "kith-load idle ${targets[*]} $(echo "${files[@]}" | sed "s|$work|\$KITH_BENCH_DIR|g") --connections $per --duration $hold --user-prefix idle\$j- --source-addrs 32   # x $loaders at once" >"$results/idle.cmd"
    # From the first session to the last: the connect rate of the whole node.
    local first="" last="" n=0 peak=0
    for _ in $(seq 1 $((hold * 4))); do
        n="$(sessions_sum)"
        [ "$n" -gt "$peak" ] && peak="$n"
        [ -z "$first" ] && [ "$n" -gt 0 ] && first="$(date +%s.%N)"
        if [ "$n" -ge "$connections" ]; then
            last="$(date +%s.%N)"
            break
        fi
        sleep 0.25
    done
    sleep 5
    local rss_connected redis_connected
    rss_connected="$(rss_sum)"
    redis_connected="$(redis_memory)"
    n="$(sessions_sum)"
    local per_instance=()
    for pid in "${instance_pids[@]}"; do
        per_instance+=("$(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "/proc/$pid/status")")
    done
    for pid in "${loader_pids[@]}"; do wait "$pid" || true; done
    {
        echo "connections asked: $connections ($loaders kith-load processes x $per) over $instances instances, $shards shards"
        echo "sessions at once:  $n (peak seen $peak)"
        if [ -n "$last" ]; then
            awk -v a="$first" -v b="$last" -v n="$connections" \
                'BEGIN { printf "connect:           %.1f s from first to last session: %.0f connections/s\n", b - a, n / (b - a) }'
        else
            echo "connect:           not all connected within ${hold} s"
        fi
        awk -v a="$rss_before" -v b="$rss_connected" -v n="$n" \
            'BEGIN { printf "instances RSS:     %.0f MiB before, %.0f MiB connected: %.1f KiB per connection\n", a / 1048576, b / 1048576, (b - a) / n / 1024 }'
        echo "RSS per instance:  ${per_instance[*]} MiB"
        awk -v a="$redis_before" -v b="$redis_connected" -v n="$n" \
            'BEGIN { printf "Redis used_memory: +%.1f MiB: %.0f bytes per online user\n", (b - a) / 1048576, (b - a) / n }'
        local failed=0 disconnected=0 f
        for f in "$results"/idle-*.json; do
            failed=$((failed + $(json_number "$f" failed)))
            disconnected=$((disconnected + $(json_number "$f" disconnected)))
        done
        echo "failed to connect: $failed; closed by the node while held: $disconnected"
    } >"$results/idle.txt"
    cat "$results/idle.txt"
    stop_all
}

# One kith-load run against the running cluster: NAME SCENARIO ARGS…
run() {
    local name="$1"
    shift
    mapfile -t files < <(files_flags)
    mapfile -t pids < <(pid_flags)
    wait_quiet
    load1 >"$results/$name.load"
    echo "kith-load $* ${targets[*]} $(echo "${files[@]}" | sed "s|$work|\$KITH_BENCH_DIR|g") --pid …" >"$results/$name.cmd"
    echo "== $name" >&2
    "$load" "$@" "${targets[@]}" "${files[@]}" "${pids[@]}" --quiet --json-out "$results/$name.json" |
        tee "$results/$name.txt"
}

traffic() {
    local count dir
    for count in 1 2; do
        dir="$results/instances-$count"
        mkdir -p "$dir"
        fresh_shards
        start_instances "$count"
        run "throughput-$count" throughput --user-prefix tp
        cp "$results/throughput-$count.json" "$dir/throughput.json"
        stop_all
        fresh_shards
        start_instances "$count"
        run "latency-$count" latency --connections 2000 --pairs 100 --rate 200 --duration 20 --user-prefix lat
        cp "$results/latency-$count.json" "$dir/latency.json"
        stop_all
    done
}

for scenario in "${scenarios[@]}"; do
    case "$scenario" in
    idle) idle ;;
    traffic) traffic ;;
    *)
        echo "unknown scenario $scenario (idle, traffic)" >&2
        exit 2
        ;;
    esac
done

section="$results/section.md"
{
    echo "Measured $(date -u +'%Y-%m-%d %H:%M UTC') at commit \`$(commit)\` by \`bench/cluster.sh ${*:-}\`"
    echo "on $(machine); instances, PostgreSQL, Redis and kith-load on the same machine."
    if [ -f "$results/idle.txt" ]; then
        echo
        echo "**idle** (load average $(cat "$results/idle.load") before the run):"
        echo
        echo '```'
        echo "\$ $(cat "$results/idle.cmd")"
        cat "$results/idle.txt"
        echo '```'
    fi
    if [ -d "$results/instances-2" ]; then
        echo
        "$load" table "1 instance=$results/instances-1" "2 instances=$results/instances-2"
        for name in throughput-1 throughput-2 latency-1 latency-2; do
            echo
            echo "**$name** (load average $(cat "$results/$name.load") before the run):"
            echo
            echo '```'
            echo "\$ $(cat "$results/$name.cmd")"
            cat "$results/$name.txt"
            echo '```'
        done
    fi
} >"$section"
splice_doc cluster "$section"
echo "results in $results; docs/benchmarks.md updated" >&2
