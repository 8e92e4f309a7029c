// The device drawer's archive section in real headless Chromium: the real `etho-backup node`
// serves an archive made here (an ethoscope-shaped SQLite file written with Debian's sqlite3, a
// text file and a video chunk), and the drawer must list the experiment with its size, rows,
// verification and working download links.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import { BOTH_UP, ID, mysqlDocument, rsyncDocument } from './fixtures.js';
import {
  NodeProcess, REPO_ROOT, StubDaemon, launchChromium, screenshot, waitFor, watchConsole,
} from './harness.js';

const BINARY = path.resolve(REPO_ROOT, process.env.ETHO_BACKUP_BIN || 'target/debug/etho-backup');
const DATE = '2025-07-10_10-00-00';
const DB = `${DATE}_${ID.success}.db`;
const VIDEO = `${DATE}_${ID.success}__1280x960@25_00000.h264`;

/** An archive with one experiment of the `success` device: 3 ROIs × 40 rows. */
function makeArchive(root) {
  const results = path.join(root, 'results', ID.success, 'ETHOSCOPE_002', DATE);
  const videos = path.join(root, 'videos', ID.success, 'ETHOSCOPE_002', DATE);
  fs.mkdirSync(results, { recursive: true });
  fs.mkdirSync(videos, { recursive: true });
  const sql = ['CREATE TABLE METADATA (field TEXT, value TEXT);',
    "INSERT INTO METADATA VALUES ('date_time', '1752141600');",
    'CREATE TABLE ROI_MAP (roi_idx INTEGER, roi_value INTEGER, x INTEGER, y INTEGER, w INTEGER, h INTEGER);'];
  for (let roi = 1; roi <= 3; roi += 1) {
    sql.push(`CREATE TABLE ROI_${roi} (id INTEGER PRIMARY KEY, t INTEGER, x SMALLINT, y SMALLINT);`);
    sql.push(`INSERT INTO ROI_MAP VALUES (${roi}, ${roi}, 0, 0, 10, 10);`);
    for (let i = 1; i <= 40; i += 1) sql.push(`INSERT INTO ROI_${roi} (t, x, y) VALUES (${i * 1000}, 1, 2);`);
  }
  execFileSync('sqlite3', [path.join(results, DB)], { input: `BEGIN;\n${sql.join('\n')}\nCOMMIT;\n` });
  fs.writeFileSync(path.join(results, 'metadata.txt'), 'ROI: 3\n');
  fs.writeFileSync(path.join(videos, VIDEO), Buffer.alloc(200_000, 7));
  return { results: path.join(root, 'results'), videos: path.join(root, 'videos'), dir: results };
}

describe('the device drawer lists the archive', () => {
  const now = Math.floor(Date.now() / 1000);
  const mysql = new StubDaemon('mysql', mysqlDocument(now));
  const rsync = new StubDaemon('rsync', rsyncDocument(now));
  const node = new NodeProcess(BINARY);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'etho-archive-test-'));
  let archive;
  let browser;
  let page;
  let consoleErrors;

  before(async () => {
    archive = makeArchive(root);
    await mysql.start();
    await rsync.start();
    await node.start({
      mysqlUrl: mysql.url,
      rsyncUrl: rsync.url,
      extraArgs: ['-r', archive.results, '-v', archive.videos, '--archive-scan-interval', '0.2'],
    });
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
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('shows the experiment with its size, rows and verification', async () => {
    await page.click(`tr[data-device-id="${ID.success}"]`);
    await page.waitForSelector('#detail .archive-experiment', { timeout: 12_000 });
    const experiment = `#detail .archive-experiment[data-path="${ID.success}/ETHOSCOPE_002/${DATE}"]`;
    // Until the first analysis the rows are missing; the drawer asks again within seconds then.
    await waitFor('row counts and a verification', async () => {
      const text = await page.textContent(experiment);
      return /120 rows/.test(text) && /check ok/.test(text);
    }, 12_000, 250);
    const text = await page.textContent(experiment);
    assert.match(text, /2025-07-10 10:00:00/);
    assert.match(text, /3 files/);
    assert.match(text, /(quick|integrity) check ok/);
    const files = await page.$$eval(`${experiment} .archive-files a`, (links) => links.map((a) => a.textContent));
    assert.deepEqual(files, [DB, 'metadata.txt', VIDEO]);
    await screenshot(page, 'dashboard-archive');
  });

  it('links download the files and the zip', async () => {
    const experiment = `#detail .archive-experiment[data-path="${ID.success}/ETHOSCOPE_002/${DATE}"]`;
    const hrefs = await page.$$eval(`${experiment} a`, (links) => links.map((a) => a.getAttribute('href')));
    assert.equal(hrefs.length, 4);
    const bodies = await page.evaluate(async (urls) => Promise.all(urls.map(async (url) => {
      const response = await fetch(url);
      const bytes = new Uint8Array(await response.arrayBuffer());
      return { url, status: response.status, type: response.headers.get('content-type'), length: bytes.length, head: Array.from(bytes.slice(0, 16)) };
    })), hrefs);
    const byName = Object.fromEntries(bodies.map((b) => [b.url.split('/').pop(), b]));
    assert.equal(byName[DB].status, 200);
    assert.equal(byName[DB].type, 'application/vnd.sqlite3');
    assert.deepEqual(byName[DB].head, Array.from(fs.readFileSync(path.join(archive.dir, DB)).subarray(0, 16)));
    assert.equal(byName[DB].length, fs.statSync(path.join(archive.dir, DB)).size);
    const video = bodies.find((b) => b.url.endsWith('.h264'));
    assert.equal(video.status, 200);
    assert.equal(video.type, 'video/h264');
    assert.equal(video.length, 200_000);
    const zip = byName[`${DATE}.zip`];
    assert.equal(zip.status, 200);
    assert.equal(zip.type, 'application/zip');
    assert.deepEqual(zip.head.slice(0, 4), [0x50, 0x4b, 0x03, 0x04], 'a zip local file header');
  });

  it('says so for a device without archived experiments', async () => {
    await page.keyboard.press('Escape');
    await page.click(`tr[data-device-id="${ID.error}"]`);
    await waitFor('the empty archive note', async () => /No experiments of this device in the archive yet/
      .test(await page.textContent('#detail .archive')), 12_000);
  });

  it('logged no error in the browser console', () => {
    assert.deepEqual(consoleErrors, []);
  });
});
