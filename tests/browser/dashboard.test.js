// The dashboard in real headless Chromium, served by the real `etho-backup node`, fed by stub
// backup daemons that produce every circle state. Run from this directory with `node --test`
// (after `npm ci`); the binary comes from ETHO_BACKUP_BIN, default target/debug/etho-backup.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';

import {
  BOTH_UP, DISCOVERED_ROW, HOSTILE_NAME, ID, LABEL, MYSQL_DOWN, OFFLINE_ROW, allOffline, deviceInfos,
  mysqlDocument, rsyncDocument,
} from './fixtures.js';
import {
  NodeProcess, REPO_ROOT, StubDaemon, StubDevice, launchChromium, screenshot, waitFor, watchConsole,
} from './harness.js';

const BINARY = path.resolve(REPO_ROOT, process.env.ETHO_BACKUP_BIN || 'target/debug/etho-backup');

// The page polls every 5 s and gives each fetch 4 s; the node caches /backup/status up to 1 s.
const NEXT_POLL_MS = 12_000;

/** Every visible row: its id and what its Backup cell shows. */
function readRows(page) {
  return page.$$eval('#device-rows tr[data-device-id]', (trs) => trs.map((tr) => {
    const circle = tr.querySelector('.col-backup .backup-status-circle');
    return {
      id: tr.dataset.deviceId,
      name: tr.querySelector('th').textContent,
      className: circle.className,
      title: circle.getAttribute('title'),
      ariaLabel: circle.getAttribute('aria-label'),
      role: circle.getAttribute('role'),
      text: tr.querySelector('.backup-text').textContent,
    };
  }));
}

function expectedRows(rows) {
  return Object.fromEntries(Object.entries(rows).map(([id, row]) => [id, {
    name: row.name,
    className: `backup-status-circle backup-status-${row.state}`,
    title: row.title,
    ariaLabel: LABEL[row.state],
    role: 'img',
  }]));
}

/** Waits until the visible rows are exactly `rows` (by id), then asserts every field. */
async function expectRows(page, rows, timeoutMs = NEXT_POLL_MS) {
  const want = expectedRows(rows);
  let got = {};
  try {
    await waitFor('the rows to match', async () => {
      got = Object.fromEntries((await readRows(page)).map(({ id, text, ...rest }) => [id, rest]));
      return JSON.stringify(Object.keys(got).sort()) === JSON.stringify(Object.keys(want).sort())
        && Object.entries(want).every(([id, row]) => JSON.stringify(got[id]) === JSON.stringify(row));
    }, timeoutMs, 100);
  } catch (error) {
    assert.deepEqual(got, want, error.message); // shows the difference
  }
  assert.deepEqual(got, want);
}

describe('dashboard served by etho-backup node', () => {
  const now = Math.floor(Date.now() / 1000);
  const mysql = new StubDaemon('mysql', mysqlDocument(now));
  const rsync = new StubDaemon('rsync', rsyncDocument(now));
  const node = new NodeProcess(BINARY);
  let browser;
  let page;
  let consoleErrors;

  before(async () => {
    await mysql.start();
    await rsync.start();
    await node.start({ mysqlUrl: mysql.url, rsyncUrl: rsync.url });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    consoleErrors = watchConsole(page);
    await page.goto(node.url);
  });

  after(async () => {
    if (browser) await browser.close();
    await node.stop();
    await mysql.stop();
    await rsync.stop();
  });

  it('serves the page and its modules from the binary, as they are in web/', async () => {
    for (const [route, file, type] of [
      ['', 'index.html', /^text\/html/],
      ['app.js', 'app.js', /^text\/javascript/],
      ['backup-status.js', 'backup-status.js', /^text\/javascript/],
      ['devices.js', 'devices.js', /^text\/javascript/],
      ['style.css', 'style.css', /^text\/css/],
    ]) {
      const response = await fetch(new URL(route, node.url));
      assert.equal(response.status, 200, route);
      assert.match(response.headers.get('content-type'), type, route);
      const served = Buffer.from(await response.arrayBuffer());
      const source = fs.readFileSync(path.join(REPO_ROOT, 'web', file));
      assert.ok(served.equals(source), `${BINARY} serves an old ${file}: rebuild it (cargo build -p etho-backup)`);
    }
  });

  it('shows every circle state with the seed tooltip and an aria-label', async () => {
    await expectRows(page, BOTH_UP);
    await screenshot(page, 'dashboard-laptop');
    assert.equal(await page.title(), '(1) Ethoscope backups', 'the tab title counts failed backups');
  });

  it('writes a short text next to each circle', async () => {
    const text = Object.fromEntries((await readRows(page)).map((row) => [row.id, row.text]));
    assert.equal(text[ID.processing], 'backing up 40% · 2.4 MB');
    assert.match(text[ID.success], /^1[01] min ago · 267\.9 GB$/);
    assert.match(text[ID.partial], /^2 h 0[12] min ago · 1\.5 KB$/);
    assert.match(text[ID.error], /^[12] min ago · 1\.0 MB$/);
    assert.match(text[ID.unknown], /^(\d+ s|1 min) ago$/);
  });

  it('shows the services and the disk usage totals in the header', async () => {
    assert.equal(await page.getAttribute('#service-mysql', 'data-available'), 'true');
    assert.equal(await page.getAttribute('#service-rsync', 'data-available'), 'true');
    const totals = await page.textContent('#totals');
    assert.match(totals, /Results\s*817 files · 267\.9 GB/);
    assert.match(totals, /Videos\s*12,529 files · 507\.2 GB/);
  });

  it('treats device strings as text, never as markup', async () => {
    const name = await page.textContent(`tr[data-device-id="${ID.hostile}"] th`);
    assert.equal(name, HOSTILE_NAME);
    assert.equal(await page.$$eval('#device-rows img, #device-rows b, #detail img', (nodes) => nodes.length), 0);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
  });

  it('animates the processing circle unless reduced motion is asked for', async () => {
    const selector = `tr[data-device-id="${ID.processing}"] .backup-status-circle`;
    const animation = () => page.$eval(selector, (el) => getComputedStyle(el).animationName);
    assert.equal(await animation(), 'apple-breathing');
    await page.emulateMedia({ reducedMotion: 'reduce' });
    assert.equal(await animation(), 'none');
    await page.emulateMedia({ reducedMotion: 'no-preference' });
    assert.equal(await animation(), 'apple-breathing');
  });

  it('sorts by a column, and reverses on a second click', async () => {
    const ids = async () => (await readRows(page)).map((row) => row.id);
    const byName = [ID.hostile, ID.processing, ID.success, ID.partial, ID.error, ID.unknown];
    assert.deepEqual(await ids(), byName);
    assert.equal(await page.getAttribute('th[data-column="name"]', 'aria-sort'), 'ascending');
    await page.click('th[data-column="name"] button');
    assert.deepEqual(await ids(), [...byName].reverse());
    assert.equal(await page.getAttribute('th[data-column="name"]', 'aria-sort'), 'descending');
    await page.click('th[data-column="backup"] button');
    assert.equal((await ids())[0], ID.error, 'failed backups first');
    assert.equal(await page.getAttribute('th[data-column="name"]', 'aria-sort'), 'none');
    await page.click('th[data-column="name"] button');
    assert.deepEqual(await ids(), byName);
  });

  it('hides offline devices until asked', async () => {
    assert.equal(await page.$(`tr[data-device-id="${ID.offline}"]`), null);
    await page.check('#show-offline');
    await expectRows(page, { ...BOTH_UP, ...OFFLINE_ROW }, 2000);
    await page.uncheck('#show-offline');
    await expectRows(page, BOTH_UP, 2000);
  });

  it('opens a detail panel for a clicked device', async () => {
    assert.equal(await page.isVisible('#detail'), false);
    await page.click(`tr[data-device-id="${ID.error}"]`);
    await page.waitForSelector('#detail', { state: 'visible' });
    assert.equal(await page.textContent('#detail-title'), 'ETHOSCOPE_004');
    const detail = await page.textContent('#detail-body');
    for (const expected of [
      'Backup failed', 'MySQL backup', 'Rsync backup', 'Connection refused (os error 111)',
      'rsync exited with code 24: some files vanished', 'Runs7', 'Runs3', 'Synced results40 files · 1.0 MB',
      ID.error,
    ]) {
      assert.ok(detail.includes(expected), `detail panel shows ${JSON.stringify(expected)}:\n${detail}`);
    }
    assert.equal(await page.getAttribute(`tr[data-device-id="${ID.error}"]`, 'aria-current'), 'true');
    await screenshot(page, 'dashboard-detail');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#detail', { state: 'hidden' });
    assert.equal(await page.getAttribute(`tr[data-device-id="${ID.error}"]`, 'aria-current'), null);
  });

  it('has a dark theme', async () => {
    await page.emulateMedia({ colorScheme: 'dark' });
    const background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert.equal(background, 'rgb(20, 24, 29)');
    await screenshot(page, 'dashboard-dark');
    await page.emulateMedia({ colorScheme: 'light' });
  });

  it('is readable on a phone', async () => {
    const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
    const errors = watchConsole(phone);
    try {
      await phone.goto(node.url);
      await expectRows(phone, BOTH_UP);
      // Name, Status and Backup are visible and the table fits the screen without scrolling sideways.
      const layout = await phone.evaluate(() => {
        const visible = (selector) => [...document.querySelectorAll(selector)]
          .every((el) => el.getBoundingClientRect().width > 0 && getComputedStyle(el).display !== 'none');
        const table = document.querySelector('.table-wrap');
        return {
          name: visible('#device-rows .col-name'),
          backup: visible('#device-rows .col-backup'),
          overflow: table.scrollWidth - table.clientWidth,
          page: document.documentElement.scrollWidth - window.innerWidth,
        };
      });
      assert.deepEqual(layout, { name: true, backup: true, overflow: 0, page: 0 });
      await screenshot(phone, 'dashboard-phone');
      await phone.tap(`tr[data-device-id="${ID.success}"]`);
      await phone.waitForSelector('#detail', { state: 'visible' });
      await screenshot(phone, 'dashboard-phone-detail');
      assert.deepEqual(errors, []);
    } finally {
      await phone.close();
    }
  });

  it('shows one service down in the header and the merge of the other', async () => {
    await mysql.stop();
    await waitFor('the MySQL service to show as unavailable',
      async () => (await page.getAttribute('#service-mysql', 'data-available')) === 'false', NEXT_POLL_MS);
    assert.equal(await page.getAttribute('#service-rsync', 'data-available'), 'true');
    await expectRows(page, MYSQL_DOWN);
  });

  it('turns every circle black when both services are down', async () => {
    await rsync.stop();
    await expectRows(page, allOffline(BOTH_UP));
    assert.equal(await page.getAttribute('#service-rsync', 'data-available'), 'false');
    const banner = await page.textContent('#banners');
    assert.match(banner, /Both backup services are unreachable/);
    await screenshot(page, 'dashboard-offline');
  });

  it('recovers when the services come back', async () => {
    await mysql.start();
    await rsync.start();
    await expectRows(page, BOTH_UP);
    assert.equal(await page.textContent('#banners'), '');
  });

  it('lists discovered devices with user, location, IP and since, joined with their backups', async () => {
    const infos = deviceInfos(now);
    const devices = [new StubDevice('127.0.0.2', infos[ID.success]), new StubDevice('127.0.0.3', infos[ID.discovered])];
    try {
      for (const device of devices) await device.start();
      const response = await fetch(new URL('device/add', node.url), {
        method: 'POST', body: devices.map((device) => device.target).join(','),
      });
      assert.equal(response.status, 200);
      const added = await response.json();
      assert.equal(added.added.length, 2, JSON.stringify(added));
      await expectRows(page, { ...BOTH_UP, ...DISCOVERED_ROW }, 20_000);
      await waitFor('the discovered fields to show', async () => {
        const text = await page.textContent(`tr[data-device-id="${ID.success}"] .col-ip`);
        return text === '127.0.0.2';
      }, NEXT_POLL_MS);
      const cells = (id) => page.$eval(`tr[data-device-id="${id}"]`, (tr) => Object.fromEntries(
        ['since', 'user', 'location', 'ip', 'id'].map((column) => [column, tr.querySelector(`.col-${column}`).textContent]),
      ));
      const known = await cells(ID.success);
      assert.match(known.since, /^1 h 0[01] min$/);
      assert.deepEqual({ ...known, since: '' }, { since: '', user: 'alice', location: 'Incubator 1', ip: '127.0.0.2', id: ID.success });
      const discovered = await cells(ID.discovered);
      assert.match(discovered.since, /^[23] min$/);
      assert.deepEqual({ ...discovered, since: '' }, { since: '', user: 'bob', location: 'Room 2', ip: '127.0.0.3', id: ID.discovered });
      assert.equal(await page.textContent(`tr[data-device-id="${ID.discovered}"] .backup-text`), 'no backup info');
      await screenshot(page, 'dashboard-discovered');
    } finally {
      for (const device of devices) await device.stop();
    }
  });

  it('shows a machine id claimed by two addresses as a conflict, with a banner', async () => {
    const id = 'c0ffee00c0ffee00c0ffee00c0ffee00';
    const info = { id, name: 'ETHOSCOPE_042', status: 'running', time: now - 60 };
    const real = new StubDevice('127.0.0.5', info);
    const impostor = new StubDevice('127.0.0.6', info);
    const add = async (device) => {
      const response = await fetch(new URL('device/add', node.url), { method: 'POST', body: device.target });
      assert.equal(response.status, 200);
    };
    try {
      await real.start();
      await add(real);
      await waitFor('the device row', () => page.$(`tr[data-device-id="${id}"]`), 20_000);
      await impostor.start();
      await add(impostor);
      const status = `tr[data-device-id="${id}"] .device-status`;
      await waitFor('the conflict', async () => (await page.textContent(status)) === 'conflict', 20_000);
      assert.match(await page.getAttribute(status, 'title'), /claimed by 127\.0\.0\.5:\d+ and 127\.0\.0\.6:\d+/);
      assert.match(await page.textContent('#banners'), /ETHOSCOPE_042: machine id c0ffee0+c0ffee0+c0ffee0+c0ffee00 is claimed by/);
      await screenshot(page, 'dashboard-conflict');
    } finally {
      await real.stop();
      await impostor.stop();
    }
  });

  it('logged no error in the browser console', () => {
    assert.deepEqual(consoleErrors, []);
  });
});

describe('dashboard polling', () => {
  const now = Math.floor(Date.now() / 1000);
  const mysql = new StubDaemon('mysql', mysqlDocument(now));
  const rsync = new StubDaemon('rsync', rsyncDocument(now));
  const node = new NodeProcess(BINARY);
  let browser;

  before(async () => {
    await mysql.start();
    await rsync.start();
    await node.start({ mysqlUrl: mysql.url, rsyncUrl: rsync.url });
    browser = await launchChromium();
  });

  after(async () => {
    if (browser) await browser.close();
    await node.stop();
    await mysql.stop();
    await rsync.stop();
  });

  it('shows every circle black when /backup/status fails or hangs, and never overlaps fetches', async () => {
    const page = await browser.newPage();
    try {
      const log = { '/devices': [], '/backup/status': [] };
      const inFlight = { '/devices': 0, '/backup/status': 0 };
      let overlaps = 0;
      const endpoint = (request) => {
        const { pathname } = new URL(request.url());
        return pathname in log ? pathname : null;
      };
      page.on('request', (request) => {
        const key = endpoint(request);
        if (!key) return;
        if (inFlight[key] > 0) overlaps += 1;
        inFlight[key] += 1;
        log[key].push(Date.now());
      });
      const done = (request) => {
        const key = endpoint(request);
        if (key) inFlight[key] -= 1;
      };
      page.on('requestfinished', done);
      page.on('requestfailed', done);

      let mode = 'pass';
      await page.route('**/backup/status', (route) => {
        if (mode === 'pass') return route.continue();
        if (mode === 'fail') return route.fulfill({ status: 500, contentType: 'text/plain', body: 'boom' });
        return undefined; // 'hang': never answered; the page must give up by itself
      });
      await page.goto(node.url);
      await expectRows(page, BOTH_UP);

      mode = 'fail';
      await expectRows(page, allOffline(BOTH_UP));
      assert.match(await page.textContent('#banners'), /Backup status unavailable \(HTTP 500\)/);

      mode = 'hang';
      const hungAt = Date.now();
      await waitFor('the timeout to be reported', async () => /Backup status unavailable \(no answer within 4 s\)/
        .test(await page.textContent('#banners')), 5000 + 4000 + 2000);
      await expectRows(page, allOffline(BOTH_UP), 1000);

      // Two more timed-out rounds: each request waits for the previous one to be given up.
      await waitFor('two more /backup/status attempts',
        () => log['/backup/status'].filter((t) => t >= hungAt).length >= 3, 3 * 9000);
      const hung = log['/backup/status'].filter((t) => t >= hungAt);
      for (let i = 1; i < hung.length; i += 1) {
        assert.ok(hung[i] - hung[i - 1] >= 3900, `attempts ${hung[i - 1]} and ${hung[i]} are closer than the 4 s timeout`);
      }
      assert.equal(overlaps, 0, 'a fetch started while the previous one to the same endpoint was pending');
      // /devices kept its own pace and never piled up either.
      assert.ok(log['/devices'].length >= 3);
    } finally {
      await page.close();
    }
  });

  it('stops polling while the tab is hidden and refreshes when it is shown again', async () => {
    const page = await browser.newPage();
    try {
      await page.goto(node.url);
      await expectRows(page, BOTH_UP);
      const polls = () => page.evaluate(() => Number(document.body.dataset.polls || 0));
      const requests = [];
      page.on('request', (request) => requests.push(request.url()));
      const setVisibility = (state) => page.evaluate((value) => {
        Object.defineProperty(document, 'visibilityState', { value, configurable: true });
        document.dispatchEvent(new Event('visibilitychange'));
      }, state);
      await setVisibility('hidden');
      await waitFor('the poll in flight to end', async () => !(await page.evaluate(() => document.body.dataset.polling)), 5000);
      const hiddenAt = await polls();
      requests.length = 0;
      // Checking that nothing happens needs a wait longer than the poll interval.
      await new Promise((resolve) => setTimeout(resolve, 6500));
      assert.equal(await polls(), hiddenAt, 'polled while hidden');
      assert.deepEqual(requests, [], 'fetched while the tab was hidden');
      await setVisibility('visible');
      await waitFor('a refresh after the tab is shown again', async () => (await polls()) > hiddenAt, 2000);
    } finally {
      await page.close();
    }
  });
});
