import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  ARCHIVE_PENDING_REFRESH_MS, ARCHIVE_REFRESH_MS, archiveHref, archiveRefreshMs, archiveView, experimentDate, verification,
} from '../archive.js';

const NOW = 1_752_150_000;
const ID = '0123456789abcdef0123456789abcdef';

const DOC = {
  total_files: 3,
  devices: [{
    machine_id: ID,
    experiments: [{
      machine_name: 'ETHOSCOPE_001',
      date: '2025-07-10_10-00-00',
      path: `${ID}/ETHOSCOPE_001/2025-07-10_10-00-00`,
      files_total: 3,
      size: 3 * 1024 * 1024,
      rows: 1500,
      files: [
        {
          name: `2025-07-10_10-00-00_${ID}.db`, root: 'results', size: 2 * 1024 * 1024,
          database: {
            source: 'mysql_mirror', rows_total: 1500, last_point: 5000,
            verified: { method: 'integrity_check', at: NOW - 120, ok: true, on: 'snapshot', current: true },
          },
        },
        { name: 'x__1280x960@25_00000.h264', root: 'videos', size: 1024 * 1024 },
        { name: 'metadata.txt', root: 'results', size: 10 },
      ],
    }],
  }],
};

describe('archiveHref', () => {
  it('encodes each segment', () => {
    assert.equal(archiveHref('a/b/c', '/x@y.h264'), 'archive/a/b/c/x@y.h264');
    assert.equal(archiveHref('a/b/c', `/${encodeURIComponent('x@y.h264')}`), 'archive/a/b/c/x%40y.h264');
    assert.equal(archiveHref('a/b c/..', '.zip'), 'archive/a/b%20c/...zip');
    assert.equal(archiveHref(null, '.zip'), 'archive/.zip');
  });
});

describe('experimentDate', () => {
  it('reads the folder name as a date', () => {
    assert.equal(experimentDate('2025-07-10_10-00-00'), '2025-07-10 10:00:00');
    assert.equal(experimentDate('odd'), 'odd');
    assert.equal(experimentDate(5), '5');
  });
});

describe('verification', () => {
  it('says ok, stale, failed or pending', () => {
    const ok = DOC.devices[0].experiments[0].files[0].database;
    assert.deepEqual(verification(ok, NOW), { state: 'ok', text: 'integrity check ok 2 min ago' });
    const stale = { verified: { ...ok.verified, current: false, method: 'quick_check' } };
    assert.equal(verification(stale, NOW).state, 'stale');
    assert.match(verification(stale, NOW).text, /^quick check ok 2 min ago; changed since/);
    const bad = { verified: { method: 'quick_check', at: NOW - 5, ok: false, message: 'row 3 missing' } };
    assert.deepEqual(verification(bad, NOW), { state: 'failed', text: 'quick check failed 5 s ago: row 3 missing' });
    assert.deepEqual(verification({}, NOW), { state: 'pending', text: 'not verified yet' });
    assert.deepEqual(verification({ error: 'malformed' }, NOW), { state: 'failed', text: 'not readable: malformed' });
  });
});

describe('archiveView', () => {
  it('lists experiments with sizes, rows, verification and links', () => {
    const view = archiveView(DOC, NOW);
    assert.equal(view.more, 0);
    assert.equal(view.experiments.length, 1);
    const x = view.experiments[0];
    assert.equal(x.date, '2025-07-10 10:00:00');
    assert.equal(x.size, '3.0 MB');
    assert.equal(x.rows, 1500);
    assert.equal(x.verification, 'ok');
    assert.equal(x.zipHref, `archive/${ID}/ETHOSCOPE_001/2025-07-10_10-00-00.zip`);
    assert.deepEqual(x.fileRows.map((f) => [f.name, f.size, f.rows, f.verification && f.verification.state]), [
      [`2025-07-10_10-00-00_${ID}.db`, '2.0 MB', 1500, 'ok'],
      ['x__1280x960@25_00000.h264', '1.0 MB', null, null],
      ['metadata.txt', '10 B', null, null],
    ]);
    assert.equal(x.fileRows[1].href, `archive/${ID}/ETHOSCOPE_001/2025-07-10_10-00-00/x__1280x960%4025_00000.h264`);
  });

  it('shows the worst verification of an experiment and caps the list', () => {
    const many = {
      devices: [{
        experiments: Array.from({ length: 25 }, (_, i) => ({
          date: `2025-07-${String(i + 1).padStart(2, '0')}_10-00-00`, path: `p/${i}`,
          files: [{ name: 'a.db', database: {} }, { name: 'b.db', database: { verified: { ok: true, at: NOW } } }],
        })),
      }],
    };
    const view = archiveView(many, NOW);
    assert.equal(view.experiments.length, 20);
    assert.equal(view.more, 5);
    assert.equal(view.experiments[0].verification, 'pending');
  });

  it('survives odd documents', () => {
    for (const doc of [null, {}, { devices: 5 }, { devices: [null, { experiments: [null, 3] }] }]) {
      assert.deepEqual(archiveView(doc, NOW).experiments, []);
    }
  });
});

describe('archiveRefreshMs', () => {
  it('asks again soon only while a database awaits its first check', () => {
    assert.equal(archiveRefreshMs(DOC), ARCHIVE_REFRESH_MS);
    const pending = { devices: [{ experiments: [{ files: [{ name: 'a.db', database: { source: 'rsync' } }] }] }] };
    assert.equal(archiveRefreshMs(pending), ARCHIVE_PENDING_REFRESH_MS);
    const broken = { devices: [{ experiments: [{ files: [{ name: 'a.db', database: { error: 'x' } }] }] }] };
    assert.equal(archiveRefreshMs(broken), ARCHIVE_REFRESH_MS);
    assert.equal(archiveRefreshMs(null), ARCHIVE_REFRESH_MS);
  });
});
