#!/usr/bin/env bash
# Across instances on one Redis: pollgate (`broker: { kind: redis }`) and
# Nchan with its Redis store (`nchan_redis_pass`, the same Redis server), in
# one run, with the same load tool (benches/pollgate):
#   - "1x": one instance; waiters and publishes on it;
#   - "2x": two instances; waiters on the first, publishes to the second
#     (every delivery crosses Redis).
# Scenarios b (fan-out to 10,000) and c (1,000 waiters over 100 channels,
# 2,000 msg/s). Beside the load tool's figures: Redis's own CPU over the
# scenario (from /proc) and Redis commands per publish (INFO commandstats).
# Scenario e is the scale-out: "1x" holds 16,000 polls on one instance,
# "3x" 48,000 on three (16,000 each, each set held by a child process of
# the load tool on source addresses of its own); one channel, one publish
# to the first instance reaches all of them, 3 times. Redis's CPU and
# commands are counted over the whole scenario, the waiters' first polls
# included (as in b).
#
#   benches/cross.sh                        # b c, one round, ~8 min on 2 cores
#   SCENARIOS=e benches/cross.sh            # the scale-out, ~4 min
#   ROUNDS=3 benches/cross.sh               # each figure the median of 3 rounds
#
# Raw figures: target/bench-cross/results.jsonl; the table: target/bench-cross/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/target/bench-cross}
RUN=${RUN:-/tmp/pollgate-cross}
SCENARIOS=${SCENARIOS:-"b c"}
ROUNDS=${ROUNDS:-1}
ARGS=${ARGS:-}
EXTRA= # set per measurement (scenario e), never taken from the environment
REDIS=${REDIS:-127.0.0.1:6379}
mkdir -p "$OUT" "$RUN"
rm -f "$OUT/results.jsonl"
systemctl stop nginx 2>/dev/null || true

cargo build --release -q
cargo bench --bench pollgate --no-run -q
PG=$ROOT/target/release/pollgate
rcli() { redis-cli -h "${REDIS%:*}" -p "${REDIS#*:}" "$@"; }
REDIS_PID=$(rcli INFO server | awk -F: '/^process_id/ {print $2}' | tr -d '\r')
[ -r "/proc/$REDIS_PID/stat" ] || { echo "Redis at $REDIS is not a local process" >&2; exit 1; }
redis_ticks() { awk '{print $14 + $15}' "/proc/$REDIS_PID/stat"; }
redis_calls() { rcli INFO commandstats | awk -F'[=,]' '/^cmdstat_/ {n += $2} END {print n}'; }

# shellcheck source=benches/common.sh
. "$ROOT/benches/common.sh"
PIDS=()
stop_all() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    PIDS=()
}
trap stop_all EXIT

start_pollgate() { # index public webhook prefix
    cat >"$RUN/pollgate-$1.yaml" <<YAML
listen: "127.0.0.1:$2"
webhook: { listen: "127.0.0.1:$3" }
routes:
  - { prefix: /api/poll/, poll: {} }
broker: { kind: redis, url: "redis://$REDIS/0", key_prefix: "$4" }
poll: { max_timeout: 120s }
limits: { max_per_client: 1000000, max_per_address: 1000000, max_per_channel: 1000000, max_total: 1000000 }
server: { max_connections: 1000000 }
YAML
    RUST_LOG=warn "$PG" --config "$RUN/pollgate-$1.yaml" 2>>"$RUN/pollgate-$1.log" &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$3/readyz"
}
start_nchan() { # index sub-port pub-port
    local dir="$RUN/nchan-$1"
    mkdir -p "$dir"
    sed -e "s/127.0.0.1:8110/127.0.0.1:$2/; s/127.0.0.1:8111/127.0.0.1:$3/; s|redis://127.0.0.1:6379|redis://$REDIS|" \
        "$ROOT/benches/peers/nginx-nchan-redis.conf" >"$dir/nginx.conf"
    nginx -p "$dir/" -e "$dir/error.log" -c "$dir/nginx.conf" &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$2/nchan_status"
    sleep 0.5 # nginx forks its workers after it answers
}

# Runs the load tool on what is started, with Redis's CPU and commands
# around it appended as a record of their own.
measure() { # target scenario poll-url pub-url cursor
    local pids ticks0 calls0 before after
    pids=$(for p in "${PIDS[@]}"; do tree "$p"; done | xargs)
    ticks0=$(redis_ticks)
    calls0=$(redis_calls)
    before=$(wc -l <"$OUT/results.jsonl" 2>/dev/null || echo 0)
    cargo bench -q --bench pollgate -- --scenarios "$2" --target "$1" --pids "$pids" \
        --poll-url "$3" --pub-url "$4" --cursor "$5" --json "$OUT/results.jsonl" ${EXTRA:-} $ARGS
    after=$(wc -l <"$OUT/results.jsonl")
    [ "$after" -gt "$before" ] || { echo "no result for $1 $2" >&2; return 1; }
    python3 - "$OUT/results.jsonl" "$1" "$2" "$ticks0" "$(redis_ticks)" "$calls0" "$(redis_calls)" <<'PY'
import json, sys
path, target, scenario, t0, t1, c0, c1 = sys.argv[1:]
last = json.loads(open(path).read().splitlines()[-1])
published = last.get("published") or last.get("reps") or 1
record = {"target": target, "scenario": scenario,
          "redis_cpu_s": (float(t1) - float(t0)) / 100,
          "redis_commands_per_publish": (int(c1) - int(c0)) / published}
open(path, "a").write(json.dumps(record) + "\n")
print(f"{target} {scenario} redis: {record}", file=sys.stderr)
PY
}

# Scale-out: 1 and 3 instances of each server, waiters on all, publishes
# to the first.
scale_out() { # round
    local prefix="pgx$$r${1}e:" urls
    start_pollgate a 18400 18401 "$prefix"
    measure redis-pollgate-1x e 'http://127.0.0.1:18400/api/poll/{channel}' 'http://127.0.0.1:18401/publish/{channel}' pollgate
    stop_all
    start_pollgate a 18400 18401 "$prefix"
    start_pollgate b 18410 18411 "$prefix"
    start_pollgate c 18420 18421 "$prefix"
    urls=$(for p in 18400 18410 18420; do printf 'http://127.0.0.1:%s/api/poll/{channel},' "$p"; done)
    EXTRA="--e-poll-urls ${urls%,}" measure redis-pollgate-3x e 'http://127.0.0.1:18400/api/poll/{channel}' 'http://127.0.0.1:18401/publish/{channel}' pollgate
    stop_all

    start_nchan a 8110 8111
    measure redis-nchan-1x e 'http://127.0.0.1:8110/sub/{channel}' 'http://127.0.0.1:8111/pub/{channel}' nchan
    stop_all
    start_nchan a 8110 8111
    start_nchan b 8120 8121
    start_nchan c 8130 8131
    urls=$(for p in 8110 8120 8130; do printf 'http://127.0.0.1:%s/sub/{channel},' "$p"; done)
    EXTRA="--e-poll-urls ${urls%,}" measure redis-nchan-3x e 'http://127.0.0.1:8110/sub/{channel}' 'http://127.0.0.1:8111/pub/{channel}' nchan
    stop_all
}

for round in $(seq "$ROUNDS"); do
for s in $SCENARIOS; do
    echo "== round $round of $ROUNDS: scenario $s" >&2
    if [ "$s" = e ]; then scale_out "$round"; continue; fi
    prefix="pgx$$r${round}$s:"
    start_pollgate a 18400 18401 "$prefix"
    measure redis-pollgate-1x "$s" 'http://127.0.0.1:18400/api/poll/{channel}' 'http://127.0.0.1:18401/publish/{channel}' pollgate
    stop_all
    start_pollgate a 18400 18401 "$prefix"
    start_pollgate b 18410 18411 "$prefix"
    measure redis-pollgate-2x "$s" 'http://127.0.0.1:18400/api/poll/{channel}' 'http://127.0.0.1:18411/publish/{channel}' pollgate
    stop_all

    start_nchan a 8110 8111
    measure redis-nchan-1x "$s" 'http://127.0.0.1:8110/sub/{channel}' 'http://127.0.0.1:8111/pub/{channel}' nchan
    stop_all
    start_nchan a 8110 8111
    start_nchan b 8120 8121
    measure redis-nchan-2x "$s" 'http://127.0.0.1:8110/sub/{channel}' 'http://127.0.0.1:8121/pub/{channel}' nchan
    stop_all
done
done

python3 "$ROOT/benches/table.py" "$OUT/results.jsonl" | tee "$OUT/table.md"
