#!/usr/bin/env bash
# GET /metrics benchmark: scrape latency of a backup daemon and of the node with a fleet of
# DEVICES devices, against baselines served by the same process in the same run.
#
#   bench/metrics.sh                         # 200 devices, 2000 requests per measurement
#   DEVICES=500 REQUESTS=500 bench/metrics.sh
#
# - Daemon: crates/daemon/examples/metrics_server.rs builds a daemon whose engine reports results
#   and videos for every device, runs 5 jobs per device (so every family holds its series:
#   runs, durations, bytes, failure streaks, running flags, archive bytes per device and kind),
#   and serves /metrics; the baseline is the MySQL daemon's /status (the status table as JSON)
#   from the same process.
# - Node: two stub daemons (crates/node/examples/stub_daemon.rs) serve DEVICES-device /status
#   documents; the release `etho-backup node` merges them; its /metrics is measured against its
#   /healthz (the HTTP floor of the same stack) and its /backup/status. The stubs' entries carry
#   the health facts (last_success, newest_copied_at, ...), so the node exports every device's
#   health states, exposure and last successes.
#
# A scrape is one request now and then, so each endpoint gets REQUESTS (2000) sequential requests
# PAUSE_MS (2) apart; the target is a /metrics p99 <= 5 ms. Everything listens on 127.0.0.1 and is stopped on exit. Writes Markdown to
# docs/benchmarks/metrics.md (override with OUT=...).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DEVICES=${DEVICES:-200}
OUT=${OUT:-docs/benchmarks/metrics.md}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/etho-metrics-bench.XXXXXX")
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench/metrics.sh needs $tool" >&2; exit 1; }
done

echo "== building (release)"
cargo build --release -q -p etho-backup --bin etho-backup
cargo build --release -q -p etho-node --example stub_daemon
cargo build --release -q -p etho-daemon --example metrics_server
BIN=target/release/etho-backup
STUB=target/release/examples/stub_daemon
METRICS=target/release/examples/metrics_server

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL: poll until it answers 200 (60 s deadline: the daemon runs its jobs first).
wait_http() {
    local deadline=$((SECONDS + 60))
    until curl -sf -o /dev/null "$1"; do
        [ $SECONDS -lt $deadline ] || { echo "no answer from $1" >&2; exit 1; }
        sleep 0.1
    done
}

MYSQL_PORT=$(free_port)
RSYNC_PORT=$(free_port)
NODE_PORT=$(free_port)
DAEMON_PORT=$(free_port)
export STUB_LIFETIME_SECS=1800

"$METRICS" "127.0.0.1:$DAEMON_PORT" "$DEVICES" >"$WORK/daemon.log" 2>&1 &
PIDS+=($!)
"$STUB" mysql "127.0.0.1:$MYSQL_PORT" "$DEVICES" >"$WORK/mysql.log" 2>&1 &
PIDS+=($!)
"$STUB" rsync "127.0.0.1:$RSYNC_PORT" "$DEVICES" >"$WORK/rsync.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$MYSQL_PORT/status"
wait_http "http://127.0.0.1:$RSYNC_PORT/status"
RUST_LOG=warn "$BIN" node --listen "127.0.0.1:$NODE_PORT" --config none \
    --mysql-backup-url "http://127.0.0.1:$MYSQL_PORT" \
    --rsync-backup-url "http://127.0.0.1:$RSYNC_PORT" \
    --state-dir "$WORK/node-state" --no-archive >"$WORK/node.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$NODE_PORT/healthz"
wait_http "http://127.0.0.1:$DAEMON_PORT/metrics"

curl -sf -o "$WORK/daemon.prom" "http://127.0.0.1:$DAEMON_PORT/metrics"
curl -sf -o "$WORK/node.prom" "http://127.0.0.1:$NODE_PORT/metrics"
python3 - "$WORK/daemon.prom" "$WORK/node.prom" "$DEVICES" <<'PY'
import sys
daemon = open(sys.argv[1]).read().splitlines()
node = open(sys.argv[2]).read().splitlines()
n = int(sys.argv[3])
samples = lambda lines, name: [l for l in lines if l.startswith(name + "{") or l.startswith(name + " ")]
assert len(samples(daemon, "etho_backup_archive_bytes")) == 2 * n, "archive series"
assert len(samples(daemon, "etho_backup_job_running")) == n, "running series"
assert len(samples(daemon, "etho_backup_failed_runs_in_a_row")) == n, "streak series"
devices = sum(float(l.rsplit(" ", 1)[1]) for l in samples(node, "etho_backup_devices"))
assert devices == n, f"node counts {devices} devices"
assert len(samples(node, "etho_backup_device_health")) == 6 * n, "health series"
assert len(samples(node, "etho_backup_device_exposure_seconds")) == n, "exposure series"
assert len(samples(node, "etho_backup_device_last_success_timestamp_seconds")) >= n, "last success series"
PY
DAEMON_SERIES=$(grep -vc '^#' "$WORK/daemon.prom")
DAEMON_BYTES=$(wc -c <"$WORK/daemon.prom")
NODE_SERIES=$(grep -vc '^#' "$WORK/node.prom")
NODE_BYTES=$(wc -c <"$WORK/node.prom")
echo "== daemon /metrics: $DAEMON_SERIES samples, $DAEMON_BYTES bytes; node /metrics: $NODE_SERIES samples, $NODE_BYTES bytes"

# scrape URL -> prints "p50_ms p99_ms max_ms": REQUESTS sequential GETs on one keep-alive
# connection, PAUSE_MS apart (a scrape is one request now and then, not a flood), after 50
# warm-up requests.
scrape() {
    python3 - "$1" "$REQUESTS" "$PAUSE_MS" <<'PY'
import http.client, sys, time, urllib.parse
url = urllib.parse.urlsplit(sys.argv[1])
n, pause = int(sys.argv[2]), float(sys.argv[3]) / 1000
conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
def once():
    t = time.perf_counter()
    conn.request("GET", url.path)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200 and body, (r.status, len(body))
    return (time.perf_counter() - t) * 1000
for _ in range(50):
    once()
times = []
for _ in range(n):
    times.append(once())
    time.sleep(pause)
times.sort()
print(f"{times[len(times) // 2]:.3f} {times[int(len(times) * 0.99) - 1]:.3f} {times[-1]:.3f}")
PY
}

REQUESTS=${REQUESTS:-2000}
PAUSE_MS=${PAUSE_MS:-2}
LOAD_BEFORE=$(uptime | sed 's/.*load average: //')
ROWS=()
PASS=1
measure() { # NAME URL BASELINE_NAME BASELINE_URL
    local name=$1 url=$2 bname=$3 burl=$4 p50 p99 max bp50 bp99 bmax ratio
    read -r p50 p99 max < <(scrape "$url")
    read -r bp50 bp99 bmax < <(scrape "$burl")
    ratio=$(python3 -c "print(f'{$p99 / $bp99:.2f}')")
    printf '== %-6s /metrics p50 %6s p99 %6s max %7s ms | %-15s p50 %6s p99 %6s max %7s ms | p99 ratio %s\n' \
        "$name" "$p50" "$p99" "$max" "$bname" "$bp50" "$bp99" "$bmax" "$ratio"
    ROWS+=("| $name | $p50 | $p99 | $max | $bname | $bp50 | $bp99 | $bmax | $ratio |")
    python3 -c "import sys; sys.exit(0 if $p99 <= 5 else 1)" || PASS=0
}
measure daemon "http://127.0.0.1:$DAEMON_PORT/metrics" "daemon /status" "http://127.0.0.1:$DAEMON_PORT/status"
measure node "http://127.0.0.1:$NODE_PORT/metrics" "node /healthz" "http://127.0.0.1:$NODE_PORT/healthz"
measure node "http://127.0.0.1:$NODE_PORT/metrics" "/backup/status" "http://127.0.0.1:$NODE_PORT/backup/status"
LOAD_AFTER=$(uptime | sed 's/.*load average: //')

mkdir -p "$(dirname "$OUT")"
{
    echo "## \`GET /metrics\` scrape latency"
    echo
    echo "Command: \`bench/metrics.sh\` (DEVICES=$DEVICES, REQUESTS=$REQUESTS, PAUSE_MS=$PAUSE_MS)."
    echo "Machine: $(nproc) cores ($(uname -m)), shared; load average before $LOAD_BEFORE, after $LOAD_AFTER."
    echo "Date: $(date -u +%Y-%m-%dT%H:%MZ)."
    echo
    echo "Daemon: \`crates/daemon/examples/metrics_server.rs\`, $DEVICES devices after 5 jobs each:"
    echo "$DAEMON_SERIES samples, $DAEMON_BYTES bytes per scrape; baseline: its \`/status\` (the status table as"
    echo "JSON, what the MySQL daemon serves). Node: release \`etho-backup node\` over two stub daemons with"
    echo "$DEVICES devices each: $NODE_SERIES samples, $NODE_BYTES bytes; baselines: its \`/healthz\` (the HTTP floor)"
    echo "and its \`/backup/status\`. Each line: $REQUESTS sequential requests on one keep-alive connection,"
    echo "${PAUSE_MS} ms apart, after 50 warm-up requests (Python's http.client; the client's own time is included)."
    echo "Latencies in ms."
    echo
    echo "| server | /metrics p50 | p99 | max | baseline | p50 | p99 | max | p99 / baseline p99 |"
    echo "|---|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    verdict=$([ $PASS = 1 ] && echo "met" || echo "NOT met")
    echo "Target (scrape p99 <= 5 ms with $DEVICES devices): $verdict."
} >"$OUT"
echo "== wrote $OUT"
[ $PASS = 1 ] || { echo "target not met" >&2; exit 1; }
