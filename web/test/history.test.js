import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { HISTORY_MAX_RUNS, durationText, historyView } from '../history.js';

const NOW = 1_752_150_000;

function run(ago, outcome, seconds, extra = {}) {
  return {
    start: NOW - ago, end: NOW - ago + seconds, outcome, message: `${outcome} run`,
    bytes: 2048, rows: null, files: 3, kinds: ['results'], source: 'rsync_backup', ...extra,
  };
}

describe('durationText', () => {
  it('keeps a decimal for short runs', () => {
    assert.equal(durationText(0.42), '0.4 s');
    assert.equal(durationText(12), '12 s');
    assert.equal(durationText(185), '3 min');
    assert.equal(durationText(null), '');
  });
});

describe('historyView', () => {
  it('turns runs into timeline rows, newest first as sent', () => {
    const view = historyView({
      device_id: 'x',
      runs: [
        run(60, 'error', 2, { source: 'mysql_backup', rows: null, bytes: 0, files: 0 }),
        run(400, 'warning', 90, { rows: 1200 }),
        run(900, 'success', 0.5),
      ],
      unavailable: {},
    }, NOW);
    assert.deepEqual(view.runs.map((r) => [r.outcome, r.source, r.when, r.duration]), [
      ['error', 'MySQL', '1 min ago', '2.0 s'],
      ['warning', 'Rsync', '6 min ago', '1 min'],
      ['success', 'Rsync', '15 min ago', '0.5 s'],
    ]);
    assert.equal(view.runs[0].copied, 'nothing new');
    assert.equal(view.runs[1].copied, '2.0 KB · 3 files · 1,200 rows');
    assert.equal(view.failing, 1);
    assert.deepEqual(view.chart.map((p) => p.outcome), ['success', 'warning', 'error'], 'oldest first');
    assert.deepEqual(view.unavailable, []);
  });

  it('counts failures in a row and names a missing daemon', () => {
    const runs = [run(10, 'error', 1), run(20, 'error', 1), run(30, 'error', 1), run(40, 'success', 1)];
    const view = historyView({ runs, unavailable: { mysql_backup: 'connection refused' } }, NOW);
    assert.equal(view.failing, 3);
    assert.deepEqual(view.unavailable, ['MySQL history unavailable (connection refused)']);
  });

  it('bounds the list and survives junk', () => {
    const runs = Array.from({ length: 40 }, (_, i) => run(i * 60, 'success', 1));
    const view = historyView({ runs: [...runs, null, 'x', { outcome: 'exploded', start: 'soon' }] }, NOW);
    assert.equal(view.runs.length, HISTORY_MAX_RUNS);
    assert.equal(view.more, 41 - HISTORY_MAX_RUNS);
    assert.equal(view.chart.at(0).outcome, 'error', 'an unknown outcome is shown as an error');
    assert.deepEqual(historyView(null, NOW).runs, []);
    assert.deepEqual(historyView({ runs: 'no' }, NOW).runs, []);
  });
});
