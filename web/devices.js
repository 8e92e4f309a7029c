// The device table's rows: pure functions, no DOM, no dependencies.
//
// Rows are the union of the node's `GET /devices` map and the unified backup view: a device the
// backup daemons know but discovery does not (yet) still gets a row and a circle. Everything a
// device reports is untrusted: fields are read as own properties and turned into plain text here,
// and the page only ever puts that text into the DOM with `textContent`.

import {
  asNumber, asText, backupState, healthExposure, healthOf, healthState, isObject, lastFinished, needsAttention,
  own, unifiedEntry,
} from './backup-status.js';

/** Device statuses hidden unless "show offline devices" is on. */
export const OFFLINE_STATUSES = Object.freeze(['offline']);

/** Sortable columns, in table order. */
export const COLUMNS = Object.freeze(['name', 'status', 'since', 'backup', 'health', 'user', 'location', 'ip', 'id']);

/**
 * `{user, location}` of a device's experiment. Old firmware reports `experimental_info` flat
 * (`{name, location, ...}`, `name` being the user); newer nodes nest it as `{current: {...},
 * previous: {...}}`.
 */
export function experimentInfo(device) {
  const info = own(device, 'experimental_info');
  const current = own(info, 'current');
  const source = isObject(current) ? current : info;
  return { user: asText(own(source, 'name')), location: asText(own(source, 'location')) };
}

/**
 * Epoch seconds of a `time`-like field: a number, or a date string as old nodes report for devices
 * known only from their database (`"2025-07-10 11:40:41.123456"`, local time). `null` otherwise.
 */
export function epochSeconds(value) {
  const number = asNumber(value);
  if (number !== null) return number > 0 ? number : null;
  if (typeof value !== 'string' || value === '') return null;
  const match = /^(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})/.exec(value);
  if (!match) return null;
  const [, y, mo, d, h, mi, s] = match.map(Number);
  const ms = new Date(y, mo - 1, d, h, mi, s).getTime();
  return Number.isFinite(ms) ? ms / 1000 : null;
}

/**
 * Why the node backs nothing up for a device whose machine id two addresses claim (its `/devices`
 * entry then has `status: "conflict"` and a `conflict` object); `''` otherwise.
 */
export function conflictReason(device) {
  const conflict = own(device, 'conflict');
  if (!isObject(conflict)) return '';
  return asText(own(conflict, 'reason')) || 'two addresses claim this machine id';
}

/**
 * The device entries of a `GET /devices` reply (a map keyed by device id). Non-object entries and
 * entries without any id are dropped; an error reply (`{"error": ...}`) gives no devices.
 */
export function deviceEntries(devicesResponse) {
  if (!isObject(devicesResponse)) return [];
  const entries = [];
  for (const [key, value] of Object.entries(devicesResponse)) {
    if (!isObject(value)) continue;
    const id = asText(own(value, 'id')) || key;
    if (id !== '') entries.push([id, value]);
  }
  return entries;
}

/**
 * The table rows: one per device id found in `GET /devices` or in `knownUnified` (the unified
 * devices to list, usually `state.backup_status`; the page passes the last good one while the
 * backup service is unreachable so rows do not vanish). `state` decides the backup circle.
 */
export function buildRows(devicesResponse, state, knownUnified, nowSeconds) {
  const rows = new Map();
  for (const [id, device] of deviceEntries(devicesResponse)) {
    if (rows.has(id)) continue;
    const { user, location } = experimentInfo(device);
    rows.set(id, {
      id,
      name: asText(own(device, 'name')),
      status: asText(own(device, 'status')),
      since: epochSeconds(own(device, 'time')),
      user,
      location,
      ip: asText(own(device, 'ip')),
      conflict: conflictReason(device),
      discovered: true,
    });
  }
  if (isObject(knownUnified)) {
    for (const [id, entry] of Object.entries(knownUnified)) {
      if (id === '' || rows.has(id) || !isObject(entry)) continue;
      rows.set(id, {
        id,
        name: asText(own(entry, 'name')),
        status: asText(own(entry, 'status')),
        since: null,
        user: '',
        location: '',
        ip: '',
        conflict: '',
        discovered: false,
      });
    }
  }
  for (const row of rows.values()) {
    row.backup = backupState(row, state);
    row.lastBackup = lastFinished(unifiedEntry(row, state));
    row.sinceSeconds = row.since === null ? null : Math.max(0, nowSeconds - row.since);
    row.health = healthOf(row, state);
    row.healthState = healthState(row.health);
    row.exposure = healthExposure(row.health);
  }
  return [...rows.values()];
}

/** Whether a row is offline (hidden while "show offline devices" is off, unless at risk). */
export function isOffline(row) {
  return OFFLINE_STATUSES.includes(row.status);
}

/**
 * Whether an offline row is shown anyway: part of its data exists only on the device
 * (`exposure_s` above zero), or its health is `at_risk` or `stale`. These are exactly the
 * devices whose data is most at risk.
 */
export function mustShow(row) {
  return (row.exposure !== null && row.exposure > 0) || needsAttention(row.health);
}

/** The rows to show. */
export function visibleRows(rows, showOffline) {
  return showOffline ? rows : rows.filter((row) => !isOffline(row) || mustShow(row));
}

/** How many rows are `at_risk` or `stale` (shown or not). */
export function attentionCount(rows) {
  return rows.filter((row) => needsAttention(row.health)).length;
}

// Worst first when sorting by backup, so problems come to the top.
const BACKUP_RANK = { error: 0, partial: 1, unknown: 2, processing: 3, success: 4, offline: 5 };

const collator = new Intl.Collator('en', { numeric: true, sensitivity: 'base' });

function compareText(a, b) {
  // Empty values last in either direction is handled by the caller.
  return collator.compare(a, b);
}

function sortValue(row, column) {
  switch (column) {
    case 'since': return row.sinceSeconds; // elapsed, as displayed
    case 'backup': return row.backup in BACKUP_RANK ? BACKUP_RANK[row.backup] : 9;
    // By exposure, largest first (like the backup column, worst first); unknown last.
    case 'health': return row.exposure === null ? null : -row.exposure;
    default: return row[column] === '' ? null : row[column];
  }
}

/**
 * Rows sorted by `column` (one of `COLUMNS`), descending when `descending`. Missing values sort
 * last either way; ties fall back to name, then id, so the order is stable between polls.
 */
export function sortRows(rows, column, descending) {
  const key = COLUMNS.includes(column) ? column : 'name';
  const direction = descending ? -1 : 1;
  return [...rows].sort((a, b) => {
    const va = sortValue(a, key);
    const vb = sortValue(b, key);
    if (va === null && vb !== null) return 1;
    if (vb === null && va !== null) return -1;
    let order = 0;
    if (va !== null && vb !== null) {
      order = typeof va === 'number' && typeof vb === 'number' ? va - vb : compareText(String(va), String(vb));
      if (key === 'backup' && order === 0) order = (b.lastBackup ?? -1) - (a.lastBackup ?? -1);
    }
    if (order !== 0) return order * direction;
    return compareText(a.name, b.name) || compareText(a.id, b.id);
  });
}
