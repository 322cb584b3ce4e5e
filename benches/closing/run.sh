#!/usr/bin/env bash
# pollgate in front of an app that closes after every answer (app.py):
# wrk through pollgate at 16 and 64 connections, GET then POST; prints the
# answers that were not 2xx and pollgate's retry and error counters.
# Every request opens a connection (the app closes each): 60,000 in a few
# seconds exhaust loopback's ephemeral ports (TIME_WAIT), so each run is
# short and the next waits for TIME_WAIT to pass; widen
# net.ipv4.ip_local_port_range where you may.
# Usage: benches/closing/run.sh [POLLGATE_BINARY] [CLOSE_AFTER_MS]
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${1:-target/release/pollgate}
CLOSE_AFTER=${2:-0}
APP_PORT=18090 PG_PORT=18091 HOOK_PORT=18092
python3 benches/closing/app.py $APP_PORT "$CLOSE_AFTER" &
APP=$!
CONF=$(mktemp)
cat > "$CONF" <<YAML
listen: "127.0.0.1:$PG_PORT"
webhook: { listen: "127.0.0.1:$HOOK_PORT" }
upstreams: { app: { url: "http://127.0.0.1:$APP_PORT" } }
routes: [ { prefix: /, upstream: app } ]
YAML
RUST_LOG=error "$BIN" --config "$CONF" &
PG=$!
trap 'kill $APP $PG 2>/dev/null; rm -f "$CONF"' EXIT
for port in $APP_PORT $PG_PORT; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
POST=$(mktemp --suffix=.lua)
echo 'wrk.method = "POST"; wrk.body = "{\"n\":1}"; wrk.headers["Content-Type"] = "application/json"' > "$POST"
first=1
for c in 16 64; do
  for m in GET POST; do
    [ $first = 1 ] || sleep 61
    first=0
    script=(); [ $m = POST ] && script=(-s "$POST")
    out=$(wrk -t1 -c$c -d4s "${script[@]}" "http://127.0.0.1:$PG_PORT/item")
    total=$(echo "$out" | awk '/requests in/ {print $1}')
    bad=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
    echo "$m c=$c: ${bad:-0} of $total not 2xx"
  done
done
curl -s "http://127.0.0.1:$HOOK_PORT/metrics" | grep -E '^pollgate_upstream_(retries|errors)_total' || true
rm -f "$POST"
