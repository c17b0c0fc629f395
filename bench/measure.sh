#!/usr/bin/env bash
# Connects N simulated nodes to a release build of the server and measures the server
# while they sit idle-connected: time to connect, CPU (utime+stime from /proc/PID/stat)
# and RSS/descriptors (/proc/PID/status, /proc/PID/fd).
#
#   bench/measure.sh N [PROCS] [pushy-load run flags…]
#   bench/measure.sh 1000
#   bench/measure.sh 10000 2 --shared-sub --fetch-concurrency 2
#
# PROCS generator processes share the fleet (each has its own descriptor limit).
# Environment: BENCH_DIR (scratch directory, default /tmp/pushy-bench), PORT_BASE
# (default 20000: heartbeat +0, command +2, HTTP +3), SETTLE and SAMPLE (seconds, default
# 15 and 30), CONNECT_TIMEOUT (default 300), SKIP_BUILD=1 to use the binaries as built,
# SERVER_BIN and LOAD_BIN to measure other builds.
set -euo pipefail

N=${1:?usage: measure.sh N [PROCS] [pushy-load run flags…]}
PROCS=${2:-1}
shift $(($# >= 2 ? 2 : 1))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${BENCH_DIR:-/tmp/pushy-bench}
PORT=${PORT_BASE:-20000}
SETTLE=${SETTLE:-15}
SAMPLE=${SAMPLE:-30}
CONNECT_TIMEOUT=${CONNECT_TIMEOUT:-300}
SERVER=${SERVER_BIN:-$ROOT/target/release/opscode-pushy-server}
LOAD=${LOAD_BIN:-$ROOT/target/release/pushy-load}
TCK=$(getconf CLK_TCK)

if [ -z "${SKIP_BUILD:-}" ]; then
  (cd "$ROOT" && cargo build --release -p pushy-bench && cargo build --release --bin opscode-pushy-server)
fi

mkdir -p "$DIR"
cat > "$DIR/server.toml" <<EOF
data_dir = "$DIR/data"
[pushy]
api_address = "127.0.0.1"
api_port = $((PORT + 3))
zeromq_listen_address = "tcp://127.0.0.1"
server_heartbeat_port = $PORT
command_port = $((PORT + 2))
EOF
"$SERVER" --config "$DIR/server.toml" local org-create bench > /dev/null
"$LOAD" provision --chef-dir "$DIR/data/chef" --org bench --count "$N" --key-out "$DIR/nodes.pem"

# CPU seconds of a process: fields 14 and 15 of /proc/PID/stat, counted after the
# parenthesised command name.
cpu() { sed 's/.*) //' "/proc/$1/stat" | awk -v t="$TCK" '{ printf "%.2f", ($12 + $13) / t }'; }
field() { awk -v k="$2:" '$1 == k { print $2, $3 }' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }
json() { grep -o "\"$2\": [0-9.a-z]*" "$1" 2>/dev/null | head -1 | awk '{ print $2 }'; }

"$SERVER" --config "$DIR/server.toml" serve > /dev/null 2> "$DIR/server.log" &
SRV=$!
GENS=()
cleanup() {
  for g in "${GENS[@]}"; do kill -TERM "$g" 2> /dev/null || true; done
  for g in "${GENS[@]}"; do wait "$g" 2> /dev/null || true; done
  kill -TERM "$SRV" 2> /dev/null || true
  wait "$SRV" 2> /dev/null || true
}
trap cleanup EXIT
sleep 2
echo "server pid $SRV before load: RSS $(field $SRV VmRSS), fds $(fds $SRV)"

PER=$((N / PROCS))
START=$(date +%s.%N)
SRV_CPU0=$(cpu $SRV)
for i in $(seq 0 $((PROCS - 1))); do
  rm -f "$DIR/status$i.json"
  "$LOAD" run --url "http://127.0.0.1:$((PORT + 3))" --org bench --first $((i * PER)) \
    --count "$PER" --key "$DIR/nodes.pem" --status-file "$DIR/status$i.json" -q "$@" \
    2> "$DIR/load$i.log" &
  GENS+=($!)
done

connected=0
while :; do
  sleep 1
  connected=0
  for i in $(seq 0 $((PROCS - 1))); do
    connected=$((connected + $(json "$DIR/status$i.json" connected || echo 0)))
  done
  now=$(date +%s.%N)
  if [ "$connected" -ge $((PER * PROCS)) ]; then break; fi
  if awk -v a="$now" -v b="$START" -v t="$CONNECT_TIMEOUT" 'BEGIN { exit !(a - b > t) }'; then
    echo "only $connected connected after ${CONNECT_TIMEOUT}s"
    break
  fi
done
RAMP=$(awk -v a="$now" -v b="$START" 'BEGIN { printf "%.1f", a - b }')
SRV_CPU1=$(cpu $SRV)
after=""
for i in $(seq 0 $((PROCS - 1))); do
  after="$after $(json "$DIR/status$i.json" all_connected_after_secs)"
done
echo "$connected nodes connected; each generator saw all its nodes connected after (s):$after"
echo "connect phase: ~${RAMP}s, server CPU $(awk -v a="$SRV_CPU1" -v b="$SRV_CPU0" -v t="$RAMP" 'BEGIN { printf "%.0f", 100 * (a - b) / t }')% of a core"

sleep "$SETTLE"
S0=$(cpu $SRV)
G0=()
for g in "${GENS[@]}"; do G0+=("$(cpu "$g")"); done
sleep "$SAMPLE"
S1=$(cpu $SRV)
echo "server idle-connected over ${SAMPLE}s: CPU $(awk -v a="$S1" -v b="$S0" -v t="$SAMPLE" 'BEGIN { printf "%.1f", 100 * (a - b) / t }')% of a core, RSS $(field $SRV VmRSS), threads $(field $SRV Threads), fds $(fds $SRV)"
for k in "${!GENS[@]}"; do
  g=${GENS[$k]}
  echo "generator $g: CPU $(awk -v a="$(cpu "$g")" -v b="${G0[$k]}" -v t="$SAMPLE" 'BEGIN { printf "%.1f", 100 * (a - b) / t }')%, RSS $(field "$g" VmRSS), fds $(fds "$g")"
done
for i in $(seq 0 $((PROCS - 1))); do
  echo "status$i: reconnects $(json "$DIR/status$i.json" reconnects), fetch_errors $(json "$DIR/status$i.json" fetch_errors), first_answer_avg_ms $(json "$DIR/status$i.json" first_answer_avg_ms), rejected $(json "$DIR/status$i.json" rejected)"
done
