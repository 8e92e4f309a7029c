//! The registry's SQLite file (`devices.sqlite` under the node's state directory): devices seen
//! with a valid identity (each bound to its address, see [`crate::identity`]), and addresses added
//! by hand or by mDNS with when they last answered, so a restarted node lists every known device
//! (as `offline` until it answers), keeps polling it, keeps each id's binding and still forgets
//! addresses that stay silent.
//!
//! The file is opened when it exists at start, else on the first write, so a node that never sees
//! a device leaves no file behind. A file that cannot be opened leaves the registry in memory
//! only (logged once). Every call here blocks: the registry runs them on the blocking pool.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection};

use crate::poller::shown;
use crate::target::{Source, Target};

/// Why the registry file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating the state directory failed.
    #[error("cannot create the state directory")]
    Io(#[from] std::io::Error),
    /// Opening, creating or reading the database failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// A device row to write.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    /// Machine id.
    pub id: String,
    /// Validated name.
    pub name: String,
    /// Where it answers.
    pub target: Target,
    /// The address it answered from.
    pub ip: String,
    /// Last full answer.
    pub last_seen: Option<f64>,
    /// Status word as the node reports it.
    pub status: String,
    /// An operator confirmed this address for the id.
    pub confirmed: bool,
    /// The last status word the device reported itself (kept while it does not answer).
    pub device_status: String,
    /// When the node first saw the device running, or not running, as it last reported.
    pub activity_since: Option<f64>,
    /// Now (first seen, for a new row).
    pub now: f64,
}

/// A device known from an earlier run.
#[derive(Debug)]
pub struct KnownDevice {
    /// Machine id (validated).
    pub id: String,
    /// Name (validated).
    pub name: String,
    /// Where it answered.
    pub target: Target,
    /// The address it answered from.
    pub ip: String,
    /// Last full answer.
    pub last_seen: Option<f64>,
    /// First seen.
    pub first_seen: f64,
    /// An operator confirmed this address for the id.
    pub confirmed: bool,
    /// The last status word the device reported (empty when unknown).
    pub device_status: String,
    /// See [`DeviceRow::activity_since`].
    pub activity_since: Option<f64>,
}

/// An address added by hand or by mDNS.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedTarget {
    /// The address.
    pub target: Target,
    /// Where it came from.
    pub source: Source,
    /// When it was added.
    pub added: f64,
    /// Its last valid `/id` answer, as last saved.
    pub last_answer: Option<f64>,
}

/// The registry database: opened at start when it exists, else on the first write.
#[derive(Debug)]
pub enum Store {
    /// Not opened yet.
    Closed,
    /// Open.
    Open(Connection),
    /// Could not be opened; the registry lives in memory only.
    Failed,
}

impl Store {
    /// The connection, opening `path` on first use.
    pub fn get(&mut self, path: Option<&Path>) -> Option<&Connection> {
        if let (Store::Closed, Some(path)) = (&*self, path) {
            *self = match open(path) {
                Ok(conn) => Store::Open(conn),
                Err(err) => {
                    tracing::error!(
                        "device registry {} unavailable, keeping devices in memory only: {}",
                        path.display(),
                        etho_model::error_chain(&err)
                    );
                    Store::Failed
                }
            };
        }
        match self {
            Store::Open(conn) => Some(conn),
            _ => None,
        }
    }
}

/// Creates `dir` (and its parents) and makes it private (0700), also when it existed with a
/// wider mode: the node's state is nobody else's to read, whatever the umask.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Opens (creating) the registry database.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Rollback journal (SQLite's default), not WAL: one connection behind one lock does every
    // read and write, and writes are rare (a device's status change, or its last_seen once a
    // minute), so WAL's concurrent readers buy nothing; one file with no `-wal`/`-shm` companions
    // is simpler to back up and inspect.
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS devices (
             id TEXT PRIMARY KEY, name TEXT NOT NULL, host TEXT NOT NULL, ip TEXT NOT NULL,
             port INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL,
             status TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS targets (
             host TEXT NOT NULL, port INTEGER NOT NULL, source TEXT NOT NULL,
             added REAL NOT NULL, PRIMARY KEY (host, port));",
    )?;
    // Columns added later; files written by an older node get them with their defaults.
    add_column(&conn, "devices", "confirmed", "INTEGER NOT NULL DEFAULT 0")?;
    add_column(&conn, "targets", "last_answer", "REAL")?;
    // What the device last said it was doing, so a restarted node still knows that an
    // unreachable device was running an experiment.
    add_column(&conn, "devices", "device_status", "TEXT")?;
    add_column(&conn, "devices", "activity_since", "REAL")?;
    Ok(conn)
}

fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    let exists: bool = conn.query_row(
        &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
        [column],
        |r| r.get(0),
    )?;
    if !exists {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// The known devices and saved addresses. Rows that do not validate are skipped (logged): the
/// file is ours, but what it holds ends up in `/devices`.
pub fn load(conn: &Connection) -> Result<(Vec<KnownDevice>, Vec<SavedTarget>), StoreError> {
    Ok((load_devices(conn)?, load_targets(conn)?))
}

fn load_devices(conn: &Connection) -> Result<Vec<KnownDevice>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, name, host, ip, port, last_seen, first_seen, confirmed, device_status,
                activity_since
         FROM devices ORDER BY id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            (
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ),
            r.get::<_, i64>(4)?,
            r.get::<_, Option<f64>>(5)?,
            r.get::<_, f64>(6)?,
            r.get::<_, bool>(7)?,
            (r.get::<_, Option<String>>(8)?, r.get::<_, Option<f64>>(9)?),
        ))
    })?;
    let mut known = Vec::new();
    for row in rows {
        let ((id, name, host, ip), port, last_seen, first_seen, confirmed, activity) = row?;
        let (device_status, activity_since) = activity;
        // Ours, but it ends up in a status word: the same rule as a device's answer.
        let device_status = device_status
            .filter(|w| crate::poller::is_status_word(w))
            .unwrap_or_default();
        let port = u16::try_from(port).ok().filter(|p| *p != 0);
        match (
            etho_model::device::is_valid_machine_id(&id)
                && etho_model::device::is_valid_device_name(&name),
            port,
            Target::parse(&host, true),
        ) {
            (true, Some(port), Ok(t)) => known.push(KnownDevice {
                id,
                name,
                target: Target { host: t.host, port },
                ip,
                last_seen,
                first_seen,
                confirmed,
                device_status,
                activity_since,
            }),
            _ => tracing::warn!("ignoring invalid registry row for {}", shown(&id)),
        }
    }
    Ok(known)
}

fn load_targets(conn: &Connection) -> Result<Vec<SavedTarget>, StoreError> {
    let mut stmt = conn.prepare("SELECT host, port, source, added, last_answer FROM targets")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, f64>(3)?,
            r.get::<_, Option<f64>>(4)?,
        ))
    })?;
    let mut targets = Vec::new();
    for row in rows {
        let (host, port, source, added, last_answer) = row?;
        let source = match source.as_str() {
            "mdns" => Source::Mdns,
            _ => Source::Manual,
        };
        match (
            Target::parse(&host, true),
            u16::try_from(port).ok().filter(|p| *p != 0),
        ) {
            (Ok(t), Some(port)) => targets.push(SavedTarget {
                target: Target { host: t.host, port },
                source,
                added,
                last_answer,
            }),
            _ => tracing::warn!("ignoring invalid saved address {}", shown(&host)),
        }
    }
    Ok(targets)
}

/// Inserts or updates a device (keeps its first_seen, and its last_seen when `row` has none).
pub fn save_device(conn: &Connection, row: &DeviceRow) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO devices (id, name, host, ip, port, first_seen, last_seen, status, confirmed,
                              device_status, activity_since)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(id) DO UPDATE SET name = excluded.name, host = excluded.host,
           ip = excluded.ip, port = excluded.port,
           last_seen = COALESCE(excluded.last_seen, devices.last_seen),
           status = excluded.status, confirmed = excluded.confirmed,
           device_status = excluded.device_status,
           activity_since = COALESCE(excluded.activity_since, devices.activity_since)",
        params![
            row.id,
            row.name,
            row.target.host,
            row.ip,
            row.target.port,
            row.now,
            row.last_seen,
            row.status,
            row.confirmed,
            row.device_status,
            row.activity_since
        ],
    )?;
    Ok(())
}

/// Saves an address (once; later saves of the same address keep the first).
pub fn save_target(
    conn: &Connection,
    target: &Target,
    source: Source,
    now: f64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO targets (host, port, source, added) VALUES (?1, ?2, ?3, ?4)",
        params![target.host, target.port, source.as_str(), now],
    )?;
    Ok(())
}

/// Records when a saved address last answered as an ethoscope (no effect for addresses that are
/// not saved, such as `--device` ones).
pub fn save_answer(conn: &Connection, target: &Target, last_answer: f64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE targets SET last_answer = ?3 WHERE host = ?1 AND port = ?2",
        params![target.host, target.port, last_answer],
    )?;
    Ok(())
}

/// Forgets an address, and the device bound to it when `device` names one.
pub fn forget(conn: &Connection, target: &Target, device: Option<&str>) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM targets WHERE host = ?1 AND port = ?2",
        params![target.host, target.port],
    )?;
    if let Some(id) = device {
        conn.execute("DELETE FROM devices WHERE id = ?1", params![id])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows round-trip; rows that do not validate (hand-edited or from a bug) are skipped.
    #[test]
    fn saves_loads_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/devices.sqlite");
        let conn = open(&path).unwrap();
        let id = "0123456789abcdef0123456789abcdef";
        let target = Target::parse("127.0.0.10:9001", false).unwrap();
        let row = DeviceRow {
            id: id.into(),
            name: "ETHOSCOPE_001".into(),
            target: target.clone(),
            ip: "127.0.0.10".into(),
            last_seen: Some(5.0),
            status: "running".into(),
            confirmed: true,
            device_status: "running".into(),
            activity_since: Some(4.0),
            now: 1.0,
        };
        save_device(&conn, &row).unwrap();
        // A later save without last_seen keeps the old one.
        save_device(
            &conn,
            &DeviceRow {
                last_seen: None,
                status: "offline".into(),
                activity_since: None,
                ..row
            },
        )
        .unwrap();
        save_target(&conn, &target, Source::Manual, 2.0).unwrap();
        save_target(&conn, &target, Source::Mdns, 3.0).unwrap();
        save_answer(&conn, &target, 4.0).unwrap();
        conn.execute_batch(
            "INSERT INTO devices VALUES ('../../x', 'E', '127.0.0.1', '127.0.0.1', 9000, 0, 0, 'x', 0, NULL, NULL);
             INSERT INTO devices VALUES ('ffffffffffffffffffffffffffffffff', 'E', 'h', 'h', 0, 0, 0, 'x', 0, NULL, NULL);
             INSERT INTO targets VALUES ('0.0.0.0', 9000, 'manual', 0, NULL);",
        )
        .unwrap();
        drop(conn);
        let (known, targets) = load(&open(&path).unwrap()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "the state directory is private");
        assert_eq!(known.len(), 1);
        assert_eq!(
            (known[0].id.as_str(), known[0].last_seen, &known[0].target),
            (id, Some(5.0), &target)
        );
        assert!(known[0].confirmed);
        assert_eq!(known[0].first_seen, 1.0);
        // The device's own last word and its start are kept while the node reports it offline.
        assert_eq!(
            (known[0].device_status.as_str(), known[0].activity_since),
            ("running", Some(4.0))
        );
        assert_eq!(
            targets,
            vec![SavedTarget {
                target: target.clone(),
                source: Source::Manual,
                added: 2.0,
                last_answer: Some(4.0)
            }]
        );
        // Forgetting an address can forget the device bound to it.
        let conn = open(&path).unwrap();
        forget(&conn, &target, Some(id)).unwrap();
        let (known, targets) = load(&conn).unwrap();
        assert!(known.is_empty() && targets.is_empty());
    }

    /// A file written before the binding and expiry columns existed opens and gains them.
    #[test]
    fn older_files_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.sqlite");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE devices (
                 id TEXT PRIMARY KEY, name TEXT NOT NULL, host TEXT NOT NULL, ip TEXT NOT NULL,
                 port INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL,
                 status TEXT NOT NULL);
             CREATE TABLE targets (
                 host TEXT NOT NULL, port INTEGER NOT NULL, source TEXT NOT NULL,
                 added REAL NOT NULL, PRIMARY KEY (host, port));
             INSERT INTO devices VALUES ('0123456789abcdef0123456789abcdef', 'ETHOSCOPE_001',
                 '127.0.0.10', '127.0.0.10', 9000, 1, 2, 'running');
             INSERT INTO targets VALUES ('127.0.0.11', 9000, 'mdns', 3);",
        )
        .unwrap();
        drop(conn);
        let (known, targets) = load(&open(&path).unwrap()).unwrap();
        assert_eq!((known.len(), known[0].confirmed), (1, false));
        assert_eq!(
            (known[0].device_status.as_str(), known[0].activity_since),
            ("", None)
        );
        assert_eq!(
            (targets[0].source, targets[0].last_answer),
            (Source::Mdns, None)
        );
        // Opening again does not add the columns twice.
        open(&path).unwrap();
    }
}
