#!/bin/bash
# Container health check of the quotecast gateway: exit 0 when GET /readyz
# on the gateway's WebSocket port answers 200 (feed up, symbols known, not
# every symbol stale, no late start in progress), 1 otherwise. Bash only
# (/dev/tcp): the runtime image carries no curl.
#
# The address is QUOTECAST_HEALTH_ADDR, else QUOTECAST_WS_ADDR (the
# gateway's own setting), else the gateway's default; a wildcard host
# (0.0.0.0, [::]) is probed on loopback. With TLS on the client ports
# (QUOTECAST_TLS_CERT_FILE), point QUOTECAST_HEALTH_ADDR at the metrics
# port (QUOTECAST_METRICS_ADDR), which answers /readyz in plain HTTP.
set -u
addr="${QUOTECAST_HEALTH_ADDR:-${QUOTECAST_WS_ADDR:-127.0.0.1:8080}}"
port="${addr##*:}"
host="${addr%:*}"
host="${host#[}"
host="${host%]}"
case "$host" in
  "" | 0.0.0.0) host=127.0.0.1 ;;
  ::) host=::1 ;;
esac
exec 3<>"/dev/tcp/$host/$port" || exit 1
printf 'GET /readyz HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$host" >&3
IFS= read -r -t 2 status <&3 || exit 1
case "$status" in
  "HTTP/1.1 200"*) exit 0 ;;
  *) echo "readyz: ${status%$'\r'}" >&2; exit 1 ;;
esac
