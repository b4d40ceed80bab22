#!/usr/bin/env bash
# How long a backlog of N messages (default 10,000) takes to drain from alpha's outbox once beta
# comes back: starts two nodes on loopback, kills beta, sends N messages alice@alpha -> bob@beta
# over REST (each acknowledged as stored on alpha), restarts beta, and times until alpha's outbox
# is empty and bob's mailbox holds all N.
#
#   bench/federation-drain.sh [N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap stop_all EXIT
count="${1:-10000}"
build
dir="$work/drain"
rm -rf "$dir"
mkdir -p "$dir"
alpha_id="$("$kith" id --data-dir "$dir/alpha")"
beta_id="$("$kith" id --data-dir "$dir/beta")"
start_beta() {
    KEEP_DIR=1 start_kith "$dir/beta" 18402 beta "" --peer "alpha=/ip4/127.0.0.1/tcp/20401/p2p/$alpha_id"
    beta_pid="$node_pid"
}
KEEP_DIR=1 start_kith "$dir/alpha" 18401 alpha "" --peer "beta=/ip4/127.0.0.1/tcp/20402/p2p/$beta_id"
start_beta
register() {
    curl -sf "localhost:$1/api/v1/register" -H 'content-type: application/json' \
        -d "{\"username\":\"$2\",\"password\":\"correct horse battery\"}"
}
token="$(register 18401 alice | sed 's/.*"token":"\([^"]*\)".*/\1/')"
register 18402 bob >/dev/null
kill -9 "$beta_pid"
python3 - "$dir" "$token" "$count" <<'PY'
import http.client, json, sqlite3, sys, time
dir, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", 18401)
start = time.time()
for i in range(count):
    body = json.dumps({"senderId": "alice", "receiverId": "bob@beta", "message": f"backlog {i}"})
    conn.request("POST", "/api/v1/messages", body, {"authorization": "Bearer " + token, "content-type": "application/json"})
    answer = conn.getresponse()
    answer.read()
    assert answer.status == 201, answer.status
print(f"sent {count} while beta was down in {time.time() - start:.1f} s")
PY
outbox() { python3 -c "import sqlite3,sys; print(sqlite3.connect('file:$dir/alpha/kith.db?mode=ro', uri=True).execute('select count(*) from outbox').fetchone()[0])"; }
echo "alpha's outbox holds $(outbox) envelopes; restarting beta"
started=$(date +%s.%N)
start_beta
listening=$(date +%s.%N)
while [ "$(outbox)" != 0 ]; do sleep 0.05; done
ended=$(date +%s.%N)
echo "beta listened $(python3 -c "print(f'{$listening - $started:.2f}')") s after its restart (polled every 0.1 s); the outbox emptied $(python3 -c "print(f'{$ended - $listening:.2f}')") s later"
stored=$(python3 -c "import sqlite3; print(sqlite3.connect('file:$dir/beta/kith.db?mode=ro', uri=True).execute(\"select count(*) from messages where owner_id='bob@beta'\").fetchone()[0])")
echo "drained in $(python3 -c "print(f'{$ended - $started:.2f}')") s after beta's restart (including its start-up); bob's mailbox holds $stored"
