// The device drawer's run history in real headless Chromium: the real `etho-backup node` merges
// two stub daemons' `GET /history/<id>`, and the drawer must show every run in the node's order
// with its outcome colour, daemon and duration, the duration chart, and a note for a daemon
// whose history is missing.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { BOTH_UP, ID, mysqlDocument, rsyncDocument } from './fixtures.js';
import {
  NodeProcess, REPO_ROOT, StubDaemon, launchChromium, screenshot, waitFor, watchConsole,
} from './harness.js';

const BINARY = path.resolve(REPO_ROOT, process.env.ETHO_BACKUP_BIN || 'target/debug/etho-backup');

function run(start, seconds, outcome, message, extra = {}) {
  return {
    start, end: start + seconds, outcome, message, bytes: 0, rows: null, files: 0, kinds: [], ...extra,
  };
}

describe('the device drawer shows the run history', () => {
  const now = Math.floor(Date.now() / 1000);
  const mysql = new StubDaemon('mysql', mysqlDocument(now));
  const rsync = new StubDaemon('rsync', rsyncDocument(now));
  const node = new NodeProcess(BINARY);
  let browser;
  let page;
  let consoleErrors;

  before(async () => {
    mysql.histories[ID.success] = {
      device_id: ID.success,
      runs: [
        run(now - 100, 4.2, 'success', 'Backup completed successfully: 700 new rows', { rows: 700, bytes: 56_000 }),
        run(now - 700, 1.5, 'error', 'Backup failed: <b>Access denied</b>'),
      ],
    };
    rsync.histories[ID.success] = {
      device_id: ID.success,
      runs: [run(now - 400, 95, 'warning', 'Videos: 1 file vanished', { bytes: 3_000_000, files: 2, kinds: ['videos'] })],
    };
    await mysql.start();
    await rsync.start();
    await node.start({ mysqlUrl: mysql.url, rsyncUrl: rsync.url });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    consoleErrors = watchConsole(page);
    await page.goto(node.url);
    await waitFor('the device rows', async () => (await page.$$('#device-rows tr')).length === Object.keys(BOTH_UP).length, 12_000);
  });

  after(async () => {
    if (browser) await browser.close();
    await node.stop();
    await mysql.stop();
    await rsync.stop();
  });

  it('lists both daemons\' runs newest first with outcome, daemon and duration', async () => {
    await page.click(`tr[data-device-id="${ID.success}"]`);
    await page.waitForSelector('#detail .history-run', { timeout: 12_000 });
    const runs = await page.$$eval('#detail .history-run', (items) => items.map((li) => ({
      outcome: li.dataset.outcome,
      dot: getComputedStyle(li.querySelector('.history-dot')).backgroundColor,
      source: li.querySelector('.history-source').textContent,
      duration: li.querySelector('.history-duration').textContent,
      message: li.querySelector('.history-message').textContent,
    })));
    assert.deepEqual(runs.map((r) => [r.outcome, r.source, r.duration]), [
      ['success', 'MySQL', 'took 4.2 s'],
      ['warning', 'Rsync', 'took 1 min'],
      ['error', 'MySQL', 'took 1.5 s'],
    ]);
    assert.deepEqual(runs.map((r) => r.dot), ['rgb(60, 159, 60)', 'rgb(212, 164, 65)', 'rgb(209, 51, 49)']);
    assert.equal(runs[2].message, 'Backup failed: <b>Access denied</b>', 'messages are text, never markup');
    assert.equal(await page.$$eval('#detail .history-chart rect', (bars) => bars.length), 3);
    await screenshot(page, 'dashboard-history');
    assert.deepEqual(consoleErrors, []);
  });

  it('names a daemon whose history is missing', async () => {
    await page.click('#detail-close');
    await page.click(`tr[data-device-id="${ID.error}"]`);
    await waitFor('the history note', async () => /No finished runs yet/.test(await page.textContent('#detail .history')), 12_000);
    const text = await page.textContent('#detail .history');
    assert.match(text, /MySQL history unavailable \(HTTP 404 Not Found\)/);
    assert.match(text, /Rsync history unavailable \(HTTP 404 Not Found\)/);
  });
});
