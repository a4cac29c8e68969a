#!/usr/bin/env bash
# The one command that runs every test of quotecast on a fresh machine.
# It installs what the tests need beyond cargo, checks formatting and lints,
# then runs the whole workspace's tests (unit, end-to-end on loopback, the
# Python clients, and the dashboards against a real Prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Prometheus + promtool (Debian's package) for the dashboard and alert tests;
# nats-server (Debian's package, in /usr/sbin) for the feed-relay tests.
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1 \
  || ! { command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ]; }; then
  echo "== installing prometheus and nats-server (apt-get)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus nats-server >/dev/null
fi

# Python clients nobody here wrote: websockets, protobuf, grpcio (+ tools,
# health, reflection) and pytest.
echo "== installing python test packages (pip)"
python3 -m pip install -q --disable-pip-version-check \
  websockets protobuf grpcio grpcio-tools grpcio-health-checking grpcio-reflection pytest

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
