#!/usr/bin/env bash
# A/B of builds of the split deployment against the reference server, on fresh processes:
# each round runs the reference, then every build in turn as `tools/cluster/up.sh` (rooms in
# memory, one worker thread per service), at the same offered load, and prints each run's
# CPU s per million deliveries (both edges and nats-server for split), p50, p99, lost and
# reordered, then the medians. The builds alternate so that a slow minute of the machine
# falls on all of them.
#
#   tools/bench/ab.sh [-r ROUNDS] [-n ROOMS] [-s SECONDS] LABEL=BINARY ...
#
# Defaults: 5 rounds, 100 rooms of 4 players at 50 notes/s (60,000 deliveries/s), 5 s per run.
# A label is letters, digits and underscores; a build's extra environment goes in
# AB_ENV_<LABEL> (space-separated NAME=value words).
# Runs are appended as JSON lines to $AB_RESULTS (default target/bench/ab.jsonl). The load
# generator is target/release/loadgen (cargo build --release -p loadgen). The deployment
# runs in target/bench/ab-cluster on ports of its own, beside a `make up`: edges on 3961 and
# 3962, NATS on 4360, the MongoDB-wire server on 27360, the reference server on 3960.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh

ROUNDS=5 ROOMS=100 SECS=5
while getopts "r:n:s:" opt; do
    case $opt in
        r) ROUNDS=$OPTARG ;;
        n) ROOMS=$OPTARG ;;
        s) SECS=$OPTARG ;;
        *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || { echo "usage: $0 [-r ROUNDS] [-n ROOMS] [-s SECONDS] LABEL=BINARY ..." >&2; exit 2; }

for build in "$@"; do
    label=${build%%=*} bin=${build#*=}
    [[ $label =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { echo "label '$label': letters, digits and _ only" >&2; exit 2; }
    [ -x "$bin" ] || { echo "no binary at $bin" >&2; exit 1; }
done
LG=target/release/loadgen
[ -x "$LG" ] || { echo "no $LG: cargo build --release -p loadgen" >&2; exit 1; }
RESULTS=${AB_RESULTS:-target/bench/ab.jsonl}
REF_PORT=3960
export RUN_DIR=target/bench/ab-cluster NATS_PORT=4360 MONGO_PORT=27360 EDGE1_PORT=3961 \
    EDGE2_PORT=3962 ROOMS_ADMIN=127.0.0.1:9361 PRESENCE_ADMIN=127.0.0.1:9362 \
    EDGE1_ADMIN=127.0.0.1:9363 EDGE2_ADMIN=127.0.0.1:9364
mkdir -p "$(dirname "$RESULTS")"
export P2PIANO_MAX_CONNECTIONS_PER_IP=0 P2PIANO_ROOM_STORE=memory
first_run=0
[ -f "$RESULTS" ] && first_run=$(wc -l < "$RESULTS")

REF_PID=
cleanup() {
    [ -n "$REF_PID" ] && kill "$REF_PID" 2>/dev/null || true
    tools/cluster/down.sh >/dev/null 2>&1 || true
}
trap cleanup EXIT

fanout() {
    local label=$1 targets=$2 pids=$3
    "$LG" fanout --rooms "$ROOMS" --users 4 --rate 50 --duration "$SECS" --concurrency 128 \
        --targets "$targets" --server-pid "$pids" --label "$label" --json "$RESULTS" \
        --timeout 240 > /dev/null
}

for round in $(seq "$ROUNDS"); do
    "$LG" reference-server --port "$REF_PORT" > /dev/null 2>&1 &
    REF_PID=$!
    wait_url "http://127.0.0.1:$REF_PORT/health"
    fanout reference "http://127.0.0.1:$REF_PORT" "$REF_PID"
    kill "$REF_PID"; wait "$REF_PID" 2>/dev/null || true; REF_PID=
    for build in "$@"; do
        label=${build%%=*} bin=${build#*=}
        env_var="AB_ENV_$label"
        # shellcheck disable=SC2086 # the variable holds NAME=value words on purpose
        start_split /dev/null ${!env_var:-} P2PIANO_BIN="$bin"
        fanout "$label" "http://127.0.0.1:$EDGE1_PORT,http://127.0.0.1:$EDGE2_PORT" "$E1,$E2,$NATS"
    done
    tools/cluster/down.sh > /dev/null 2>&1 || true
    echo "round $round of $ROUNDS done" >&2
done

python3 - "$RESULTS" "$first_run" <<'PY'
import json
import statistics
import sys

path, skip = sys.argv[1], int(sys.argv[2])
runs = {}
with open(path) as f:
    lines = f.readlines()[skip:]
for line in lines:
    d = json.loads(line)
    r = d["results"]
    lat = r["latency_us"]
    runs.setdefault(d["label"], []).append(r)
    print(f"{d['label']:>12}  CPU s/M {r['server_cpu_s_per_million']:6.2f}"
          f"  p50 {lat['p50'] / 1000:6.2f} ms  p99 {lat['p99'] / 1000:6.2f} ms"
          f"  delivered {r['delivered']}/{r['expected_deliveries']}"
          f"  lost {r['lost']}  reordered {r['reordered']}")
ref = statistics.median(r["server_cpu_s_per_million"] for r in runs["reference"])
print("medians:")
for label, rs in runs.items():
    cpu = statistics.median(r["server_cpu_s_per_million"] for r in rs)
    p99 = statistics.median(r["latency_us"]["p99"] for r in rs) / 1000
    print(f"{label:>12}  CPU s/M {cpu:6.2f} ({cpu / ref:.2f} x the reference)  p99 {p99:6.2f} ms")
PY
