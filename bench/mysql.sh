#!/usr/bin/env bash
# Benchmark of the MySQL mirror (etho-backup mysql-backup).
#
# For each size (rows per ROI table; 20 ROI tables plus snapshots, sensors and DAM):
#   - baseline: raw single-stream read of every table, `mariadb --quick` to /dev/null;
#   - initial mirror by `etho-backup mysql-backup -e 1` under /usr/bin/time -v (rows/s, peak RSS);
#   - no-change job time (in-process engine, as the daemon runs it every cycle) and the one-shot
#     process end to end.
# Everything listens on 127.0.0.1 only (a private mariadbd and a stub node) and stops by itself.
#
# Usage: bench/mysql.sh [ROWS_PER_ROI[,ROWS_PER_ROI...]] [REPEAT]
#        default: 25000,100000 (0.5 M and 2 M tracking rows), 3 repeats.
# Needs: mariadb-server (mariadbd, mariadb-install-db), the mariadb client, /usr/bin/time.
set -euo pipefail
cd "$(dirname "$0")/.."

ROWS="${1:-25000,100000}"
REPEAT="${2:-3}"
TARGET="${CARGO_TARGET_DIR:-target}"

for tool in mariadb mariadb-install-db /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "missing: $tool (apt-get install mariadb-server time)" >&2; exit 1; }
done

cargo build --release -p etho-backup
echo "## MySQL mirror benchmark"
echo
echo "- command: \`bench/mysql.sh $ROWS $REPEAT\`"
echo "- machine: $(nproc) cores (nproc), $(awk '/MemTotal/ {printf "%.0f GB", $2/1e6}' /proc/meminfo), $(mariadbd --version | awk '{print $3}') mariadbd"
echo "- date: $(date -u +%Y-%m-%d)"
echo
cargo bench -p etho-mysql-backup --bench mysql_mirror -- \
    --etho-backup "$(realpath "$TARGET")/release/etho-backup" --rows "$ROWS" --repeat "$REPEAT"
