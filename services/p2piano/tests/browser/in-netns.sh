#!/usr/bin/env bash
# Runs one scenario of the demo page's browser test inside the network namespace it is
# started in, which must be a fresh one: `unshare -n bash in-netns.sh <mode>` (as root).
#
#   all      `p2piano all` on 127.0.0.1:3000, both users on it
#   cluster  the split deployment of `make up` (tools/cluster/up.sh), user A on edge 1
#            (127.0.0.1:3001), user B on edge 2 (127.0.0.1:3002)
#
# Chromium's WebRTC ignores the loopback interface when it gathers ICE candidates, so the
# script first gives the namespace a veth pair with both ends inside it (vb0 10.77.0.1/24,
# vb1 10.77.0.2/24, default route via vb0): the candidates are then 10.77.0.x, and every
# packet of the test (page, socket, data channel, NATS, MongoDB) stays in this namespace,
# which disappears with its last process. The ports are fixed: nothing else listens in a
# fresh namespace.
#
# Then it starts the server(s), runs demo.test.js, and stops everything it started on any
# exit (trap), including whatever is still left in the namespace then. Its exit status is
# demo.test.js's (0 = passed), or 2 when the setup failed.
#
# Environment: P2PIANO_BIN (default target/debug/p2piano), RUN_DIR (the servers' logs and
# state; default a new temporary directory), SHOTS_DIR (demo.test.js's screenshots), VENV
# (nats-server and secantusdb for `cluster`, see up.sh), HOST_NETNS (`readlink
# /proc/self/ns/net` of the caller: the script refuses to run in that namespace).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../../.." && pwd)
mode=${1:-}
P2PIANO_BIN=${P2PIANO_BIN:-$repo/target/debug/p2piano}
RUN_DIR=${RUN_DIR:-$(mktemp -d -t p2piano-browser.XXXXXX)}
# Absolute paths: up.sh and demo.test.js run in other directories.
absolute() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
P2PIANO_BIN=$(absolute "$P2PIANO_BIN")
RUN_DIR=$(absolute "$RUN_DIR")
[ -z "${SHOTS_DIR:-}" ] || export SHOTS_DIR=$(absolute "$SHOTS_DIR")
LOGS=$RUN_DIR/logs
# Only 10.77.0.0/24, 127.0.0.0/8 and ::1 are allowed in the page's ICE candidates
# (demo.test.js checks them).
NET_A=10.77.0.1/24
NET_B=10.77.0.2/24

die() { echo "in-netns.sh: $*" >&2; exit 2; }

case $mode in
    all | cluster) ;;
    *) die "usage: unshare -n bash $0 all|cluster" ;;
esac
[ -x "$P2PIANO_BIN" ] || die "no p2piano binary at $P2PIANO_BIN (set P2PIANO_BIN)"

ip=$(command -v ip || true)
for candidate in /usr/sbin/ip /sbin/ip; do
    [ -n "$ip" ] || { [ -x "$candidate" ] && ip=$candidate; } || true
done
[ -n "$ip" ] || die "no ip (iproute2) on the PATH, in /usr/sbin or in /sbin"

# The processes in this network namespace other than this shell, in `others` (builtins
# only: a command substitution's subshell would be one more).
others_in_netns() {
    others=()
    local p comm
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        [ "$p/ns/net" -ef /proc/$$/ns/net ] || continue
        read -r comm <"$p/comm" 2>/dev/null || continue
        others+=("${p#/proc/} ($comm)")
    done
}

# Only in a fresh namespace, where this shell is the only process and there is no address
# but loopback: never in the caller's, nor in a host's (interfaces with addresses), since
# the script adds interfaces, binds ports, and in the end kills whatever is left in it.
netns=$(readlink /proc/self/ns/net)
if [ -n "${HOST_NETNS:-}" ] && [ "$netns" = "$HOST_NETNS" ]; then
    die "refusing to run in the caller's network namespace ($netns): start it with unshare -n"
fi
if [ -n "$("$ip" -o addr show scope global)" ]; then
    die "refusing to run in a network namespace with addresses already (not a fresh one from unshare -n): $("$ip" -br addr)"
fi
others_in_netns
if [ ${#others[@]} -gt 0 ]; then
    die "refusing to run in a network namespace with other processes in it (not a fresh one from unshare -n): ${others[*]}"
fi

"$ip" link set lo up
"$ip" link add vb0 type veth peer name vb1
for dev in vb0 vb1; do
    # No IPv6 link-local address on the pair, so no IPv6 candidate from it (if IPv6 is off
    # in this kernel there is none anyway).
    "$ip" link set "$dev" addrgenmode none 2>/dev/null || true
done
"$ip" addr add "$NET_A" dev vb0
"$ip" addr add "$NET_B" dev vb1
"$ip" link set vb0 up
"$ip" link set vb1 up
# Chromium gathers no ICE candidate at all without a default route: it takes the address of
# the interface that route leaves by (10.77.0.1). A packet to any address outside 10.77.0.0/24
# leaves vb0, arrives on vb1, in this namespace too, and is dropped there (no forwarding in a
# new namespace).
"$ip" route add default dev vb0
echo "network namespace $netns: $("$ip" -br addr | tr -s ' ' | paste -sd ';' -)"

mkdir -p "$LOGS"
server_pid=
node_pid=
watch_pid=
cluster_started=

# Stops everything this script started: demo.test.js (and its Chromium), the server(s),
# then any process still in this namespace, which can only be one of ours.
cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    [ -n "$watch_pid" ] && kill -- "-$watch_pid" 2>/dev/null && wait "$watch_pid" 2>/dev/null
    if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
        kill -TERM "$node_pid" 2>/dev/null
        wait "$node_pid" 2>/dev/null
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid"
        for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
        echo "stopped p2piano all (pid $server_pid)"
    fi
    if [ -n "$cluster_started" ]; then
        RUN_DIR=$RUN_DIR "$repo/tools/cluster/down.sh" | grep -v '^logs are kept' || true
    fi
    # The namespace was fresh, so whatever is still in it was started here.
    local other
    others_in_netns
    for other in "${others[@]}"; do
        echo "killing pid $other, left in the namespace"
        kill -KILL "${other%% *}" 2>/dev/null
    done
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT

# SIGTERM (from the test, or from the watcher below) stops everything, writing nowhere: the
# pipes to whoever started this script may be gone. If that caller dies without stopping
# the script (a killed test process), the watcher stops it.
trap 'exec >/dev/null 2>&1; exit 143' TERM
# It gets its own process group (set -m), so that stopping it stops its `sleep` too.
parent=$PPID
set -m
(
    while kill -0 "$parent" 2>/dev/null; do sleep 1; done
    kill -TERM $$ 2>/dev/null
) </dev/null >/dev/null 2>&1 &
watch_pid=$!
set +m

case $mode in
    all)
        url_a=http://127.0.0.1:3000
        url_b=$url_a
        PORT=3000 P2PIANO_COOKIE_SECURE=false "$P2PIANO_BIN" all \
            >"$LOGS/p2piano-all.log" 2>&1 </dev/null &
        server_pid=$!
        for _ in $(seq 300); do
            curl -fsS -o /dev/null "$url_a/health/ready" 2>/dev/null && break
            kill -0 "$server_pid" 2>/dev/null || die "p2piano all exited; see its log"
            sleep 0.1
        done
        curl -fsS -o /dev/null "$url_a/health/ready" || die "p2piano all not ready within 30 s"
        echo "p2piano all (pid $server_pid) ready at $url_a"
        ;;
    cluster)
        url_a=http://127.0.0.1:3001
        url_b=http://127.0.0.1:3002
        cluster_started=1
        RUN_DIR=$RUN_DIR P2PIANO_BIN=$P2PIANO_BIN EDGE1_PORT=3001 EDGE2_PORT=3002 \
            "$repo/tools/cluster/up.sh" || die "make up failed"
        ;;
esac

cd "$here"
P2PIANO_URL_A=$url_a P2PIANO_URL_B=$url_b node demo.test.js </dev/null &
node_pid=$!
if wait "$node_pid"; then rc=0; else rc=$?; fi
node_pid=
exit "$rc"
