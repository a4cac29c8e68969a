#!/usr/bin/env bash
# The NATS relay's added latency versus multicast, both paths in one run on
# one feed: feed-sim -> multicast -> gateway M, and feed-sim -> multicast ->
# feed-relay -> nats-server -> gateway N (--feed-nats). One loadtest per
# gateway (--feed external, same connections and symbols) reports each
# path's latency; the relay's hop is in `feed -> gateway` (ts_recv -
# ts_event: ingest takes ts_recv after the bridge), and end to end.
# Everything on 127.0.0.1 (TTL 0), private ports and groups, unpinned: the
# two cores are shared by all seven processes, so this measures the hop on
# a busy machine, not on a quiet one.
# Run after
#   cargo build --release -p quotecast-gateway -p feed-sim -p quotecast-relay -p loadtest
# Usage: scripts/bench-nats.sh [RATE...]     (default 10000 100000 ticks/s)
#        DURATION=10 CONNS=20 SYMS=10 scripts/bench-nats.sh 50000
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
GW=$BIN/gateway SIM=$BIN/feed-sim RELAY=$BIN/feed-relay LT=$BIN/loadtest
for b in "$GW" "$SIM" "$RELAY" "$LT"; do
  [[ -x $b ]] || { echo "build first: cargo build --release -p quotecast-gateway -p feed-sim -p quotecast-relay -p loadtest ($b missing)" >&2; exit 1; }
done
NATS=${NATS_SERVER:-$(command -v nats-server || echo /usr/sbin/nats-server)}
[[ -x $NATS ]] || { echo "nats-server not found: apt-get install --no-install-recommends nats-server (scripts/test.sh does)" >&2; exit 1; }
rates=("$@")
[[ ${#rates[@]} -gt 0 ]] || rates=(10000 100000)
DURATION=${DURATION:-10}
CONNS=${CONNS:-20}
SYMS=${SYMS:-10}
SYMBOLS=${SYMBOLS:-300}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

metric() { curl -s "127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'; }
wait_metric() { # port name value
  for _ in $(seq 200); do [[ "$(metric "$1" "$2")" == "$3" ]] && return; sleep 0.05; done
  echo "$2 never became $3 on :$1" >&2; exit 1
}
# p50/p99 of one hop of loadtest's fast clients, in µs.
hop() { python3 -c 'import json,sys; l=json.load(open(sys.argv[1]))["fast"]["latency"][sys.argv[2]]; print("%.0f / %.0f" % (l["p50_us"], l["p99_us"]))' "$1" "$2"; }
rate_of() { python3 -c 'import json,sys; print("%d" % json.load(open(sys.argv[1]))["fast"]["updates_per_sec"])' "$1"; }

echo "uptime before: $(uptime)"
echo
echo "| ticks/s | path | feed→gateway p50 / p99 (µs) | end to end p50 / p99 (µs) | updates/s to clients | gateway gaps |"
echo "|---:|---|---:|---:|---:|---:|"
for rate in "${rates[@]}"; do
  base=$((20000 + RANDOM % 20000))
  NP=$base RM=$((base + 1)) FP=$((base + 2))
  MW=$((base + 3)) MG=$((base + 4)) MM=$((base + 5))
  NW=$((base + 6)) NG=$((base + 7)) NM=$((base + 8))
  G="239.255.$((RANDOM % 100 + 100)).$((RANDOM % 200 + 1))"
  pids=()
  "$NATS" -a 127.0.0.1 -p "$NP" >"$tmp/nats.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NP") 2>/dev/null && break; sleep 0.05; done
  "$RELAY" --nats "nats://127.0.0.1:$NP" --group "$G" --port "$FP" --metrics-addr "127.0.0.1:$RM" --log warn \
    >/dev/null 2>"$tmp/relay.log" &
  pids+=($!)
  "$GW" --ws-threads 1 --log warn --ws-addr "127.0.0.1:$MW" --grpc-addr "127.0.0.1:$MG" --metrics-addr "127.0.0.1:$MM" \
    --group "$G" --feed-port "$FP" >/dev/null 2>"$tmp/gw-m.log" &
  mpid=$!
  pids+=($mpid)
  "$GW" --ws-threads 1 --log warn --ws-addr "127.0.0.1:$NW" --grpc-addr "127.0.0.1:$NG" --metrics-addr "127.0.0.1:$NM" \
    --feed-nats "nats://127.0.0.1:$NP" >/dev/null 2>"$tmp/gw-n.log" &
  npid=$!
  pids+=($npid)
  wait_metric "$RM" feedrelay_nats_connected 1
  wait_metric "$NM" quotecast_feed_nats_connected 1
  wait_metric "$MM" quotecast_feed_up 0
  "$SIM" --group "$G" --port "$FP" --rate "$rate" --symbols "$SYMBOLS" --duration "$((DURATION + 4))s" \
    --heartbeat-ms 100 >"$tmp/sim.out" 2>&1 &
  spid=$!
  wait_metric "$MM" quotecast_feed_up 1
  wait_metric "$NM" quotecast_feed_up 1
  common=(--feed external --feed-symbols "$SYMBOLS" -c "$CONNS" -s "$SYMS" -d "${DURATION}s" --threads 1
    --no-progress --drain-timeout 2s)
  "$LT" "${common[@]}" --ws-addr "127.0.0.1:$MW" --gateway-pid "$mpid" --json "$tmp/m.json" >"$tmp/lt-m.out" 2>&1 &
  lm=$!
  "$LT" "${common[@]}" --ws-addr "127.0.0.1:$NW" --gateway-pid "$npid" --json "$tmp/n.json" >"$tmp/lt-n.out" 2>&1 &
  ln=$!
  wait "$lm" || { echo "loadtest (multicast) failed:" >&2; cat "$tmp/lt-m.out" >&2; }
  wait "$ln" || { echo "loadtest (NATS) failed:" >&2; cat "$tmp/lt-n.out" >&2; }
  wait "$spid" || true
  for path in multicast nats; do
    if [[ $path == multicast ]]; then j=$tmp/m.json mp=$MM; else j=$tmp/n.json mp=$NM; fi
    [[ -s $j ]] || { echo "| $rate | $path | - | - | - | - |"; continue; }
    echo "| $rate | $path | $(hop "$j" feed_to_gateway) | $(hop "$j" end_to_end) | $(rate_of "$j") | $(metric "$mp" quotecast_feed_gaps_total) |"
  done
  echo "  (feed-sim: $(awk '$1 == "achieved" { printf "%d ticks/s", $2 }' "$tmp/sim.out"); relay published" \
    "$(metric "$RM" 'feedrelay_relayed_packets_total{line="a"}') datagrams, dropped" \
    "$(metric "$RM" 'feedrelay_dropped_packets_total{line="a"}'); gateway N got" \
    "$(metric "$NM" 'quotecast_feed_nats_messages_total{line="a"}') NATS messages)" >&2
  for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
done
echo
echo "uptime after: $(uptime)"
