#!/usr/bin/env python3
"""Writes etho-backup.json, the Grafana dashboard, from the panel list below.

Run it after changing a panel: `python3 deploy/grafana/make_dashboard.py`. The test suite loads
the JSON and resolves every metric its queries name against the golden metric lists
(deploy/prometheus/golden/*.prom).
"""
import json
import pathlib

DS = {"type": "prometheus", "uid": "${datasource}"}

# (title, kind, unit, width, [(expr, legend)])
PANELS = [
    ("Exposure per device (data only on the device)", "timeseries", "s", 16, [
        ('etho_backup_device_exposure_seconds', '{{device_name}}'),
    ]),
    ("Devices by health", "stat", "none", 8, [
        ('sum by (state) (etho_backup_device_health)', '{{state}}'),
    ]),
    ("Devices at risk or stale", "table", "none", 12, [
        ('etho_backup_device_health{state=~"at_risk|stale"} == 1', '{{device_name}} {{state}}'),
    ]),
    ("Time since the last successful backup", "table", "s", 12, [
        ('time() - etho_backup_device_last_success_timestamp_seconds', '{{device_name}} {{kind}}'),
    ]),
    ("Device states", "stat", "none", 8, [
        ('etho_backup_devices', '{{status}}'),
    ]),
    ("Backup daemons answering the node", "stat", "none", 8, [
        ('etho_backup_daemon_up', '{{daemon}}'),
    ]),
    ("Devices whose last runs failed in a row", "table", "none", 8, [
        ('etho_backup_failed_runs_in_a_row > 0', '{{device_name}} ({{job}})'),
    ]),
    ("Runs per hour by outcome", "timeseries", "none", 12, [
        ('sum by (kind, outcome) (increase(etho_backup_runs_total[1h]))', '{{kind}} {{outcome}}'),
    ]),
    ("Run duration (90th percentile)", "timeseries", "s", 12, [
        ('histogram_quantile(0.9, sum by (le, kind) (rate(etho_backup_run_duration_seconds_bucket[1h])))', '{{kind}}'),
    ]),
    ("Copied per hour", "timeseries", "bytes", 12, [
        ('sum by (kind) (increase(etho_backup_copied_bytes_total[1h]))', '{{kind}}'),
    ]),
    ("Rows copied per hour (MySQL mirror)", "timeseries", "none", 12, [
        ('sum(increase(etho_backup_copied_rows_total[1h]))', 'rows'),
    ]),
    ("Archive size by kind", "timeseries", "bytes", 12, [
        ('sum by (kind) (etho_backup_archive_bytes)', '{{kind}}'),
    ]),
    ("Archive free space", "timeseries", "bytes", 12, [
        ('etho_backup_archive_filesystem_avail_bytes', '{{job}} {{kind}}'),
    ]),
    ("Largest archives per device", "table", "bytes", 12, [
        ('topk(20, sum by (device_id) (etho_backup_archive_bytes))', '{{device_id}}'),
    ]),
    ("Jobs running", "timeseries", "none", 12, [
        ('sum by (job) (etho_backup_job_running)', '{{job}}'),
    ]),
]


def panel(i, title, kind, unit, width, targets, pos):
    x, y = pos
    return {
        "id": i + 1,
        "title": title,
        "type": kind,
        "datasource": DS,
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {},
        "targets": [
            {"refId": chr(ord("A") + j), "datasource": DS, "expr": expr, "legendFormat": legend}
            for j, (expr, legend) in enumerate(targets)
        ],
    }


def main():
    panels, x, y = [], 0, 0
    for i, (title, kind, unit, width, targets) in enumerate(PANELS):
        if x + width > 24:
            x, y = 0, y + 8
        panels.append(panel(i, title, kind, unit, width, targets, (x, y)))
        x += width
    dashboard = {
        "uid": "etho-backup",
        "title": "Ethoscope backups",
        "description": "etho-backup: device states, runs, durations and archive growth of one or more nodes.",
        "tags": ["etho-backup", "ethoscope", "backup"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "1m",
        "time": {"from": "now-7d", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "type": "datasource", "query": "prometheus",
            "label": "Prometheus", "current": {}, "hide": 0,
        }]},
        "annotations": {"list": []},
        "panels": panels,
    }
    out = pathlib.Path(__file__).with_name("etho-backup.json")
    out.write_text(json.dumps(dashboard, indent=2) + "\n")


if __name__ == "__main__":
    main()
