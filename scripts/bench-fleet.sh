#!/usr/bin/env bash
# A fleet behind HAProxy on a network of namespaces (gateway/tests/fleet.rs,
# release build; needs root for `ip netns`, and haproxy): for 1, 2 and 3
# gateways, delivered updates/s and end-to-end latency through the
# balancer; then with 3 gateways one is SIGKILLed mid-run: failover time
# (connection ended -> resubscribed on another node) p50/p99/max, and what
# every client saw (violations, resumes). Everything, the N gateways,
# HAProxy, feed-sim and loadtest, shares this machine's cores: the totals
# are bounded by that, not by the fleet.
# Usage: scripts/bench-fleet.sh
#        CLIENTS=2000 PER_CONN=10 RATE=5000 SECS=20 scripts/bench-fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${CLIENTS:-1000}
PER_CONN=${PER_CONN:-10}
RATE=${RATE:-5000}
SECS=${SECS:-20}
export QC_BENCH_CLIENTS=$CLIENTS QC_BENCH_SYMBOLS_PER_CONN=$PER_CONN QC_BENCH_RATE=$RATE QC_BENCH_SECS=$SECS
cargo test -q --release -p quotecast-gateway --test fleet --no-run >/dev/null 2>&1

run() {
  QC_BENCH_NODES=$1 QC_BENCH_KILL=$2 cargo test -q --release -p quotecast-gateway --test fleet fleet_bench \
    -- --ignored --nocapture 2>/dev/null | sed -n 's/^FLEET_BENCH //p'
  true
}

echo "# fleet: $CLIENTS clients x $PER_CONN symbols, feed $RATE ticks/s over 300 symbols, ${SECS}s, $(nproc) cores"
printf '%-6s %-5s %14s %10s %10s %11s %9s %12s %12s %12s %s\n' \
  nodes kill "updates/s" "e2e p50" "e2e p99" violations resumed "failover p50" "failover p99" "failover max" per-node
for spec in "1 0" "2 0" "3 0" "3 1"; do
  read -r n k <<<"$spec"
  j=$(run "$n" "$k")
  [[ -n $j ]] || { echo "run with $n nodes produced no result" >&2; exit 1; }
  echo "$j" | jq -r --arg k "$k" '
    def ms: if . == null or . == 0 then "-" else (. / 1000 | tostring | .[0:6]) + " ms" end;
    [ (.nodes|tostring), $k, (.updates_per_sec|floor|tostring), (.e2e_p50_us|ms), (.e2e_p99_us|ms),
      (.violations|tostring), (.resumed|tostring),
      (.failover_p50_us|ms), (.failover_p99_us|ms), (.failover_max_us|ms),
      ([.per_node | to_entries[] | "\(.key)=\(.value.connections)c/\(.value.updates)u"] | join(" ")) ]
    | "\(.[0])      \(.[1])     \(.[2])  \(.[3])  \(.[4])  \(.[5])  \(.[6])  \(.[7])  \(.[8])  \(.[9])  \(.[10])"'
done
