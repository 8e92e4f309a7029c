//! What the node knows about one address, and the documents built from it: the device's
//! `GET /devices` entry, and the node-computed `backup_path`.
//!
//! Everything here is in memory and synchronous; the registry holds it behind its lock.

use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use etho_model::device::EntryFields;
use etho_model::health::{Link, Sighting};

use crate::identity::{Age, Seen};
use crate::poller::{NodeStatus, PollReport, PollState, Reach};
use crate::store::DeviceRow;
use crate::target::{Source, Target};

/// Longest `poll_error` relayed (an error chain can quote a device's answer).
const POLL_ERROR_CHARS: usize = 200;

/// What the node knows about one address.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Where the address came from.
    pub source: Source,
    /// When it was added (epoch seconds).
    pub added: f64,
    /// Its last valid `/id` answer.
    pub last_answer: Option<f64>,
    /// `last_answer` as last written to the registry file.
    pub answer_persisted: Option<f64>,
    /// Polled at least once since the node started.
    pub polled: bool,
    /// Its last poll answered `/id` with [`Entry::id`].
    pub claiming: bool,
    /// Since when it claims [`Entry::id`].
    pub claimed_since: f64,
    /// Identifies this entry's poll loop (a removed and re-added address gets a new one).
    pub generation: u64,
    /// Cancelled when the address is removed.
    pub token: CancellationToken,
    /// The address the device answered from.
    pub ip: Option<IpAddr>,
    /// Machine id (validated).
    pub id: Option<String>,
    /// Name (validated).
    pub name: Option<String>,
    /// The status word the device reports.
    pub device_status: String,
    /// The device's known fields, checked ([`crate::fields`]).
    pub fields: Map<String, Value>,
    /// `/data/databases/<id>`, checked.
    pub databases: Option<Map<String, Value>>,
    /// The poll state machine.
    pub poll: PollState,
    /// What went wrong with the last poll.
    pub poll_error: Option<String>,
    /// Why the device's answers are refused.
    pub rejected: Option<String>,
    /// When the node first saw the device running, or not running, as it last reported.
    pub activity_since: Option<f64>,
    /// Status and last_seen as last written to SQLite.
    pub persisted: Option<(NodeStatus, Option<f64>)>,
}

/// One entry of `GET /devices/rejected`.
#[derive(Debug, Serialize)]
pub struct RejectedEntry<'a> {
    /// Address the device answered from.
    pub ip: String,
    /// Port of its API.
    pub port: u16,
    /// The id it claims, if valid.
    pub id: &'a Option<String>,
    /// `rejected`, or `conflict` for an id two addresses claim.
    pub status: &'static str,
    /// Why.
    pub reason: String,
    /// Last full answer.
    pub last_seen: Option<f64>,
}

/// One entry of `GET /devices/pending`.
#[derive(Debug, Serialize)]
pub struct PendingEntry<'a> {
    /// The id, once `/id` answered.
    pub id: &'a Option<String>,
    /// The node's status word.
    pub status: NodeStatus,
    /// What went wrong (the same sentence for every address that never answered as an
    /// ethoscope, so the page is not a port scanner).
    pub poll_error: Option<&'a str>,
}

/// What `/devices/pending` says of an address that never answered as an ethoscope, whatever
/// happened: refused, silent, or another HTTP server.
pub const NEVER_ANSWERED: &str = "no ethoscope has answered at this address";

/// Serializes a value of ours (cannot fail for these types).
pub fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Entry {
    /// A new address, added at `now`.
    pub fn new(source: Source, now: f64, generation: u64) -> Entry {
        Entry {
            source,
            added: now,
            last_answer: None,
            answer_persisted: None,
            polled: false,
            claiming: false,
            claimed_since: now,
            generation,
            token: CancellationToken::new(),
            ip: None,
            id: None,
            name: None,
            device_status: String::new(),
            fields: Map::new(),
            databases: None,
            poll: PollState::default(),
            poll_error: None,
            rejected: None,
            activity_since: None,
            persisted: None,
        }
    }

    /// The node's status for it.
    pub fn status(&self) -> NodeStatus {
        self.poll.status(&self.device_status)
    }

    /// How it stands as a claimant of its id.
    pub fn seen(&self) -> Seen {
        if !self.polled {
            Seen::NotPolledYet
        } else if self.claiming {
            Seen::Claims
        } else {
            Seen::Silent {
                gone: self.poll.reach == Reach::Offline,
            }
        }
    }

    /// Its age, for expiry and eviction.
    pub fn age(&self) -> Age {
        Age {
            source: self.source,
            added: self.added,
            last_answer: self.last_answer,
        }
    }

    /// The address the device answered from, else the target's host.
    pub fn ip_text(&self, target: &Target) -> String {
        self.ip
            .map(|ip| ip.to_string())
            .unwrap_or_else(|| target.host.clone())
    }

    /// The `GET /devices` entry: the device's known fields, then the node's. `None` until the
    /// device gave a complete, valid identity.
    pub fn device_json(
        &self,
        target: &Target,
        results: Option<&Path>,
    ) -> Option<Map<String, Value>> {
        let id = self.id.as_ref()?;
        let name = self.name.as_ref()?;
        if self.rejected.is_some() {
            return None;
        }
        let mut obj = self.fields.clone();
        obj.insert("id".into(), Value::from(id.as_str()));
        obj.insert("name".into(), Value::from(name.as_str()));
        if let Some(db) = &self.databases {
            obj.insert("databases".into(), Value::Object(db.clone()));
        }
        obj.insert("ip".into(), Value::from(self.ip_text(target)));
        obj.insert("port".into(), Value::from(target.port));
        obj.insert("status".into(), to_value(&self.status()));
        obj.insert("last_seen".into(), to_value(&self.poll.last_seen));
        obj.insert(
            "consecutive_errors".into(),
            Value::from(self.poll.consecutive_errors),
        );
        let poll_error = self
            .poll_error
            .as_ref()
            .map(|e| e.chars().take(POLL_ERROR_CHARS).collect::<String>());
        obj.insert("poll_error".into(), to_value(&poll_error));
        if let Some(results) = results {
            let path = backup_path(results, id, name, &self.device_status, &obj);
            obj.insert("backup_path".into(), to_value(&path));
        }
        Some(obj)
    }

    /// Takes in one poll's report at `now` (identity, fields, rejection, error; not the status
    /// machine). Returns the id the address claimed before, when this report changed it.
    pub fn absorb(&mut self, target: &Target, report: PollReport, now: f64) -> Option<String> {
        let before = self.id.clone();
        let claims = match &report {
            PollReport::Answered { id, .. } | PollReport::IdOnly { id, .. } => Some(id.clone()),
            PollReport::Rejected { id, .. } => id.clone(),
            PollReport::Unreachable { .. } => None,
        };
        match report {
            PollReport::Answered {
                id,
                data,
                databases,
            } => {
                if self.rejected.take().is_some() {
                    tracing::info!(target = %target, "device answers validly again");
                }
                self.id = Some(id);
                self.name = Some(data.name);
                self.device_status = data.status;
                self.fields = data.fields;
                self.databases = databases;
                self.poll_error = None;
            }
            PollReport::IdOnly { id, error } => {
                if self.id.as_deref() != Some(id.as_str()) {
                    // Another (or a new) device: nothing of the old one applies.
                    self.name = None;
                    self.fields.clear();
                    self.databases = None;
                }
                self.id = Some(id);
                self.poll_error = Some(error);
            }
            PollReport::Rejected { id, reason } => {
                let reason = reason.to_string();
                if self.rejected.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(target = %target, "device rejected: {reason}");
                }
                if id.is_some() {
                    self.id = id;
                }
                self.rejected = Some(reason);
                self.poll_error = None;
            }
            PollReport::Unreachable { error, .. } => {
                self.poll_error = Some(error);
            }
        }
        self.polled = true;
        let was_claiming = self.claiming;
        self.claiming = claims.is_some();
        if claims.is_some() {
            self.last_answer = Some(now);
            if !was_claiming || before != self.id {
                self.claimed_since = now;
            }
        }
        match (&before, &self.id) {
            (Some(old), Some(new)) if old != new => {
                tracing::warn!(target = %target, old = %old, new = %new,
                    "another device answers at this address");
                before
            }
            _ => None,
        }
    }

    /// The row to write when the status changed or last_seen moved by a minute or more, for a
    /// device with a valid identity; records it as written. `confirmed` is its binding's.
    pub fn row_to_persist(
        &mut self,
        target: &Target,
        now: f64,
        confirmed: bool,
    ) -> Option<DeviceRow> {
        let (Some(id), Some(name), None) = (&self.id, &self.name, &self.rejected) else {
            return None;
        };
        let status = self.status();
        let stale = match &self.persisted {
            None => true,
            Some((persisted, seen)) => {
                persisted != &status
                    || match (seen, self.poll.last_seen) {
                        (Some(a), Some(b)) => b - a >= 60.0,
                        (None, Some(_)) => true,
                        _ => false,
                    }
            }
        };
        if !stale {
            return None;
        }
        let row = DeviceRow {
            id: id.clone(),
            name: name.clone(),
            target: target.clone(),
            ip: self.ip_text(target),
            last_seen: self.poll.last_seen,
            status: status.to_string(),
            confirmed,
            device_status: self.device_status.clone(),
            activity_since: self.activity_since,
            now,
        };
        self.persisted = Some((status, self.poll.last_seen));
        Some(row)
    }

    /// What the node's polling knows about the device, for its health
    /// ([`etho_model::health::Sighting`]); `doc` is its `GET /devices` entry.
    pub fn sighting(&self, doc: &Map<String, Value>) -> Sighting {
        let poll = &self.poll;
        let link = match poll.reach {
            Reach::Online => Link::Online {
                since: poll.online_since.or(poll.last_seen).unwrap_or(0.0),
            },
            Reach::Busy { since } => Link::Busy { since },
            Reach::Unreached { since } => Link::Unreached { since },
            Reach::Offline | Reach::Unknown => Link::Offline {
                last_seen: poll.last_seen,
            },
        };
        let fields = EntryFields(doc);
        Sighting {
            link,
            reported: Some(self.device_status.clone()).filter(|s| !s.is_empty()),
            activity_since: self.activity_since,
            device_time: self
                .fields
                .get("time")
                .and_then(Value::as_f64)
                .filter(|t| t.is_finite() && *t > 0.0),
            experiment: fields.announced_filename().map(str::to_string),
            mariadb: fields.mariadb_report(),
            sqlite: fields.sqlite_report(),
            conflict: doc
                .get("conflict")
                .and_then(|c| c.get("reason"))
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    /// `/devices/pending`'s entry: the details only for an address that answered as an
    /// ethoscope once (a busy device); for any other, one sentence and `offline`, so the page does
    /// not tell a refused port from a listening one or another HTTP server.
    pub fn pending_json(&self) -> Value {
        let entry = if self.last_answer.is_some() {
            PendingEntry {
                id: &self.id,
                status: self.status(),
                poll_error: self.poll_error.as_deref(),
            }
        } else {
            PendingEntry {
                id: &None,
                status: NodeStatus::Offline,
                poll_error: Some(NEVER_ANSWERED),
            }
        };
        to_value(&entry)
    }
}

/// The backup path upstream's node computes for a device (`device_scanner.py`
/// `_make_backup_path`), `<results>/<id>/<name>/<date>_<time>/<file>`, from the experiment file the
/// entry names: its database list's (`databases.MariaDB`, then `databases.SQLite`, as upstream's
/// newer node), else `previous_backup_filename` when the device is stopped and `backup_filename`
/// otherwise (as the July node, whose MySQL daemon reads this key when a device reports no
/// `databases.MariaDB`), else upstream HEAD's `latest_cache.backup_filename`. `None` when the
/// entry names no file, or one that is not `YYYY-MM-DD_HH-MM-SS_<its own id>.db`: a
/// device-supplied name never chooses another device's folder or leaves the results directory.
pub fn backup_path(
    results: &Path,
    id: &str,
    name: &str,
    status: &str,
    entry: &Map<String, Value>,
) -> Option<String> {
    let from_list = |kind: &str| -> Option<&str> {
        let dbs = entry.get("databases")?.get(kind)?.as_object()?;
        dbs.values().next()?.get("backup_filename")?.as_str()
    };
    let text = |key: &str| {
        entry
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let legacy = if status == "stopped" {
        text("previous_backup_filename").or_else(|| text("backup_filename"))
    } else {
        text("backup_filename")
    };
    let file = from_list("MariaDB")
        .or_else(|| from_list("SQLite"))
        .or(legacy)
        .or_else(|| entry.get("latest_cache")?.get("backup_filename")?.as_str())?;
    let (date_time, file_id) = parse_backup_filename(file)?;
    if file_id != id || !etho_model::device::is_valid_device_name(name) {
        return None;
    }
    let path = results.join(id).join(name).join(date_time).join(file);
    Some(path.to_string_lossy().into_owned())
}

/// `YYYY-MM-DD_HH-MM-SS_<32 hex>.db` → (`YYYY-MM-DD_HH-MM-SS`, id).
fn parse_backup_filename(file: &str) -> Option<(&str, &str)> {
    let stem = file.strip_suffix(".db")?;
    let (date_time, id) = (stem.get(..19)?, stem.get(20..)?);
    let shape_ok = date_time.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 | 13 | 16 => b == b'-',
        10 => b == b'_',
        _ => b.is_ascii_digit(),
    });
    (shape_ok
        && stem.as_bytes().get(19) == Some(&b'_')
        && etho_model::device::is_valid_machine_id(id))
    .then_some((date_time, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ID: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn backup_path_follows_upstream_and_refuses_foreign_names() {
        let results = Path::new("/ethoscope_data/results");
        let file = format!("2025-07-10_10-00-00_{ID}.db");
        let prev = format!("2025-07-01_08-00-00_{ID}.db");
        let fields = json!({"backup_filename": file, "previous_backup_filename": prev});
        let fields = fields.as_object().unwrap();
        assert_eq!(
            backup_path(results, ID, "ETHOSCOPE_001", "running", fields).as_deref(),
            Some(
                format!("/ethoscope_data/results/{ID}/ETHOSCOPE_001/2025-07-10_10-00-00/{file}")
                    .as_str()
            )
        );
        assert_eq!(
            backup_path(results, ID, "ETHOSCOPE_001", "stopped", fields).as_deref(),
            Some(
                format!("/ethoscope_data/results/{ID}/ETHOSCOPE_001/2025-07-01_08-00-00/{prev}")
                    .as_str()
            )
        );
        let other = "ffffffffffffffffffffffffffffffff";
        for bad in [
            format!("2025-07-10_10-00-00_{other}.db"),
            format!("2025-07-10_10-00-00_{ID}.db/../../x"),
            format!("../2025-07-10_10-00-00_{ID}.db"),
            format!("2025-07-10 10-00-00_{ID}.db"),
            format!("2025-07-10_10-00-00_{ID}.sqlite"),
            String::new(),
        ] {
            let f = json!({"backup_filename": bad});
            assert_eq!(
                backup_path(
                    results,
                    ID,
                    "ETHOSCOPE_001",
                    "running",
                    f.as_object().unwrap()
                ),
                None,
                "{bad}"
            );
        }
        assert_eq!(backup_path(results, ID, "E", "running", &Map::new()), None);
        // The database list first (upstream's newer node), then HEAD's latest_cache.
        let listed = format!("2025-08-01_00-00-00_{ID}.db");
        let f = json!({"backup_filename": file, "databases": {"MariaDB": {}, "SQLite": {listed.clone(): {"backup_filename": listed}}}});
        assert!(
            backup_path(results, ID, "E", "running", f.as_object().unwrap())
                .unwrap()
                .ends_with(&listed)
        );
        let f = json!({"latest_cache": {"backup_filename": file}});
        assert!(
            backup_path(results, ID, "E", "running", f.as_object().unwrap())
                .unwrap()
                .ends_with(&file)
        );
    }
}
