// The device drawer's "Run history" section: the device's last runs on both backup daemons, as
// the node's GET /backup/history/<id> merges them, newest first: a small bar chart of run
// durations coloured by outcome (drawn here as SVG, no library), then a timeline of runs.
//
// `historyView` is pure (document in, plain rows out) and unit-tested; `historySection` turns
// that into DOM. Messages come from the daemons and are only ever set as text.

import { asNumber, asText, formatBytes, formatElapsed, isObject, own } from './backup-status.js';
import { el } from './dom.js';

/** How long one device's history is reused before the drawer asks again. */
export const HISTORY_REFRESH_MS = 15_000;

/** Runs listed in the timeline (the chart shows up to HISTORY_CHART_RUNS). */
export const HISTORY_MAX_RUNS = 15;

/** Runs drawn in the duration chart, newest on the right. */
export const HISTORY_CHART_RUNS = 60;

const OUTCOMES = new Set(['success', 'warning', 'error']);
const SOURCES = { mysql_backup: 'MySQL', rsync_backup: 'Rsync' };

/** A run's duration in seconds: `end - start`, or null. */
function durationOf(run) {
  const start = asNumber(own(run, 'start'));
  const end = asNumber(own(run, 'end'));
  return start === null || end === null || end < start ? null : end - start;
}

/** `0.4 s`, `12 s`, `3 min` … (sub-second runs keep one decimal). */
export function durationText(seconds) {
  if (seconds === null) return '';
  if (seconds < 10) return `${seconds.toFixed(1)} s`;
  return formatElapsed(seconds);
}

/**
 * The drawer's rows for a GET /backup/history document:
 * `{ runs: [{ outcome, source, when, duration, seconds, copied, message, start }], more,
 *   chart: [{ outcome, seconds }], failing, unavailable: [text] }`.
 * `failing` counts the newest runs that failed in a row.
 */
export function historyView(doc, nowSeconds) {
  const list = Array.isArray(own(doc, 'runs')) ? own(doc, 'runs').filter(isObject) : [];
  const runs = list.map((run) => {
    const outcomeWord = asText(own(run, 'outcome'));
    const outcome = OUTCOMES.has(outcomeWord) ? outcomeWord : 'error';
    const start = asNumber(own(run, 'start'));
    const seconds = durationOf(run);
    const bytes = asNumber(own(run, 'bytes'));
    const rows = asNumber(own(run, 'rows'));
    const files = asNumber(own(run, 'files'));
    const copied = [
      bytes ? formatBytes(bytes) : '',
      files ? `${files} file${files === 1 ? '' : 's'}` : '',
      rows ? `${rows.toLocaleString('en-US')} rows` : '',
    ].filter(Boolean).join(' · ') || 'nothing new';
    const ago = start === null ? '' : formatElapsed(nowSeconds - start);
    return {
      outcome,
      source: SOURCES[asText(own(run, 'source'))] || asText(own(run, 'source')),
      when: ago ? `${ago} ago` : '',
      start,
      seconds,
      duration: durationText(seconds),
      copied,
      message: asText(own(run, 'message')),
    };
  });
  let failing = 0;
  while (failing < runs.length && runs[failing].outcome === 'error') failing += 1;
  const unavailable = Object.entries(isObject(own(doc, 'unavailable')) ? own(doc, 'unavailable') : {})
    .map(([key, why]) => `${SOURCES[key] || key} history unavailable (${asText(why)})`);
  return {
    runs: runs.slice(0, HISTORY_MAX_RUNS),
    more: Math.max(0, runs.length - HISTORY_MAX_RUNS),
    chart: runs.slice(0, HISTORY_CHART_RUNS).reverse().map((r) => ({ outcome: r.outcome, seconds: r.seconds })),
    failing,
    unavailable,
  };
}

const SVG = 'http://www.w3.org/2000/svg';

/** Bars of run durations (height on a square-root scale), oldest left, coloured by outcome. */
function chart(points) {
  const width = 300;
  const height = 40;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('class', 'history-chart');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('preserveAspectRatio', 'xMinYMax meet');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', `Durations of the last ${points.length} runs`);
  const longest = Math.max(1, ...points.map((p) => p.seconds || 0));
  const step = width / Math.max(points.length, 20);
  points.forEach((p, i) => {
    const h = Math.max(2, Math.sqrt((p.seconds || 0) / longest) * (height - 2));
    const bar = document.createElementNS(SVG, 'rect');
    bar.setAttribute('x', String(i * step + 1));
    bar.setAttribute('y', String(height - h));
    bar.setAttribute('width', String(Math.max(1, step - 2)));
    bar.setAttribute('height', String(h));
    bar.setAttribute('class', `history-bar history-${p.outcome}`);
    svg.append(bar);
  });
  return svg;
}

/**
 * The drawer section for one device. `entry` is `{ doc, error }` as app.js keeps it: the last
 * history document and the last error.
 */
export function historySection(entry, nowSeconds) {
  const section = el('section', { class: 'history', 'aria-labelledby': 'history-title' },
    el('h3', { id: 'history-title', text: 'Run history' }));
  const note = (text) => section.append(el('p', { class: 'history-note', text }));
  if (!entry || (!entry.doc && !entry.error)) {
    note('Loading the run history…');
    return section;
  }
  if (entry.error && !entry.doc) {
    note(`Run history unavailable (${entry.error}).`);
    return section;
  }
  const view = historyView(entry.doc, nowSeconds);
  for (const text of view.unavailable) note(text);
  if (!view.runs.length) {
    note('No finished runs yet.');
    return section;
  }
  if (view.failing >= 2) {
    section.append(el('p', { class: 'history-failing', text: `The last ${view.failing} runs failed.` }));
  }
  section.append(chart(view.chart));
  const list = el('ol', { class: 'history-runs' });
  for (const run of view.runs) {
    list.append(el('li', { class: `history-run history-${run.outcome}`, 'data-outcome': run.outcome },
      el('span', { class: 'history-dot', 'aria-hidden': 'true' }),
      el('div', { class: 'history-line' },
        el('span', { class: 'history-outcome', text: run.outcome }),
        el('span', { class: 'history-source', text: run.source }),
        el('span', { class: 'history-when', text: run.when }),
        el('span', { class: 'history-duration', text: run.duration ? `took ${run.duration}` : '' })),
      el('div', { class: 'history-copied', text: run.copied }),
      el('div', { class: 'history-message', text: run.message, title: run.message })));
  }
  section.append(list);
  if (view.more) note(`${view.more} older run${view.more === 1 ? '' : 's'} not shown.`);
  if (entry.error) note(`Last refresh failed (${entry.error}); showing the previous history.`);
  return section;
}
