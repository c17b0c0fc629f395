#!/usr/bin/env bash
# Server memory per node (issue 14), for both topologies: real `push-jobs-client` agents
# (each its own heartbeat SUB and CURVE DEALER) and `pushy-load` with and without
# `--shared-sub`. Each case starts a fresh release server on a scratch directory, reads
# its idle VmRSS, connects the fleet, waits until the server holds every TCP connection
# (ss), lets it settle, and reads VmRSS, /proc/PID/smaps_rollup and the descriptors again
# (at each of the SETTLE times, seconds after the last connection).
# Per node = (loaded RSS - idle RSS) / nodes. One Markdown row per case on stdout.
#
#   bench/memory.sh                          # all three: agents 10 100 300, load 1000 9000,
#                                            # load-shared 1000 10000
#   bench/memory.sh agents 10 100 300        # real agents only
#   bench/memory.sh load 1000 9000           # pushy-load, one SUB per node (the server holds
#                                            # 2 descriptors a node: 10 000 is past 20 000)
#   bench/memory.sh load-shared 1000 10000   # pushy-load --shared-sub
#
# Environment: BENCH_DIR (scratch, default /tmp/pushy-memory), PORT_BASE (default 21000:
# heartbeat +0, command +2, HTTP +3), SETTLE (sample times, seconds after the last
# connection, default "20"; e.g. "20 120 300"), HEARTBEAT_MS (server heartbeat_interval,
# default 10000), SERVER_ENV (extra environment for the server only, e.g.
# "MALLOC_ARENA_MAX=2" or "LD_LIBRARY_PATH=DIR" for a libzmq from bench/memory-libzmq.sh),
# CONNECT_TIMEOUT (default 300 s), SERVER_BIN / AGENT_BIN / LOAD_BIN (default
# target/release), SKIP_BUILD=1, LABEL (first column), KEEP_SMAPS=PREFIX (copy the
# server's /proc/PID/smaps at each sample). Real agents are capped at 300 at once.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${BENCH_DIR:-/tmp/pushy-memory}
PORT=${PORT_BASE:-21000}
SETTLE=${SETTLE:-20}
HEARTBEAT_MS=${HEARTBEAT_MS:-10000}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-300}
SERVER=${SERVER_BIN:-$ROOT/target/release/opscode-pushy-server}
AGENT=${AGENT_BIN:-$ROOT/target/release/push-jobs-client}
LOAD=${LOAD_BIN:-$ROOT/target/release/pushy-load}
LABEL=${LABEL:-$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo build)}

if [ $# -eq 0 ]; then
  set -- agents 10 100 300 / load 1000 9000 / load-shared 1000 10000
fi
if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -p opscode-pushy-server -p push-jobs-client -p pushy-bench \
    --bin opscode-pushy-server --bin push-jobs-client --bin pushy-load)
fi

kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
rollup() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/smaps_rollup"; }
conns() { ss -Htn state established "( sport = :$1 )" | wc -l; }

SRV=""
FLEET=()
stop_fleet() {
  local p
  for p in "${FLEET[@]}"; do kill -TERM "$p" 2> /dev/null || true; done
  for p in "${FLEET[@]}"; do wait "$p" 2> /dev/null || true; done
  FLEET=()
}
stop_server() {
  if [ -n "$SRV" ]; then
    kill -TERM "$SRV" 2> /dev/null || true
    wait "$SRV" 2> /dev/null || true
    SRV=""
  fi
}
trap 'stop_fleet; stop_server' EXIT

# start_server: a fresh data directory and server; sets SRV.
start_server() {
  rm -rf "$DIR" && mkdir -p "$DIR/agents"
  cat > "$DIR/server.toml" << EOF
data_dir = "$DIR/data"
[pushy]
api_address = "127.0.0.1"
api_port = $((PORT + 3))
zeromq_listen_address = "tcp://127.0.0.1"
server_heartbeat_port = $PORT
command_port = $((PORT + 2))
heartbeat_interval = $HEARTBEAT_MS
EOF
  "$SERVER" --config "$DIR/server.toml" local org-create bench > /dev/null
  "$LOAD" provision --chef-dir "$DIR/data/chef" --org bench --count "$1" \
    --key-out "$DIR/nodes.pem" > /dev/null
  # shellcheck disable=SC2086 # SERVER_ENV is a list of NAME=VALUE words
  env ${SERVER_ENV:-} "$SERVER" --config "$DIR/server.toml" serve > /dev/null 2> "$DIR/server.log" &
  SRV=$!
  for _ in $(seq 1 100); do
    ss -Hltn "( sport = :$((PORT + 3)) )" | grep -q . && break
    sleep 0.1
  done
  sleep 3
}

# measure KIND N: one row.
measure() {
  local kind=$1 n=$2 subs idle t0 i
  start_server "$n"
  idle=$(kib "$SRV" VmRSS)
  t0=$(date +%s)
  case $kind in
    agents)
      subs=$n
      [ "$n" -le 300 ] || { echo "at most 300 real agents" >&2; exit 2; }
      cat > "$DIR/agent.rb" << EOF
chef_server_url "http://127.0.0.1:$((PORT + 3))/organizations/bench"
client_key      "$DIR/nodes.pem"
whitelist({ "true" => "true" })
EOF
      for i in $(seq 0 $((n - 1))); do
        mkdir -p "$DIR/agents/node$i"
        "$AGENT" -c "$DIR/agent.rb" -N "node$i" -d "$DIR/agents/node$i" \
          > "$DIR/agents/node$i/log" 2>&1 &
        FLEET+=($!)
      done
      ;;
    load | load-shared)
      local flags=()
      subs=$n
      if [ "$kind" = load-shared ]; then
        flags=(--shared-sub)
        # one SUB per generator shard thread (--threads 2), set below per process
      fi
      # One generator process per 4 000 nodes (each holds ~4 descriptors a node with its
      # own SUB). Fetch concurrency 8: on two shared cores a faster first connect makes
      # nodes miss the 3-second check and reconnect, and reconnects leave heap behind.
      local procs=$(((n + 3999) / 4000)) per
      per=$((n / procs))
      for i in $(seq 0 $((procs - 1))); do
        local count=$per
        [ "$i" -lt $((procs - 1)) ] || count=$((n - i * per))
        "$LOAD" run --url "http://127.0.0.1:$((PORT + 3))" --org bench --first $((i * per)) \
          --count "$count" --key "$DIR/nodes.pem" --fetch-concurrency 8 -q "${flags[@]}" \
          2> "$DIR/load$i.log" &
        FLEET+=($!)
      done
      if [ "$kind" = load-shared ]; then subs=$((2 * procs)); fi
      ;;
  esac
  local cmd hb
  while :; do
    sleep 1
    cmd=$(conns $((PORT + 2)))
    hb=$(conns "$PORT")
    [ "$cmd" -ge "$n" ] && [ "$hb" -ge "$subs" ] && break
    if [ $(($(date +%s) - t0)) -gt "$CONNECT_TIMEOUT" ]; then
      echo "timeout: $cmd command and $hb heartbeat connections of $n" >&2
      break
    fi
  done
  local ramp=$(($(date +%s) - t0)) waited=0 at rss anon fds
  for at in $SETTLE; do
    sleep $((at - waited))
    waited=$at
    rss=$(kib "$SRV" VmRSS)
    anon=$(rollup "$SRV" Anonymous)
    fds=$(ls "/proc/$SRV/fd" | wc -l)
    cmd=$(conns $((PORT + 2)))
    hb=$(conns "$PORT")
    printf '| %s | %s | %d | %d / %d | %d s | %d s | %d MiB | %d MiB | %d MiB | **%.1f KiB** | %d |\n' \
      "$LABEL" "$kind" "$n" "$cmd" "$hb" "$ramp" "$at" $((idle / 1024)) $((rss / 1024)) \
      $((anon / 1024)) "$(awk -v a="$rss" -v b="$idle" -v n="$n" 'BEGIN { print (a - b) / n }')" "$fds"
    if [ -n "${KEEP_SMAPS:-}" ]; then
      cp "/proc/$SRV/smaps" "$KEEP_SMAPS.$kind.$n.$at" 2> /dev/null || true
    fi
  done
  stop_fleet
  stop_server
}

echo "| build | fleet | nodes | server connections (command / heartbeat) | connect | sampled after | idle RSS | loaded RSS | anonymous | per node | fds |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
kind=""
for arg in "$@"; do
  case $arg in
    agents | load | load-shared) kind=$arg ;;
    /) kind="" ;;
    *)
      [ -n "$kind" ] || { echo "usage: memory.sh [agents|load|load-shared N…] …" >&2; exit 2; }
      measure "$kind" "$arg"
      ;;
  esac
done
