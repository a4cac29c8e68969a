#!/usr/bin/env bash
# Feed recovery on loopback (127.0.0.1, TTL 0, private ports and groups):
#  1. gap fill: A+B lines losing the same packets, retransmission server on:
#     holes filled, messages recovered, fill latency p50/p99, gateway CPU;
#  2. late start: a gateway started mid-session builds its book from the
#     snapshot channel: time to ready, and that nothing is lost afterwards.
# Gateway on core 0, feed-sim on core 1. Run after
#   cargo build --release -p quotecast-gateway -p feed-sim
# Usage: scripts/bench-recovery.sh            (the reference scenarios)
#        FILL_RATES="100000" JOIN_SYMBOLS=2000 scripts/bench-recovery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
GW=target/release/gateway
SIM=target/release/feed-sim
[[ -x $GW && -x $SIM ]] || { echo "build first: cargo build --release -p quotecast-gateway -p feed-sim" >&2; exit 1; }
# rate:requests-per-second pairs; the second number is both the gateway's
# --retrans-max-requests-per-sec and the server's per-requester limit.
read -r -a fill_runs <<<"${FILL_RUNS:-100000:100 1000000:100 1000000:1000}"
DROP_EVERY=${DROP_EVERY:-200}
JOIN_SYMBOLS=${JOIN_SYMBOLS:-8000}
JOIN_RATE=${JOIN_RATE:-200000}
read -r -a snap_rates <<<"${SNAP_RATES:-5000 50000}"

metric() { curl -s "127.0.0.1:$MP/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }
# Quantile q of a Prometheus histogram, interpolated within its bucket (as
# histogram_quantile does), in microseconds.
quantile_us() {
  curl -s "127.0.0.1:$MP/metrics" | awk -v name="$1_bucket" -v q="$2" '
    index($1, name "{") == 1 {
      le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le)
      n++; bound[n] = (le == "+Inf") ? -1 : le + 0; count[n] = $2 + 0
    }
    END {
      total = count[n]; if (total == 0) { print "-"; exit }
      rank = q * total; prev_b = 0; prev_c = 0
      for (i = 1; i <= n; i++) {
        if (count[i] >= rank) {
          if (bound[i] < 0) { printf ">%.0f", prev_b * 1e6; exit }
          f = (count[i] == prev_c) ? 0 : (rank - prev_c) / (count[i] - prev_c)
          printf "%.0f", (prev_b + (bound[i] - prev_b) * f) * 1e6; exit
        }
        prev_b = bound[i]; prev_c = count[i]
      }
    }'
}
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ports() {
  local base=$((20000 + RANDOM % 20000))
  WP=$base GP=$((base + 1)) MP=$((base + 2)) FP=$((base + 3)) FPB=$((base + 4)) SP=$((base + 5)) RP=$((base + 6))
  G="239.255.$((RANDOM % 100 + 100)).1" GB="239.255.$((RANDOM % 100 + 100)).2" GS="239.255.$((RANDOM % 100 + 100)).3"
}
start_gw() {
  taskset -c 0 "$GW" --ws-threads 1 --log warn --ws-addr "127.0.0.1:$WP" --grpc-addr "127.0.0.1:$GP" \
    --metrics-addr "127.0.0.1:$MP" --group "$G" --feed-port "$FP" --group-b "$GB" --feed-port-b "$FPB" "$@" \
    >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "127.0.0.1:$MP/metrics" && return; sleep 0.05; done
  echo "gateway did not start" >&2; exit 1
}

echo "### Gap fill from the retransmission server"
echo
echo "A and B lose the same packets (feed-sim \`--drop-every $DROP_EVERY\`: every ${DROP_EVERY}th packet on both lines), 300 symbols, 5 s; the gateway asks feed-sim's retransmission server (\`--retrans-addr\`) for each hole. Fill latency: first request to complete fill (\`quotecast_feed_retrans_fill_seconds\`, interpolated within 1-2-5 buckets); the hole also waited \`--reorder-hold-us\` (2,000 µs) or a full reorder window before it was asked for."
echo
echo "| feed-sim --rate | requests/s allowed | sent ticks/s | packets lost on both lines | holes filled | gone / timed out | rate-limited | messages recovered | gaps left | fill p50 | fill p99 | gateway CPU (cores) |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for run in "${fill_runs[@]}"; do
  rate=${run%%:*} rps=${run##*:}
  ports
  start_gw --retrans-addr "127.0.0.1:$RP" --retrans-max-requests-per-sec "$rps"
  c0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
  out=$(taskset -c 1 "$SIM" --group "$G" --port "$FP" --line-b-group "$GB" --line-b-port "$FPB" \
    --retrans-addr "127.0.0.1:$RP" --retrans-max-requests-per-sec "$rps" --rate "$rate" --duration 5s --heartbeat-ms 100 \
    --drop-every "$DROP_EVERY" --quiet-end-ms 300 2>&1)
  t1=$(date +%s.%N); c1=$(cpu_ticks "$pid")
  sleep 0.3
  sent=$(awk '$1 == "achieved" { printf "%d", $2 }' <<<"$out")
  lost=$(awk '$1 == "faults" { print $2 }' <<<"$out")
  filled=$(metric 'quotecast_feed_retrans_ranges_total{result="filled"}')
  gone=$(metric 'quotecast_feed_retrans_ranges_total{result="gone"}')
  tout=$(metric 'quotecast_feed_retrans_ranges_total{result="timed_out"}')
  rmsgs=$(metric quotecast_feed_retrans_applied_messages_total)
  limited=$(metric quotecast_feed_retrans_rate_limited_total)
  gaps=$(metric quotecast_feed_gaps_total)
  p50=$(quantile_us quotecast_feed_retrans_fill_seconds 0.5)
  p99=$(quantile_us quotecast_feed_retrans_fill_seconds 0.99)
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  cpu=$(awk -v a="$c0" -v b="$c1" -v k="$(getconf CLK_TCK)" -v s="$(echo "$t1 - $t0" | bc -l)" 'BEGIN { printf "%.2f", (b - a) / k / s }')
  echo "| $rate | $rps | $sent | ${lost:-?} | $filled | $gone / $tout | $limited | $rmsgs | $gaps | ${p50} µs | ${p99} µs | $cpu |"
done

echo
echo "### Late start from the snapshot channel"
echo
echo "feed-sim with $JOIN_SYMBOLS symbols at $JOIN_RATE ticks/s on A+B and a snapshot channel at \`--snapshot-rate\` symbols/s; a gateway started 5 s into the session builds its book from the channel. Time to ready: from the gateway's start to \`/readyz\` 200 (polled every 10 ms); the gateway's own count (\`quotecast_feed_late_join_seconds\`) runs from its first feed packet."
echo
echo "| --snapshot-rate | cycle (s) | time to ready (s) | gateway's count (s) | symbols rebuilt | snapshots too old | gaps after | stale after |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
for srate in "${snap_rates[@]}"; do
  ports
  taskset -c 1 "$SIM" --group "$G" --port "$FP" --line-b-group "$GB" --line-b-port "$FPB" \
    --snapshot-group "$GS" --snapshot-port "$SP" --snapshot-rate "$srate" \
    --symbols "$JOIN_SYMBOLS" --rate "$JOIN_RATE" --duration 12s --heartbeat-ms 100 >/dev/null 2>&1 &
  sim=$!
  sleep 5
  t0=$(date +%s.%N)
  start_gw --snapshot-group "$GS" --snapshot-port "$SP" --max-symbols 16384
  until [[ $(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$WP/readyz") == 200 ]]; do
    sleep 0.01
    [[ $(echo "$(date +%s.%N) - $t0 > 6" | bc -l) == 1 ]] && { echo "not ready within 6 s" >&2; break; }
  done
  t1=$(date +%s.%N)
  sleep 1
  cycle=$(metric quotecast_feed_snapshot_cycle_seconds)
  own=$(metric quotecast_feed_late_join_seconds)
  rebuilt=$(metric quotecast_feed_snapshot_recovered_symbols_total)
  old=$(metric quotecast_feed_snapshot_too_old_total)
  gaps=$(metric quotecast_feed_gaps_total)
  stale=$(metric quotecast_book_stale_symbols)
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  wait "$sim" 2>/dev/null || true
  printf '| %s | %.2f | %.2f | %.2f | %s | %s | %s | %s |\n' "$srate" "$cycle" "$(echo "$t1 - $t0" | bc -l)" "$own" "$rebuilt" "$old" "$gaps" "$stale"
done
