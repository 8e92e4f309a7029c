// The device drawer's "Archive" section: the device's experiments as the node's GET /archive lists
// them, with sizes, row counts, verification and download links.
//
// `archiveView` is pure (document in, plain rows out) and unit-tested; `archiveSection` turns that
// into DOM. Names come from the node's validated index but are still only ever set as text or as
// attribute values, and every link is built from path segments with encodeURIComponent.

import { asNumber, asText, formatBytes, formatElapsed, isObject, own } from './backup-status.js';
import { el } from './dom.js';

/** How long one device's listing is reused before the drawer asks again. */
export const ARCHIVE_REFRESH_MS = 30_000;

/** How soon to ask again while a database of the listing still awaits its first check. */
export const ARCHIVE_PENDING_REFRESH_MS = 3_000;

/** Milliseconds until the drawer should fetch this listing again. */
export function archiveRefreshMs(doc) {
  const devices = Array.isArray(own(doc, 'devices')) ? own(doc, 'devices') : [];
  const pending = devices.some((d) => (Array.isArray(own(d, 'experiments')) ? own(d, 'experiments') : [])
    .some((x) => (Array.isArray(own(x, 'files')) ? own(x, 'files') : [])
      .some((f) => isObject(own(f, 'database')) && !isObject(own(own(f, 'database'), 'verified'))
        && !own(own(f, 'database'), 'error'))));
  return pending ? ARCHIVE_PENDING_REFRESH_MS : ARCHIVE_REFRESH_MS;
}

/** Experiments shown in the drawer (newest first); the rest are counted. */
export const ARCHIVE_MAX_EXPERIMENTS = 20;

/** `archive/<id>/<name>/<date>[/<file>]`, each segment encoded. */
export function archiveHref(path, suffix = '') {
  const segments = asText(path).split('/').filter((s) => s !== '');
  return `archive/${segments.map(encodeURIComponent).join('/')}${suffix}`;
}

/** `2025-07-10_10-00-00` → `2025-07-10 10:00:00`. */
export function experimentDate(date) {
  const text = asText(date);
  const match = /^(\d{4}-\d{2}-\d{2})_(\d{2})-(\d{2})-(\d{2})$/.exec(text);
  return match ? `${match[1]} ${match[2]}:${match[3]}:${match[4]}` : text;
}

/**
 * What the drawer says about a database's last verification:
 * `{ state: 'ok' | 'failed' | 'stale' | 'pending', text }`.
 */
export function verification(database, nowSeconds) {
  const verified = own(database, 'verified');
  if (!isObject(verified)) {
    const error = asText(own(database, 'error'));
    return error ? { state: 'failed', text: `not readable: ${error}` } : { state: 'pending', text: 'not verified yet' };
  }
  const method = asText(own(verified, 'method')).replace('_', ' ') || 'check';
  const at = asNumber(own(verified, 'at'));
  const ago = at === null ? '' : formatElapsed(nowSeconds - at);
  const when = ago ? ` ${ago} ago` : '';
  if (own(verified, 'ok') !== true) {
    const message = asText(own(verified, 'message'));
    return { state: 'failed', text: `${method} failed${when}${message ? `: ${message}` : ''}` };
  }
  if (own(verified, 'current') === false) {
    return { state: 'stale', text: `${method} ok${when}; changed since, check pending` };
  }
  return { state: 'ok', text: `${method} ok${when}` };
}

/** The experiments of a GET /archive document as drawer rows. */
export function archiveView(doc, nowSeconds) {
  const experiments = [];
  const devices = Array.isArray(own(doc, 'devices')) ? own(doc, 'devices') : [];
  for (const device of devices) {
    const list = Array.isArray(own(device, 'experiments')) ? own(device, 'experiments') : [];
    for (const x of list) {
      if (!isObject(x)) continue;
      const path = asText(own(x, 'path'));
      const files = (Array.isArray(own(x, 'files')) ? own(x, 'files') : []).filter(isObject).map((f) => {
        const name = asText(own(f, 'name'));
        const database = own(f, 'database');
        return {
          name,
          href: archiveHref(path, `/${encodeURIComponent(name)}`),
          size: formatBytes(asNumber(own(f, 'size'))),
          root: asText(own(f, 'root')),
          rows: isObject(database) ? asNumber(own(database, 'rows_total')) : null,
          verification: isObject(database) ? verification(database, nowSeconds) : null,
        };
      });
      const checks = files.map((f) => f.verification).filter(Boolean);
      const worst = ['failed', 'pending', 'stale', 'ok'].find((s) => checks.some((c) => c.state === s)) || null;
      experiments.push({
        date: experimentDate(own(x, 'date')),
        machineName: asText(own(x, 'machine_name')),
        path,
        zipHref: archiveHref(path, '.zip'),
        size: formatBytes(asNumber(own(x, 'size'))),
        files: asNumber(own(x, 'files_total')),
        rows: asNumber(own(x, 'rows')),
        verification: worst,
        fileRows: files,
      });
    }
  }
  return {
    experiments: experiments.slice(0, ARCHIVE_MAX_EXPERIMENTS),
    more: Math.max(0, experiments.length - ARCHIVE_MAX_EXPERIMENTS),
    totalFiles: asNumber(own(doc, 'total_files')),
  };
}


/**
 * The drawer section for one device. `entry` is `{ doc, error, pending }` as app.js keeps it:
 * the last listing, the last error (`HTTP 404` means the node serves no archive), whether a
 * fetch is running.
 */
export function archiveSection(entry, nowSeconds) {
  const section = el('section', { class: 'archive', 'aria-labelledby': 'archive-title' },
    el('h3', { id: 'archive-title', text: 'Archive' }));
  const note = (text) => section.append(el('p', { class: 'archive-note', text }));
  if (!entry || (!entry.doc && !entry.error)) {
    note('Loading the archive…');
    return section;
  }
  if (entry.error && !entry.doc) {
    note(entry.error === 'HTTP 404'
      ? 'This node does not serve its archive (--no-archive).'
      : `Archive unavailable (${entry.error}).`);
    return section;
  }
  const view = archiveView(entry.doc, nowSeconds);
  if (!view.experiments.length) {
    note('No experiments of this device in the archive yet.');
    return section;
  }
  const list = el('ul', { class: 'archive-experiments' });
  for (const x of view.experiments) {
    const facts = [x.size, x.files === null ? '' : `${x.files} file${x.files === 1 ? '' : 's'}`,
      x.rows ? `${x.rows.toLocaleString('en-US')} rows` : ''].filter(Boolean).join(' · ');
    const head = el('div', { class: 'archive-head' },
      el('span', { class: 'archive-date', text: x.date }),
      el('a', { class: 'archive-zip', href: x.zipHref, download: '', text: 'zip' }));
    const files = el('ul', { class: 'archive-files' });
    for (const f of x.fileRows) {
      const check = f.verification
        ? el('span', { class: `archive-check archive-check-${f.verification.state}`, title: f.verification.text, text: f.verification.text })
        : null;
      files.append(el('li', { 'data-root': f.root },
        el('a', { href: f.href, download: '', text: f.name }),
        el('span', { class: 'archive-size', text: [f.size, f.rows === null ? '' : `${f.rows.toLocaleString('en-US')} rows`].filter(Boolean).join(' · ') }),
        check));
    }
    list.append(el('li', { class: 'archive-experiment', 'data-path': x.path, 'data-verification': x.verification || 'none' },
      head,
      el('div', { class: 'archive-facts', text: facts }),
      files));
  }
  section.append(list);
  if (view.more) note(`${view.more} older experiment${view.more === 1 ? '' : 's'} not shown.`);
  if (entry.error) note(`Last refresh failed (${entry.error}); showing the previous listing.`);
  return section;
}
