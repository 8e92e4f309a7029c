#!/usr/bin/env bash
# A lab of simulated devices backed up by the real daemons, measured over a long window:
#
# - exposure: every SAMPLE seconds the node's /backup/status is read and every device's
#   health.exposure_s collected; p50/p95/max over all samples (targets: p95 <= 30 s, max <= 60 s);
# - each backup daemon's CPU over the window (user+sys, its rsync/ssh children included, from
#   /proc) as cores on average (target <= 0.5) and its RSS, sampled, max (target <= 100 MB);
# - the node's /backup/status under wrk at concurrency 10, p99 (target <= 20 ms), against the
#   same reply bytes served static by the same stack in the same run (the ceiling, as in
#   bench/status.sh).
#
#   bench/fleet.sh                                 # 200 devices, a quarter MariaDB, interval 10 s,
#                                                  # 120 s warm-up, 600 s measured
#   DEVICES="200 100 50" bench/fleet.sh            # several fleet sizes, one after the other
#   DURATION=120 WARMUP=60 DEVICES=20 bench/fleet.sh   # a quick look
#
# The fleet is `etho-backup sim` (device HTTP APIs, one rsync daemon per device, a private
# mariadbd), the node and both daemons are the release binary; everything listens on
# 127.0.0.0/8 only and is stopped (and the data deleted) on exit. Writes Markdown to
# docs/benchmarks/fleet.md (override with OUT=...).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SIZES=${DEVICES:-200}
INTERVAL=${INTERVAL:-10}
WARMUP=${WARMUP:-120}
DURATION=${DURATION:-600}
SAMPLE=${SAMPLE:-5}
WRK_DURATION=${WRK_DURATION:-10s}
MAX_JOBS=${MAX_JOBS:-4}
OUT=${OUT:-docs/benchmarks/fleet.md}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/etho-fleet-bench.XXXXXX")
PIDS=()

stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in wrk python3 curl rsync; do
    command -v "$tool" >/dev/null || { echo "bench/fleet.sh needs $tool" >&2; exit 1; }
done
[ -x /usr/sbin/mariadbd ] || command -v mariadbd >/dev/null \
    || { echo "bench/fleet.sh needs mariadb-server" >&2; exit 1; }

echo "== building (release)"
cargo build --release -q -p etho-backup --bin etho-backup
cargo build --release -q -p etho-node --example stub_daemon
BIN=$PWD/target/release/etho-backup
STUB=$PWD/target/release/examples/stub_daemon

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds.
wait_for() {
    local what=$1 limit=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $what" >&2; exit 1; }
        sleep 0.5
    done
}

ROWS=()
DETAILS=()
run_size() {
    local n=$1 dir="$WORK/fleet-$n"
    mkdir -p "$dir/results" "$dir/videos" "$dir/state"
    local roles
    roles=$(python3 -c "import sys; n=int(sys.argv[1]); print(','.join('mariadb' if i % 4 == 0 else 'sqlite' for i in range(n)))" "$n")
    local http_port rsync_port node_port mysql_port rsyncd_port static_port
    http_port=$(free_port); rsyncd_port=$(free_port)
    node_port=$(free_port); mysql_port=$(free_port); rsync_port=$(free_port); static_port=$(free_port)
    echo "== $n devices: starting the fleet (load $(cut -d' ' -f1-3 /proc/loadavg))"
    RUST_LOG=warn "$BIN" sim --devices "$n" --first-ip 127.3.0.10 --roles "$roles" \
        --http-port "$http_port" --rsync-port "$rsyncd_port" --experiment-length 0 --stagger 0.1 \
        --data-dir "$dir/fleet" >"$dir/sim.log" 2>&1 &
    local sim_pid=$!
    PIDS+=("$sim_pid")
    wait_for "the fleet" 300 grep -q '^mysql-backup: ' "$dir/sim.log"
    local devices source maria_port
    devices=$(sed -n 's/^node: etho-backup node //p' "$dir/sim.log")
    source=$(sed -n "s/^rsync-backup: etho-backup rsync-backup --source '\(.*\)'$/\1/p" "$dir/sim.log")
    maria_port=$(sed -n 's/^mysql-backup: etho-backup mysql-backup --mysql-port //p' "$dir/sim.log")
    # shellcheck disable=SC2086 # one --device flag per device
    RUST_LOG=warn "$BIN" node --listen "127.0.0.1:$node_port" \
        --mysql-backup-url "http://127.0.0.1:$mysql_port" --rsync-backup-url "http://127.0.0.1:$rsync_port" \
        --state-dir "$dir/state/node" -r "$dir/results" -v "$dir/videos" $devices >"$dir/node.log" 2>&1 &
    local node_pid=$!
    PIDS+=("$node_pid")
    wait_for "the node" 30 curl -sf "http://127.0.0.1:$node_port/healthz"
    RUST_LOG=warn "$BIN" mysql-backup -p "$mysql_port" -i "127.0.0.1:$node_port" -r "$dir/results" \
        --interval "$INTERVAL" --max-jobs "$MAX_JOBS" --mysql-port "$maria_port" \
        --state-dir "$dir/state/mysql" >"$dir/mysql.log" 2>&1 &
    local mysql_pid=$!
    PIDS+=("$mysql_pid")
    RUST_LOG=warn "$BIN" rsync-backup -p "$rsync_port" -i "127.0.0.1:$node_port" -r "$dir/results" \
        -v "$dir/videos" --source "$source" --interval "$INTERVAL" --max-jobs "$MAX_JOBS" \
        --state-dir "$dir/state/rsync" >"$dir/rsync.log" 2>&1 &
    local rsync_pid=$!
    PIDS+=("$rsync_pid")
    echo "== $n devices: warm-up ${WARMUP}s"
    sleep "$WARMUP"
    local load_start
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "== $n devices: measuring ${DURATION}s (load $load_start)"
    python3 - "$dir/measure.json" "$node_port" "$DURATION" "$SAMPLE" "$n" \
        "sim=$sim_pid" "node=$node_pid" "mysql-backup=$mysql_pid" "rsync-backup=$rsync_pid" \
        "http://127.0.0.1:$mysql_port/" "http://127.0.0.1:$rsync_port/" <<'EOF'
import json, os, sys, time, urllib.request

out, port, duration, every, n = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
procs = dict(a.split("=") for a in sys.argv[6:10])
services = {"mysql-backup": sys.argv[10], "rsync-backup": sys.argv[11]}
tick = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    own = (int(f[11]) + int(f[12])) / tick
    children = (int(f[13]) + int(f[14])) / tick
    return own, children

def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

def get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)

start = {k: cpu(p) for k, p in procs.items()}
t0 = time.monotonic()
exposures, unknown, states, rss_max, rss_sum, samples, errors = [], 0, {}, {k: 0.0 for k in procs}, {k: 0.0 for k in procs}, 0, 0
cycles = {k: [] for k in services}
seen = {k: None for k in services}
while time.monotonic() - t0 < duration:
    t = time.monotonic()
    try:
        doc = get(f"http://127.0.0.1:{port}/backup/status")
    except Exception:
        errors += 1
        time.sleep(every)
        continue
    samples += 1
    for dev in doc["unified_devices"].values():
        h = dev.get("health") or {}
        states[h.get("state")] = states.get(h.get("state"), 0) + 1
        e = h.get("exposure_s")
        if e is None:
            unknown += 1
        else:
            exposures.append(e)
    for k, p in procs.items():
        r = rss(p)
        rss_max[k] = max(rss_max[k], r)
        rss_sum[k] += r
    for k, url in services.items():
        try:
            s = get(url)
            start_t = s.get("last_cycle_start") or s.get("backup_progress", {}).get("last_cycle_start")
            end_t = s.get("last_cycle_end") or s.get("backup_progress", {}).get("last_cycle_end")
            if start_t and end_t and end_t >= start_t and seen[k] != start_t:
                seen[k] = start_t
                cycles[k].append(end_t - start_t)
        except Exception:
            pass
    time.sleep(max(0.0, every - (time.monotonic() - t)))
wall = time.monotonic() - t0
end = {k: cpu(p) for k, p in procs.items()}
exposures.sort()
def pct(p):
    if not exposures:
        return None
    return exposures[min(len(exposures) - 1, int(round(p / 100 * (len(exposures) - 1))))]
result = {
    "devices": n, "wall_s": wall, "samples": samples, "errors": errors,
    "exposure": {"n": len(exposures), "unknown": unknown, "p50": pct(50), "p95": pct(95), "max": exposures[-1] if exposures else None},
    "states": states,
    "cpu_cores": {k: {"own": (end[k][0] - start[k][0]) / wall, "with_children": (end[k][0] + end[k][1] - start[k][0] - start[k][1]) / wall} for k in procs},
    "rss_mb": {k: {"max": rss_max[k], "mean": rss_sum[k] / max(samples, 1)} for k in procs},
    "cycle_s": {k: {"n": len(v), "median": sorted(v)[len(v) // 2] if v else None, "max": max(v) if v else None} for k, v in cycles.items()},
}
json.dump(result, open(out, "w"), indent=1)
print(json.dumps(result))
EOF
    local load_end
    load_end=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "== $n devices: /backup/status under wrk -c10 (load $load_end)"
    curl -sf -o "$dir/reply.json" "http://127.0.0.1:$node_port/backup/status"
    STUB_LIFETIME_SECS=300 "$STUB" static "127.0.0.1:$static_port" "$dir/reply.json" >"$dir/static.log" 2>&1 &
    local static_pid=$!
    PIDS+=("$static_pid")
    wait_for "the static server" 10 curl -sf -o /dev/null "http://127.0.0.1:$static_port/backup/status"
    local node_wrk static_wrk
    node_wrk=$(wrk_p99 "http://127.0.0.1:$node_port/backup/status")
    static_wrk=$(wrk_p99 "http://127.0.0.1:$static_port/backup/status")
    local reply_bytes
    reply_bytes=$(wc -c <"$dir/reply.json")
    python3 - "$dir/measure.json" "$node_wrk" "$static_wrk" "$reply_bytes" "$load_start" "$load_end" "$INTERVAL" >"$dir/row.md" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
nrps, np99 = sys.argv[2].split()
srps, sp99 = sys.argv[3].split()
bytes_, load_start, load_end, interval = sys.argv[4], sys.argv[5], sys.argv[6], float(sys.argv[7])
e = m["exposure"]
c, r, cy = m["cpu_cores"], m["rss_mb"], m["cycle_s"]
ok = lambda b: "yes" if b else "**no**"
f = lambda v: "n/a" if v is None else f"{v:.1f}"
row = (f"| {m['devices']} | {f(e['p50'])} / {f(e['p95'])} / {f(e['max'])} s ({e['n']} values, p95 {e['p95'] / interval if e['p95'] is not None else 0:.1f}x the interval) "
       f"| {c['mysql-backup']['with_children']:.2f} / {r['mysql-backup']['max']:.0f} MB "
       f"| {c['rsync-backup']['with_children']:.2f} ({c['rsync-backup']['own']:.2f} own) / {r['rsync-backup']['max']:.0f} MB "
       f"| {f(cy['mysql-backup']['median'])} / {f(cy['rsync-backup']['median'])} s "
       f"| {float(np99):.1f} ms ({nrps} req/s) vs static {float(sp99):.1f} ms ({srps} req/s), {bytes_} B "
       f"| {c['sim']['with_children']:.2f} / {c['node']['own']:.2f} "
       f"| {load_start} → {load_end} |")
targets = {
    "exposure p95 <= 30 s": e["p95"] is not None and e["p95"] <= 30,
    "exposure max <= 60 s": e["max"] is not None and e["max"] <= 60,
    "mysql-backup <= 0.5 core": c["mysql-backup"]["with_children"] <= 0.5,
    "rsync-backup <= 0.5 core": c["rsync-backup"]["with_children"] <= 0.5,
    "mysql-backup <= 100 MB": r["mysql-backup"]["max"] <= 100,
    "rsync-backup <= 100 MB": r["rsync-backup"]["max"] <= 100,
    "node p99 <= 20 ms at c=10": float(np99) <= 20,
}
print(row)
print("TARGETS " + "; ".join(f"{k}: {ok(v)}" for k, v in targets.items()))
print("STATES " + json.dumps(m["states"]) + f" over {m['samples']} samples ({m['errors']} failed reads)")
EOF
    cat "$dir/row.md"
    ROWS+=("$(sed -n 1p "$dir/row.md")")
    DETAILS+=("- $n devices: $(sed -n 2p "$dir/row.md" | sed 's/^TARGETS //'); health states seen: $(sed -n 3p "$dir/row.md" | sed 's/^STATES //')")
    stop_all
    rm -rf "$dir/fleet" "$dir/results" "$dir/videos"
}

# wrk_p99 URL -> "req/s p99_ms" at concurrency 10.
wrk_p99() {
    local out="$WORK/wrk.txt"
    wrk -t2 -c10 -d2s "$1" >/dev/null
    wrk -t2 -c10 -d"$WRK_DURATION" --latency "$1" >"$out"
    if grep -qE 'Non-2xx|Socket errors' "$out"; then
        echo "wrk reported errors for $1:" >&2
        cat "$out" >&2
        exit 1
    fi
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
            return v
        }
        $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        END { printf "%.0f %.3f\n", rps, p99 }
    ' "$out"
}

for n in $SIZES; do
    run_size "$n"
done

mkdir -p "$(dirname "$OUT")"
{
    echo "## A lab of simulated devices"
    echo
    echo "Command: \`DEVICES=\"$SIZES\" bench/fleet.sh\` (interval ${INTERVAL} s for both daemons, --max-jobs $MAX_JOBS,"
    echo "${WARMUP} s warm-up, ${DURATION} s measured, a sample every ${SAMPLE} s, wrk ${WRK_DURATION} at concurrency 10)."
    echo "Machine: $(nproc) cores ($(uname -m)), shared with the fleet itself (one process for every"
    echo "device's HTTP API and writer, one rsync daemon per device, one mariadbd). Date: $(date -u +%Y-%m-%dT%H:%MZ)."
    echo
    echo "A quarter of the devices are MariaDB trackers, the rest SQLite trackers (WAL mode), 10 ROIs at"
    echo "2 frames/s each; experiments run for the whole test. Exposure is every device's"
    echo "\`health.exposure_s\` at every sample. CPU is user+sys over the measured window, the daemon's"
    echo "children (rsync clients) included, divided by the window; RSS is the daemon's own, sampled."
    echo
    echo "| devices | exposure p50 / p95 / max | mysql-backup cores / max RSS | rsync-backup cores / max RSS | cycle median mysql / rsync | node /backup/status p99 at c=10 | sim / node cores | load (1, 5, 15 min) start → end |"
    echo "|---|---|---|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "Targets (exposure p95 <= 30 s and max <= 60 s; each daemon <= 0.5 core and <= 100 MB; node p99 <= 20 ms):"
    echo
    printf '%s\n' "${DETAILS[@]}"
} >"$OUT"
echo "== wrote $OUT"
