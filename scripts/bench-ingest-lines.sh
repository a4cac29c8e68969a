#!/usr/bin/env bash
# Ingest on one core, one feed line vs A+B lines: gaps, kernel drops and
# gateway CPU per feed rate. Gateway on core 0, feed-sim on core 1, private
# loopback ports and groups (127.0.0.1, TTL 0). Run after
#   cargo build --release -p quotecast-gateway -p feed-sim
# Usage: scripts/bench-ingest-lines.sh [RATE...]   (default 1M 2M 3M ticks/s)
set -euo pipefail
cd "$(dirname "$0")/.."
GW=target/release/gateway
SIM=target/release/feed-sim
rates=("$@")
[[ ${#rates[@]} -gt 0 ]] || rates=(1000000 2000000 3000000)
metric() { curl -s "127.0.0.1:$MP/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
rcvbuf_errors() { awk '/^Udp:/ { if (h) { print $6 } else { h = 1 } }' /proc/net/snmp; }
echo "| lines | feed-sim --rate | sent ticks/s | applied msgs | gaps | missed | kernel drops | gateway CPU (cores) |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for lines in 1 2; do
  for rate in "${rates[@]}"; do
    base=$((20000 + RANDOM % 20000))
    WP=$base GP=$((base + 1)) MP=$((base + 2)) FP=$((base + 3)) FPB=$((base + 4))
    G="239.255.$((RANDOM % 100 + 100)).1" GB="239.255.$((RANDOM % 100 + 100)).2"
    extra=() simx=()
    if [[ $lines == 2 ]]; then
      extra=(--group-b "$GB" --feed-port-b "$FPB")
      simx=(--line-b-group "$GB" --line-b-port "$FPB")
    fi
    taskset -c 0 "$GW" --ws-threads 1 --log warn --ws-addr "127.0.0.1:$WP" --grpc-addr "127.0.0.1:$GP" \
      --metrics-addr "127.0.0.1:$MP" --group "$G" --feed-port "$FP" "${extra[@]}" >/dev/null 2>&1 &
    pid=$!
    sleep 0.5
    d0=$(rcvbuf_errors); c0=$(awk '{ print $14 + $15 }' "/proc/$pid/stat"); t0=$(date +%s.%N)
    out=$(taskset -c 1 "$SIM" --group "$G" --port "$FP" --rate "$rate" --duration 5s --heartbeat-ms 100 "${simx[@]}" 2>&1)
    t1=$(date +%s.%N)
    sleep 0.5
    d1=$(rcvbuf_errors); c1=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    gaps=$(metric quotecast_feed_gaps_total); missed=$(metric quotecast_feed_missed_messages_total)
    applied=$(metric quotecast_feed_received_messages_total)
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    sent=$(awk '$1 == "achieved" { print $2 }' <<<"$out")
    cpu=$(awk -v a="$c0" -v b="$c1" -v k="$(getconf CLK_TCK)" -v s="$(echo "$t1 - $t0" | bc -l)" 'BEGIN { printf "%.2f", (b - a) / k / s }')
    echo "| $lines | $rate | $sent | $applied | $gaps | $missed | $((d1 - d0)) | $cpu |"
  done
done
