# Shell helpers the comparison scripts share (sourced by compare.sh, cross.sh).

# A PID and all its descendants: what counts as "the server" (nginx: its
# master and workers).
tree() {
    local pid=$1
    echo -n "$pid "
    for child in $(pgrep -P "$pid" || true); do tree "$child"; done
}

# Succeeds once anything answers at the URL (30 s at most).
wait_http() {
    for _ in $(seq 300); do
        curl -s -m 1 -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "no answer from $1" >&2
    return 1
}
