#!/usr/bin/env bash
# rsync-backup benchmark: GET /status latency (wrk) against the archive size, and the full
# archive rescan against `du -sb` on the same tree, in the same run.
#
#   bench/rsync.sh                # 500 000 files over 50 devices, plus a 50 x 20 file baseline
#   FILES=100000 bench/rsync.sh   # smaller run
#
# Everything listens on 127.0.0.1 only and is stopped (and the synthetic tree deleted) on exit.
# Writes the results as Markdown to docs/benchmarks/rsync.md (override with OUT=...).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
FILES=${FILES:-500000}
DEVICES=${DEVICES:-50}
SMALL_FILES=${SMALL_FILES:-1000}
WRK_DURATION=${WRK_DURATION:-5s}
WRK_LOADS=${WRK_LOADS:-"1 10"}   # concurrent connections: one poller (the node), then saturation
RUNS=${RUNS:-5}
ROUNDS=${ROUNDS:-3}
OUT=${OUT:-docs/benchmarks/rsync.md}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/etho-rsync-bench.XXXXXX")
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

for tool in wrk du python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench/rsync.sh needs $tool" >&2; exit 1; }
done

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== building (release)"
cargo build --release -q -p etho-backup
cargo build --release -q -p etho-rsync-backup --example rescan
BIN=target/release/etho-backup
RESCAN=target/release/examples/rescan

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Synthetic archive: per device, results/<id>/<NAME>/<ts>/*.db and videos/<id>/<NAME>/<ts>/*.h264,
# 100 files per directory, 10 % results, 90 % videos, small files (0-2 KiB).
make_archive() { # dir files devices
    python3 - "$1" "$2" "$3" <<'EOF'
import os, random, sys
root, files, devices = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(42)
per_dev = files // devices
blob = os.urandom(2048)
for d in range(devices):
    did = f"{d:032x}"
    name = f"ETHOSCOPE_{d + 1:03d}"
    n_results = max(1, per_dev // 10)
    for kind, count in (("results", n_results), ("videos", per_dev - n_results)):
        written = 0
        ts = 0
        while written < count:
            path = os.path.join(root, kind, did, name, f"2025-07-{ts // 24 + 1:02d}_{ts % 24:02d}-00-00")
            os.makedirs(path, exist_ok=True)
            for i in range(min(100, count - written)):
                ext = "db" if kind == "results" else "h264"
                fd = os.open(os.path.join(path, f"{i:05d}.{ext}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.write(fd, blob[: rnd.randrange(0, 2048)])
                os.close(fd)
            written += min(100, count - written)
            ts += 1
EOF
}

devices_json() { # devices
    python3 - "$1" <<'EOF'
import json, sys
n = int(sys.argv[1])
out = {}
for d in range(n):
    did = f"{d:032x}"
    out[did] = {"id": did, "name": f"ETHOSCOPE_{d + 1:03d}", "ip": f"127.0.1.{d % 250 + 1}",
                "status": "running", "databases": {"SQLite": {"x.db": {}}, "MariaDB": {}}}
print(json.dumps(out))
EOF
}

# Starts a stub node serving /devices and the daemon on ARCHIVE; sets DAEMON_PORT. (Not run in
# a subshell, so PIDS keeps the processes to stop.)
start_daemon() { # archive state
    local archive=$1 state=$2
    mkdir -p "$state/node"
    devices_json "$DEVICES" > "$state/node/devices"
    local node_port port closed
    node_port=$(free_port); port=$(free_port); closed=$(free_port)
    python3 -m http.server --bind 127.0.0.1 --directory "$state/node" "$node_port" >/dev/null 2>&1 &
    PIDS+=($!)
    # Devices are unreachable (a closed loopback port): each job fails at once, so the status
    # table holds all devices and /status serves every device's sizes from the rescan.
    RUST_LOG=warn "$BIN" rsync-backup -p "$port" -i "127.0.0.1:$node_port" \
        -r "$archive/results" -v "$archive/videos" --state-dir "$state/daemon" \
        --source "rsync://127.0.0.1:$closed/ethoscope_data" --interval 100000 \
        --rescan-interval 100000 >"$state/daemon.log" 2>&1 &
    PIDS+=($!)
    # Ready when the first cycle and the first rescan are done.
    for _ in $(seq 1 3000); do
        if curl -fs "http://127.0.0.1:$port/" 2>/dev/null \
            | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["last_backup"] and d["last_rescan"]["finished_at"] else 1)' 2>/dev/null; then
            DAEMON_PORT=$port; return 0
        fi
        sleep 0.1
    done
    echo "daemon did not become ready" >&2; cat "$state/daemon.log" >&2; exit 1
}

# wrk p99 in ms for GET /status on PORT with C connections.
status_p99() { # port label connections
    local out threads=$(( $3 < 2 ? 1 : 2 ))
    out=$(wrk -t"$threads" -c"$3" -d"$WRK_DURATION" --latency "http://127.0.0.1:$1/status")
    echo "$out" > "$WORK/wrk-$2.txt"
    echo "$out" | awk '$1=="99%" { v=$2; if (v ~ /us$/) { sub(/us$/,"",v); v=v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v) } else if (v ~ /s$/) { sub(/s$/,"",v); v=v*1000 }; printf "%.3f", v }'
}
status_rps() { awk '/Requests\/sec/ { print $2 }' "$WORK/wrk-$1.txt"; }
status_bytes() { curl -fs "http://127.0.0.1:$1/status" | wc -c; }

num() { printf '%.3f' "$1"; }   # bc prints ".5"; show "0.500"

median() { sort -n | awk '{ a[NR]=$1 } END { print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2 }'; }

echo "== generating $FILES files over $DEVICES devices in $WORK/big"
t0=$(date +%s.%N)
make_archive "$WORK/big" "$FILES" "$DEVICES"
gen_s=$(num "$(echo "$(date +%s.%N) - $t0" | bc)")
echo "   done in ${gen_s}s"
echo "== generating $SMALL_FILES files over $DEVICES devices in $WORK/small"
make_archive "$WORK/small" "$SMALL_FILES" "$DEVICES"
sync   # no writeback of the fresh trees competing with the measurements

echo "== rescan vs du -sb (warm cache, $RUNS runs each, alternating)"
du -sb "$WORK/big/results" "$WORK/big/videos" >/dev/null   # warm the cache
"$RESCAN" "$WORK/big/results" "$WORK/big/videos" >/dev/null
DU_TIMES=(); RESCAN_TIMES=()
for _ in $(seq 1 "$RUNS"); do
    t0=$(date +%s.%N); du -sb "$WORK/big/results" "$WORK/big/videos" >/dev/null
    DU_TIMES+=("$(echo "$(date +%s.%N) - $t0" | bc)")
    t0=$(date +%s.%N); rescan_line=$("$RESCAN" "$WORK/big/results" "$WORK/big/videos")
    RESCAN_TIMES+=("$(echo "$(date +%s.%N) - $t0" | bc)")
done
du_med=$(num "$(printf '%s\n' "${DU_TIMES[@]}" | median)")
rescan_med=$(num "$(printf '%s\n' "${RESCAN_TIMES[@]}" | median)")
ratio=$(num "$(echo "scale=4; $rescan_med / $du_med" | bc)")
echo "   du -sb median ${du_med}s, rescan median ${rescan_med}s, ratio ${ratio}"
echo "   rescan: $rescan_line"
find_files=$(find "$WORK/big" -type f | wc -l)

# Both daemons idle between requests; the loads alternate between them, ROUNDS times, and the
# median p99 is reported, so background noise on a shared machine hits both alike.
start_daemon "$WORK/small" "$WORK/state-small"; small_port=$DAEMON_PORT
start_daemon "$WORK/big" "$WORK/state-big"; big_port=$DAEMON_PORT
daemon_rescan=$(curl -fs "http://127.0.0.1:$big_port/" | python3 -c 'import json,sys; print(json.load(sys.stdin)["last_rescan"]["duration_s"])')
big_status_files=$(curl -fs "http://127.0.0.1:$big_port/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["disk_usage_summary"]["combined"]["total_files"])')
big_bytes=$(status_bytes "$big_port")
echo "== /status latency ($ROUNDS rounds alternating small and big archive)"
for round in $(seq 1 "$ROUNDS"); do
    for c in $WRK_LOADS; do
        for label in small big; do
            port_var="${label}_port"
            p99=$(status_p99 "${!port_var}" "$label-$c" "$c")
            rps=$(status_rps "$label-$c")
            echo "$p99" >> "$WORK/p99-$label-$c"
            echo "$rps" >> "$WORK/rps-$label-$c"
            echo "   round $round, $label, $c connection(s): p99 $p99 ms, $rps req/s"
        done
    done
done
stop_all
p99_of() { median < "$WORK/p99-$1-$2"; }   # label connections
rps_of() { median < "$WORK/rps-$1-$2"; }
echo "   /status total_files ${big_status_files} (find: ${find_files}), body ${big_bytes} B"
rows=""
for c in $WRK_LOADS; do
    bp=$(p99_of big "$c"); sp=$(p99_of small "$c"); br=$(rps_of big "$c"); sr=$(rps_of small "$c")
    r=$(num "$(echo "scale=4; $bp / $sp" | bc)")
    rows+="| \`GET /status\` p99 (median of $ROUNDS), $find_files files, $c connection(s) | $bp ms ($br req/s) | $SMALL_FILES files: $sp ms ($sr req/s) | **${r}x** | <= 5 ms, independent of file count |"$'\n'
done

mkdir -p "$(dirname "$OUT")"
cat > "$OUT" <<EOF
## rsync-backup (port 8093)

Command: \`bench/rsync.sh\` (FILES=$FILES DEVICES=$DEVICES SMALL_FILES=$SMALL_FILES, wrk
\`-d$WRK_DURATION --latency\` with {$WRK_LOADS} connections, $RUNS alternating rescan/du runs), release build,
$(date -u +%Y-%m-%d), \`nproc\` = $(nproc), rsync $(rsync --version | head -1 | awk '{print $3}'), load average at start
$LOAD_AT_START (the machine may be shared; the 10-connection figures move with it).

Synthetic archive: $find_files files (0-2 KiB each, 100 per directory, 10 % results / 90 % videos)
over $DEVICES devices, generated in ${gen_s} s. The daemon runs against a stub node listing the
$DEVICES devices (unreachable, so jobs end at once) and serves every device's sizes.

| What | Result | Baseline (same run) | Ratio | Target |
|---|---|---|---|---|
| Full archive rescan (\`examples/rescan\`, median of $RUNS, warm cache) | ${rescan_med} s | \`du -sb results videos\`: ${du_med} s | **${ratio}x** | <= 1.0x |
${rows}

- \`/status\` body with $DEVICES devices: ${big_bytes} B. wrk runs on the same $(nproc) cores as the
  daemon; with 10 connections the machine is saturated and the p99 is mostly queueing.
- The daemon's own startup rescan of the big archive took ${daemon_rescan} s (\`GET /\` \`last_rescan\`).
- \`/status\` reported \`combined.total_files\` = ${big_status_files}; \`find -type f | wc -l\` = ${find_files}.
- Why the rescan beats \`du\`: it stats only regular files (directories come typed from
  \`readdir\`), relative to the open directory, in parallel over subdirectories (rayon, $(nproc) threads).
- Why \`/status\` does not depend on the file count: it reads a per-device size index in memory;
  walks happen in a background task and job deltas keep the index current.
- Why \`/status\` is cheap per request: the rendered body is cached with the status table's and
  the size index's versions and re-rendered only when one of them changed (here: never during a
  wrk run), so a request costs two short locks and a copy of the bytes to the socket. Before
  this cache (every request rendered the ${big_bytes} B body), an earlier run of this script
  measured 1.150 ms / 6.470 ms p99 at 1 / 10 connections (load average 2.08 at start).
EOF
echo "== wrote $OUT"
cat "$OUT"
