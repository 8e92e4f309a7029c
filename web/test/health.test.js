// The "On the node" column: words, classes and tooltips for every health state, which offline
// devices stay visible, the header count and sorting by exposure.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  HEALTH_STATES, healthClass, healthExposure, healthOf, healthState, healthText, healthTitle, needsAttention,
  summarize,
} from '../backup-status.js';
import { attentionCount, buildRows, mustShow, sortRows, visibleRows } from '../devices.js';

const NOW = 1_764_500_000;

function health(state, fields = {}) {
  return {
    state, exposure_s: null, newest_copied_at: null, last_success: null, expected: ['mysql'], reasons: [], ...fields,
  };
}

describe('health words', () => {
  it('says each state with its age', () => {
    const rows = [
      [health('safe', { exposure_s: 12.4, last_success: NOW - 10 }), 'safe · newest 12 s ago'],
      [health('safe', { last_success: NOW - 125 }), 'safe · last backup 2 min ago'],
      [health('safe'), 'safe'],
      [health('at_risk', { exposure_s: 2820 }), 'at risk · 47 min only on the device'],
      [health('at_risk'), 'at risk'],
      [health('lagging', { exposure_s: 95 }), 'lagging · 1 min only on the device'],
      [health('stale', { last_success: NOW - 540 }), 'stale · last backup 9 min ago'],
      [health('stale'), 'stale · no backup yet'],
      [health('idle', { exposure_s: 0 }), 'idle · all on the node'],
      [health('unknown'), 'unknown'],
      [null, 'unknown'],
      [health('<b>new word</b>'), 'unknown'],
    ];
    for (const [h, text] of rows) assert.equal(healthText(h, NOW), text, JSON.stringify(h));
  });

  it('classes by state, unknown words included', () => {
    for (const state of HEALTH_STATES) assert.equal(healthClass(health(state)), `health health-${state}`);
    assert.equal(healthClass(health('constructor')), 'health health-unknown');
    assert.equal(healthClass(undefined), 'health health-unknown');
  });

  it('lists the reasons in the tooltip', () => {
    const h = health('at_risk', {
      reasons: ['the newest 47 min of data exist only on ETHOSCOPE_003 (unreachable for 12 min)', 5, '', null],
    });
    assert.equal(healthTitle(h), 'the newest 47 min of data exist only on ETHOSCOPE_003 (unreachable for 12 min)');
    assert.equal(healthTitle(health('idle')), 'No experiment running, and all its data is on the node.');
    assert.equal(healthTitle(null), 'No backup service has reported this device.');
    assert.equal(healthTitle(health('safe', { reasons: 'not a list' })), 'The newest data is being copied to the node.');
  });

  it('reads foreign values defensively', () => {
    assert.equal(healthExposure(health('safe', { exposure_s: -3 })), null);
    assert.equal(healthExposure(health('safe', { exposure_s: '12' })), null);
    assert.equal(healthState({ state: 7 }), 'unknown');
    assert.ok(needsAttention(health('stale')) && needsAttention(health('at_risk')));
    assert.ok(!needsAttention(health('lagging')) && !needsAttention(null));
  });
});

describe('rows with health', () => {
  const devices = {
    run: { id: 'run', name: 'ETHOSCOPE_001', status: 'running' },
    gone: { id: 'gone', name: 'ETHOSCOPE_002', status: 'offline' },
    quiet: { id: 'quiet', name: 'ETHOSCOPE_003', status: 'offline' },
    lost: { id: 'lost', name: 'ETHOSCOPE_004', status: 'offline' },
    done: { id: 'done', name: 'ETHOSCOPE_005', status: 'offline' },
  };
  const entry = (h) => ({ name: 'x', status: 'x', overall_status: 'partial', mysql_backup: {}, rsync_backup: {}, health: h });
  const state = summarize({
    mysql_backup: {},
    rsync_backup: { devices: {} },
    unified_devices: {
      run: entry(health('safe', { exposure_s: 20 })),
      gone: entry(health('lagging', { exposure_s: 300 })),
      quiet: entry(health('safe', { exposure_s: 0 })),
      lost: entry(health('stale')),
      done: entry(health('idle', { exposure_s: 0 })),
    },
  });
  const rows = buildRows(devices, state, state.backup_status, NOW);

  it('reads each row\'s health', () => {
    const run = rows.find((row) => row.id === 'run');
    assert.deepEqual([run.healthState, run.exposure], ['safe', 20]);
    assert.deepEqual(healthOf(run, state), state.backup_status.run.health);
  });

  it('always shows offline devices with data only on them, or at risk or stale', () => {
    const shown = visibleRows(rows, false).map((row) => row.id).sort();
    assert.deepEqual(shown, ['gone', 'lost', 'run']);
    assert.deepEqual(rows.filter(mustShow).map((row) => row.id).sort(), ['gone', 'lost', 'run']);
    assert.equal(visibleRows(rows, true).length, 5);
  });

  it('counts devices at risk or stale, hidden ones too', () => {
    assert.equal(attentionCount(rows), 1);
  });

  it('sorts by exposure, largest first, unknown last', () => {
    const ids = (descending) => sortRows(rows, 'health', descending).map((row) => row.id);
    assert.deepEqual(ids(false), ['gone', 'run', 'quiet', 'done', 'lost']);
    assert.deepEqual(ids(true), ['quiet', 'done', 'run', 'gone', 'lost'], 'ties by name either way');
  });
});
