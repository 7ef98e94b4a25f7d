# Shell functions shared by the benchmark scripts (`run.sh`, `ab.sh`); sourced, not run.
# Both expect to be run from the repository's root with RUN_DIR set to the split
# deployment's working folder (tools/cluster/up.sh reads it too).

# Waits until a URL answers (30 s).
wait_url() {
    for _ in $(seq 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench: $1 did not answer within 30 s" >&2
    exit 1
}

# Starts the split deployment afresh: stops the one of an earlier start, removes its
# JetStream and database folders, runs tools/cluster/up.sh (output appended to the file $1,
# the remaining NAME=value words added to its environment) and sets E1, E2 and NATS to the
# pids of the two edges and of nats-server.
start_split() {
    local log=$1
    shift
    tools/cluster/down.sh > /dev/null 2>&1 || true
    rm -rf "$RUN_DIR/nats" "$RUN_DIR/mongo"
    env "$@" tools/cluster/up.sh >> "$log"
    E1=$(cat "$RUN_DIR/pids/edge-1.pid")
    E2=$(cat "$RUN_DIR/pids/edge-2.pid")
    NATS=$(cat "$RUN_DIR/pids/nats.pid")
}
