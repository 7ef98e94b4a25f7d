#!/usr/bin/env bash
# `make bench`: measures p2piano against the speed-of-light reference server on this
# machine, in one run, and writes BENCHMARKS.md (tables, ratios) and the latency plot.
#
# Three targets, each started here on loopback and stopped at the end:
#   reference  `loadgen reference-server` (same protocol, no validation/bus/sessions)
#   all        `p2piano all` (in-process bus, memory stores)
#   split      tools/cluster/up.sh: nats-server, the MongoDB-wire server, rooms, presence
#              and two edges; every room has players on both edges, so every note crosses
#              from one edge to the other (over the relay links between the edges).
# Scenarios (tools/loadgen): idle sockets, a fan-out load sweep, a join storm, and a drain
# with reconnects (split only, last: it takes edge 1 down).
#
# Settings (environment): BENCH_DIR (target/bench), BENCH_SECS (fan-out run length, 5),
# BENCH_ROOMS (the sweep's room counts, "10 20 40 80 100 160 240", so that 12,000 and
# 60,000 deliveries/s are points of it), BENCH_IDLE (idle sockets, 15000), BENCH_JOINS
# (join-storm size, 500), BENCH_RECONNECT (sockets on the drained edge, 10000),
# BENCH_ROOM_STORE (the split deployment's rooms: memory, or mongo for the MongoDB-wire server),
# BENCH_REPEAT_ROOMS (the sweep's points that are run BENCH_REPEAT times in all, "20 100":
# 12,000 and 60,000 deliveries/s, where the targets are judged), BENCH_REPEAT (3).
# Every point of the sweep, the idle run and the join storm start on fresh processes.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tools/bench/lib.sh
source tools/bench/lib.sh

BENCH_DIR=${BENCH_DIR:-target/bench}
SECS=${BENCH_SECS:-5}
ROOMS=${BENCH_ROOMS:-10 20 40 80 100 160 240}
REPEAT_ROOMS=${BENCH_REPEAT_ROOMS:-20 100}
REPEAT=${BENCH_REPEAT:-3}
IDLE=${BENCH_IDLE:-15000}
JOINS=${BENCH_JOINS:-500}
RECONNECT=${BENCH_RECONNECT:-10000}
RESULTS="$BENCH_DIR/results.jsonl"
LG=target/release/loadgen
BIN=target/release/p2piano
REF_PORT=3950
ALL_PORT=3951
CLUSTER_DIR="$BENCH_DIR/cluster"
export RUN_DIR="$CLUSTER_DIR" NATS_PORT=4350 MONGO_PORT=27350 EDGE1_PORT=3952 EDGE2_PORT=3953 \
    ROOMS_ADMIN=127.0.0.1:9351 PRESENCE_ADMIN=127.0.0.1:9352 \
    EDGE1_ADMIN=127.0.0.1:9353 EDGE2_ADMIN=127.0.0.1:9354 P2PIANO_BIN="$BIN"
export RUST_LOG=${RUST_LOG:-warn}
# The load client's thousands of sockets come from 8 loopback addresses: the per-address
# connection cap (a protection, not what is measured) is off for the run.
export P2PIANO_MAX_CONNECTIONS_PER_IP=0
# The split deployment keeps its rooms in memory (`p2piano rooms` with
# P2PIANO_ROOM_STORE=memory; sessions stay in JetStream KV): the MongoDB-wire server on this
# machine is secantusdb, a Python stand-in for MongoDB that serves a few tens of writes per
# second, and every join and leave writes the room. What is measured is the edges, NATS and
# the services, not the stand-in. BENCH_ROOM_STORE=mongo measures with it instead.
export P2PIANO_ROOM_STORE=${BENCH_ROOM_STORE:-memory}

mkdir -p "$BENCH_DIR/logs"
rm -f "$RESULTS"
started=()

cleanup() {
    for pid in "${started[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    tools/cluster/down.sh >/dev/null 2>&1 || true
    wait 2>/dev/null || true
}
trap cleanup EXIT


echo "== building (release)"
cargo build --release -p p2piano -p loadgen

# The machine, for the report.
{
    printf '{"machine":{"cpu":"%s","cores":%s,"mem_gib":%s,"kernel":"%s","rustc":"%s","date":"%s","commit":"%s","nofile":"%s"}}\n' \
        "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')" \
        "$(nproc)" \
        "$(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)" \
        "$(uname -r)" \
        "$(rustc --version)" \
        "$(date -u +%Y-%m-%dT%H:%MZ)" \
        "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
        "$(ulimit -n)"
} >> "$RESULTS"

# Starts the three targets as fresh processes (stopping those of an earlier start): each
# measurement that compares CPU or memory gets processes with nothing left over from the one
# before (the leaves and sessions of the idle run's 15,000 sockets, for example).
start_targets() {
    for pid in "${started[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    started=()
    "$LG" reference-server --port "$REF_PORT" >> "$BENCH_DIR/logs/reference.log" 2>&1 &
    REF_PID=$!
    started+=("$REF_PID")
    PORT=$ALL_PORT P2PIANO_COOKIE_SECURE=false "$BIN" all >> "$BENCH_DIR/logs/all.log" 2>&1 &
    ALL_PID=$!
    started+=("$ALL_PID")
    start_split "$BENCH_DIR/logs/up.log"
    wait_url "http://127.0.0.1:$REF_PORT/health"
    wait_url "http://127.0.0.1:$ALL_PORT/health"
    # Memory is per edge process; CPU counts everything a delivery goes through (for the
    # split deployment: both edges and nats-server).
    PIDS[reference]=$REF_PID
    PIDS[all]=$ALL_PID
    PIDS[split]="$E1,$E2"
    CPU_PIDS[reference]=$REF_PID
    CPU_PIDS[all]=$ALL_PID
    CPU_PIDS[split]="$E1,$E2,$NATS"
}

# target label -> loadgen options
declare -A TARGET PIDS CPU_PIDS CONC
TARGET[reference]="http://127.0.0.1:$REF_PORT"
TARGET[all]="http://127.0.0.1:$ALL_PORT"
TARGET[split]="http://127.0.0.1:$EDGE1_PORT,http://127.0.0.1:$EDGE2_PORT"
# Joins in flight during set-up (lower it for the split deployment with
# BENCH_ROOM_STORE=mongo: the stand-in times out under a deep queue).
CONC[reference]=128
CONC[all]=128
CONC[split]=128

run() {
    local label=$1; shift
    echo "-- $label: loadgen $*"
    "$LG" "$@" --label "$label" --json "$RESULTS" --timeout 240 | sed 's/^/   /'
}

echo "== starting the reference server, p2piano all, and the split deployment"
start_targets

# Idle first, on fresh processes: memory freed by earlier runs stays in a process's RSS
# and would be reused by these sockets, hiding their cost. The split deployment's sockets
# are spread over both edges; the figure is their summed growth per socket.
echo "== idle: $IDLE sockets, 4 per room"
for t in reference all split; do
    run "$t" idle --conns "$IDLE" --per-room 4 --hold 2 \
        --targets "${TARGET[$t]}" --server-pid "${PIDS[$t]}"
done

# One point of the sweep: fresh processes, then the three targets in turn.
fanout_point() {
    start_targets
    for t in reference all split; do
        run "$t" fanout --rooms "$1" --users 4 --rate 50 --duration "$SECS" \
            --targets "${TARGET[$t]}" --server-pid "${CPU_PIDS[$t]}" --concurrency "${CONC[$t]}"
    done
}

echo "== fan-out sweep: 4 players per room, 50 notes/s each, $SECS s per point"
for rooms in $ROOMS; do
    fanout_point "$rooms"
done

# One run of a point moves by more than most changes do (a run's reference, or a target,
# can be 20 % off its usual figure), so the points the targets are judged at are run again,
# each time on fresh processes, the targets in turn; the report shows every run and the
# medians, and the sweep's table the run of median CPU.
for ((i = 2; i <= REPEAT; i++)); do
    for rooms in $REPEAT_ROOMS; do
        echo "== fan-out at $rooms rooms again (run $i of $REPEAT)"
        fanout_point "$rooms"
    done
done

echo "== join storm: $JOINS players at 50/s"
start_targets
for t in reference all split; do
    run "$t" join-storm --rate 50 --total "$JOINS" --per-room 4 \
        --targets "${TARGET[$t]}" --server-pid "${PIDS[$t]}"
done

echo "== reconnect: $RECONNECT sockets, all on edge 1, which is drained (SIGTERM)"
run split reconnect --conns "$RECONNECT" --per-room 4 --all-on-victim --victim 0 \
    --victim-pid "$E1" --signal term --duration 30 --observe 7 --targets "${TARGET[split]}"

echo "== writing BENCHMARKS.md and docs/bench-latency.png"
"$LG" bench-report --results "$RESULTS" --markdown BENCHMARKS.md --plot docs/bench-latency.png
echo "done: results in $RESULTS"
