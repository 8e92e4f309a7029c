import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { readFileSync } from 'node:fs';

import {
  STATES, STATE_LABELS, backupShortText, backupState, formatBytes, formatElapsed,
  getBackupStatusClass, getBackupStatusTitle, lastFinished, progressPercent, summarize,
  syncedSize, unavailableState,
} from '../backup-status.js';

// The seed's response example (placeholders filled in), its error-handling example, and the
// reference's unified example with an SQLite device (partial) and a MySQL-only device.
const FIXTURES = JSON.parse(readFileSync(new URL('./fixtures.json', import.meta.url), 'utf8'));
const { seed_example: SEED_EXAMPLE, seed_both_down: SEED_BOTH_DOWN, reference_example: REFERENCE_EXAMPLE } = FIXTURES;

const ID = '0123456789abcdef0123456789abcdef';

function side(fields = {}) {
  return {
    available: true, status: 'stopped', progress: {}, synced: {}, processing: false, count: 0,
    started: null, ended: null, ...fields,
  };
}

function stateWith(entry, { mysql = true, rsync = true } = {}) {
  return summarize({
    mysql_backup: mysql ? {} : { error: 'MySQL backup service unavailable', service: 'mysql_backup' },
    rsync_backup: rsync ? { devices: {} } : { error: 'Rsync backup service unavailable', service: 'rsync_backup' },
    unified_devices: entry === undefined ? {} : { [ID]: entry },
  });
}

describe('summarize', () => {
  it('sets the seed scope variables from the seed example', () => {
    const state = summarize(SEED_EXAMPLE);
    assert.equal(state.backup_status, SEED_EXAMPLE.unified_devices);
    assert.equal(state.backup_status_full, SEED_EXAMPLE);
    assert.equal(state.mysql_backup_available, true);
    assert.equal(state.rsync_backup_available, true);
    assert.equal(state.backup_service_available, true);
    assert.equal(state.mysql_backup_status, SEED_EXAMPLE.mysql_backup);
    assert.equal(state.rsync_backup_status, SEED_EXAMPLE.rsync_backup);
    assert.deepEqual(Object.keys(state).sort(), [
      'backup_service_available', 'backup_status', 'backup_status_full', 'mysql_backup_available',
      'mysql_backup_status', 'rsync_backup_available', 'rsync_backup_status',
    ]);
  });

  it('marks both sides unavailable when both are error objects', () => {
    const state = summarize(SEED_BOTH_DOWN);
    assert.deepEqual(state.backup_status, {});
    assert.equal(state.mysql_backup_available, false);
    assert.equal(state.rsync_backup_available, false);
    assert.equal(state.backup_service_available, false);
    assert.equal(state.mysql_backup_status, SEED_BOTH_DOWN.mysql_backup);
    assert.equal(state.rsync_backup_status, SEED_BOTH_DOWN.rsync_backup);
    assert.equal(state.backup_status_full, SEED_BOTH_DOWN);
  });

  it('keeps the service available when only one side is an error', () => {
    const mysqlDown = summarize({ ...SEED_EXAMPLE, mysql_backup: SEED_BOTH_DOWN.mysql_backup });
    assert.equal(mysqlDown.mysql_backup_available, false);
    assert.equal(mysqlDown.rsync_backup_available, true);
    assert.equal(mysqlDown.backup_service_available, true);
    const rsyncDown = summarize({ ...SEED_EXAMPLE, rsync_backup: SEED_BOTH_DOWN.rsync_backup });
    assert.equal(rsyncDown.mysql_backup_available, true);
    assert.equal(rsyncDown.rsync_backup_available, false);
    assert.equal(rsyncDown.backup_service_available, true);
  });

  it('treats any error key as unavailable, whatever its value', () => {
    const state = summarize({ mysql_backup: { error: '' }, rsync_backup: { error: null }, unified_devices: {} });
    assert.equal(state.mysql_backup_available, false);
    assert.equal(state.rsync_backup_available, false);
  });

  it('treats a reply that is not the unified document as nothing available', () => {
    for (const reply of [null, undefined, 'oops', 42, [], { error: 'Traceback ...' }]) {
      const state = summarize(reply);
      assert.equal(state.backup_service_available, false, JSON.stringify(reply));
      assert.deepEqual(state.backup_status, {});
    }
  });

  it('uses {} when unified_devices is missing or not an object', () => {
    for (const unified of [undefined, null, [], 'x', 3]) {
      const state = summarize({ mysql_backup: {}, rsync_backup: {}, unified_devices: unified });
      assert.deepEqual(state.backup_status, {});
      assert.equal(state.backup_service_available, true);
    }
  });
});

describe('unavailableState', () => {
  it('has nothing available and empty statuses', () => {
    assert.deepEqual(unavailableState(), {
      backup_status: {},
      backup_status_full: null,
      mysql_backup_available: false,
      rsync_backup_available: false,
      backup_service_available: false,
      mysql_backup_status: {},
      rsync_backup_status: {},
    });
  });

  it('returns a fresh object each time', () => {
    const a = unavailableState();
    a.backup_status.x = 1;
    assert.deepEqual(unavailableState().backup_status, {});
  });

  it('makes every device offline', () => {
    const state = unavailableState();
    assert.equal(getBackupStatusClass({ id: ID }, state), 'backup-status-offline');
    assert.equal(getBackupStatusTitle({ id: ID }, state), 'Backup service offline');
  });
});

describe('getBackupStatusClass truth table', () => {
  const OVERALL = [
    ['success', 'success'], ['partial', 'partial'], ['error', 'error'], ['unknown', 'unknown'],
    [undefined, 'unknown'], ['processing', 'unknown'], ['no_backups', 'unknown'], [42, 'unknown'],
  ];
  const AVAILABILITY = [[true, true], [true, false], [false, true], [false, false]];

  for (const [mysql, rsync] of AVAILABILITY) {
    const serviceUp = mysql || rsync;
    it(`mysql ${mysql ? 'up' : 'down'}, rsync ${rsync ? 'up' : 'down'}, no unified entry`, () => {
      const state = stateWith(undefined, { mysql, rsync });
      assert.equal(getBackupStatusClass({ id: ID }, state), serviceUp ? 'backup-status-unknown' : 'backup-status-offline');
    });
    for (const mysqlProcessing of [false, true]) {
      for (const rsyncProcessing of [false, true]) {
        for (const [overall, fromOverall] of OVERALL) {
          const name = `mysql ${mysql ? 'up' : 'down'}, rsync ${rsync ? 'up' : 'down'}, `
            + `processing ${mysqlProcessing}/${rsyncProcessing}, overall ${overall}`;
          it(name, () => {
            const entry = {
              name: 'ETHOSCOPE_001', status: 'running',
              mysql_backup: side({ processing: mysqlProcessing }),
              rsync_backup: side({ processing: rsyncProcessing }),
            };
            if (overall !== undefined) entry.overall_status = overall;
            const state = stateWith(entry, { mysql, rsync });
            let want;
            if (!serviceUp) want = 'offline';
            else if (mysqlProcessing || rsyncProcessing) want = 'processing';
            else want = fromOverall;
            assert.equal(getBackupStatusClass({ id: ID }, state), `backup-status-${want}`);
            assert.equal(backupState({ id: ID }, state), want);
          });
        }
      }
    }
  }

  it('only a true processing flag counts as processing', () => {
    for (const flag of ['true', 1, 'yes', null, {}]) {
      const state = stateWith({ overall_status: 'success', mysql_backup: side({ processing: flag }), rsync_backup: side() });
      assert.equal(getBackupStatusClass({ id: ID }, state), 'backup-status-success', JSON.stringify(flag));
    }
  });

  it('tolerates entries without side blocks', () => {
    assert.equal(getBackupStatusClass({ id: ID }, stateWith({ overall_status: 'error' })), 'backup-status-error');
    assert.equal(getBackupStatusClass({ id: ID }, stateWith({ mysql_backup: 'x', rsync_backup: null })), 'backup-status-unknown');
  });

  it('treats a non-object entry as no information', () => {
    for (const entry of ['success', 1, null, []]) {
      const state = summarize({ mysql_backup: {}, rsync_backup: {}, unified_devices: { [ID]: entry } });
      assert.equal(getBackupStatusClass({ id: ID }, state), 'backup-status-unknown');
      assert.equal(getBackupStatusTitle({ id: ID }, state), 'No backup information available');
    }
  });

  it('never reads inherited properties for ids such as constructor or __proto__', () => {
    const state = summarize(JSON.parse('{"mysql_backup":{},"rsync_backup":{},"unified_devices":{"x":{"overall_status":"success"}}}'));
    for (const id of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      assert.equal(getBackupStatusClass({ id }, state), 'backup-status-unknown', id);
      assert.equal(getBackupStatusTitle({ id }, state), 'No backup information available', id);
    }
  });

  it('handles a device without an id', () => {
    const state = stateWith({ overall_status: 'success' });
    assert.equal(getBackupStatusClass({}, state), 'backup-status-unknown');
    assert.equal(getBackupStatusClass(null, state), 'backup-status-unknown');
  });

  it('gives every state a distinct label', () => {
    assert.deepEqual(Object.keys(STATE_LABELS), [...STATES]);
    assert.equal(new Set(Object.values(STATE_LABELS)).size, STATES.length);
  });
});

describe('getBackupStatusTitle', () => {
  it('says the service is offline when nothing is available', () => {
    assert.equal(getBackupStatusTitle({ id: ID }, summarize(SEED_BOTH_DOWN)), 'Backup service offline');
    assert.equal(getBackupStatusTitle({ id: ID }, stateWith({ overall_status: 'success' }, { mysql: false, rsync: false })),
      'Backup service offline');
  });

  it('says there is no information for a device without an entry', () => {
    assert.equal(getBackupStatusTitle({ id: 'nope' }, summarize(SEED_EXAMPLE)), 'No backup information available');
  });

  it('matches the seed example', () => {
    assert.equal(getBackupStatusTitle({ id: 'device_id' }, summarize(SEED_EXAMPLE)),
      'Overall Status: success\n'
      + 'MySQL Backup: success - Status message (#1)\n'
      + 'Rsync Backup: success - Backup status message (#818)\n'
      + 'Data Size: 267.9 GB');
    assert.equal(getBackupStatusClass({ id: 'device_id' }, summarize(SEED_EXAMPLE)), 'backup-status-success');
  });

  it('matches the reference example (SQLite device: partial)', () => {
    const state = summarize(REFERENCE_EXAMPLE);
    assert.equal(getBackupStatusTitle({ id: 'aaaa' }, state),
      'Overall Status: partial\n'
      + 'MySQL Backup: warning - Device aaaa does not have a MariaDB database - skipping MariaDB backup (#5)\n'
      + 'Rsync Backup: success - Unified backup completed successfully in 0.3s (#2)\n'
      + 'Data Size: 2.4 MB');
    assert.equal(getBackupStatusClass({ id: 'aaaa' }, state), 'backup-status-partial');
    assert.equal(getBackupStatusTitle({ id: 'bbbb' }, state),
      'Overall Status: unknown\nMySQL Backup: success - ok\nRsync Backup: not available');
    assert.equal(getBackupStatusClass({ id: 'bbbb' }, state), 'backup-status-unknown');
  });

  const variants = [
    ['overall missing', { mysql_backup: side({ available: false }), rsync_backup: side({ available: false }) },
      'Overall Status: unknown\nMySQL Backup: not available\nRsync Backup: not available'],
    ['progress status preferred over side status',
      { overall_status: 'error', mysql_backup: side({ status: 'running', progress: { status: 'error' } }), rsync_backup: side({ available: false }) },
      'Overall Status: error\nMySQL Backup: error\nRsync Backup: not available'],
    ['side status when progress is empty',
      { overall_status: 'unknown', mysql_backup: side({ status: 'running' }), rsync_backup: side({ status: 'stopped', progress: { message: 'queued' } }) },
      'Overall Status: unknown\nMySQL Backup: running\nRsync Backup: stopped - queued'],
    ['count 0 is not shown, count 1 is',
      { overall_status: 'success', mysql_backup: side({ progress: { status: 'success' }, count: 0 }), rsync_backup: side({ progress: { status: 'success' }, count: 1 }) },
      'Overall Status: success\nMySQL Backup: success\nRsync Backup: success (#1)'],
    ['message and count together',
      { overall_status: 'error', mysql_backup: side({ progress: { status: 'error', message: 'Connection refused' }, count: 12 }), rsync_backup: side({ progress: { status: 'success', message: 'done' }, count: 3, synced: { results: { disk_usage_human: '1.5 KB' } } }) },
      'Overall Status: error\nMySQL Backup: error - Connection refused (#12)\nRsync Backup: success - done (#3)\nData Size: 1.5 KB'],
    ['data size without a results size is left out',
      { overall_status: 'partial', mysql_backup: side({ available: false }), rsync_backup: side({ progress: { status: 'success' }, synced: { videos: { disk_usage_human: '9.0 GB' } } }) },
      'Overall Status: partial\nMySQL Backup: not available\nRsync Backup: success'],
    ['data size is shown even when rsync is not available, as upstream',
      { overall_status: 'unknown', mysql_backup: side({ available: false }), rsync_backup: side({ available: false, synced: { results: { disk_usage_human: '0 B' } } }) },
      'Overall Status: unknown\nMySQL Backup: not available\nRsync Backup: not available\nData Size: 0 B'],
    ['missing side blocks read as not available',
      { overall_status: 'success' },
      'Overall Status: success\nMySQL Backup: not available\nRsync Backup: not available'],
    ['available must be true',
      { overall_status: 'unknown', mysql_backup: side({ available: 'yes', progress: { status: 'success' } }), rsync_backup: side({ available: 1 }) },
      'Overall Status: unknown\nMySQL Backup: not available\nRsync Backup: not available'],
    ['neither progress status nor side status',
      { overall_status: 'unknown', mysql_backup: { available: true }, rsync_backup: { available: true, progress: { status: '' }, status: '' } },
      'Overall Status: unknown\nMySQL Backup: unknown\nRsync Backup: unknown'],
    ['non-text values are not printed as objects',
      { overall_status: { x: 1 }, mysql_backup: side({ progress: { status: { a: 1 }, message: ['m'] }, status: 'running', count: '7' }), rsync_backup: side({ available: false }) },
      'Overall Status: unknown\nMySQL Backup: running\nRsync Backup: not available'],
    ['hostile strings are kept verbatim (the page uses them as text)',
      { overall_status: 'error', mysql_backup: side({ progress: { status: 'error', message: '<img src=x onerror=alert(1)>' }, count: 2 }), rsync_backup: side({ available: false }) },
      'Overall Status: error\nMySQL Backup: error - <img src=x onerror=alert(1)> (#2)\nRsync Backup: not available'],
  ];
  for (const [name, entry, want] of variants) {
    it(name, () => {
      assert.equal(getBackupStatusTitle({ id: ID }, stateWith(entry)), want);
    });
  }

  it('is the same whichever side is down, as long as one is up', () => {
    const entry = { overall_status: 'partial', mysql_backup: side({ available: false }), rsync_backup: side({ progress: { status: 'success' } }) };
    const want = 'Overall Status: partial\nMySQL Backup: not available\nRsync Backup: success';
    assert.equal(getBackupStatusTitle({ id: ID }, stateWith(entry, { mysql: false })), want);
    assert.equal(getBackupStatusTitle({ id: ID }, stateWith(entry, { rsync: false })), want);
  });
});

describe('helpers', () => {
  it('formatBytes matches upstream _format_bytes', () => {
    const cases = [
      [0, '0 B'], [1, '1 B'], [1023, '1023 B'], [1024, '1.0 KB'], [1536, '1.5 KB'],
      [1048575, '1024.0 KB'], [1048576, '1.0 MB'], [2500000, '2.4 MB'], [287646297933, '267.9 GB'],
      [544649438682, '507.2 GB'], [11215763841541, '10.2 TB'], [20696678673241, '18.8 TB'],
      [5 * 1024 ** 5, '5120.0 TB'],
    ];
    for (const [bytes, want] of cases) assert.equal(formatBytes(bytes), want, String(bytes));
    for (const bad of [-1, NaN, Infinity, '12', null, undefined]) assert.equal(formatBytes(bad), '');
  });

  it('formatElapsed is short and never negative', () => {
    const cases = [
      [0, '0 s'], [59.9, '59 s'], [60, '1 min'], [3599, '59 min'], [3600, '1 h 00 min'],
      [3 * 3600 + 5 * 60, '3 h 05 min'], [86399, '23 h 59 min'], [86400, '1 d 0 h'], [12 * 86400 + 4 * 3600 + 59, '12 d 4 h'],
    ];
    for (const [seconds, want] of cases) assert.equal(formatElapsed(seconds), want, String(seconds));
    for (const bad of [-1, NaN, null, '5']) assert.equal(formatElapsed(bad), '');
  });

  it('lastFinished takes the newest real end time of either side', () => {
    assert.equal(lastFinished({ mysql_backup: { ended: 100 }, rsync_backup: { ended: 200 } }), 200);
    assert.equal(lastFinished({ mysql_backup: { ended: 300 }, rsync_backup: { ended: -1 } }), 300);
    assert.equal(lastFinished({ mysql_backup: { ended: 0 }, rsync_backup: { ended: null } }), null);
    assert.equal(lastFinished({ mysql_backup: { ended: -1 } }), null);
    assert.equal(lastFinished(undefined), null);
  });

  it('syncedSize prefers the human text and falls back to bytes', () => {
    assert.equal(syncedSize({ disk_usage_human: '267.9 GB', disk_usage_bytes: 1 }), '267.9 GB');
    assert.equal(syncedSize({ disk_usage_bytes: 1536 }), '1.5 KB');
    assert.equal(syncedSize({}), '');
    assert.equal(syncedSize(undefined), '');
  });

  it('progressPercent reads a running side only', () => {
    assert.equal(progressPercent({ rsync_backup: { processing: true, progress: { percent: 42.5 } } }), 42.5);
    assert.equal(progressPercent({ mysql_backup: { processing: true, progress: { backup_status: 10 } } }), 10);
    assert.equal(progressPercent({ rsync_backup: { processing: false, progress: { percent: 42 } } }), null);
    assert.equal(progressPercent({ rsync_backup: { processing: true, progress: { percent: 420 } } }), null);
  });

  it('backupShortText says what matters in a few words', () => {
    const now = 1_000_000;
    assert.equal(backupShortText({ id: ID }, unavailableState(), now), 'service offline');
    assert.equal(backupShortText({ id: ID }, stateWith(undefined), now), 'no backup info');
    assert.equal(backupShortText({ id: ID }, stateWith({
      overall_status: 'success',
      mysql_backup: side({ ended: now - 120 }),
      rsync_backup: side({ ended: now - 3700, synced: { results: { disk_usage_human: '2.4 MB' } } }),
    }), now), '2 min ago · 2.4 MB');
    assert.equal(backupShortText({ id: ID }, stateWith({
      overall_status: 'unknown', mysql_backup: side({ ended: -1 }), rsync_backup: side(),
    }), now), 'no finished backup');
    assert.equal(backupShortText({ id: ID }, stateWith({
      overall_status: 'success', mysql_backup: side({ processing: true, ended: 0 }),
      rsync_backup: side({ ended: now - 10, synced: { results: { disk_usage_bytes: 1048576 } } }),
    }), now), 'backing up · 1.0 MB');
    assert.equal(backupShortText({ id: ID }, stateWith({
      overall_status: 'unknown', mysql_backup: side(), rsync_backup: side({ processing: true, progress: { percent: 57.9 } }),
    }), now), 'backing up 57%');
  });
});
