#!/usr/bin/env bash
# `make up`: the split deployment on this machine, as background processes: nats-server with
# JetStream, a MongoDB-wire server (mongod when one is on the PATH, else secantusdb from the
# test virtualenv), rooms, presence, and two edges. Everything it starts is recorded in
# $RUN_DIR/pids, its logs go to $RUN_DIR/logs, and `make down` (down.sh) stops exactly those
# processes.
#
# Settings (environment): P2PIANO_BIN (the binary, default target/release/p2piano),
# RUN_DIR (default .run/cluster), NATS_PORT (4300), MONGO_PORT (27300), EDGE1_PORT (3001),
# EDGE2_PORT (3002), ROOMS_ADMIN (127.0.0.1:9091), PRESENCE_ADMIN (127.0.0.1:9092), EDGE1_ADMIN
# (127.0.0.1:9093) and EDGE2_ADMIN (127.0.0.1:9094) for the edges' /metrics, VENV
# (the virtualenv of `make test-deps`), TOKIO_WORKER_THREADS and GOMAXPROCS (1, see below), plus any
# P2PIANO_*/CORS_ORIGIN variable, which the services read as usual.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${P2PIANO_BIN:-target/release/p2piano}
RUN_DIR=${RUN_DIR:-.run/cluster}
NATS_PORT=${NATS_PORT:-4300}
MONGO_PORT=${MONGO_PORT:-27300}
EDGE1_PORT=${EDGE1_PORT:-3001}
EDGE2_PORT=${EDGE2_PORT:-3002}
ROOMS_ADMIN=${ROOMS_ADMIN:-127.0.0.1:9091}
PRESENCE_ADMIN=${PRESENCE_ADMIN:-127.0.0.1:9092}
EDGE1_ADMIN=${EDGE1_ADMIN:-127.0.0.1:9093}
EDGE2_ADMIN=${EDGE2_ADMIN:-127.0.0.1:9094}
VENV=${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/p2piano/venv}
PIDS="$RUN_DIR/pids"
LOGS="$RUN_DIR/logs"

die() { echo "make up: $*" >&2; exit 1; }

[ -x "$BIN" ] || die "no binary at $BIN (make build, or set P2PIANO_BIN)"
if compgen -G "$PIDS/*.pid" >/dev/null; then
    die "already running (pid files in $PIDS): run make down first"
fi
mkdir -p "$PIDS" "$LOGS" "$RUN_DIR/nats" "$RUN_DIR/mongo"

# The edges must share one cookie secret; keep it across restarts of the cluster.
if [ -z "${COOKIE_SECRET:-}" ]; then
    [ -s "$RUN_DIR/cookie-secret" ] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN_DIR/cookie-secret"
    COOKIE_SECRET=$(cat "$RUN_DIR/cookie-secret")
fi
export COOKIE_SECRET
export NATS_URL="nats://127.0.0.1:$NATS_PORT"
export MONGO_URI="mongodb://127.0.0.1:$MONGO_PORT"
export P2PIANO_COOKIE_SECURE=${P2PIANO_COOKIE_SECURE:-false}
# Each service's runtime gets one worker thread: five processes share this machine's cores,
# and a process with a thread per core (tokio's default) makes them wake and park each
# other's threads. On two cores at 60,000 deliveries/s this and nats-server's one thread
# took the edges and nats-server from about 22 to 13.2 CPU s per million deliveries
# (docs/OPERATIONS.md, "Worker threads").
export TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-1}

# Starts "$@" in its own session, in the background, logging to $LOGS/$name.log.
start() {
    local name=$1; shift
    setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
    echo $! > "$PIDS/$name.pid"
    echo "started $name (pid $!), log $LOGS/$name.log"
}

# Waits until host:port accepts connections (30 s).
wait_port() {
    local name=$1 host=$2 port=$3
    for _ in $(seq 300); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then return 0; fi
        local pid; pid=$(cat "$PIDS/$name.pid")
        kill -0 "$pid" 2>/dev/null || die "$name exited; see $LOGS/$name.log"
        sleep 0.1
    done
    die "$name did not open $host:$port within 30 s; see $LOGS/$name.log"
}

# Waits until http://addr/health/ready answers 200 (30 s).
wait_ready() {
    local name=$1 addr=$2
    for _ in $(seq 300); do
        if curl -fsS -o /dev/null "http://$addr/health/ready" 2>/dev/null; then return 0; fi
        local pid; pid=$(cat "$PIDS/$name.pid")
        kill -0 "$pid" 2>/dev/null || die "$name exited; see $LOGS/$name.log"
        sleep 0.1
    done
    die "$name not ready at $addr within 30 s; see $LOGS/$name.log"
}

nats=$(command -v nats-server || true)
[ -n "$nats" ] || { [ -x /usr/sbin/nats-server ] && nats=/usr/sbin/nats-server; } || true
[ -n "$nats" ] || { [ -x "$VENV/bin/nats-server" ] && nats="$VENV/bin/nats-server"; } || true
[ -n "$nats" ] || die "no nats-server (PATH, /usr/sbin, or $VENV: make test-deps installs one)"
# nats-server likewise runs one Go scheduler thread (GOMAXPROCS) unless told otherwise.
GOMAXPROCS=${GOMAXPROCS:-1} start nats "$nats" -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$RUN_DIR/nats"
wait_port nats 127.0.0.1 "$NATS_PORT"

if command -v mongod >/dev/null 2>&1; then
    start mongo mongod --bind_ip 127.0.0.1 --port "$MONGO_PORT" --dbpath "$RUN_DIR/mongo"
else
    [ -x "$VENV/bin/python" ] || die "no mongod on the PATH and no secantusdb in $VENV (make test-deps)"
    : > "$RUN_DIR/secantusd.toml"
    start mongo "$VENV/bin/python" -m secantus --config "$RUN_DIR/secantusd.toml" --host 127.0.0.1 \
        --port "$MONGO_PORT" --storage-path "$RUN_DIR/mongo" --sync-on-commit
fi
wait_port mongo 127.0.0.1 "$MONGO_PORT"

P2PIANO_ADMIN_ADDR=$ROOMS_ADMIN start rooms "$BIN" rooms
P2PIANO_ADMIN_ADDR=$PRESENCE_ADMIN start presence "$BIN" presence
wait_ready rooms "$ROOMS_ADMIN"
wait_ready presence "$PRESENCE_ADMIN"
PORT=$EDGE1_PORT P2PIANO_EDGE_ID=edge-1 P2PIANO_ADMIN_ADDR=$EDGE1_ADMIN start edge-1 "$BIN" edge
PORT=$EDGE2_PORT P2PIANO_EDGE_ID=edge-2 P2PIANO_ADMIN_ADDR=$EDGE2_ADMIN start edge-2 "$BIN" edge
wait_ready edge-1 "127.0.0.1:$EDGE1_PORT"
wait_ready edge-2 "127.0.0.1:$EDGE2_PORT"

echo
echo "p2piano split deployment is up:"
echo "  edges      http://localhost:$EDGE1_PORT/  http://localhost:$EDGE2_PORT/"
echo "  nats       $NATS_URL"
echo "  mongodb    $MONGO_URI"
echo "  admin      rooms http://$ROOMS_ADMIN  presence http://$PRESENCE_ADMIN  edges http://$EDGE1_ADMIN http://$EDGE2_ADMIN"
echo "  logs       $LOGS/"
echo "stop it with: make down"
