import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { summarize, unavailableState } from '../backup-status.js';
import {
  buildRows, conflictReason, deviceEntries, epochSeconds, experimentInfo, isOffline, sortRows, visibleRows,
} from '../devices.js';

const NOW = 1_752_140_000;

const DEVICES = {
  a1: {
    id: 'a1', name: 'ETHOSCOPE_010', ip: '127.0.0.10', status: 'running', time: NOW - 3600,
    experimental_info: { name: 'alice', location: 'Incubator 1', code: 'x' },
  },
  b2: {
    id: 'b2', name: 'ETHOSCOPE_002', ip: '127.0.0.11', status: 'stopped', time: NOW - 60,
    experimental_info: { current: { name: 'bob', location: 'Room 2' }, previous: { name: 'old', location: 'old' } },
  },
  c3: { id: 'c3', name: 'ETHOSCOPE_003', ip: '127.0.0.12', status: 'offline', time: '2025-07-01 11:40:41.123456' },
};

const BACKUP = {
  mysql_backup: {},
  rsync_backup: { devices: {} },
  unified_devices: {
    a1: { name: 'ETHOSCOPE_010', status: 'running', overall_status: 'success', mysql_backup: { ended: NOW - 10 }, rsync_backup: {} },
    d4: { name: 'ETHOSCOPE_004', status: 'stopped', overall_status: 'error', mysql_backup: {}, rsync_backup: { ended: NOW - 5 } },
  },
};

describe('experimentInfo', () => {
  it('reads the flat (old) shape', () => {
    assert.deepEqual(experimentInfo(DEVICES.a1), { user: 'alice', location: 'Incubator 1' });
  });
  it('reads the nested (new) shape', () => {
    assert.deepEqual(experimentInfo(DEVICES.b2), { user: 'bob', location: 'Room 2' });
  });
  it('gives empty text for missing or odd values', () => {
    for (const device of [{}, { experimental_info: null }, { experimental_info: {} }, { experimental_info: { current: null, name: 5, location: {} } }, null]) {
      const info = experimentInfo(device);
      assert.equal(info.location, '');
      assert.ok(info.user === '' || info.user === '5');
    }
  });
});

describe('epochSeconds', () => {
  it('accepts epoch numbers and old date strings', () => {
    assert.equal(epochSeconds(1752137404.5), 1752137404.5);
    assert.equal(epochSeconds('2025-07-10 11:40:41.123456'), new Date(2025, 6, 10, 11, 40, 41).getTime() / 1000);
  });
  it('rejects everything else', () => {
    for (const bad of [0, -5, 'yesterday', '', null, undefined, {}, NaN]) assert.equal(epochSeconds(bad), null, String(bad));
  });
});

describe('deviceEntries', () => {
  it('drops non-objects and id-less entries and prefers the entry id', () => {
    const entries = deviceEntries({ k1: { id: 'real' }, k2: 'x', k3: null, '': { name: 'unresolved' }, k4: { name: 'no id' } });
    assert.deepEqual(entries.map(([id]) => id), ['real', 'k4']);
  });
  it('gives nothing for an error reply or a non-object', () => {
    assert.deepEqual(deviceEntries({ error: 'Traceback' }), []);
    assert.deepEqual(deviceEntries([{ id: 'x' }]), []);
    assert.deepEqual(deviceEntries(null), []);
  });
});

describe('buildRows', () => {
  const state = summarize(BACKUP);
  const rows = buildRows(DEVICES, state, state.backup_status, NOW);
  const byId = Object.fromEntries(rows.map((row) => [row.id, row]));

  it('is the union of /devices and unified_devices', () => {
    assert.deepEqual(rows.map((row) => row.id).sort(), ['a1', 'b2', 'c3', 'd4']);
  });

  it('takes device fields from /devices', () => {
    assert.equal(byId.a1.name, 'ETHOSCOPE_010');
    assert.equal(byId.a1.user, 'alice');
    assert.equal(byId.b2.location, 'Room 2');
    assert.equal(byId.a1.ip, '127.0.0.10');
    assert.equal(byId.a1.sinceSeconds, 3600);
    assert.equal(byId.a1.discovered, true);
  });

  it('takes name and status from the unified entry for backup-only devices', () => {
    assert.equal(byId.d4.name, 'ETHOSCOPE_004');
    assert.equal(byId.d4.status, 'stopped');
    assert.equal(byId.d4.discovered, false);
    assert.equal(byId.d4.since, null);
  });

  it('computes the backup state and last finished backup', () => {
    assert.equal(byId.a1.backup, 'success');
    assert.equal(byId.a1.lastBackup, NOW - 10);
    assert.equal(byId.b2.backup, 'unknown');
    assert.equal(byId.d4.backup, 'error');
  });

  it('keeps every row, black, while the backup service is unreachable', () => {
    const offline = buildRows(DEVICES, unavailableState(), state.backup_status, NOW);
    assert.equal(offline.length, 4);
    assert.ok(offline.every((row) => row.backup === 'offline'));
  });

  it('carries the reason of a machine id in conflict', () => {
    const reason = 'machine id c3 is claimed by 127.0.0.12:9000 and 127.0.0.99:9000: nothing is backed up';
    const devices = { ...DEVICES, c3: { ...DEVICES.c3, status: 'conflict', conflict: { addresses: [], reason } } };
    const byId2 = Object.fromEntries(buildRows(devices, state, state.backup_status, NOW).map((r) => [r.id, r]));
    assert.equal(byId2.c3.status, 'conflict');
    assert.equal(byId2.c3.conflict, reason);
    assert.equal(byId2.a1.conflict, '');
    assert.equal(byId.d4.conflict, '');
    assert.equal(conflictReason({ conflict: {} }), 'two addresses claim this machine id');
    assert.equal(conflictReason({ conflict: 'x' }), '');
  });

  it('keeps hostile strings as plain text', () => {
    const hostile = { x: { id: 'x', name: '<script>alert(1)</script>', status: '"><b>', experimental_info: { name: '<i>u</i>' } } };
    const [row] = buildRows(hostile, unavailableState(), {}, NOW);
    assert.equal(row.name, '<script>alert(1)</script>');
    assert.equal(row.status, '"><b>');
    assert.equal(row.user, '<i>u</i>');
  });

  it('copes with nothing at all', () => {
    assert.deepEqual(buildRows(null, unavailableState(), null, NOW), []);
  });
});

describe('visibleRows', () => {
  const rows = buildRows(DEVICES, unavailableState(), {}, NOW);
  it('hides offline devices unless asked', () => {
    assert.deepEqual(visibleRows(rows, false).map((row) => row.id).sort(), ['a1', 'b2']);
    assert.equal(visibleRows(rows, true).length, 3);
    assert.ok(isOffline(rows.find((row) => row.id === 'c3')));
  });
});

describe('sortRows', () => {
  const state = summarize(BACKUP);
  const rows = buildRows(DEVICES, state, state.backup_status, NOW);
  const ids = (column, descending = false) => sortRows(rows, column, descending).map((row) => row.id);

  it('sorts names naturally', () => {
    assert.deepEqual(ids('name'), ['b2', 'c3', 'd4', 'a1']);
    assert.deepEqual(ids('name', true), ['a1', 'd4', 'c3', 'b2']);
  });

  it('sorts by elapsed time since start, missing last either way', () => {
    assert.deepEqual(ids('since'), ['b2', 'a1', 'c3', 'd4']);
    assert.deepEqual(ids('since', true), ['c3', 'a1', 'b2', 'd4']);
  });

  it('puts backup problems first', () => {
    assert.deepEqual(ids('backup'), ['d4', 'b2', 'c3', 'a1']);
  });

  it('puts empty text last', () => {
    assert.deepEqual(ids('user'), ['a1', 'b2', 'c3', 'd4']);
    assert.deepEqual(ids('user', true), ['b2', 'a1', 'c3', 'd4']);
  });

  it('falls back to name for unknown columns and does not mutate its input', () => {
    const before = rows.map((row) => row.id);
    assert.deepEqual(ids('bogus'), ids('name'));
    assert.deepEqual(rows.map((row) => row.id), before);
  });
});
