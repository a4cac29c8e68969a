#!/usr/bin/env bash
# The cost of access control, side by side in one run on the same cores
# (gateway on core 0, loadtest on core 1), every run with API keys on:
#   1. throughput: delivered updates/s, e2e p99 and gateway CPU, plain
#      ws:// against wss:// at the same load;
#   2. handshakes: N connections opened at once (connect + TLS + key or
#      JWT check + subscribe), per second, plain+key, TLS+key, TLS+JWT;
#   3. idle memory: gateway RSS with N idle subscribed connections, plain
#      and TLS, per connection.
#   scripts/bench-tls.sh            # defaults below; OUT_DIR keeps the JSON
# Knobs: LOAD="-c 500 -s 20 --feed-rate 2000" DURATION=15s HANDSHAKES=3000
#        IDLE=5000. Needs python3 with cryptography and pyjwt (scripts/test.sh
#        installs them) to make the throwaway CA, keys and token.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT_DIR:-$(mktemp -d -t bench-tls.XXXXXX)}
mkdir -p "$out/creds"
cargo build --release -q -p quotecast-gateway -p loadtest
python3 gateway/tests/python/auth_setup.py "$out/creds" AAPL,MSFT
c="$out/creds"
key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["all"])' "$c/api_keys_plain.json")
jwt=$(python3 - "$c/ed25519.key" <<'PY'
import sys, time, jwt
print(jwt.encode({"sub": "bench", "exp": int(time.time()) + 3600, "symbols": ["*"]},
                 open(sys.argv[1], "rb").read(), algorithm="EdDSA"))
PY
)
auth="--api-keys-file $c/api_keys.json --jwt-key-file $c/jwt_keys.pem"
tls="--tls-cert-file $c/server.pem --tls-key-file $c/server.key"
export BENCH_NO_BUILD=1 BENCH_GATEWAY_CPUS=0 BENCH_LOADTEST_CPUS=1
load=${LOAD:--c 500 -s 20 --feed-rate 2000}
duration=${DURATION:-15s}
handshakes=${HANDSHAKES:-3000}
idle=${IDLE:-5000}

run() { # name gateway-args loadtest-args...
  local name=$1 gw=$2
  shift 2
  echo "== $name" >&2
  BENCH_GATEWAY_ARGS="$gw" scripts/bench-run.sh --no-progress --json "$out/$name.json" "$@" \
    >"$out/$name.txt" 2>&1 || { echo "bench-tls: $name failed, see $out/$name.txt" >&2; tail -5 "$out/$name.txt" >&2; }
}
# shellcheck disable=SC2086
{
  run plain "$auth" $load -d "$duration" --token="$key"
  run tls "$auth $tls" $load -d "$duration" --token="$key" --tls-ca-file "$c/ca.pem"
  # All at once, with room for every one of them in the handshake bounds
  # (by default 1024 pending, 64 per address: a burst beyond gets 503).
  room="--max-pending-handshakes $handshakes --max-pending-handshakes-per-ip $handshakes"
  run hs-plain-key "$auth $room" -c "$handshakes" -s 1 --connect-rate 0 --connect-timeout 30s --feed-rate 100 -d 2s --token="$key"
  run hs-tls-key "$auth $tls $room" -c "$handshakes" -s 1 --connect-rate 0 --connect-timeout 30s --feed-rate 100 -d 2s --token="$key" --tls-ca-file "$c/ca.pem"
  run hs-tls-jwt "$auth $tls $room" -c "$handshakes" -s 1 --connect-rate 0 --connect-timeout 30s --feed-rate 100 -d 2s --token="$jwt" --tls-ca-file "$c/ca.pem"
  run idle-plain "$auth" -c "$idle" -s 1 --feed-rate 10 -d 5s --token="$key"
  run idle-tls "$auth $tls" -c "$idle" -s 1 --feed-rate 10 -d 5s --token="$key" --tls-ca-file "$c/ca.pem"
  run idle-base "$auth" -c 1 -s 1 --feed-rate 10 -d 5s --token="$key"
}
python3 - "$out" "$idle" <<'PY'
import json, os, sys
out, idle = sys.argv[1], int(sys.argv[2])
def r(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
print("| run | connected | updates/s | e2e p99 ms | gateway cores | clients cores |")
print("|---|---:|---:|---:|---:|---:|")
for n in ["plain", "tls"]:
    j = r(n)
    if j:
        f = j["fast"]
        print(f"| {n} | {j['connections']['connected']} | {f['updates_per_sec']:,.0f} | {f['latency']['end_to_end']['p99_us']/1000:.2f} | {j['cpu']['gateway_cores'] or 0:.2f} | {j['cpu']['clients_cores']:.2f} |")
p, t = r("plain"), r("tls")
if p and t:
    pu, tu = p["fast"]["updates_per_sec"], t["fast"]["updates_per_sec"]
    pc, tc = p["cpu"]["gateway_cores"] or 0, t["cpu"]["gateway_cores"] or 0
    if pu and tu:
        print(f"\nTLS/plain: updates/s {tu/pu:.2f}x, gateway CPU per update {(tc/tu)/(pc/pu):.2f}x "
              f"({pc/pu*1e6:.2f} -> {tc/tu*1e6:.2f} µs)")
def cpu(name, who):
    # bench-run.sh's "bench-run: <who> cpu_seconds X" line of this run.
    p = os.path.join(out, name + ".txt")
    for line in open(p) if os.path.exists(p) else []:
        if line.startswith(f"bench-run: {who} cpu_seconds "):
            return float(line.split()[-1])
    return None
base = cpu("idle-base", "gateway")
print("\n| handshakes | connected | ramp s | per second | connect p50 ms | connect p99 ms | gateway CPU ms each | loadtest CPU ms each |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for n in ["hs-plain-key", "hs-tls-key", "hs-tls-jwt"]:
    j = r(n)
    if j:
        c = j["connections"]
        g, l = cpu(n, "gateway"), cpu(n, "loadtest")
        # Whole-run CPU over the handshakes: the run is short and idle apart
        # from them (the 1-connection run's gateway CPU is taken off).
        each = lambda x, off=0.0: f"{(x - off) / max(c['connected'], 1) * 1000:.3f}" if x is not None else "?"
        print(f"| {n[3:]} | {c['connected']} | {j['ramp_secs']:.2f} | {c['connected']/max(j['ramp_secs'],1e-9):,.0f} | {c['connect_time']['p50_us']/1000:.2f} | {c['connect_time']['p99_us']/1000:.2f} | {each(g, base or 0.0)} | {each(l)} |")
b = r("idle-base")
print("\n| idle | connected | gateway RSS MiB | per connection B (above 1 connection) |")
print("|---|---:|---:|---:|")
for n in ["idle-plain", "idle-tls"]:
    j = r(n)
    if j and b and j["gateway_rss_bytes"] and b["gateway_rss_bytes"]:
        per = (j["gateway_rss_bytes"] - b["gateway_rss_bytes"]) / max(j["connections"]["connected"] - 1, 1)
        print(f"| {n[5:]} | {j['connections']['connected']} | {j['gateway_rss_bytes']/2**20:.1f} | {per:,.0f} |")
PY
echo "bench-tls: JSON and logs in $out" >&2
