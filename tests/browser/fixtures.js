// The two backup daemons' `GET /status` documents the stubs serve, one device per circle state,
// and what the dashboard must show for each. The expected titles are written out in full: they are
// the seed's tooltip text for the unified entries the node builds from these documents.

export const ID = {
  processing: '0a1b2c3d4e5f60718293a4b5c6d7e801',
  success: '0a1b2c3d4e5f60718293a4b5c6d7e802',
  partial: '0a1b2c3d4e5f60718293a4b5c6d7e803',
  error: '0a1b2c3d4e5f60718293a4b5c6d7e804',
  unknown: '0a1b2c3d4e5f60718293a4b5c6d7e805',
  hostile: '0a1b2c3d4e5f60718293a4b5c6d7e806',
  offline: '0a1b2c3d4e5f60718293a4b5c6d7e807',
  discovered: '0a1b2c3d4e5f60718293a4b5c6d7e808',
};

/** A device name that would run script if the page ever parsed it as HTML. */
export const HOSTILE_NAME = '<img src=x onerror="window.__pwned=1">ETHOSCOPE_006';

function entry(name, status, fields) {
  return {
    name, status, started: 0, ended: 0, processing: false, count: 0, synced: {}, progress: {}, ...fields,
  };
}

function results(files, bytes, human) {
  return { local_files: files, directory: '/ethoscope_data/results', disk_usage_bytes: bytes, disk_usage_human: human };
}

function videos(files, bytes, human) {
  return { local_files: files, directory: '/ethoscope_data/videos', disk_usage_bytes: bytes, disk_usage_human: human };
}

/** MySQL daemon `/status`: a flat map keyed by device id. */
export function mysqlDocument(now) {
  return {
    [ID.processing]: entry('ETHOSCOPE_001', 'running', {
      started: now - 30, processing: true, count: 3,
      progress: { status: 'running', message: 'Copying ROI_3', percent: 40 },
      data_duplication: false,
    }),
    [ID.success]: entry('ETHOSCOPE_002', 'running', {
      started: now - 700, ended: now - 650, count: 12, synced: { tracking_db: {} },
      progress: { status: 'success', message: 'Mirror verified: 14 tables equal' },
      data_duplication: false,
    }),
    [ID.partial]: entry('ETHOSCOPE_003', 'stopped', {
      started: now - 7300, ended: now - 7290, count: 4,
      progress: { status: 'warning', message: `Device ${ID.partial} does not have a MariaDB database - skipping MariaDB backup` },
      data_duplication: false,
    }),
    [ID.error]: entry('ETHOSCOPE_004', 'running', {
      started: now - 130, ended: now - 100, count: 7,
      progress: { status: 'error', message: 'Connection refused (os error 111)' },
      data_duplication: false,
    }),
    [ID.offline]: entry('ETHOSCOPE_007', 'offline', {
      started: now - 90000, ended: now - 89990, count: 2,
      progress: { status: 'success', message: 'Mirror verified: 3 tables equal' },
      data_duplication: false,
    }),
  };
}

/** Rsync daemon `/status`: `{devices, disk_usage_summary}`. */
export function rsyncDocument(now) {
  return {
    devices: {
      [ID.processing]: entry('ETHOSCOPE_001', 'running', {
        started: now - 400, ended: now - 398, count: 2,
        synced: { results: results(3, 2500000, '2.4 MB'), videos: videos(0, 0, '0 B') },
        progress: { status: 'success', message: 'Backup completed' },
        metadata: {},
      }),
      [ID.success]: entry('ETHOSCOPE_002', 'running', {
        started: now - 610, ended: now - 600, count: 818,
        synced: { results: results(766, 287646297933, '267.9 GB'), videos: videos(12529, 544649438682, '507.2 GB') },
        progress: { status: 'success', message: 'Backup completed' },
        metadata: {},
      }),
      [ID.partial]: entry('ETHOSCOPE_003', 'stopped', {
        started: now - 7270, ended: now - 7260, count: 5,
        synced: { results: results(2, 1536, '1.5 KB') },
        progress: { status: 'success', message: 'Backup completed' },
        metadata: {},
      }),
      [ID.error]: entry('ETHOSCOPE_004', 'running', {
        started: now - 300, ended: now - 290, count: 3,
        synced: { results: results(40, 1048576, '1.0 MB') },
        progress: { status: 'warning', message: 'rsync exited with code 24: some files vanished' },
        metadata: {},
      }),
      [ID.unknown]: entry('ETHOSCOPE_005', 'stopped', {
        started: now - 50, ended: now - 49, count: 1,
        progress: { status: 'warning', message: 'Nothing to back up yet' },
        metadata: {},
      }),
      [ID.hostile]: entry(HOSTILE_NAME, 'running', {
        started: now - 500, ended: now - 480, count: 9,
        synced: { results: results(1, 0, '0 B') },
        progress: { status: 'success', message: '<b>done</b>' },
        metadata: {},
      }),
      [ID.offline]: entry('ETHOSCOPE_007', 'offline', {
        started: now - 90000, ended: now - 89000, count: 6,
        synced: { results: results(5, 4096, '4.0 KB') },
        progress: { status: 'success', message: 'Backup completed' },
        metadata: {},
      }),
    },
    disk_usage_summary: {
      results: { total_files: 817, total_size_bytes: 287649850061, total_size_human: '267.9 GB' },
      videos: { total_files: 12529, total_size_bytes: 544649438682, total_size_human: '507.2 GB' },
    },
  };
}

export const LABEL = {
  processing: 'Backup in progress',
  success: 'Backup successful',
  partial: 'Backup partial',
  error: 'Backup failed',
  unknown: 'Backup status unknown',
  offline: 'Backup service offline',
};

/** What each visible row shows while both daemons answer. */
export const BOTH_UP = {
  [ID.processing]: {
    name: 'ETHOSCOPE_001',
    state: 'processing',
    title: 'Overall Status: partial\nMySQL Backup: running - Copying ROI_3 (#3)\nRsync Backup: success - Backup completed (#2)\nData Size: 2.4 MB',
  },
  [ID.success]: {
    name: 'ETHOSCOPE_002',
    state: 'success',
    title: 'Overall Status: success\nMySQL Backup: success - Mirror verified: 14 tables equal (#12)\nRsync Backup: success - Backup completed (#818)\nData Size: 267.9 GB',
  },
  [ID.partial]: {
    name: 'ETHOSCOPE_003',
    state: 'partial',
    title: `Overall Status: partial\nMySQL Backup: warning - Device ${ID.partial} does not have a MariaDB database - skipping MariaDB backup (#4)\nRsync Backup: success - Backup completed (#5)\nData Size: 1.5 KB`,
  },
  [ID.error]: {
    name: 'ETHOSCOPE_004',
    state: 'error',
    title: 'Overall Status: error\nMySQL Backup: error - Connection refused (os error 111) (#7)\nRsync Backup: warning - rsync exited with code 24: some files vanished (#3)\nData Size: 1.0 MB',
  },
  [ID.unknown]: {
    name: 'ETHOSCOPE_005',
    state: 'unknown',
    title: 'Overall Status: unknown\nMySQL Backup: not available\nRsync Backup: warning - Nothing to back up yet (#1)',
  },
  [ID.hostile]: {
    name: HOSTILE_NAME,
    state: 'partial',
    title: 'Overall Status: partial\nMySQL Backup: not available\nRsync Backup: success - <b>done</b> (#9)\nData Size: 0 B',
  },
};

/** The offline device, shown once "show offline devices" is on. */
export const OFFLINE_ROW = {
  [ID.offline]: {
    name: 'ETHOSCOPE_007',
    state: 'success',
    title: 'Overall Status: success\nMySQL Backup: success - Mirror verified: 3 tables equal (#2)\nRsync Backup: success - Backup completed (#6)\nData Size: 4.0 KB',
  },
};

/** While the MySQL daemon is down: only the rsync side is known, nothing is "success" any more. */
export const MYSQL_DOWN = {
  [ID.processing]: {
    name: 'ETHOSCOPE_001',
    state: 'partial',
    title: 'Overall Status: partial\nMySQL Backup: not available\nRsync Backup: success - Backup completed (#2)\nData Size: 2.4 MB',
  },
  [ID.success]: {
    name: 'ETHOSCOPE_002',
    state: 'partial',
    title: 'Overall Status: partial\nMySQL Backup: not available\nRsync Backup: success - Backup completed (#818)\nData Size: 267.9 GB',
  },
  [ID.partial]: {
    name: 'ETHOSCOPE_003',
    state: 'partial',
    title: 'Overall Status: partial\nMySQL Backup: not available\nRsync Backup: success - Backup completed (#5)\nData Size: 1.5 KB',
  },
  [ID.error]: {
    name: 'ETHOSCOPE_004',
    state: 'unknown',
    title: 'Overall Status: unknown\nMySQL Backup: not available\nRsync Backup: warning - rsync exited with code 24: some files vanished (#3)\nData Size: 1.0 MB',
  },
  [ID.unknown]: BOTH_UP[ID.unknown],
  [ID.hostile]: BOTH_UP[ID.hostile],
};

/** Both daemons down: every row stays, every circle black. */
export function allOffline(rows) {
  return Object.fromEntries(Object.entries(rows).map(([id, row]) => [id, {
    name: row.name, state: 'offline', title: 'Backup service offline',
  }]));
}

/**
 * Two devices' `/data/<id>` answers for discovery: one the backup daemons know (old firmware's
 * flat `experimental_info`), one they do not (newer node's `{current, previous}` shape).
 */
export function deviceInfos(now) {
  return {
    [ID.success]: {
      id: ID.success, name: 'ETHOSCOPE_002', status: 'running', time: now - 3600,
      experimental_info: { name: 'alice', location: 'Incubator 1', code: '', run_id: 'r1' },
    },
    [ID.discovered]: {
      id: ID.discovered, name: 'ETHOSCOPE_008', status: 'stopped', time: now - 150,
      experimental_info: {
        current: { name: 'bob', location: 'Room 2' },
        previous: { name: 'carol', location: 'Room 9' },
      },
    },
  };
}

/** The device only discovery knows: a grey circle saying so. */
export const DISCOVERED_ROW = {
  [ID.discovered]: { name: 'ETHOSCOPE_008', state: 'unknown', title: 'No backup information available' },
};
