# shellcheck shell=bash
# Sourced by the bench scripts: free 127.0.0.1 ports.
# port_free P: nothing listens on 127.0.0.1:P.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# pick_port: a free port in 20000..31999, below the kernel's ephemeral
# range (32768+), so no client socket of an earlier run (loadtest opens up
# to 15,000) holds it.
pick_port() {
  local p
  for _ in $(seq 50); do
    p=$((20000 + RANDOM % 12000))
    if port_free "$p"; then echo "$p"; return; fi
  done
  echo "${0##*/}: no free port found" >&2
  exit 1
}
