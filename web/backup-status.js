// Backup status logic of the dashboard: pure functions, no DOM, no dependencies.
//
// It follows the seed's "Frontend Changes" (upstream's `get_backup_status()`,
// `getBackupStatusClass()` and `getBackupStatusTitle()`), so the same module is used by the page
// and by `node --test`. Two deliberate differences from upstream, both where upstream was wrong:
// a reply that is not the unified document (e.g. `{"error": "<traceback>"}`) counts as "nothing
// available" instead of "both available", and device ids are looked up as own properties only, so
// an id such as `constructor` never reads `Object.prototype`.

/** The six circle states, in the order the legend shows them. */
export const STATES = Object.freeze(['processing', 'success', 'partial', 'error', 'unknown', 'offline']);

/** What each circle says to people who do not see its colour (its `aria-label`). */
export const STATE_LABELS = Object.freeze({
  processing: 'Backup in progress',
  success: 'Backup successful',
  partial: 'Backup partial',
  error: 'Backup failed',
  unknown: 'Backup status unknown',
  offline: 'Backup service offline',
});

/** True for a plain JSON object (not null, not an array). */
export function isObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `obj[key]` when `obj` is an object that owns `key`, else `undefined`. */
export function own(obj, key) {
  return isObject(obj) && Object.prototype.hasOwnProperty.call(obj, key) ? obj[key] : undefined;
}

/** A JSON scalar as display text; objects, arrays, null and undefined give `''`. */
export function asText(value) {
  if (typeof value === 'string') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  if (typeof value === 'boolean') return String(value);
  return '';
}

/** A finite number, or `null`. */
export function asNumber(value) {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

/**
 * The scope variables the seed's `get_backup_status()` sets, from a `GET /backup/status` reply.
 *
 * A side is available when it is an object without an `error` key; the service is available when
 * either side is. `backup_status` is `unified_devices` (or `{}` when that is not an object).
 */
export function summarize(response) {
  if (!isObject(response)) return unavailableState();
  const mysql = own(response, 'mysql_backup');
  const rsync = own(response, 'rsync_backup');
  const unified = own(response, 'unified_devices');
  const mysqlAvailable = isObject(mysql) && own(mysql, 'error') === undefined;
  const rsyncAvailable = isObject(rsync) && own(rsync, 'error') === undefined;
  return {
    backup_status: isObject(unified) ? unified : {},
    backup_status_full: response,
    mysql_backup_available: mysqlAvailable,
    rsync_backup_available: rsyncAvailable,
    backup_service_available: mysqlAvailable || rsyncAvailable,
    mysql_backup_status: mysql,
    rsync_backup_status: rsync,
  };
}

/** The state after a failed fetch: nothing available, empty statuses. */
export function unavailableState() {
  return {
    backup_status: {},
    backup_status_full: null,
    mysql_backup_available: false,
    rsync_backup_available: false,
    backup_service_available: false,
    mysql_backup_status: {},
    rsync_backup_status: {},
  };
}

/** The unified entry of `device` (an object with at least `id`), or `undefined`. */
export function unifiedEntry(device, state) {
  const id = isObject(device) ? asText(device.id) : '';
  const entry = own(state && state.backup_status, id);
  return isObject(entry) ? entry : undefined;
}

/**
 * The circle state of a device: `offline` when no backup service is available, `unknown` without
 * a unified entry, `processing` while either side runs, then by `overall_status`.
 */
export function backupState(device, state) {
  if (!state || !state.backup_service_available) return 'offline';
  const info = unifiedEntry(device, state);
  if (!info) return 'unknown';
  if (own(own(info, 'mysql_backup'), 'processing') === true
      || own(own(info, 'rsync_backup'), 'processing') === true) {
    return 'processing';
  }
  switch (own(info, 'overall_status')) {
    case 'success': return 'success';
    case 'partial': return 'partial';
    case 'error': return 'error';
    default: return 'unknown';
  }
}

/** The seed's `getBackupStatusClass()`: `backup-status-<state>`. */
export function getBackupStatusClass(device, state) {
  return `backup-status-${backupState(device, state)}`;
}

function sideLine(label, side) {
  if (!isObject(side) || side.available !== true) return `\n${label}: not available`;
  const progress = own(side, 'progress');
  const status = asText(own(progress, 'status')) || asText(own(side, 'status')) || 'unknown';
  const message = asText(own(progress, 'message'));
  const count = asNumber(own(side, 'count'));
  return `\n${label}: ${status}${message ? ` - ${message}` : ''}${count !== null && count > 0 ? ` (#${count})` : ''}`;
}

/** The seed's `getBackupStatusTitle()`: the circle's tooltip, line for line. */
export function getBackupStatusTitle(device, state) {
  if (!state || !state.backup_service_available) return 'Backup service offline';
  const info = unifiedEntry(device, state);
  if (!info) return 'No backup information available';
  let title = `Overall Status: ${asText(own(info, 'overall_status')) || 'unknown'}`;
  title += sideLine('MySQL Backup', own(info, 'mysql_backup'));
  const rsync = own(info, 'rsync_backup');
  title += sideLine('Rsync Backup', rsync);
  const dataSize = asText(own(own(own(rsync, 'synced'), 'results'), 'disk_usage_human'));
  if (dataSize) title += `\nData Size: ${dataSize}`;
  return title;
}

/**
 * Epoch seconds when the device's most recent backup job finished (either side), or `null`.
 * `ended` is 0 while running or before the first job and -1 for a killed job: neither counts.
 */
export function lastFinished(info) {
  let last = null;
  for (const side of [own(info, 'mysql_backup'), own(info, 'rsync_backup')]) {
    const ended = asNumber(own(side, 'ended'));
    if (ended !== null && ended > 0 && (last === null || ended > last)) last = ended;
  }
  return last;
}

/** A short duration: `42 s`, `7 min`, `3 h 05 min`, `12 d 4 h`; `''` for a negative or non-number. */
export function formatElapsed(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '';
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  const minutes = Math.floor(s / 60);
  if (minutes < 60) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ${String(minutes % 60).padStart(2, '0')} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/**
 * Upstream's human size (`_format_bytes`): 1024-based, one decimal except for bytes, the unit
 * chosen before rounding (`1048575` gives `1024.0 KB`). Non-numbers and negatives give `''`.
 */
export function formatBytes(bytes) {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes < 0) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  if (bytes === 0) return '0 B';
  let size = bytes;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${Math.trunc(bytes)} B` : `${size.toFixed(1)} ${units[unit]}`;
}

/** The size text of a `synced.results`-like block: its `disk_usage_human`, else formatted bytes. */
export function syncedSize(block) {
  return asText(own(block, 'disk_usage_human')) || formatBytes(asNumber(own(block, 'disk_usage_bytes')));
}

/** A running side's percentage from its progress, when its daemon reports one, else `null`. */
export function sidePercent(side) {
  if (own(side, 'processing') !== true) return null;
  const progress = own(side, 'progress');
  for (const key of ['percent', 'percentage', 'backup_status']) {
    const value = asNumber(own(progress, key));
    if (value !== null && value >= 0 && value <= 100) return value;
  }
  return null;
}

/** A running job's percentage (rsync first, it moves the most data), or `null`. */
export function progressPercent(info) {
  const rsync = sidePercent(own(info, 'rsync_backup'));
  return rsync !== null ? rsync : sidePercent(own(info, 'mysql_backup'));
}

/**
 * The short text next to the circle: time since the last finished backup and the data size
 * (the same "Data Size" the tooltip shows), or what is going on instead.
 */
export function backupShortText(device, state, nowSeconds) {
  const current = backupState(device, state);
  if (current === 'offline') return 'service offline';
  const info = unifiedEntry(device, state);
  if (!info) return 'no backup info';
  const parts = [];
  if (current === 'processing') {
    const percent = progressPercent(info);
    parts.push(percent === null ? 'backing up' : `backing up ${Math.floor(percent)}%`);
  } else {
    const last = lastFinished(info);
    const ago = last === null ? '' : formatElapsed(nowSeconds - last);
    parts.push(ago ? `${ago} ago` : 'no finished backup');
  }
  const size = syncedSize(own(own(own(info, 'rsync_backup'), 'synced'), 'results'));
  if (size) parts.push(size);
  return parts.join(' · ');
}

// ---------------------------------------------------------------------------------------------
// Health ("On the node"): how much of a device's data exists only on the device. The node
// decides (`unified_devices[<id>].health`); these functions only put it into words.

/** The health states, worst first, as the node words them. */
export const HEALTH_STATES = Object.freeze(['at_risk', 'stale', 'lagging', 'safe', 'idle', 'unknown']);

/** Each health state in words. */
export const HEALTH_WORDS = Object.freeze({
  at_risk: 'at risk',
  stale: 'stale',
  lagging: 'lagging',
  safe: 'safe',
  idle: 'idle',
  unknown: 'unknown',
});

/** The `health` object of a device's unified entry, or `null`. */
export function healthOf(device, state) {
  const health = own(unifiedEntry(device, state), 'health');
  return isObject(health) ? health : null;
}

/** `health.state` when it is a known word, else `unknown` (also without a health object). */
export function healthState(health) {
  const word = asText(own(health, 'state'));
  return HEALTH_STATES.includes(word) ? word : 'unknown';
}

/** `health.exposure_s` when it is a non-negative number, else `null`. */
export function healthExposure(health) {
  const exposure = asNumber(own(health, 'exposure_s'));
  return exposure !== null && exposure >= 0 ? exposure : null;
}

/**
 * The "On the node" text: the state in words with its age, e.g. `safe · newest 12 s ago`,
 * `at risk · 47 min only on the device`, `stale · last backup 9 min ago`, `idle · all on the node`.
 */
export function healthText(health, nowSeconds) {
  const state = healthState(health);
  const words = HEALTH_WORDS[state];
  const exposure = healthExposure(health);
  const lastSuccess = asNumber(own(health, 'last_success'));
  const since = (epoch) => formatElapsed(nowSeconds - epoch);
  switch (state) {
    case 'at_risk':
    case 'lagging':
      return exposure === null ? words : `${words} · ${formatElapsed(exposure)} only on the device`;
    case 'stale':
      return lastSuccess === null || !since(lastSuccess)
        ? `${words} · no backup yet` : `${words} · last backup ${since(lastSuccess)} ago`;
    case 'idle':
      return `${words} · all on the node`;
    case 'safe':
      if (exposure !== null) return `${words} · newest ${formatElapsed(exposure)} ago`;
      if (lastSuccess !== null && since(lastSuccess)) return `${words} · last backup ${since(lastSuccess)} ago`;
      return words;
    default:
      return words;
  }
}

/** The node's reasons (plain sentences), at most 20, strings only. */
export function healthReasons(health) {
  const reasons = own(health, 'reasons');
  if (!Array.isArray(reasons)) return [];
  return reasons.filter((line) => typeof line === 'string' && line !== '').slice(0, 20);
}

/** The "On the node" tooltip: the node's reasons, one a line, or what the state means. */
export function healthTitle(health) {
  const lines = healthReasons(health);
  if (lines.length) return lines.join('\n');
  switch (healthState(health)) {
    case 'idle': return 'No experiment running, and all its data is on the node.';
    case 'safe': return 'The newest data is being copied to the node.';
    default: return health ? 'Nothing more is known.' : 'No backup service has reported this device.';
  }
}

/** The "On the node" class: `health health-<state>`. */
export function healthClass(health) {
  return `health health-${healthState(health)}`;
}

/** Devices that need someone: `at_risk` or `stale`. */
export function needsAttention(health) {
  const state = healthState(health);
  return state === 'at_risk' || state === 'stale';
}
