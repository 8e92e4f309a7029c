// The dashboard page: polls the node and renders the device table, header and detail panel.
//
// All decisions live in the pure modules (backup-status.js, devices.js); this file only fetches and
// touches the DOM. Device strings are untrusted, so they only ever reach the page through
// `textContent`, `title` or `setAttribute` — never through HTML parsing.

import {
  STATE_LABELS, asNumber, asText, backupShortText, backupState, formatBytes, formatElapsed,
  getBackupStatusClass, getBackupStatusTitle, healthClass, healthReasons, healthText, healthTitle, isObject, own,
  sidePercent, summarize, syncedSize, unavailableState, unifiedEntry,
} from './backup-status.js';
import { COLUMNS, attentionCount, buildRows, isOffline, sortRows, visibleRows } from './devices.js';
import { ARCHIVE_REFRESH_MS, archiveRefreshMs, archiveSection } from './archive.js';
import { HISTORY_REFRESH_MS, historySection } from './history.js';
import { el } from './dom.js';

const POLL_INTERVAL_MS = 5000;
const FETCH_TIMEOUT_MS = 4000;
const MIN_GAP_MS = 1000;

const model = {
  devices: null, // last good GET /devices reply
  devicesError: '',
  state: unavailableState(),
  backupError: '',
  knownUnified: {}, // last good unified_devices, so rows stay while the service is unreachable
  updatedAt: null,
  loaded: false,
};

const view = {
  column: 'name',
  descending: false,
  showOffline: false,
  selected: null,
};

const $ = (id) => document.getElementById(id);
const rowElements = new Map();
let rows = [];

// ---------------------------------------------------------------------------------------------
// DOM helpers

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setAttr(node, name, value) {
  if (value === '' || value === null) node.removeAttribute(name);
  else if (node.getAttribute(name) !== value) node.setAttribute(name, value);
}

function nowSeconds() {
  return Date.now() / 1000;
}

function dateText(epoch) {
  return new Date(epoch * 1000).toLocaleString();
}

function agoText(epoch) {
  const ago = formatElapsed(nowSeconds() - epoch);
  return ago ? `${dateText(epoch)} (${ago} ago)` : dateText(epoch);
}

// ---------------------------------------------------------------------------------------------
// Fetching

async function fetchJson(url) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
  try {
    const response = await fetch(url, {
      signal: controller.signal,
      cache: 'no-store',
      headers: { Accept: 'application/json' },
    });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return await response.json(); // the body is read under the same timeout
  } catch (error) {
    if (error && error.name === 'AbortError') throw new Error(`no answer within ${FETCH_TIMEOUT_MS / 1000} s`);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

function reason(error) {
  return error instanceof SyntaxError ? 'invalid JSON' : (error && error.message) || 'request failed';
}

let inFlight = null;
let pollTimer = null;

/** One poll of both endpoints; never two at once. */
function poll() {
  if (inFlight) return inFlight;
  clearTimeout(pollTimer);
  const started = Date.now();
  document.body.dataset.polling = 'true';
  inFlight = (async () => {
    const [devices, backup] = await Promise.allSettled([fetchJson('devices'), fetchJson('backup/status')]);
    if (devices.status === 'fulfilled' && isObject(devices.value) && own(devices.value, 'error') === undefined) {
      model.devices = devices.value;
      model.devicesError = '';
    } else if (devices.status === 'fulfilled' && isObject(devices.value)) {
      model.devicesError = 'the node reported an error'; // upstream's {"error": <traceback>}
    } else {
      model.devicesError = devices.status === 'rejected' ? reason(devices.reason) : 'unexpected reply';
    }
    if (backup.status === 'fulfilled' && isObject(backup.value)) {
      model.state = summarize(backup.value);
      model.backupError = '';
      if (model.state.backup_service_available) model.knownUnified = model.state.backup_status;
    } else {
      model.state = unavailableState();
      model.backupError = backup.status === 'rejected' ? reason(backup.reason) : 'unexpected reply';
    }
    model.updatedAt = new Date();
    model.loaded = true;
    render();
  })().catch((error) => {
    console.error('dashboard refresh failed', error);
  }).finally(() => {
    inFlight = null;
    delete document.body.dataset.polling;
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    schedule(Math.max(MIN_GAP_MS, POLL_INTERVAL_MS - (Date.now() - started)));
  });
  return inFlight;
}

function schedule(delay) {
  clearTimeout(pollTimer);
  if (document.visibilityState === 'visible') pollTimer = setTimeout(poll, delay);
}

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState !== 'visible') clearTimeout(pollTimer);
  else if (!inFlight) poll();
});

// ---------------------------------------------------------------------------------------------
// Header

function renderService(id, available) {
  const node = $(id);
  const text = !model.loaded ? 'checking…' : available ? 'available' : model.backupError ? 'unknown' : 'unavailable';
  setAttr(node, 'data-available', !model.loaded ? 'pending' : String(available));
  setText(node.querySelector('.service-state'), text);
}

function renderTotals() {
  const totals = $('totals');
  const summary = own(model.state.rsync_backup_status, 'disk_usage_summary');
  totals.replaceChildren();
  if (!model.state.rsync_backup_available || !isObject(summary)) return;
  for (const [key, label] of [['results', 'Results'], ['videos', 'Videos'], ['combined', 'Total']]) {
    const block = own(summary, key);
    if (!isObject(block)) continue;
    const files = asNumber(own(block, 'total_files'));
    const size = asText(own(block, 'total_size_human')) || formatBytes(asNumber(own(block, 'total_size_bytes')));
    const parts = [];
    if (files !== null) parts.push(`${files.toLocaleString('en-US')} files`);
    if (size) parts.push(size);
    totals.append(el('div', { class: `total total-${key}` }, el('dt', { text: label }), el('dd', { text: parts.join(' · ') || '—' })));
  }
}

function renderBanners() {
  const messages = [];
  if (model.backupError) {
    messages.push(['banner-error',
      `Backup status unavailable (${model.backupError}). Every circle is black until the node answers again.`]);
  } else if (model.loaded && !model.state.backup_service_available) {
    messages.push(['banner-error', 'Both backup services are unreachable from the node.']);
  }
  if (model.devicesError) {
    messages.push(['banner-warning', `Device list unavailable (${model.devicesError}). Showing the devices known so far.`]);
  }
  for (const row of rows.filter((r) => r.conflict)) {
    messages.push(['banner-error', `${row.name || row.id}: ${row.conflict}.`]);
  }
  // A live region: touch it only when the words change, so screen readers do not repeat it.
  const banners = $('banners');
  const current = [...banners.children].map((p) => [p.dataset.kind, p.textContent]);
  if (JSON.stringify(current) === JSON.stringify(messages)) return;
  banners.replaceChildren(...messages.map(([kind, text]) => el('p', { class: `banner ${kind}`, 'data-kind': kind, text })));
}

// ---------------------------------------------------------------------------------------------
// Table

function createRow(id) {
  const tr = el('tr', { 'data-device-id': id, tabindex: '0' });
  const circle = el('span', { class: 'backup-status-circle', role: 'img' });
  tr.append(
    el('th', { scope: 'row', class: 'col-name' }),
    el('td', { class: 'col-status' }, el('span', { class: 'device-status' })),
    el('td', { class: 'col-since' }),
    el('td', { class: 'col-backup' }, el('span', { class: 'backup-cell' }, circle, el('span', { class: 'backup-text' }))),
    el('td', { class: 'col-health' }, el('span', { class: 'health' })),
    el('td', { class: 'col-user' }),
    el('td', { class: 'col-location' }),
    el('td', { class: 'col-ip' }),
    el('td', { class: 'col-id' }, el('code')),
  );
  return tr;
}

function updateRow(tr, row) {
  const now = nowSeconds();
  const [name, status, since, backup, health, user, location, ip, id] = tr.children;
  setText(name, row.name || '(unnamed)');
  setAttr(name, 'title', row.discovered ? '' : 'Known to the backup services only');
  const badge = status.firstChild;
  setText(badge, row.status || 'unknown');
  setAttr(badge, 'data-status', row.status || 'unknown');
  setAttr(badge, 'title', row.conflict);
  setText(since, row.sinceSeconds === null ? '' : formatElapsed(row.sinceSeconds));
  setAttr(since, 'title', row.since === null ? '' : dateText(row.since));
  const circle = backup.querySelector('.backup-status-circle');
  const className = `backup-status-circle ${getBackupStatusClass(row, model.state)}`;
  if (circle.className !== className) circle.className = className;
  const title = getBackupStatusTitle(row, model.state);
  setAttr(circle, 'title', title);
  setAttr(circle, 'aria-label', STATE_LABELS[backupState(row, model.state)]);
  setText(backup.querySelector('.backup-text'), backupShortText(row, model.state, now));
  const words = health.firstChild;
  const healthClassName = healthClass(row.health);
  if (words.className !== healthClassName) words.className = healthClassName;
  setText(words, healthText(row.health, now));
  setAttr(words, 'title', healthTitle(row.health));
  setText(user, row.user);
  setText(location, row.location);
  setText(ip, row.ip);
  setText(id.firstChild, row.id);
  setAttr(id.firstChild, 'title', row.id);
  setAttr(tr, 'aria-current', view.selected === row.id ? 'true' : '');
  tr.classList.toggle('is-selected', view.selected === row.id);
  tr.classList.toggle('is-offline', isOffline(row));
}

function renderTable() {
  rows = buildRows(model.devices, model.state, model.knownUnified, nowSeconds());
  const shown = sortRows(visibleRows(rows, view.showOffline), view.column, view.descending);
  const tbody = $('device-rows');
  const keep = new Set(shown.map((row) => row.id));
  for (const [id, tr] of rowElements) {
    if (!keep.has(id)) {
      tr.remove();
      rowElements.delete(id);
    }
  }
  shown.forEach((row, index) => {
    let tr = rowElements.get(row.id);
    if (!tr) {
      tr = createRow(row.id);
      rowElements.set(row.id, tr);
    }
    updateRow(tr, row);
    if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
  });

  const hidden = rows.length - shown.length;
  const attention = attentionCount(rows);
  const summary = $('attention');
  setAttr(summary, 'data-count', String(attention));
  setText(summary, !model.loaded ? '' : attention === 0
    ? 'No device at risk or stale'
    : `${attention} device${attention === 1 ? '' : 's'} at risk or stale`);
  setText($('device-count'), rows.length ? `(${shown.length}${hidden ? ` of ${rows.length}` : ''})` : '');
  const empty = $('empty');
  empty.hidden = shown.length > 0 || !model.loaded;
  setText(empty, rows.length
    ? `${hidden} offline device${hidden === 1 ? '' : 's'} hidden.`
    : 'No devices yet. Devices appear here once the node discovers them or a backup service reports them.');

  for (const th of document.querySelectorAll('#device-table th[data-column]')) {
    const active = th.dataset.column === view.column;
    setAttr(th, 'aria-sort', active ? (view.descending ? 'descending' : 'ascending') : 'none');
  }
}

// ---------------------------------------------------------------------------------------------
// Detail panel

function fact(list, label, value) {
  if (value === '' || value === null || value === undefined) return;
  list.append(el('dt', { text: label }), el('dd', {}, value));
}

function syncedFacts(list, synced) {
  if (!isObject(synced)) return;
  for (const [key, block] of Object.entries(synced).slice(0, 12)) {
    let text = '';
    if (isObject(block) && Object.keys(block).length === 0) continue; // upstream's {"tracking_db": {}}
    if (isObject(block)) {
      const files = asNumber(own(block, 'local_files') ?? own(block, 'files'));
      const size = syncedSize(block) || asText(own(block, 'size_human')) || formatBytes(asNumber(own(block, 'size_bytes') ?? own(block, 'bytes')));
      const parts = [];
      if (files !== null) parts.push(`${files.toLocaleString('en-US')} file${files === 1 ? '' : 's'}`);
      if (size) parts.push(size);
      if (!parts.length) {
        for (const [k, v] of Object.entries(block).slice(0, 4)) if (asText(v)) parts.push(`${k}: ${asText(v)}`);
      }
      text = parts.join(' · ') || '—';
    } else {
      text = asText(block);
    }
    fact(list, `Synced ${key}`, text);
  }
}

function sideSection(title, side) {
  const section = el('section', { class: 'side' }, el('h3', { text: title }));
  const list = el('dl');
  section.append(list);
  if (!isObject(side) || side.available !== true) {
    list.append(el('dt', { text: 'Available' }), el('dd', { text: 'no — this service has not reported the device' }));
    return section;
  }
  const progress = own(side, 'progress');
  fact(list, 'Outcome', asText(own(progress, 'status')) || 'none yet');
  fact(list, 'Message', asText(own(progress, 'message')));
  if (own(side, 'processing') === true) {
    const percent = sidePercent(side);
    fact(list, 'Running', percent === null ? 'yes' : `yes, ${Math.floor(percent)}%`);
  }
  const count = asNumber(own(side, 'count'));
  fact(list, 'Runs', count === null ? '' : String(count));
  const started = asNumber(own(side, 'started'));
  fact(list, 'Started', started !== null && started > 0 ? agoText(started) : '');
  const ended = asNumber(own(side, 'ended'));
  if (ended === -1) fact(list, 'Ended', 'interrupted (timed out or daemon restarted)');
  else if (ended !== null && ended > 0) fact(list, 'Ended', agoText(ended));
  syncedFacts(list, own(side, 'synced'));
  return section;
}

// What the drawer fetches per device (its archive listing, its run history): fetched when the
// drawer shows the device, reused while younger than `ttl(doc)`, never two fetches for one device
// at once. Each cache maps id → { doc, error, at, pending }.
function drawerEntry(cache, id, path, ttl) {
  const entry = cache.get(id) || { doc: null, error: '', at: 0, pending: false };
  cache.set(id, entry);
  if (!entry.pending && Date.now() - entry.at > ttl(entry.doc)) {
    entry.pending = true;
    fetchJson(path)
      .then((doc) => { entry.doc = doc; entry.error = ''; })
      .catch((error) => { entry.error = reason(error); })
      .finally(() => {
        entry.pending = false;
        entry.at = Date.now();
        if (view.selected === id) renderDetail();
      });
  }
  return entry;
}

// The archive listing: ARCHIVE_REFRESH_MS, a few seconds while a database awaits its first check.
const archiveCache = new Map();
const archiveEntry = (id) => drawerEntry(archiveCache, id, `archive?device=${encodeURIComponent(id)}`,
  (doc) => (doc ? archiveRefreshMs(doc) : ARCHIVE_REFRESH_MS));

// The run history of both daemons: HISTORY_REFRESH_MS.
const historyCache = new Map();
const historyEntry = (id) => drawerEntry(historyCache, id, `backup/history/${encodeURIComponent(id)}`,
  () => HISTORY_REFRESH_MS);

function renderDetail() {
  const panel = $('detail');
  const row = rows.find((r) => r.id === view.selected);
  if (!row) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  setText($('detail-title'), row.name || row.id);
  const body = $('detail-body');
  const info = unifiedEntry(row, model.state);
  const state = backupState(row, model.state);
  const circle = el('span', { class: `backup-status-dot ${getBackupStatusClass(row, model.state)}`, 'aria-hidden': 'true' });
  const facts = el('dl', { class: 'facts' });
  fact(facts, 'Backup', el('span', {}, circle, STATE_LABELS[state]));
  fact(facts, 'Overall status', asText(own(info, 'overall_status')));
  if (row.health) {
    const list = healthReasons(row.health);
    fact(facts, 'On the node', el('span', {},
      el('span', { class: healthClass(row.health), text: healthText(row.health, nowSeconds()) }),
      list.length ? el('ul', { class: 'reasons' }, ...list.map((r) => el('li', { text: r }))) : ''));
  }
  fact(facts, 'Device status', row.status || 'unknown');
  fact(facts, 'Since', row.since === null ? '' : agoText(row.since));
  fact(facts, 'User', row.user);
  fact(facts, 'Location', row.location);
  fact(facts, 'IP', row.ip);
  fact(facts, 'ID', el('code', { text: row.id }));
  const children = [facts];
  if (state === 'offline') {
    children.push(el('p', { class: 'note', text: 'The backup services are unreachable, so nothing is known about this device’s backups right now.' }));
  } else if (!info) {
    children.push(el('p', { class: 'note', text: 'Neither backup service has reported this device yet.' }));
  } else {
    children.push(el('div', { class: 'sides' },
      sideSection('MySQL backup', own(info, 'mysql_backup')),
      sideSection('Rsync backup', own(info, 'rsync_backup'))));
  }
  children.push(historySection(historyEntry(row.id), nowSeconds()));
  children.push(archiveSection(archiveEntry(row.id), nowSeconds()));
  body.replaceChildren(...children);
}

// ---------------------------------------------------------------------------------------------

function render() {
  renderService('service-mysql', model.state.mysql_backup_available);
  renderService('service-rsync', model.state.rsync_backup_available);
  renderTotals();
  renderTable();
  renderBanners();
  renderDetail();
  if (model.updatedAt) {
    setText($('updated'), `${model.backupError ? 'Last attempt' : 'Updated'} ${model.updatedAt.toLocaleTimeString()}`);
  }
  const problems = rows.filter((row) => row.backup === 'error').length;
  document.title = problems ? `(${problems}) Ethoscope backups` : 'Ethoscope backups';
}

function selectRow(id) {
  view.selected = view.selected === id ? null : id;
  render();
  if (view.selected) $('detail-close').focus({ preventScroll: true });
}

function closeDetail() {
  const id = view.selected;
  view.selected = null;
  render();
  if (id && rowElements.has(id)) rowElements.get(id).focus({ preventScroll: true });
}

function loadPreferences() {
  try {
    const saved = JSON.parse(localStorage.getItem('etho-backup-dashboard') || '{}');
    if (COLUMNS.includes(saved.column)) view.column = saved.column;
    view.descending = saved.descending === true;
    view.showOffline = saved.showOffline === true;
  } catch {
    // Storage disabled or garbled: defaults.
  }
}

function savePreferences() {
  try {
    localStorage.setItem('etho-backup-dashboard', JSON.stringify({
      column: view.column, descending: view.descending, showOffline: view.showOffline,
    }));
  } catch {
    // Storage disabled: preferences last for this page only.
  }
}

function init() {
  loadPreferences();
  const toggle = $('show-offline');
  toggle.checked = view.showOffline;
  toggle.addEventListener('change', () => {
    view.showOffline = toggle.checked;
    savePreferences();
    render();
  });
  for (const th of document.querySelectorAll('#device-table th[data-column]')) {
    th.querySelector('button').addEventListener('click', () => {
      const column = th.dataset.column;
      view.descending = view.column === column ? !view.descending : false;
      view.column = column;
      savePreferences();
      render();
    });
  }
  const tbody = $('device-rows');
  tbody.addEventListener('click', (event) => {
    const tr = event.target.closest('tr[data-device-id]');
    if (tr) selectRow(tr.dataset.deviceId);
  });
  tbody.addEventListener('keydown', (event) => {
    if (event.key !== 'Enter' && event.key !== ' ') return;
    const tr = event.target.closest('tr[data-device-id]');
    if (!tr) return;
    event.preventDefault();
    selectRow(tr.dataset.deviceId);
  });
  $('detail-close').addEventListener('click', closeDetail);
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && view.selected) closeDetail();
  });
  render();
  poll();
}

init();
