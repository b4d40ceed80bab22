# Shared by bench/kith.sh and bench/compare.sh: building, waiting for a quiet machine,
# starting and stopping kith nodes, recording the machine, splicing results into
# docs/benchmarks.md. Source it; it expects `set -euo pipefail`.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="$target_dir/release"
kith="$bin/kith"
load="$bin/kith-load"
pg_url="${KITH_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
work="${KITH_BENCH_DIR:-/tmp/kith-bench}"
# A run starts only when the 1-minute load average is below this (and no compiler runs).
quiet_load="${KITH_BENCH_QUIET_LOAD:-1.0}"
started_pids=()

build() {
    if [ -z "${KITH_BENCH_SKIP_BUILD:-}" ]; then
        (cd "$root" && cargo build --release --locked -p kith-node -p kith-bench)
    fi
}

load1() { cut -d' ' -f1 /proc/loadavg; }

# How many compilers and linkers are running (anyone's).
compilers() {
    local n=0 name
    for name in rustc cargo cc cc1 ld ld.lld collect2; do
        n=$((n + $(pgrep -c -x "$name" || true)))
    done
    echo "$n"
}

# Waits (up to 15 minutes, checking every 30 s) until no compiler or linker runs and the load
# average is below $quiet_load: figures measured on a busy machine measure the machine.
# KITH_BENCH_NO_WAIT=1 measures at once (the load average is recorded either way).
wait_quiet() {
    [ -n "${KITH_BENCH_NO_WAIT:-}" ] && return 0
    for _ in $(seq 1 30); do
        if [ "$(compilers)" -eq 0 ] &&
            awk -v l="$(load1)" -v q="$quiet_load" 'BEGIN { exit !(l < q) }'; then
            return 0
        fi
        echo "waiting for a quiet machine (load $(load1); $(compilers) compiler processes)" >&2
        sleep 30
    done
    echo "the machine did not become quiet in 15 minutes; measuring anyway (load $(load1))" >&2
}

# start_kith DIR PORT NAME [DATABASE_URL] [extra serve flags…]: starts a fresh node and sets
# $node_pid. Benchmarks turn the per-user send limit, the account limit and the per-address
# WebSocket handshake limit off (all load comes from a few loopback addresses).
start_kith() {
    local dir="$1" port="$2" name="$3" url="${4:-}"
    shift 4 || shift $#
    # KEEP_DIR=1 keeps a data directory prepared beforehand (a node key made by `kith id`).
    [ -z "${KEEP_DIR:-}" ] && rm -rf "$dir"
    mkdir -p "$dir"
    # Federation listens on loopback too, at the client port + 2000.
    local args=(serve --listen "127.0.0.1:$port" --data-dir "$dir" --server-name "$name"
        --p2p-listen "/ip4/127.0.0.1/tcp/$((port + 2000))" --message-rate 0 --account-rate 0
        --ws-connect-address-rate 0)
    [ -n "$url" ] && args+=(--database-url "$url")
    KITH_LOG=warn "$kith" "${args[@]}" "$@" >"$dir/node.log" 2>&1 &
    node_pid=$!
    started_pids+=("$node_pid")
    for _ in $(seq 1 100); do
        ss -ltnH "sport = :$port" | grep -q LISTEN && return 0
        kill -0 "$node_pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "kith did not start; its log:" >&2
    cat "$dir/node.log" >&2
    return 1
}

stop_pid() {
    local pid="$1"
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
}

stop_all() {
    for pid in "${started_pids[@]}"; do stop_pid "$pid"; done
    started_pids=()
}

# A fresh PostgreSQL schema; prints a URL that uses it.
fresh_pg_schema() {
    local schema="kith_bench_$1"
    psql -q "$pg_url" -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema;" >/dev/null
    case "$pg_url" in
    *\?*) echo "$pg_url&options[search_path]=$schema" ;;
    *) echo "$pg_url?options[search_path]=$schema" ;;
    esac
}

machine() {
    local mem
    mem="$(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $mem RAM, Linux $(uname -r), open-file limit $(ulimit -n)"
}

commit() {
    local c
    c="$(git -C "$root" rev-parse --short HEAD)"
    git -C "$root" diff --quiet HEAD -- . ':!docs/benchmarks.md' || c="$c+uncommitted changes"
    echo "$c"
}

# splice_doc MARKER FILE: replaces what lies between <!-- MARKER:begin --> and
# <!-- MARKER:end --> in docs/benchmarks.md with FILE's contents.
splice_doc() {
    local marker="$1" file="$2" doc="$root/docs/benchmarks.md"
    if ! grep -q "<!-- $marker:begin -->" "$doc"; then
        printf '\n<!-- %s:begin -->\n<!-- %s:end -->\n' "$marker" "$marker" >>"$doc"
    fi
    awk -v begin="<!-- $marker:begin -->" -v end="<!-- $marker:end -->" -v file="$file" '
        $0 == begin { print; while ((getline line < file) > 0) print line; skip = 1; next }
        $0 == end { skip = 0 }
        !skip { print }
    ' "$doc" >"$doc.tmp" && mv "$doc.tmp" "$doc"
}

# A JSON field of a report (a dotted path), with jq-free sed: only for flat numbers we print.
json_number() {
    tr -d '\n ' <"$1" | grep -o "\"$2\":[-0-9.e+]*" | head -1 | cut -d: -f2
}
