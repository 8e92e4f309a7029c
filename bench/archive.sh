#!/usr/bin/env bash
# Node /archive benchmark: download throughput of a 1 GB video (streamed from its descriptor) and
# of a 500 MB MySQL-mirror database (a snapshot copied under a read transaction, then streamed), each against
# `cat file > /dev/null` in the same run; and the latency of GET /archive over 100 k archived files
# under wrk.
#
#   bench/archive.sh                              # 1 GB video, 500 MB database, 100 k files
#   VIDEO_MB=256 DB_MB=128 FILES=20000 RUNS=3 bench/archive.sh
#
# Everything is made in a temporary directory (removed on exit), the release `etho-backup node`
# serves it on 127.0.0.1 only, hyperfine times `cat` and `curl -o /dev/null` alternately in one run,
# wrk loads the listing. Writes Markdown to docs/benchmarks/archive.md (override with OUT=...).
# Targets: video >= 0.8x cat, snapshot >= 0.5x cat, listing p99 <= 50 ms.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
VIDEO_MB=${VIDEO_MB:-1024}
DB_MB=${DB_MB:-500}
FILES=${FILES:-100000}
RUNS=${RUNS:-5}
WRK_DURATION=${WRK_DURATION:-10s}
OUT=${OUT:-docs/benchmarks/archive.md}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/etho-archive-bench.XXXXXX")
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in wrk hyperfine curl python3 sqlite3; do
    command -v "$tool" >/dev/null || { echo "bench/archive.sh needs $tool" >&2; exit 1; }
done

echo "== building (release)"
cargo build --release -q -p etho-backup --bin etho-backup
BIN=$ROOT/target/release/etho-backup

ID=0123456789abcdef0123456789abcdef
DATE=2025-07-10_10-00-00
RDIR=$WORK/results/$ID/ETHOSCOPE_001/$DATE
VDIR=$WORK/videos/$ID/ETHOSCOPE_001/$DATE
mkdir -p "$RDIR" "$VDIR" "$WORK/state"
VIDEO=$VDIR/${DATE}_${ID}__1280x960@25_00000.h264
DB=$RDIR/${DATE}_${ID}.db

echo "== making a ${VIDEO_MB} MB video chunk"
head -c $((VIDEO_MB * 1024 * 1024)) /dev/urandom > "$VIDEO"

echo "== making a ${DB_MB} MB mirror database (ROI tables, then snapshots to size)"
ROWS=$((DB_MB * 1024 * 1024 / 2 / 40 / 10))
{
    echo "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; BEGIN;"
    echo "CREATE TABLE METADATA (field TEXT, value TEXT); INSERT INTO METADATA VALUES ('date_time', '1752141600');"
    echo "CREATE TABLE ROI_MAP (roi_idx INTEGER, roi_value INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER);"
    for roi in $(seq 1 10); do
        echo "CREATE TABLE ROI_$roi (id INTEGER PRIMARY KEY, t INTEGER, x SMALLINT, y SMALLINT, w SMALLINT, h SMALLINT, phi SMALLINT, xy_dist_log10x1000 SMALLINT, is_inferred BOOLEAN, has_interacted SMALLINT);"
        echo "INSERT INTO ROI_MAP VALUES ($roi, $roi, 0, 0, 100, 100);"
        echo "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT $ROWS) INSERT INTO ROI_$roi SELECT i, i * 100, abs(random() % 1000), abs(random() % 1000), 30, 10, abs(random() % 180), abs(random() % 3000), 0, 0 FROM c;"
    done
    echo "CREATE TABLE IMG_SNAPSHOTS (id INTEGER PRIMARY KEY, t INTEGER, img LONGBLOB);"
    echo "COMMIT;"
} | sqlite3 "$DB"
have=$(stat -c %s "$DB")
need=$(( (DB_MB * 1024 * 1024 - have) / (256 * 1024) ))
if [ "$need" -gt 0 ]; then
    sqlite3 "$DB" "PRAGMA journal_mode = OFF; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT $need) INSERT INTO IMG_SNAPSHOTS (t, img) SELECT i * 1000, randomblob(256 * 1024) FROM c;" >/dev/null
fi
touch "$DB.lock" # a mirror file: downloads are snapshots
DB_BYTES=$(stat -c %s "$DB")
VIDEO_BYTES=$(stat -c %s "$VIDEO")

echo "== making $FILES archived files"
python3 - "$WORK/results" "$FILES" <<'EOF'
import os, sys
root, total = sys.argv[1], int(sys.argv[2])
devices, per_exp = 50, 100
exps = max(1, total // (devices * per_exp))
n = 0
for d in range(devices):
    mid = f"{d:032x}"
    for e in range(exps):
        exp = os.path.join(root, mid, f"ETHOSCOPE_{d:03d}", f"2025-{1 + e // 28:02d}-{1 + e % 28:02d}_10-00-00")
        os.makedirs(exp, exist_ok=True)
        for f in range(per_exp):
            with open(os.path.join(exp, f"part_{f:03d}.txt"), "w") as fh:
                fh.write("x")
            n += 1
print(n, "files")
EOF

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE=http://127.0.0.1:$PORT
"$BIN" node --listen "127.0.0.1:$PORT" --state-dir "$WORK/state" \
    --mysql-backup-url http://127.0.0.1:9 --rsync-backup-url http://127.0.0.1:9 \
    -r "$WORK/results" -v "$WORK/videos" --archive-scan-interval 3600 >"$WORK/node.log" 2>&1 &
PIDS+=($!)

echo "== waiting for the first scan and the database's check"
deadline=$((SECONDS + 600))
until curl -sf "$BASE/archive?device=$ID" | grep -q '"verified":{'; do
    [ $SECONDS -lt $deadline ] || { echo "no verified database after 600 s" >&2; cat "$WORK/node.log" >&2; exit 1; }
    sleep 1
done
SCAN=$(curl -sf "$BASE/archive" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["total_files"], d["scan_seconds"])')

LOAD_BEFORE=$(uptime)
URL_VIDEO=$BASE/archive/$ID/ETHOSCOPE_001/$DATE/$(basename "$VIDEO" | sed 's/@/%40/')
URL_DB=$BASE/archive/$ID/ETHOSCOPE_001/$DATE/$(basename "$DB")
curl -sf -o /dev/null "$URL_VIDEO" # the page cache holds both files before timing: cat reads it too
curl -sf -o /dev/null "$URL_DB"

echo "== video: cat vs download (page cache warm)"
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/video.json" \
    "cat $VIDEO" "curl -sf -o /dev/null $URL_VIDEO" >"$WORK/video.txt"
echo "== database: cat vs snapshot download (page cache warm)"
hyperfine -N --warmup 1 --runs "$RUNS" --export-json "$WORK/db.json" \
    "cat $DB" "curl -sf -o /dev/null $URL_DB" >"$WORK/db.txt"
# Cold: before every run, this one file's pages are dropped from the page cache (posix_fadvise
# DONTNEED through dd; nothing else on the machine is touched), as for a video nobody read lately.
echo "== video and database, page cache dropped before each run"
hyperfine -N --runs "$RUNS" --export-json "$WORK/video-cold.json" \
    --prepare "dd if=$VIDEO iflag=nocache count=0 status=none" \
    "cat $VIDEO" "curl -sf -o /dev/null $URL_VIDEO" >"$WORK/video-cold.txt"
hyperfine -N --runs "$RUNS" --export-json "$WORK/db-cold.json" \
    --prepare "dd if=$DB iflag=nocache count=0 status=none" \
    "cat $DB" "curl -sf -o /dev/null $URL_DB" >"$WORK/db-cold.txt"

echo "== listing under wrk"
for q in "" "?page=100" "?device=$(printf '%032x' 7)" "?from=2025-01-10&to=2025-01-12"; do
    wrk -t2 -c10 -d"$WRK_DURATION" --latency "$BASE/archive$q" >"$WORK/wrk$(echo "$q" | tr -c 'a-z0-9' '_').txt"
done
# Every request a different page of 200 (more than the 64 rendered listings kept): each one is
# rendered, the cost a dashboard pays once per index change and query.
cat >"$WORK/pages.lua" <<'LUA'
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, "/archive?page=" .. (counter % 200 + 1))
end
LUA
wrk -t2 -c10 -d"$WRK_DURATION" --latency -s "$WORK/pages.lua" "$BASE/archive" >"$WORK/wrk_uncached.txt"
LOAD_AFTER=$(uptime)

python3 - "$WORK" "$OUT" "$VIDEO_BYTES" "$DB_BYTES" "$FILES" "$SCAN" "$RUNS" "$WRK_DURATION" \
    "$(nproc)" "$LOAD_BEFORE" "$LOAD_AFTER" <<'EOF'
import glob, json, os, re, sys
work, out, vbytes, dbytes, files, scan, runs, dur, cores, before, after = sys.argv[1:12]
def times(name):
    r = json.load(open(os.path.join(work, f"{name}.json")))["results"]
    return r[0]["mean"], r[0]["stddev"], r[1]["mean"], r[1]["stddev"]
def mbs(b, t):
    return int(b) / t / 1e6
rows = []
for name, label, b, target in [("video", "video (descriptor stream), warm", vbytes, 0.8),
                               ("db", "mirror .db (snapshot + stream), warm", dbytes, 0.5),
                               ("video-cold", "video (descriptor stream), cold", vbytes, 0.8),
                               ("db-cold", "mirror .db (snapshot + stream), cold", dbytes, 0.5)]:
    cm, cs, dm, ds = times(name)
    rows.append(f"| {label} | {int(b) / 1e6:.0f} MB | {mbs(b, dm):.0f} MB/s ({dm:.2f} ± {ds:.2f} s) | "
                f"{mbs(b, cm):.0f} MB/s ({cm:.2f} ± {cs:.2f} s) | **{cm / dm:.2f}×** | ≥ {target}× |")
wrk_rows = []
for path in sorted(glob.glob(os.path.join(work, "wrk*.txt"))):
    text = open(path).read()
    url = re.search(r"@ (\S+)", text).group(1)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", text, re.M))
    query = url.split('/archive', 1)[1] or '(none)'
    if path.endswith("wrk_uncached.txt"):
        query = "page=1…200 in turn (each rendered, not cached)"
    wrk_rows.append(f"| `{query}` | {float(rps):.0f} | {lat.get('50')} | {lat.get('99')} |")
total, scan_s = scan.split()
doc = f"""# Node `/archive` benchmark

Command: `bench/archive.sh` (defaults: `VIDEO_MB=1024 DB_MB=500 FILES=100000 RUNS={runs} WRK_DURATION={dur}`).
Machine: {cores} cores (`nproc`). Load before: `{before.strip()}`; after: `{after.strip()}`.

*Warm*: both files are read once before timing, so `cat` and the download both read from the
page cache. *Cold*: before each run the file's pages are dropped from the page cache
(`dd iflag=nocache count=0`, this file only). hyperfine runs each command {runs} times (`-N`, no
shell; warm runs after a warm-up). The download is
`curl -sf -o /dev/null` against the release `etho-backup node` on 127.0.0.1. The video is streamed
from its `O_NOFOLLOW` descriptor; the database has a `.db.lock` beside it (a MySQL mirror file), so
every download first copies it under an SQLite read transaction into a private file (in the state
directory) and then streams that: the ratio includes writing and reading the snapshot.

| download | size | node | `cat file > /dev/null` (same run) | ratio | target |
|---|---|---|---|---|---|
{chr(10).join(rows)}

Listing: {total} archived files (index built by one scan of {float(scan_s):.2f} s), `wrk -t2 -c10
-d{dur} --latency`, each query in turn. A listing is rendered once per index version and query
and then served from those bytes (up to 64 queries); the last row asks for a different page each
time, so every answer is rendered. Target: p99 ≤ 50 ms.

| query | req/s | p50 | p99 |
|---|---|---|---|
{chr(10).join(wrk_rows)}
"""
open(out, "w").write(doc)
print(doc)
EOF
