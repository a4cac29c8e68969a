#!/usr/bin/env bash
# One load-test scenario against a fresh release gateway on loopback:
#   scripts/bench-run.sh [loadtest flags...]
# e.g. scripts/bench-run.sh -c 1000 -s 10 --feed-rate 100000 -d 10s --json out.json
#
# Starts target/release/gateway on private ports (its own feed group and
# port, so it never mixes with another running feed), waits for it, runs
# target/release/loadtest (which sends the feed itself, in-process, on
# 127.0.0.1 with TTL 0) with --gateway-pid so the report shows the
# gateway's CPU and RSS, then stops the gateway. Exits with loadtest's
# status (0 ok, 2 violation, 3 threshold, 1 failure, 64 usage).
# Extra gateway flags: BENCH_GATEWAY_ARGS="--queue-capacity 1024 ...".
# Skip the build with BENCH_NO_BUILD=1. Pin to cores with
# BENCH_GATEWAY_CPUS=0 BENCH_LOADTEST_CPUS=1 (taskset lists).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
  cargo build --release -q -p quotecast-gateway -p loadtest
fi
# shellcheck source=scripts/ports.sh
. scripts/ports.sh
ws_port=$(pick_port)
grpc_port=$(pick_port)
metrics_port=$(pick_port)
feed_port=$(pick_port)
group="239.255.$((RANDOM % 200 + 50)).$((RANDOM % 250 + 1))"
log=$(mktemp -t bench-gateway.XXXXXX.log)
# shellcheck disable=SC2086
${BENCH_GATEWAY_CPUS:+taskset -c "$BENCH_GATEWAY_CPUS"} target/release/gateway --ws-addr "127.0.0.1:$ws_port" --grpc-addr "127.0.0.1:$grpc_port" \
  --metrics-addr "127.0.0.1:$metrics_port" --group "$group" --feed-port "$feed_port" \
  --log warn ${BENCH_GATEWAY_ARGS:-} >"$log" 2>&1 &
gw=$!
stop() {
  if [[ -r "/proc/$gw/stat" ]]; then
    # The gateway's whole CPU time (user + system), for scripts that
    # divide it by what the run did (bench-tls.sh: per handshake).
    awk -v hz="$(getconf CLK_TCK)" '{ printf "bench-run: gateway cpu_seconds %.3f\n", ($14 + $15) / hz }' "/proc/$gw/stat" >&2
  fi
  if kill -0 "$gw" 2>/dev/null; then
    kill -INT "$gw" 2>/dev/null || true
    wait "$gw" 2>/dev/null || true
  fi
}
trap stop EXIT INT TERM
for _ in $(seq 100); do
  if ! port_free "$ws_port"; then break; fi
  if ! kill -0 "$gw" 2>/dev/null; then
    echo "bench-run: gateway did not start:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.05
done
echo "bench-run: gateway pid $gw ws 127.0.0.1:$ws_port grpc 127.0.0.1:$grpc_port feed $group:$feed_port (log $log)" >&2
set +e
${BENCH_LOADTEST_CPUS:+taskset -c "$BENCH_LOADTEST_CPUS"} target/release/loadtest --ws-addr "127.0.0.1:$ws_port" --grpc-addr "127.0.0.1:$grpc_port" \
  --feed-group "$group" --feed-port "$feed_port" --gateway-pid "$gw" "$@"
status=$?
set -e
# loadtest's whole CPU time: the only child waited for so far (`times`
# into a file: in a pipe it would run in a subshell that has no children).
times >"$log.times"
awk 'NR == 2 { u = $1; s = $2; gsub(/[ms]/, " ", u); gsub(/[ms]/, " ", s); split(u, a, " "); split(s, b, " ");
  printf "bench-run: loadtest cpu_seconds %.3f\n", a[1] * 60 + a[2] + b[1] * 60 + b[2] }' "$log.times" >&2
exit "$status"
