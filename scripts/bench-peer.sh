#!/usr/bin/env bash
# quotecast side by side with the uWebSockets.js peer (../shared/peers/uws/),
# in one run, on the same cores: each server pinned to core $SERVER_CPU
# (default 0), the lean C client (cclient_qc) and feed-sim on core
# $CLIENT_CPU (default 1). Writes a Markdown report to stdout (and the raw
# JSON lines to $OUT_DIR, default a temp dir).
#
#   export PEERS_WORK=~/.cache/quotecast-peers   # after ../shared/peers/uws/setup.sh
#   scripts/bench-peer.sh            # full run, ~6 min
#   scripts/bench-peer.sh --smoke    # a few seconds per step
#
# Scenarios (the targets of issue 11):
#   cpu      1000 conns x 50 symbols, 1000 ticks/s (~167k updates/s): server
#            cores, syscalls per frame (perf tracepoints), e2e percentiles
#   ladder   the same connections at 200..20000 ticks/s (33k..3.3M updates/s)
#   max      1000 x 10 at 150k ticks/s: delivered updates/s and e2e p99
#   ingest   1000 x 10 at 300k ticks/s: feed messages applied vs sent
#   idle     10,000 x 1, 10 ticks/s: server RSS per connection (the kernel's
#            socket memory, from /proc/net/sockstat, apart)
# PERF_RECORD=1 also records a call-graph profile of the server per run.
# SERVERS="quotecast uws" and SCENARIOS="cpu ladder max ingest idle" pick a
# subset.
# Everything binds 127.0.0.1; the feed has TTL 0 and IP_MULTICAST_IF 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SMOKE=0
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; shift; fi
: "${PEERS_WORK:?set PEERS_WORK (run ../shared/peers/uws/setup.sh first)}"
PEER_DIR=${PEER_DIR:-$ROOT/../shared/peers/uws}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT_DIR=${OUT_DIR:-$(mktemp -d -t quotecast-peer.XXXXXX)}
mkdir -p "$OUT_DIR"
# BEFORE_BIN=path/to/an/older/gateway adds it as server "before", so a
# before/after comparison comes from the same run.
SERVERS=${SERVERS:-"${BEFORE_BIN:+before }quotecast uws"}
if [[ $SMOKE == 1 ]]; then
  WARM=1 MEAS=3 LADDER=(1000) IDLE_CONNS=500
else
  WARM=3 MEAS=8 IDLE_CONNS=10000
  read -r -a LADDER <<<"${LADDER_RATES:-200 1000 2000 5000 10000 20000}"
fi
# perf counts syscalls over the middle of the measurement window.
PERF_SECS=$((MEAS > 3 ? MEAS - 2 : 1))
[[ -z "${BENCH_NO_BUILD:-}" ]] && cargo build --release -q -p quotecast-gateway -p feed-sim
python3 scripts/peers/uws_feed_v2.py "$PEER_DIR/server_quotecast_uws.js" "$OUT_DIR/uws_v2.js"
CCLIENT=$PEERS_WORK/cclient_qc
[[ -x $CCLIENT ]] || { echo "bench-peer: $CCLIENT missing: run setup.sh" >&2; exit 1; }

# shellcheck source=scripts/ports.sh
. scripts/ports.sh
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Kernel slab memory (kB), system-wide: sockets of both ends, their
# dentries, epoll items (what RSS does not show).
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }

SRV_PID=
FEED_PID=
stop_all() {
  for p in $FEED_PID $SRV_PID; do kill -INT "$p" 2>/dev/null || true; done
  for p in $FEED_PID $SRV_PID; do wait "$p" 2>/dev/null || true; done
  SRV_PID='' FEED_PID=''
}
trap stop_all EXIT

# start_server NAME: starts it on SERVER_CPU with a fresh port and group.
start_server() {
  WS_PORT=$(pick_port) FEED_PORT=$(pick_port) MET_PORT=$(pick_port)
  GROUP="239.255.$((RANDOM % 200 + 50)).$((RANDOM % 250 + 1))"
  local log=$OUT_DIR/$1-$WS_PORT.log
  case $1 in
    quotecast | before)
      local bin=target/release/gateway
      [[ $1 == before ]] && bin=$BEFORE_BIN
      # shellcheck disable=SC2086 # QC_ARGS holds several flags
      taskset -c "$SERVER_CPU" "$bin" --ws-addr "127.0.0.1:$WS_PORT" \
        --grpc-addr "127.0.0.1:$(pick_port)" --metrics-addr "127.0.0.1:$MET_PORT" \
        --group "$GROUP" --feed-port "$FEED_PORT" --ws-threads 1 --max-connections 20000 \
        --max-pending-handshakes 20000 --max-pending-handshakes-per-ip 20000 \
        --max-requests-per-sec 1000 --log warn ${QC_ARGS:-} >"$log" 2>&1 &
      ;;
    uws)
      PEERS_WORK=$PEERS_WORK taskset -c "$SERVER_CPU" "$PEER_DIR/node-g241" "$OUT_DIR/uws_v2.js" \
        --ws-port "$WS_PORT" --group "$GROUP" --feed-port "$FEED_PORT" --max-seconds 600 >"$log" 2>&1 &
      ;;
  esac
  SRV_PID=$!
  for _ in $(seq 200); do
    port_free "$WS_PORT" || return 0
    kill -0 "$SRV_PID" 2>/dev/null || { echo "bench-peer: $1 did not start" >&2; cat "$log" >&2; exit 1; }
    sleep 0.05
  done
  echo "bench-peer: $1 not listening" >&2; exit 1
}

# start_feed RATE: feed-sim on the client's core, 300 symbols, Zipf 1.1.
start_feed() {
  taskset -c "$CLIENT_CPU" target/release/feed-sim --group "$GROUP" --port "$FEED_PORT" \
    --rate "$1" --seed 1 >"$OUT_DIR/feed-$FEED_PORT.log" 2>&1 &
  FEED_PID=$!
  # The servers learn symbols from the directory, sent at the session start.
  sleep 1.2
}

# The feed's tickers, in directory order: what cclient subscribes from.
SYMFILE=$OUT_DIR/symbols.txt
target/release/feed-sim --list-symbols --symbols 300 >"$SYMFILE"

# run NAME RATE CONNS SYMS TAG [perf]: one measurement, one JSON line.
run() {
  local name=$1 rate=$2 conns=$3 syms=$4 tag=$5 perf=${6:-}
  start_server "$name"
  start_feed "$rate"
  local base_rss base_slab
  base_rss=$(rss_kb "$SRV_PID") base_slab=$(slab_kb)
  local perf_out=$OUT_DIR/$tag-$name.perf
  local helpers=()
  if [[ -n $perf ]]; then
    (sleep "$((WARM + 1))"; perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,syscalls:sys_enter_epoll_wait \
      -p "$SRV_PID" -o "$perf_out" -- sleep "$PERF_SECS") &
    helpers+=($!)
  fi
  if [[ -n ${PERF_RECORD:-} ]]; then
    (sleep "$((WARM + 1))"; perf record -q -g -F 999 -p "$SRV_PID" -o "$OUT_DIR/$tag-$name.perf.data" -- sleep "$PERF_SECS" 2>/dev/null) &
    helpers+=($!)
  fi
  # Kernel memory while the connections are up (cclient exits at the end).
  (sleep "$((WARM + MEAS / 2))"; slab_kb >"$OUT_DIR/slab-$tag-$name") &
  helpers+=($!)
  local json
  json=$(taskset -c "$CLIENT_CPU" "$CCLIENT" "$WS_PORT" "$conns" "$syms" "$WARM" "$MEAS" "$SRV_PID" "$SYMFILE" 2>/dev/null | tail -1)
  wait "${helpers[@]}"
  local end_slab
  end_slab=$(cat "$OUT_DIR/slab-$tag-$name")
  local extra="\"server\":\"$name\",\"tag\":\"$tag\",\"rate\":$rate,\"conns\":$conns,\"syms\":$syms,\"baseRssKB\":$base_rss,\"slabKBDelta\":$((end_slab - base_slab))"
  if [[ -n $perf && -s $perf_out ]]; then
    extra+=$(awk -F, -v s="$PERF_SECS" '/sys_enter/ {n=$3; sub(/.*:/, "", n); printf ",\"%s\":%.0f", n, ($1 ~ /^[0-9]+$/) ? $1 / s : 0}' "$perf_out")
  fi
  # The feed ends its session first, so what it sent is final when the
  # server's counters are read.
  kill -INT "$FEED_PID"; wait "$FEED_PID" || true; FEED_PID=''
  local sent
  sent=$(awk '/^sequences/ {gsub(/[(]/, "", $3); print $3}' "$OUT_DIR/feed-$FEED_PORT.log")
  extra+=",\"feedMessages\":${sent:-0}"
  sleep 0.3
  if [[ $name != uws ]]; then
    local m
    m=$(curl -s "http://127.0.0.1:$MET_PORT/metrics")
    extra+=$(awk '/^quotecast_feed_received_messages_total / {r=$2} /^quotecast_feed_gaps_total / {g=$2}
      /^quotecast_feed_missed_messages_total / {x=$2}
      END {printf ",\"srvMessages\":%d,\"srvGaps\":%d,\"srvMissed\":%d", r, g, x}' <<<"$m")
  else
    extra+=$(curl -s "http://127.0.0.1:$WS_PORT/stats" | jq -r '",\"srvMessages\":\(.messages),\"srvGaps\":\(.gaps),\"srvMissed\":\(.missed),\"srvDropped\":\(.dropped)"')
  fi
  echo "${json%\}},$extra}" | tee -a "$OUT_DIR/results.jsonl" >&2
  stop_all
}

SCENARIOS=${SCENARIOS:-"cpu ladder max ingest idle"}
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }
for srv in $SERVERS; do
  if want cpu; then run "$srv" 1000 1000 50 cpu perf; fi
  if want ladder; then for r in "${LADDER[@]}"; do run "$srv" "$r" 1000 50 ladder; done; fi
  if want max; then run "$srv" 150000 1000 10 max perf; fi
  if want ingest; then run "$srv" 300000 1000 10 ingest; fi
  if want idle; then run "$srv" 10 "$IDLE_CONNS" 1 idle; fi
done

python3 scripts/peers/peer_report.py "$OUT_DIR/results.jsonl"
