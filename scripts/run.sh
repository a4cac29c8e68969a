#!/usr/bin/env bash
# Starts the whole thing on loopback: the gateway and the feed simulator.
# Ctrl-C stops both (the simulator ends its session, the gateway closes
# clients with 1001). Settings: any gateway flag via QUOTECAST_* env vars,
# any simulator flag via FEED_SIM_* env vars (see --help of each).
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole workspace, exactly what `cargo build --release` at the root
# builds: selecting packages (-p gateway -p feed-sim) unifies dependency
# features over that subset only (bitflags, num-traits, rustix differ), so
# the two builds kept recompiling each other's dependencies. This way a
# start after `cargo build --release` (or a second start) builds nothing.
cargo build --release -q --workspace
bin="${CARGO_TARGET_DIR:-target}/release"
"$bin/gateway" &
gw=$!
sleep 0.3
"$bin/feed-sim" &
sim=$!
stop() {
  kill -INT "$sim" 2>/dev/null || true
  wait "$sim" 2>/dev/null || true
  kill -INT "$gw" 2>/dev/null || true
  wait "$gw" 2>/dev/null || true
}
trap stop INT TERM EXIT
ws="${QUOTECAST_WS_ADDR:-127.0.0.1:8080}"
# Until the feed's symbol directory has arrived every subscribe is answered
# UNKNOWN_SYMBOL: say where to connect once /readyz answers 200 (5 s at most).
ready() {
  exec 3<>"/dev/tcp/${ws%:*}/${ws##*:}" 2>/dev/null || return 1
  printf 'GET /readyz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$ws" >&3
  local status
  read -r _ status _ <&3 || status=
  exec 3>&-
  [ "$status" = 200 ]
}
for _ in $(seq 50); do
  ready && break
  sleep 0.1
done
ready || echo "warning: http://$ws/readyz does not answer 200 yet (feed not up?)" >&2
cat <<INFO

quotecast is running (Ctrl-C stops it)
  WebSocket   ws://$ws/?symbols=AAPL,MSFT      (or send {"op":"subscribe","symbols":["AAPL"]})
  health      http://$ws/healthz   http://$ws/readyz
  gRPC        ${QUOTECAST_GRPC_ADDR:-127.0.0.1:50051}
  metrics     http://${QUOTECAST_METRICS_ADDR:-127.0.0.1:8084}/metrics

INFO
wait "$gw"
