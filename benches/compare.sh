#!/usr/bin/env bash
# pollgate, Nchan and Pushpin through the same scenarios, with the same load
# tool (benches/pollgate), in one run; prints one table with the ratio
# pollgate / best peer. Installs the peers with apt when absent (needs root).
# pollgate runs twice per scenario: with its default `server.threads` (one
# per core) and with `server.threads: 1` (on a box whose other core runs the
# load tool, one thread is often faster: the table shows both).
#
#   benches/compare.sh                     # a b c d at the issue's sizes, ~14 min on 2 cores
#   SCENARIOS="a b" ARGS="--a-waiters 2000" benches/compare.sh
#   ROUNDS=3 SCENARIOS="b c d" benches/compare.sh   # each figure the median of 3 rounds
#   SET=grip benches/compare.sh            # GRIP: the same GRIP backend behind
#                                          # pollgate (`grip:` route) and Pushpin, a b c
#   PUSHPIN=0 SCENARIOS="b c d" benches/compare.sh   # beside Nchan and nginx only
#   SET=sse benches/compare.sh             # event streams: pollgate-sse beside Nchan's
#                                          # EventSource subscriber (nchan-es), and
#                                          # pollgate's own long polls, a b c
#
# SET=grip runs pollgate-grip (pollgate with a `grip:` route in front of the
# load tool's GRIP backend, items published with EPCP) beside Pushpin in front
# of the same backend, twice: as the existing comparison runs it (no cursor),
# and with the client's last seq passed on, which the backend names as
# `prev-id` (pushpin-prev-id): what an app that wants no loss does.
#
# On a noisy machine (a VM sharing its host) one round can be off by 20 % or
# more, for any target: with ROUNDS, every round runs every target through
# every scenario, so a slow phase of the machine hits all of them alike, and
# the table shows the median and the range.
#
# Every server starts fresh for every scenario and is stopped after it.
# Raw figures: target/bench-compare/results.jsonl (one JSON line per target
# and scenario); the table: target/bench-compare/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/bench-compare}
RUN=${RUN:-/tmp/pollgate-compare}
SET=${SET:-all}
if [ "$SET" = grip ] || [ "$SET" = sse ]; then
    SCENARIOS=${SCENARIOS:-"a b c"}
else
    SCENARIOS=${SCENARIOS:-"a b c d"}
fi
ROUNDS=${ROUNDS:-1}
PUSHPIN=${PUSHPIN:-1}
ARGS=${ARGS:-}
mkdir -p "$OUT" "$RUN"
rm -f "$OUT/results.jsonl"

need=()
command -v nginx >/dev/null || need+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || need+=(libnginx-mod-nchan)
[ "$PUSHPIN" = 0 ] || command -v pushpin >/dev/null || need+=(pushpin)
command -v wrk >/dev/null || need+=(wrk)
if ((${#need[@]})); then
    echo "installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian starts nginx and pushpin as services on install; their ports are ours here.
systemctl stop nginx pushpin 2>/dev/null || true

cargo bench --bench pollgate --no-run -q
bench() { cargo bench -q --bench pollgate -- "$@" --json "$OUT/results.jsonl" $ARGS; }

# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
stop() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}

# The backend behind every proxy, and Pushpin's GRIP answers.
cargo bench -q --bench pollgate -- backend --listen 127.0.0.1:9000 &
BACKEND=$!
PID=
# cargo runs the backend as a child: stop the whole tree, not just cargo.
trap 'for p in $(tree $BACKEND); do stop $p; done; [ -z "$PID" ] || stop $PID' EXIT
wait_http http://127.0.0.1:9000/

start_nchan() {
    mkdir -p "$RUN/nchan"
    nginx -p "$RUN/nchan/" -e "$RUN/nchan/error.log" -c "$ROOT/benches/peers/nginx-nchan.conf" &
    PID=$!
    wait_http http://127.0.0.1:8100/nchan_status
}
start_nginx_proxy() {
    mkdir -p "$RUN/proxy"
    nginx -p "$RUN/proxy/" -e "$RUN/proxy/error.log" -c "$ROOT/benches/peers/nginx-proxy.conf" &
    PID=$!
    wait_http http://127.0.0.1:8200/
}
start_pushpin() {
    mkdir -p "$RUN/pushpin/run" "$RUN/pushpin/log"
    sed "s|@RUN@|$RUN/pushpin|g" "$ROOT/benches/peers/pushpin/pushpin.conf" >"$RUN/pushpin/pushpin.conf"
    cp "$ROOT/benches/peers/pushpin/routes" "$RUN/pushpin/routes"
    pushpin --config "$RUN/pushpin/pushpin.conf" --merge-output >"$RUN/pushpin/out.log" 2>&1 &
    PID=$!
    wait_http http://127.0.0.1:7999/
    wait_http http://127.0.0.1:5561/
}

pushpin_grip() { # target-name cursor
    start_pushpin
    bench --scenarios "$s" --target "$1" --pids "$(tree $PID | xargs)" --connect-rate 500 \
        --poll-url 'http://127.0.0.1:7999/poll/{channel}' \
        --pub-url 'http://127.0.0.1:5561/publish/' --cursor "$2" \
        --pub-body '{"items":[{"channel":"{channel}","id":"{seq}","formats":{"http-response":{"body":"{\"seq\":{seq},\"ts\":{ts}}\n"}}}]}' \
        --proxy-url http://127.0.0.1:7999/ --backend-url http://127.0.0.1:9000/
    stop $PID
}

for round in $(seq "$ROUNDS"); do
for s in $SCENARIOS; do
    echo "== round $round of $ROUNDS: scenario $s" >&2
    if [ "$SET" = grip ]; then
        bench --scenarios "$s" --target pollgate-grip
        pushpin_grip pushpin none
        pushpin_grip pushpin-prev-id grip
        continue
    fi
    if [ "$SET" = sse ]; then
        bench --scenarios "$s" --target pollgate-sse --sse
        bench --scenarios "$s"                               # pollgate's long polls
        start_nchan
        sleep 0.5
        bench --scenarios "$s" --target nchan-es --sse --pids "$(tree $PID | xargs)" \
            --poll-url 'http://127.0.0.1:8100/sub_es/{channel}' \
            --pub-url 'http://127.0.0.1:8101/pub/{channel}'
        stop $PID
        continue
    fi
    bench --scenarios "$s"                                   # server.threads: one per core
    bench --scenarios "$s" --target pollgate-1thread --threads 1

    if [ "$s" = d ]; then start_nginx_proxy; else start_nchan; fi
    sleep 0.5 # nginx forks its workers after it answers
    bench --scenarios "$s" --target nchan --pids "$(tree $PID | xargs)" \
        --poll-url 'http://127.0.0.1:8100/sub/{channel}' \
        --pub-url 'http://127.0.0.1:8101/pub/{channel}' --cursor nchan \
        --proxy-url http://127.0.0.1:8200/ --backend-url http://127.0.0.1:9000/
    stop $PID

    [ "$PUSHPIN" = 0 ] && continue
    start_pushpin
    # Pushpin refuses connections opened faster than ~500/s (as in ../shared/bench).
    bench --scenarios "$s" --target pushpin --pids "$(tree $PID | xargs)" --connect-rate 500 \
        --poll-url 'http://127.0.0.1:7999/poll/{channel}' \
        --pub-url 'http://127.0.0.1:5561/publish/' --cursor none \
        --pub-body '{"items":[{"channel":"{channel}","formats":{"http-response":{"body":"{\"seq\":{seq},\"ts\":{ts}}\n"}}}]}' \
        --proxy-url http://127.0.0.1:7999/ --backend-url http://127.0.0.1:9000/
    stop $PID
done
done

python3 "$ROOT/benches/table.py" "$OUT/results.jsonl" | tee "$OUT/table.md"
