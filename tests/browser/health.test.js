// The "On the node" column in real headless Chromium: the real `etho-backup node` computes each
// device's health from stub daemons and stub devices it polls, and the column's text and class
// must say what that health says, for every state; offline devices at risk stay visible; the
// header counts devices at risk or stale; the column sorts by exposure.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  NodeProcess, REPO_ROOT, StubDaemon, StubDevice, launchChromium, screenshot, waitFor, watchConsole,
} from './harness.js';

const BINARY = path.resolve(REPO_ROOT, process.env.ETHO_BACKUP_BIN || 'target/debug/etho-backup');

const H = {
  safe: '0a1b2c3d4e5f60718293a4b5c6d7e901',
  lagging: '0a1b2c3d4e5f60718293a4b5c6d7e902',
  atRisk: '0a1b2c3d4e5f60718293a4b5c6d7e903',
  stale: '0a1b2c3d4e5f60718293a4b5c6d7e904',
  idle: '0a1b2c3d4e5f60718293a4b5c6d7e905',
  unknown: '0a1b2c3d4e5f60718293a4b5c6d7e906',
};
const NAME = Object.fromEntries(Object.entries(H).map(([k, id]) => [k, `ETHOSCOPE_${id.slice(-3)}`]));
const RSYNC_ERROR = 'Backup failed after 0.1s: Results: no files copied; rsync failed with code 5 '
  + '(error starting client-server protocol): @ERROR: access denied to ethoscope_data from localhost (127.0.0.1)';

const clock = () => Date.now() / 1000;

function entry(name, status, fields) {
  return {
    name, status, started: 0, ended: 0, processing: false, count: 1, synced: {}, progress: {}, failures: 0, ...fields,
  };
}

/** Times relative to each request, so the ages the node computes stay put during the test. */
function mysqlDocument() {
  const now = clock();
  const ok = (newest, interval) => ({
    progress: { status: 'success', message: 'ok' }, last_success: now - 5, last_success_started: now - 6,
    interval_s: interval, newest_copied_at: now - newest, data_duplication: false, rows_behind: 0,
  });
  return {
    [H.safe]: entry(NAME.safe, 'running', ok(12, 10)),
    [H.lagging]: entry(NAME.lagging, 'running', ok(150, 10)),
    [H.atRisk]: entry(NAME.atRisk, 'running', ok(7200, 600)),
  };
}

function rsyncDocument() {
  const now = clock();
  const results = { local_files: 1, directory: '/r', disk_usage_bytes: 4096, disk_usage_human: '4.0 KB' };
  return {
    devices: {
      [H.stale]: entry(NAME.stale, 'running', {
        progress: { status: 'error', message: RSYNC_ERROR }, failures: 3, last_success: now - 3600,
        last_success_started: now - 3601, interval_s: 1, newest_copied_at: now - 20, synced: { results }, metadata: {},
      }),
      [H.idle]: entry(NAME.idle, 'stopped', {
        progress: { status: 'success', message: 'Backup completed' }, last_success: now - 1, last_success_started: now - 1,
        interval_s: 600, newest_copied_at: now - 100, synced: { results }, metadata: {},
      }),
    },
    disk_usage_summary: {},
  };
}

function info(key, status, time) {
  return { id: H[key], name: NAME[key], status, time, experimental_info: { name: 'lab', location: 'Room 1' } };
}

/** `formatElapsed` written again, so the test does not check the page with its own code. */
function span(seconds) {
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${String(m % 60).padStart(2, '0')} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** What the column must show for a health object (the wording). */
function expected(health, now) {
  if (!health) return { text: 'unknown', className: 'health health-unknown' };
  const e = health.exposure_s;
  const text = {
    safe: e === null ? 'safe' : `safe · newest ${span(e)} ago`,
    at_risk: `at risk · ${span(e)} only on the device`,
    lagging: `lagging · ${span(e)} only on the device`,
    stale: `stale · last backup ${span(now - health.last_success)} ago`,
    idle: 'idle · all on the node',
  }[health.state];
  return {
    text,
    className: `health health-${health.state}`,
    title: health.reasons.length ? health.reasons.join('\n') : undefined,
  };
}

function readColumn(page) {
  return page.$$eval('#device-rows tr[data-device-id]', (trs) => trs.map((tr) => {
    const words = tr.querySelector('.col-health .health');
    return {
      id: tr.dataset.deviceId,
      text: words.textContent,
      className: words.className,
      title: words.getAttribute('title'),
      offline: tr.classList.contains('is-offline'),
      circle: tr.querySelector('.backup-status-circle').className,
    };
  }));
}

describe('"On the node" column', () => {
  const mysql = new StubDaemon('mysql', mysqlDocument);
  const rsync = new StubDaemon('rsync', rsyncDocument);
  const node = new NodeProcess(BINARY);
  const t0 = clock();
  const devices = {
    atRisk: new StubDevice('127.0.0.4', info('atRisk', 'running', t0 - 7300), { SQLite: {}, MariaDB: { ETHOSCOPE_903_db: {} } }),
    stale: new StubDevice('127.0.0.5', info('stale', 'running', t0 - 3700), { SQLite: { 'x.db': {} }, MariaDB: {} }),
    idle: new StubDevice('127.0.0.6', info('idle', 'stopped', t0 - 50), { SQLite: { 'x.db': {} }, MariaDB: {} }),
    unknown: new StubDevice('127.0.0.7', info('unknown', 'running', t0 - 10)),
  };
  let browser;
  let page;
  let consoleErrors;
  let lastStatus = null; // the page's latest /backup/status reply, and when it came

  before(async () => {
    await mysql.start();
    await rsync.start();
    for (const device of Object.values(devices)) await device.start();
    const extraArgs = ['--poll-interval', '0.5', '--device-timeout', '1'];
    for (const device of Object.values(devices)) extraArgs.push('--device', device.target);
    await node.start({ mysqlUrl: mysql.url, rsyncUrl: rsync.url, extraArgs });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
    consoleErrors = watchConsole(page);
    page.on('response', async (response) => {
      if (!response.url().endsWith('/backup/status') || !response.ok()) return;
      try {
        lastStatus = { at: clock(), doc: await response.json() };
      } catch {
        // a reply cut short by the page's own timeout: the next one counts
      }
    });
    await page.goto(node.url);
  });

  after(async () => {
    if (browser) await browser.close();
    await node.stop();
    for (const device of Object.values(devices)) await device.stop();
    await mysql.stop();
    await rsync.stop();
  });

  /** Waits until every visible row shows what the page's latest reply says, and returns the rows. */
  async function columnMatchesHealth(want) {
    let rows = [];
    let mismatch = '';
    await waitFor(`the column to show ${JSON.stringify(want)}`, async () => {
      if (!lastStatus) return false;
      const { doc, at } = lastStatus;
      rows = await readColumn(page);
      const states = Object.fromEntries(rows.map((row) => {
        const health = doc.unified_devices[row.id]?.health;
        return [row.id, health ? health.state : 'unknown'];
      }));
      if (Object.entries(want).some(([key, state]) => states[H[key]] !== state)) {
        mismatch = JSON.stringify(states);
        return false;
      }
      for (const row of rows) {
        const health = doc.unified_devices[row.id]?.health || null;
        const e = expected(health, at);
        // An age written a moment after the reply may have ticked by a second.
        const same = row.className === e.className && (row.text === e.text
          || row.text === expected(health, at + 1).text)
          && (e.title === undefined || row.title === e.title);
        if (!same) {
          mismatch = `${JSON.stringify(row)} vs ${JSON.stringify(e)}`;
          return false;
        }
      }
      return true;
    }, 30_000, 100).catch((error) => {
      throw new Error(`${error.message}; last difference: ${mismatch}`);
    });
    return Object.fromEntries(rows.map((row) => [row.id, row]));
  }

  it('shows every state in words, coloured, with the reasons as its tooltip', async () => {
    const rows = await columnMatchesHealth({
      safe: 'safe', lagging: 'lagging', atRisk: 'at_risk', stale: 'stale', idle: 'idle',
    });
    assert.match(rows[H.safe].text, /^safe · newest 1[23] s ago$/);
    assert.match(rows[H.atRisk].text, /^at risk · 2 h 0\d min only on the device$/);
    assert.equal(rows[H.idle].text, 'idle · all on the node');
    assert.equal(rows[H.unknown].text, 'unknown');
    assert.equal(rows[H.unknown].title, 'No backup service has reported this device.');
    assert.match(rows[H.stale].text, /^stale · last backup 1 h 00 min ago$/);
    assert.ok(rows[H.stale].title.includes('rsync-backup has failed 3 times'), rows[H.stale].title);
    assert.ok(rows[H.stale].title.includes('@ERROR: access denied'), rows[H.stale].title);
    // The colours differ by state.
    const colour = (id) => page.$eval(`tr[data-device-id="${id}"] .col-health .health`, (el) => getComputedStyle(el).color);
    const colours = new Set(await Promise.all([H.safe, H.lagging, H.atRisk, H.stale, H.idle, H.unknown].map(colour)));
    assert.equal(colours.size, 6, [...colours].join(' '));
    // The seed's circle is unchanged beside it: the SQLite-only device is idle, its circle golden.
    assert.equal(rows[H.idle].circle, 'backup-status-circle backup-status-partial');
    assert.equal(await page.getAttribute('#attention', 'data-count'), '2');
    assert.equal(await page.textContent('#attention'), '2 devices at risk or stale');
    await screenshot(page, 'dashboard-health');
  });

  it('sorts by exposure, largest first', async () => {
    await page.click('th[data-column="health"] button');
    const order = (await readColumn(page)).map((row) => row.id);
    assert.deepEqual(order.slice(0, 4), [H.atRisk, H.lagging, H.stale, H.safe]);
    assert.equal(order.at(-1), H.unknown, 'unknown exposure last');
    await page.click('th[data-column="name"] button');
  });

  it('keeps an unplugged device at risk on screen while offline devices are hidden', async () => {
    assert.equal(await page.isChecked('#show-offline'), false);
    await devices.atRisk.stop();
    await waitFor('the unplugged device to show offline', async () => {
      const row = await page.$(`tr[data-device-id="${H.atRisk}"]`);
      return row && (await row.evaluate((tr) => tr.classList.contains('is-offline')));
    }, 30_000, 100);
    // The node serves its kept reply while it refreshes (stale-while-revalidate), so the page's
    // reply can predate the unplugging: wait for one that knows it.
    const away = /\((unreachable for|offline, last seen) /;
    await waitFor('a reply that knows the device is unreachable', async () => {
      const reasons = lastStatus?.doc.unified_devices[H.atRisk]?.health?.reasons || [];
      return reasons.some((r) => away.test(r));
    }, 30_000, 100);
    const rows = await columnMatchesHealth({ atRisk: 'at_risk' });
    assert.ok(rows[H.atRisk].offline);
    assert.match(rows[H.atRisk].title, /^the newest 2 h 0\d min of data exist only on ETHOSCOPE_903 \((unreachable for|offline, last seen) /);
    // The detail panel lists the reasons too.
    await page.click(`tr[data-device-id="${H.atRisk}"]`);
    await page.waitForSelector('#detail', { state: 'visible' });
    assert.ok((await page.textContent('#detail-body')).includes('only on ETHOSCOPE_903'));
    await page.keyboard.press('Escape');
    await screenshot(page, 'dashboard-health-offline');
  });

  it('logged no error in the browser console', () => {
    assert.deepEqual(consoleErrors, []);
  });
});
