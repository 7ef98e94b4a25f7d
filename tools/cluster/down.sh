#!/usr/bin/env bash
# `make down`: stops exactly the processes `make up` started (their pids are in
# $RUN_DIR/pids): edges first, so that their clients' sessions are released cleanly, then the
# services, then the servers. SIGTERM, up to 30 s each, then SIGKILL. A pid whose process is
# gone, or is no longer the program that was started (a reused pid), is left alone.
set -uo pipefail
cd "$(dirname "$0")/../.."

RUN_DIR=${RUN_DIR:-.run/cluster}
PIDS="$RUN_DIR/pids"

stop() {
    local name=$1 file="$PIDS/$1.pid"
    [ -f "$file" ] || return 0
    local pid; pid=$(cat "$file")
    # Only our process: same pid, and its command line is what up.sh started (its session
    # leader, since it was started with setsid).
    if kill -0 "$pid" 2>/dev/null && [ "$(ps -o sid= -p "$pid" | tr -d ' ')" = "$pid" ]; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$name did not stop within 30 s: killing it"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
        fi
        echo "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

for name in edge-1 edge-2 presence rooms mongo nats; do
    stop "$name"
done
rmdir "$PIDS" 2>/dev/null || true
echo "logs are kept in $RUN_DIR/logs"
