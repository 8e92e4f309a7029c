"""Loads a node's archive the way a lab's analysis does: scopr's index.txt over HTTP, every
database it lists downloaded into the four-level layout, then ethoscopy's own
link_meta_index + load_ethoscope. Checks that ethoscopy loads every ROI row it should and prints a
JSON summary on stdout. Exits non-zero on any mismatch.

Usage: python load_archive.py http://127.0.0.1:PORT OUT_DIR
"""

import csv
import io
import json
import os
import sqlite3
import sys
import urllib.request

from ethoscopy.load import link_meta_index, load_ethoscope


def fetch(url):
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def expected_rows(path, roi):
    """The rows ethoscopy may return for a ROI: all of them, or (readers that drop inferred
    positions) those not inferred unless the fly interacted."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        cols = [r[1] for r in conn.execute(f"PRAGMA table_info(ROI_{roi})")]
        every = conn.execute(f"SELECT COUNT(*) FROM ROI_{roi} WHERE t >= 0").fetchone()[0]
        kept = every
        if "is_inferred" in cols and "has_interacted" in cols:
            kept = conn.execute(
                f"SELECT COUNT(*) FROM ROI_{roi} WHERE t >= 0 AND (is_inferred = 0 OR has_interacted = 1)"
            ).fetchone()[0]
        return {every, kept}
    finally:
        conn.close()


def main(base, out_dir):
    index = fetch(f"{base}/archive/index.txt").decode()
    lines = list(csv.reader(io.StringIO(index)))
    if not lines:
        sys.exit("index.txt lists no database")
    meta_rows = []
    expected = {}
    for path, last_point in lines:
        parts = path.split("/")
        if len(parts) != 4:
            sys.exit(f"index.txt path {path!r} is not machine_id/machine_name/date/file")
        machine_id, machine_name, date_time, file_name = parts
        dest = os.path.join(out_dir, *parts)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "wb") as f:
            f.write(fetch(f"{base}/archive/{path}"))
        conn = sqlite3.connect(f"file:{dest}?mode=ro", uri=True)
        rois = [r[0] for r in conn.execute("SELECT roi_idx FROM ROI_MAP ORDER BY roi_idx")]
        last = max(
            (conn.execute(f"SELECT t FROM ROI_{r} ORDER BY id DESC LIMIT 1").fetchone() or [None])[0]
            or -1
            for r in rois
        )
        conn.close()
        if last_point != "NA" and int(last_point) != last:
            sys.exit(f"{path}: index.txt says last_point {last_point}, the file says {last}")
        date, time = date_time.split("_")
        for roi in rois:
            meta_rows.append({"machine_name": machine_name, "date": date, "time": time, "region_id": roi})
            expected[(file_name[:26], roi)] = expected_rows(dest, roi)
    meta_path = os.path.join(out_dir, "metadata.csv")
    with open(meta_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["machine_name", "date", "time", "region_id"])
        writer.writeheader()
        writer.writerows(meta_rows)
    meta = link_meta_index(meta_path, out_dir)
    data = load_ethoscope(meta, verbose=False, progress=False)
    if not len(data):
        loaded = {}
    elif "id" in data.columns:
        loaded = data.groupby("id").size().to_dict()
    else:
        loaded = data.groupby(level=0).size().to_dict()
    problems = []
    for (prefix, roi), want in expected.items():
        got = loaded.get(f"{prefix}|{roi:02d}", 0)
        if got not in want or got == 0:
            problems.append(f"{prefix} ROI {roi}: ethoscopy loaded {got} rows, the file has {sorted(want)}")
    if problems:
        sys.exit("\n".join(problems))
    print(json.dumps({
        "databases": len(lines),
        "rois": len(expected),
        "rows": int(sum(loaded.values())),
    }))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
